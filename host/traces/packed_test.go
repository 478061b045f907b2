package traces

import (
	"math"
	"reflect"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
)

func TestPackRoundTrip(t *testing.T) {
	resA := []Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "checkout"}, {Key: "host.cpu", Type: abiv1.ValueInt, Num: 8}}
	resB := []Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "payments"}}
	every := []Attr{
		{Key: "s", Type: abiv1.ValueString, Str: "é and \x00"},
		{Key: "b", Type: abiv1.ValueBool, Num: 1},
		{Key: "i", Type: abiv1.ValueInt, Num: uint64(math.MaxUint64)},
		{Key: "d", Type: abiv1.ValueDouble, Num: math.Float64bits(-2.5)},
		{Key: "raw", Type: abiv1.ValueBytes, Str: "\xff\x00"},
		{Key: "arr", Type: abiv1.ValueArray, Str: `[1,"x"]`},
		{Key: "map", Type: abiv1.ValueMap, Str: `{"k":1}`},
		{Key: "", Type: abiv1.ValueEmpty},
	}
	long := make([]byte, 300) // a length that takes two varint bytes
	for i := range long {
		long[i] = 'a' + byte(i%26)
	}
	in := []Span{
		{SpanID: [8]byte{1}, Name: "root", Service: "checkout", Kind: 2, StatusCode: 1, StartUnixNano: 1, EndUnixNano: math.MaxUint64, Attrs: every, ResourceAttrs: resA},
		{SpanID: [8]byte{2}, ParentSpanID: [8]byte{1}, Name: string(long), Service: "checkout", StatusMessage: "boom", ResourceAttrs: resA},
		{SpanID: [8]byte{3}, ParentSpanID: [8]byte{1}, Name: "pay", Service: "payments", ResourceAttrs: resB},
		{SpanID: [8]byte{4}, ParentSpanID: [8]byte{3}, ResourceAttrs: resA}, // back to the first resource: a new block
		{SpanID: [8]byte{5}}, // no resource, no attributes, no strings
	}
	var p pending
	var counted int64
	var z sizer
	for i := range in {
		before := len(p.blob)
		counted += z.size(&in[i])
		p.appendSpan(&in[i])
		if got, want := int64(len(p.blob)-before), packedSize(&in[i], len(in[i].ResourceAttrs) > 0 && (i == 0 || &in[i].ResourceAttrs[0] != &in[i-1].ResourceAttrs[0])); got > want {
			t.Fatalf("span %d packed into %d bytes, packedSize says %d", i, got, want)
		}
	}
	if int64(len(p.blob)) > counted || counted != SpanBytes(in) {
		t.Fatalf("packed %d bytes, counted %d, SpanBytes %d: the count must never be under what is kept", len(p.blob), counted, SpanBytes(in))
	}
	out := unpack([16]byte{}, p.blob, p.n, p.attrs)
	for i := range out {
		if len(out[i].Attrs) == 0 {
			out[i].Attrs = nil
		}
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("unpacked spans differ:\n got %+v\nwant %+v", out, in)
	}
	if &out[0].ResourceAttrs[0] != &out[1].ResourceAttrs[0] {
		t.Error("spans of one resource do not share its attributes after unpacking")
	}
	if cap(out[0].Attrs) != len(out[0].Attrs) {
		t.Error("a span's attributes can grow into its neighbour's")
	}
}

// TestAddCopies: the assembler keeps its own copy of every span, so a
// receiver may reuse its buffers as soon as Add returns.
func TestAddCopies(t *testing.T) {
	f := newFixture(t, testConfig())
	attrs := []Attr{{Key: "k", Type: abiv1.ValueString, Str: "v"}}
	name := []byte("checkout")
	s := span(1, 0) // a root: the trace completes after Settle
	s.Name, s.Attrs = string(name), attrs
	if err := f.a.Add(ctx, []Span{s}); err != nil {
		t.Fatal(err)
	}
	attrs[0].Str = "changed"
	f.clk.Advance(f.a.cfg.Settle)
	f.a.Sweep()
	tr := f.c.next(t)
	if tr.Spans[0].Attrs[0].Str != "v" || tr.Spans[0].Name != "checkout" || tr.Spans[0].TraceID != s.TraceID {
		t.Fatalf("the trace sees the caller's later changes or lost its fields: %+v", tr.Spans[0])
	}
}

// TestAddReturnsOvercount: spans of two traces interleaved in one batch
// share one resource; the batch's count has its block once per run, the
// assembler keeps it once per trace, and the difference is returned at
// once, so a drained buffer holds 0 bytes.
func TestAddReturnsOvercount(t *testing.T) {
	f := newFixture(t, testConfig())
	res := []Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "checkout"}}
	var batch []Span
	for i := range 4 {
		for n := uint64(1); n <= 2; n++ {
			s := span(n, i)
			s.ResourceAttrs = res
			batch = append(batch, s)
		}
	}
	if err := f.a.Add(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if got, counted := f.a.Bytes(), SpanBytes(batch); got >= counted {
		t.Fatalf("buffer holds %d bytes, the batch counted %d: the resource blocks the traces share were not given back", got, counted)
	}
	f.clk.Advance(f.a.cfg.Settle)
	f.a.Sweep()
	for range 2 {
		f.c.next(t).Release()
	}
	if b := f.a.Bytes(); b != 0 {
		t.Fatalf("%d bytes held after every trace was released", b)
	}
}
