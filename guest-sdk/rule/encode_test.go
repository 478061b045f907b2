package rule_test

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/betracehq/betrace/api/abiv1"
)

// A minimal ABI v1 encoder for tests. The host has its own; this one only
// needs to produce valid layouts (and, with the options below, layouts that
// exercise the decoder's use of the header offsets).

type kv struct {
	key string
	typ uint8
	str string
	num uint64
}

func S(k, v string) kv       { return kv{k, abiv1.ValueString, v, 0} }
func I(k string, v int64) kv { return kv{k, abiv1.ValueInt, "", uint64(v)} }
func F(k string, v float64) kv {
	return kv{k, abiv1.ValueDouble, "", math.Float64bits(v)}
}
func B(k string, v bool) kv {
	if v {
		return kv{k, abiv1.ValueBool, "", 1}
	}
	return kv{k, abiv1.ValueBool, "", 0}
}
func Raw(k string, v []byte) kv { return kv{k, abiv1.ValueBytes, string(v), 0} }
func Arr(k, json string) kv     { return kv{k, abiv1.ValueArray, json, 0} }
func Map(k, json string) kv     { return kv{k, abiv1.ValueMap, json, 0} }
func Empty(k string) kv         { return kv{k, abiv1.ValueEmpty, "", 0} }

// resource is shared by the spans of one service; its attribute records are
// written once.
type resource struct{ attrs []kv }

func svc(name string, extra ...kv) *resource {
	return &resource{append([]kv{S("service.name", name)}, extra...)}
}

// sp is one span. IDs are small integers; 0 means "no parent".
type sp struct {
	id, parent  uint64
	name        string
	res         *resource
	start, end  int64 // ms after base
	kind        uint8
	status      uint8
	statusMsg   string
	attrs       []kv
	traceIDByte byte // the trace ID is 16 copies of this byte (default 0xab)
}

const base = int64(1_700_000_000_000_000_000) // ns

type encodeOpts struct {
	flags uint32
	// reversed lays the tables out as strings, attributes, spans, with
	// padding between them, instead of spans, attributes, strings.
	reversed bool
}

func encode(spans []sp) []byte { return encodeWith(encodeOpts{}, spans) }

