package abi

import (
	"encoding/binary"
	"slices"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

var le = binary.LittleEndian

// Encoder encodes traces into the ABI v1 layout, reusing its buffers so that a
// warm encoder allocates nothing.
type Encoder struct {
	buf     []byte
	strs    []byte
	order   []uint32
	spanIdx map[[8]byte]uint32
	resIdx  map[*traces.Attr]resourceRef
	visit   []uint8 // per span, for breakCycles
	broken  int     // parent links breakCycles cut in the last Encode
}

type resourceRef struct{ start, count uint32 }

// NewEncoder returns an empty Encoder.
func NewEncoder() *Encoder {
	return &Encoder{spanIdx: make(map[[8]byte]uint32), resIdx: make(map[*traces.Attr]resourceRef)}
}

// Encode lays out spans (one trace, any order) with the given abiv1.TraceFlag*
// bits and returns the encoded bytes, valid until the next Encode.
func (e *Encoder) Encode(spans []traces.Span, flags uint32) []byte {
	n := len(spans)
	e.order = e.order[:0]
	for i := range spans {
		e.order = append(e.order, uint32(i))
	}
	// Stable, so spans that start together keep their arrival order.
	slices.SortStableFunc(e.order, func(a, b uint32) int {
		sa, sb := spans[a].StartUnixNano, spans[b].StartUnixNano
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	clear(e.spanIdx)
	clear(e.resIdx)
	for pos, i := range e.order {
		e.spanIdx[spans[i].SpanID] = uint32(pos)
	}

	// Attribute records: span attributes in place, resource attributes once
	// per distinct resource (spans of one resource share the slice).
	attrCount := 0
	for i := range spans {
		attrCount += len(spans[i].Attrs)
		if ra := spans[i].ResourceAttrs; len(ra) > 0 {
			if _, ok := e.resIdx[&ra[0]]; !ok {
				e.resIdx[&ra[0]] = resourceRef{}
				attrCount += len(ra)
			}
		}
	}
	clear(e.resIdx)

	spanTable := abiv1.HeaderSize
	attrTable := spanTable + n*abiv1.SpanSize
	strTable := attrTable + attrCount*abiv1.AttrSize
	e.buf = slices.Grow(e.buf[:0], strTable)[:strTable]
	clear(e.buf)
	e.strs = e.strs[:0]

	b := e.buf
	nextAttr := uint32(0)
	root := abiv1.None
	for pos, i := range e.order {
		s := &spans[i]
		r := b[spanTable+pos*abiv1.SpanSize : spanTable+(pos+1)*abiv1.SpanSize]
		copy(r[abiv1.SpanTraceID:], s.TraceID[:])
		copy(r[abiv1.SpanSpanID:], s.SpanID[:])
		copy(r[abiv1.SpanParentSpanID:], s.ParentSpanID[:])
		le.PutUint64(r[abiv1.SpanStart:], s.StartUnixNano)
		le.PutUint64(r[abiv1.SpanEnd:], s.EndUnixNano)
		parent := abiv1.None
		if !s.IsRoot() {
			if p, ok := e.spanIdx[s.ParentSpanID]; ok && p != uint32(pos) {
				parent = p
			}
		} else if root == abiv1.None {
			root = uint32(pos)
		}
		le.PutUint32(r[abiv1.SpanParentIndex:], parent)
		le.PutUint32(r[abiv1.SpanFirstChild:], abiv1.None)
		le.PutUint32(r[abiv1.SpanNextSibling:], abiv1.None)
		r[abiv1.SpanKind] = s.Kind
		r[abiv1.SpanStatusCode] = s.StatusCode
		e.putStr(r[abiv1.SpanName:], s.Name)
		e.putStr(r[abiv1.SpanService:], s.Service)
		e.putStr(r[abiv1.SpanStatusMessage:], s.StatusMessage)

		le.PutUint32(r[abiv1.SpanAttrStart:], nextAttr)
		le.PutUint32(r[abiv1.SpanAttrCount:], uint32(len(s.Attrs)))
		nextAttr = e.putAttrs(b[attrTable:], nextAttr, s.Attrs)

		var res resourceRef
		if ra := s.ResourceAttrs; len(ra) > 0 {
			var ok bool
			if res, ok = e.resIdx[&ra[0]]; !ok {
				res = resourceRef{start: nextAttr, count: uint32(len(ra))}
				e.resIdx[&ra[0]] = res
				nextAttr = e.putAttrs(b[attrTable:], nextAttr, ra)
			}
		}
		le.PutUint32(r[abiv1.SpanResAttrStart:], res.start)
		le.PutUint32(r[abiv1.SpanResAttrCount:], res.count)
	}

	e.breakCycles(b[spanTable : spanTable+n*abiv1.SpanSize])

	// Children in start order: walk backwards, pushing each span onto the
	// front of its parent's list.
	for pos := n - 1; pos >= 0; pos-- {
		r := b[spanTable+pos*abiv1.SpanSize:]
		p := le.Uint32(r[abiv1.SpanParentIndex:])
		if p == abiv1.None {
			continue
		}
		pr := b[spanTable+int(p)*abiv1.SpanSize:]
		le.PutUint32(r[abiv1.SpanNextSibling:], le.Uint32(pr[abiv1.SpanFirstChild:]))
		le.PutUint32(pr[abiv1.SpanFirstChild:], uint32(pos))
	}

	le.PutUint32(b[abiv1.HeaderMagic:], abiv1.Magic)
	le.PutUint32(b[abiv1.HeaderVersion:], abiv1.Version)
	le.PutUint32(b[abiv1.HeaderSpanCount:], uint32(n))
	le.PutUint32(b[abiv1.HeaderSpanTable:], uint32(spanTable))
	le.PutUint32(b[abiv1.HeaderAttrCount:], uint32(attrCount))
	le.PutUint32(b[abiv1.HeaderAttrTable:], uint32(attrTable))
	le.PutUint32(b[abiv1.HeaderStringTable:], uint32(strTable))
	le.PutUint32(b[abiv1.HeaderStringSize:], uint32(len(e.strs)))
	le.PutUint32(b[abiv1.HeaderRootIndex:], root)
	le.PutUint32(b[abiv1.HeaderFlags:], flags)

	e.buf = append(b, e.strs...)
	return e.buf
}

// BrokenLinks is how many parent links the last Encode cut to make the
// spans a forest: links that closed a cycle (A's parent is B, B's is A).
// A self-parent is never linked in the first place and is not counted.
func (e *Encoder) BrokenLinks() int { return e.broken }

// Visit states of breakCycles.
const (
	unvisited = iota
	onPath    // on the parent chain being walked
	settled   // known to end at a span without a parent in the trace
)

// breakCycles cuts parent links until following parents from any span
// ends, so that rules walking ancestors always stop and every span is in
// exactly one tree. Senders control span and parent IDs, so a cycle is
// one request away; rules must not pay for it with a fault. Each span is
// walked once: O(spans). In each cycle the link of its earliest span (the
// lowest position) is cut, so that span becomes the top of the tree; it
// keeps its parent span ID, so rules see a span whose parent is missing,
// not a root, and the trace's root index is unchanged.
func (e *Encoder) breakCycles(table []byte) {
	n := len(table) / abiv1.SpanSize
	e.broken = 0
	e.visit = slices.Grow(e.visit[:0], n)[:n]
	clear(e.visit)
	parent := func(pos uint32) []byte { return table[int(pos)*abiv1.SpanSize+abiv1.SpanParentIndex:] }
	for start := range uint32(n) {
		x := start
		for x != abiv1.None && e.visit[x] == unvisited {
			e.visit[x] = onPath
			x = le.Uint32(parent(x))
		}
		if x != abiv1.None && e.visit[x] == onPath {
			// x is on a cycle of the chain just walked: settle the cycle,
			// then cut the link of its earliest span.
			first := x
			e.visit[x] = settled
			for y := le.Uint32(parent(x)); y != x; y = le.Uint32(parent(y)) {
				first = min(first, y)
				e.visit[y] = settled
			}
			le.PutUint32(parent(first), abiv1.None)
			e.broken++
		}
		for y := start; y != abiv1.None && e.visit[y] == onPath; y = le.Uint32(parent(y)) {
			e.visit[y] = settled
		}
	}
}

// putStr appends s to the string table and writes its StrRef into dst.
func (e *Encoder) putStr(dst []byte, s string) {
	le.PutUint32(dst, uint32(len(e.strs)))
	le.PutUint32(dst[4:], uint32(len(s)))
	e.strs = append(e.strs, s...)
}

func (e *Encoder) putAttrs(table []byte, next uint32, attrs []traces.Attr) uint32 {
	for i := range attrs {
		a := &attrs[i]
		r := table[int(next)*abiv1.AttrSize:]
		e.putStr(r[abiv1.AttrKey:], a.Key)
		r[abiv1.AttrType] = a.Type
		switch a.Type {
		case abiv1.ValueString, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap:
			e.putStr(r[abiv1.AttrValue:], a.Str)
		default:
			le.PutUint64(r[abiv1.AttrValue:], a.Num)
		}
		next++
	}
	return next
}

// SpanAt returns the index into spans of the span the encoder placed at
// record position pos by the last Encode, so a violation's span index can be
// mapped back to the span it names.
func (e *Encoder) SpanAt(pos uint32) int { return int(e.order[pos]) }
