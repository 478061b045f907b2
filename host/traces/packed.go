package traces

import (
	"encoding/binary"
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
)

// A trace being assembled keeps its spans packed in one byte slice rather
// than as Span structs: a Span is 152 bytes of fixed fields and headers
// before its strings, and every string and attribute slice decoded from
// OTLP is an allocation of its own that the collector must trace. Packed,
// a span costs its IDs, times and the bytes of its strings, the buffer
// holds two to three times the spans in the same memory, and the garbage
// collector skips it (it has no pointers). The spans are unpacked once, when
// the trace completes, into one []Span and one []Attr whose strings point
// into the packed bytes, which never change after that.
//
// One span is:
//
//	8 span ID, 8 parent span ID, 8 start, 8 end (little-endian), 1 kind, 1 status
//	string name, string service, string status message
//	uvarint attribute count, attributes
//	byte resource: 0 none, 1 a new block of attributes follows (uvarint
//	count, attributes), 2 the same as an earlier span's: uvarint offset of
//	that block
//
// A string is a uvarint length and its bytes; an attribute is a string key,
// a type byte, and a string value or an 8-byte number.
const (
	spanFixedBytes = 8 + 8 + 8 + 8 + 1 + 1
	resourceNone   = 0
	resourceNew    = 1
	resourceSame   = 2
)

func uvarintLen(n int) int64 {
	l := int64(1)
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

func strBytes(s string) int64 { return uvarintLen(len(s)) + int64(len(s)) }

func packedAttrs(as []Attr) int64 {
	n := uvarintLen(len(as))
	for i := range as {
		n += strBytes(as[i].Key) + 1
		if hasStr(as[i].Type) {
			n += strBytes(as[i].Str)
		} else {
			n += 8
		}
	}
	return n
}

// packedSize is the bytes appendSpan adds for s: with its resource block
// when newRes, with a reference to an earlier one otherwise (at most 10
// bytes of offset, counted whole so a size is never under the truth).
func packedSize(s *Span, newRes bool) int64 {
	n := spanFixedBytes + strBytes(s.Name) + strBytes(s.Service) + strBytes(s.StatusMessage) + packedAttrs(s.Attrs) + 1
	switch {
	case len(s.ResourceAttrs) == 0:
	case newRes:
		n += packedAttrs(s.ResourceAttrs)
	default:
		n += binary.MaxVarintLen64
	}
	return n
}

// hasStr reports whether an attribute of type t keeps its value in Str
// (string, bytes, array and map; see Attr).
func hasStr(t uint8) bool {
	switch t {
	case abiv1.ValueString, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap:
		return true
	}
	return false
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendAttrs(b []byte, as []Attr) []byte {
	b = binary.AppendUvarint(b, uint64(len(as)))
	for i := range as {
		a := &as[i]
		b = appendStr(b, a.Key)
		b = append(b, a.Type)
		if hasStr(a.Type) {
			b = appendStr(b, a.Str)
		} else {
			b = binary.LittleEndian.AppendUint64(b, a.Num)
		}
	}
	return b
}

// appendSpan packs s at the end of p's bytes, sharing a resource block
// with the span before it when both came with the same resource.
func (p *pending) appendSpan(s *Span) {
	b := p.blob
	b = append(b, s.SpanID[:]...)
	b = append(b, s.ParentSpanID[:]...)
	b = binary.LittleEndian.AppendUint64(b, s.StartUnixNano)
	b = binary.LittleEndian.AppendUint64(b, s.EndUnixNano)
	b = append(b, s.Kind, s.StatusCode)
	b = appendStr(b, s.Name)
	b = appendStr(b, s.Service)
	b = appendStr(b, s.StatusMessage)
	b = appendAttrs(b, s.Attrs)
	p.attrs += len(s.Attrs)
	switch {
	case len(s.ResourceAttrs) == 0:
		b = append(b, resourceNone)
	case &s.ResourceAttrs[0] == p.lastRes:
		b = append(b, resourceSame)
		b = binary.AppendUvarint(b, uint64(p.lastResAt))
	default:
		b = append(b, resourceNew)
		p.lastRes, p.lastResAt = &s.ResourceAttrs[0], len(b)
		b = appendAttrs(b, s.ResourceAttrs)
		p.attrs += len(s.ResourceAttrs)
	}
	p.blob = b
	p.n++
}

// unpack turns the packed spans of trace id back into Spans. Their strings
// point into blob, which must not change afterwards; attrs is how many
// attributes (span and resource blocks) blob holds, for one slab.
func unpack(id [16]byte, blob []byte, n, attrs int) []Span {
	spans := make([]Span, n)
	slab := make([]Attr, 0, attrs)
	type block struct {
		at    int
		attrs []Attr
	}
	var blocks []block
	r := reader{b: blob}
	for i := range spans {
		s := &spans[i]
		s.TraceID = id
		copy(s.SpanID[:], r.next(8))
		copy(s.ParentSpanID[:], r.next(8))
		s.StartUnixNano = binary.LittleEndian.Uint64(r.next(8))
		s.EndUnixNano = binary.LittleEndian.Uint64(r.next(8))
		s.Kind, s.StatusCode = r.byte(), r.byte()
		s.Name, s.Service, s.StatusMessage = r.str(), r.str(), r.str()
		start := len(slab)
		slab = r.attrs(slab)
		if len(slab) > start {
			s.Attrs = slab[start:len(slab):len(slab)]
		}
		switch r.byte() {
		case resourceNew:
			at := r.off
			start := len(slab)
			slab = r.attrs(slab)
			s.ResourceAttrs = slab[start:len(slab):len(slab)]
			blocks = append(blocks, block{at, s.ResourceAttrs})
		case resourceSame:
			at := int(r.uvarint())
			for j := len(blocks) - 1; j >= 0; j-- {
				if blocks[j].at == at {
					s.ResourceAttrs = blocks[j].attrs
					break
				}
			}
		}
	}
	return spans
}

// reader reads what appendSpan wrote; the bytes are the assembler's own,
// so they are well formed.
type reader struct {
	b   []byte
	off int
}

func (r *reader) next(n int) []byte {
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) byte() byte {
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b[r.off:])
	r.off += n
	return v
}

func (r *reader) str() string {
	n := int(r.uvarint())
	if n == 0 {
		return ""
	}
	s := unsafe.String(&r.b[r.off], n)
	r.off += n
	return s
}

func (r *reader) attrs(dst []Attr) []Attr {
	for range r.uvarint() {
		a := Attr{Key: r.str(), Type: r.byte()}
		if hasStr(a.Type) {
			a.Str = r.str()
		} else {
			a.Num = binary.LittleEndian.Uint64(r.next(8))
		}
		dst = append(dst, a)
	}
	return dst
}