func encodeWith(o encodeOpts, spans []sp) []byte {
	order := slices.Clone(spans)
	slices.SortStableFunc(order, func(a, b sp) int { return int(a.start - b.start) })
	idx := map[uint64]uint32{}
	for i, s := range order {
		if _, dup := idx[s.id]; !dup {
			idx[s.id] = uint32(i)
		}
	}
	n := len(order)
	parent := make([]uint32, n)
	first := make([]uint32, n)
	next := make([]uint32, n)
	last := make([]uint32, n)
	for i := range n {
		parent[i], first[i], next[i], last[i] = abiv1.None, abiv1.None, abiv1.None, abiv1.None
	}
	root := abiv1.None
	for i, s := range order {
		if s.parent == 0 {
			// The header root is the earliest span with no parent ID, not
			// merely one whose parent is missing.
			if root == abiv1.None {
				root = uint32(i)
			}
		} else if p, ok := idx[s.parent]; ok {
			parent[i] = p
			if first[p] == abiv1.None {
				first[p] = uint32(i)
			} else {
				next[last[p]] = uint32(i)
			}
			last[p] = uint32(i)
		}
	}

	var strtab []byte
	strs := map[string]uint32{}
	ref := func(s string) [2]uint32 {
		off, ok := strs[s]
		if !ok {
			off = uint32(len(strtab))
			strtab = append(strtab, s...)
			strs[s] = off
		}
		return [2]uint32{off, uint32(len(s))}
	}
	var attrs []byte
	nattr := uint32(0)
	addAttrs := func(list []kv) (start, count uint32) {
		start = nattr
		for _, a := range list {
			rec := make([]byte, abiv1.AttrSize)
			k := ref(a.key)
			binary.LittleEndian.PutUint32(rec[abiv1.AttrKey:], k[0])
			binary.LittleEndian.PutUint32(rec[abiv1.AttrKey+4:], k[1])
			rec[abiv1.AttrType] = a.typ
			switch a.typ {
			case abiv1.ValueString, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap:
				v := ref(a.str)
				binary.LittleEndian.PutUint32(rec[abiv1.AttrValue:], v[0])
				binary.LittleEndian.PutUint32(rec[abiv1.AttrValue+4:], v[1])
			default:
				binary.LittleEndian.PutUint64(rec[abiv1.AttrValue:], a.num)
			}
			attrs = append(attrs, rec...)
			nattr++
		}
		return start, uint32(len(list))
	}
	resAttrs := map[*resource][2]uint32{}

	spanTab := make([]byte, n*abiv1.SpanSize)
	for i, s := range order {
		r := spanTab[i*abiv1.SpanSize : (i+1)*abiv1.SpanSize]
		tb := s.traceIDByte
		if tb == 0 {
			tb = 0xab
		}
		for j := range 16 {
			r[abiv1.SpanTraceID+j] = tb
		}
		binary.BigEndian.PutUint64(r[abiv1.SpanSpanID:], s.id)
		if s.parent != 0 {
			binary.BigEndian.PutUint64(r[abiv1.SpanParentSpanID:], s.parent)
		}
		binary.LittleEndian.PutUint64(r[abiv1.SpanStart:], uint64(base+s.start*1e6))
		binary.LittleEndian.PutUint64(r[abiv1.SpanEnd:], uint64(base+s.end*1e6))
		binary.LittleEndian.PutUint32(r[abiv1.SpanParentIndex:], parent[i])
		binary.LittleEndian.PutUint32(r[abiv1.SpanFirstChild:], first[i])
		binary.LittleEndian.PutUint32(r[abiv1.SpanNextSibling:], next[i])
		r[abiv1.SpanKind] = s.kind
		r[abiv1.SpanStatusCode] = s.status
		put := func(field int, v string) {
			x := ref(v)
			binary.LittleEndian.PutUint32(r[field:], x[0])
			binary.LittleEndian.PutUint32(r[field+4:], x[1])
		}
		put(abiv1.SpanName, s.name)
		service := ""
		if s.res != nil {
			for _, a := range s.res.attrs {
				if a.key == "service.name" && a.typ == abiv1.ValueString {
					service = a.str
					break
				}
			}
		}
		put(abiv1.SpanService, service)
		put(abiv1.SpanStatusMessage, s.statusMsg)
		start, count := addAttrs(s.attrs)
		binary.LittleEndian.PutUint32(r[abiv1.SpanAttrStart:], start)
		binary.LittleEndian.PutUint32(r[abiv1.SpanAttrCount:], count)
		if s.res != nil {
			ra, ok := resAttrs[s.res]
			if !ok {
				ra[0], ra[1] = addAttrs(s.res.attrs)
				resAttrs[s.res] = ra
			}
			binary.LittleEndian.PutUint32(r[abiv1.SpanResAttrStart:], ra[0])
			binary.LittleEndian.PutUint32(r[abiv1.SpanResAttrCount:], ra[1])
		}
	}

	out := make([]byte, abiv1.HeaderSize)
	var spanOff, attrOff, strOff int
	if o.reversed {
		out = append(out, 1, 2, 3)
		strOff = len(out)
		out = append(out, strtab...)
		out = append(out, 4, 5)
		attrOff = len(out)
		out = append(out, attrs...)
		out = append(out, 6)
		spanOff = len(out)
		out = append(out, spanTab...)
		out = append(out, 7, 8, 9)
	} else {
		spanOff = len(out)
		out = append(out, spanTab...)
		attrOff = len(out)
		out = append(out, attrs...)
		strOff = len(out)
		out = append(out, strtab...)
	}
	h := out[:abiv1.HeaderSize]
	binary.LittleEndian.PutUint32(h[abiv1.HeaderMagic:], abiv1.Magic)
	binary.LittleEndian.PutUint32(h[abiv1.HeaderVersion:], abiv1.Version)
	binary.LittleEndian.PutUint32(h[abiv1.HeaderSpanCount:], uint32(n))
	binary.LittleEndian.PutUint32(h[abiv1.HeaderSpanTable:], uint32(spanOff))
	binary.LittleEndian.PutUint32(h[abiv1.HeaderAttrCount:], nattr)
	binary.LittleEndian.PutUint32(h[abiv1.HeaderAttrTable:], uint32(attrOff))
	binary.LittleEndian.PutUint32(h[abiv1.HeaderStringTable:], uint32(strOff))
	binary.LittleEndian.PutUint32(h[abiv1.HeaderStringSize:], uint32(len(strtab)))
	binary.LittleEndian.PutUint32(h[abiv1.HeaderRootIndex:], root)
	binary.LittleEndian.PutUint32(h[abiv1.HeaderFlags:], o.flags)
	return out
}

// paymentTrace is what the host would send for a checkout that charged a
// card without a fraud check:
//
//	0 checkout          frontend
//	1   cart.load       checkout
//	2   payment.charge  payments
func paymentTrace() []byte {
	return encode([]sp{
		{id: 1, name: "checkout", res: svc("frontend"), start: 0, end: 400, kind: abiv1.KindServer},
		{id: 2, parent: 1, name: "cart.load", res: svc("checkout"), start: 5, end: 40},
		{id: 3, parent: 1, name: "payment.charge", res: svc("payments"), start: 50, end: 380, kind: abiv1.KindClient,
			attrs: []kv{I("payment.amount_cents", 4999), S("payment.currency", "EUR")}},
	})
}
