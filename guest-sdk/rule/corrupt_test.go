package rule_test

import (
	"encoding/binary"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/guest-sdk/rule"
)

func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// spanField returns the input offset of a field of span i.
func spanField(in []byte, i, field int) int {
	return int(binary.LittleEndian.Uint32(in[abiv1.HeaderSpanTable:])) + i*abiv1.SpanSize + field
}

func TestCorruptHeader(t *testing.T) {
	good := encode(fixture())
	for _, tc := range []struct {
		name, want string
		mutate     func(b []byte) []byte
	}{
		{"empty", "shorter than the header", func(b []byte) []byte { return b[:0] }},
		{"short", "shorter than the header", func(b []byte) []byte { return b[:abiv1.HeaderSize-1] }},
		{"magic", "bad magic", func(b []byte) []byte { put32(b, abiv1.HeaderMagic, 0x12345678); return b }},
		{"version", "ABI version 2", func(b []byte) []byte { put32(b, abiv1.HeaderVersion, 2); return b }},
		{"span count", "span table", func(b []byte) []byte { put32(b, abiv1.HeaderSpanCount, 1000); return b }},
		{"span count overflow", "span table", func(b []byte) []byte { put32(b, abiv1.HeaderSpanCount, 0xFFFFFFFF); return b }},
		{"span offset", "span table", func(b []byte) []byte { put32(b, abiv1.HeaderSpanTable, uint32(len(b))); return b }},
		{"attr table", "attribute table", func(b []byte) []byte { put32(b, abiv1.HeaderAttrTable, 0xFFFFFFF0); return b }},
		{"string size", "string table", func(b []byte) []byte { put32(b, abiv1.HeaderStringSize, uint32(len(b))); return b }},
		{"string offset", "string table", func(b []byte) []byte { put32(b, abiv1.HeaderStringTable, 0xFFFFFFFF); return b }},
		{"root", "header root index", func(b []byte) []byte { put32(b, abiv1.HeaderRootIndex, 7); return b }},
		{"truncated", "runs past the end", func(b []byte) []byte { return b[:len(b)-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.mutate(append([]byte(nil), good...))
			mustPanic(t, tc.want, func() { rule.EvaluateWith(func(*rule.Trace) { t.Error("check ran") }, in) })
		})
	}
}

func TestCorruptRecords(t *testing.T) {
	good := encode(fixture())
	for _, tc := range []struct {
		name, want string
		mutate     func(b []byte)
		use        func(tr *rule.Trace)
	}{
		{"parent index", "parent index 7", func(b []byte) { put32(b, spanField(b, 2, abiv1.SpanParentIndex), 7) },
			func(tr *rule.Trace) { tr.Span(2).Parent() }},
		{"parent index in Ancestors", "parent index 100", func(b []byte) { put32(b, spanField(b, 0, abiv1.SpanParentIndex), 100) },
			func(tr *rule.Trace) { tr.Span(4).HasAncestorNamed("x") }},
		{"first child", "first child index", func(b []byte) { put32(b, spanField(b, 0, abiv1.SpanFirstChild), 9) },
			func(tr *rule.Trace) { tr.Span(0).NumChildren() }},
		{"next sibling", "next sibling index", func(b []byte) { put32(b, spanField(b, 1, abiv1.SpanNextSibling), 9) },
			func(tr *rule.Trace) { tr.Span(0).NumChildren() }},
		{"sibling cycle", "cycle", func(b []byte) { put32(b, spanField(b, 5, abiv1.SpanNextSibling), 1) },
			func(tr *rule.Trace) { tr.Span(0).NumChildren() }},
		{"parent cycle", "cycle", func(b []byte) { put32(b, spanField(b, 0, abiv1.SpanParentIndex), 2) },
			func(tr *rule.Trace) { tr.Span(4).Root() }},
		{"descendant cycle", "cycle", func(b []byte) { put32(b, spanField(b, 3, abiv1.SpanFirstChild), 0) },
			func(tr *rule.Trace) {
				for range tr.Span(0).Descendants() {
				}
			}},
		{"name offset", "runs past the string table", func(b []byte) { put32(b, spanField(b, 1, abiv1.SpanName), 0xFFFFFFFF) },
			func(tr *rule.Trace) { tr.Span(1).Name() }},
		{"name in FindByName", "runs past the string table", func(b []byte) { put32(b, spanField(b, 1, abiv1.SpanName), 0xFFFFFFF0) },
			func(tr *rule.Trace) { tr.FindByName("auth.check") }},
		{"name length", "runs past the string table", func(b []byte) { put32(b, spanField(b, 1, abiv1.SpanName+4), 0xFFFFFFFF) },
			func(tr *rule.Trace) { tr.Span(1).Name() }},
		{"service", "runs past the string table", func(b []byte) { put32(b, spanField(b, 1, abiv1.SpanService+4), 1<<20) },
			func(tr *rule.Trace) { tr.Span(1).Service() }},
		{"attr range", "attribute range", func(b []byte) { put32(b, spanField(b, 0, abiv1.SpanAttrCount), 1000) },
			func(tr *rule.Trace) { tr.Span(0).HasAttr("x") }},
		{"attr range overflow", "attribute range", func(b []byte) {
			put32(b, spanField(b, 0, abiv1.SpanAttrStart), 0xFFFFFFFF)
			put32(b, spanField(b, 0, abiv1.SpanAttrCount), 2)
		}, func(tr *rule.Trace) { tr.Span(0).HasAttr("x") }},
		{"resource range", "attribute range", func(b []byte) { put32(b, spanField(b, 0, abiv1.SpanResAttrStart), 1000) },
			func(tr *rule.Trace) { tr.Span(0).ResourceStr("x") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]byte(nil), good...)
			tc.mutate(in)
			mustPanic(t, tc.want, func() { rule.EvaluateWith(tc.use, in) })
		})
	}
}

func TestCorruptAttrValue(t *testing.T) {
	in := encode([]sp{{id: 1, name: "s", attrs: []kv{S("k", "v")}}})
	attrs := int(binary.LittleEndian.Uint32(in[abiv1.HeaderAttrTable:]))
	put32(in, attrs+abiv1.AttrValue+4, 1<<30)
	mustPanic(t, "runs past the string table", func() {
		rule.EvaluateWith(func(tr *rule.Trace) { tr.Span(0).Str("k") }, in)
	})
}

func TestSpanOutOfRange(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		mustPanic(t, "Trace.Span(7) out of range", func() { tr.Span(7) })
		mustPanic(t, "Trace.Span(-1) out of range", func() { tr.Span(-1) })
		mustPanic(t, "zero Span", func() { rule.Span{}.Name() })
	})
}
