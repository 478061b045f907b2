package abi

import (
	"errors"
	"math"
	"strconv"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

func id8(b byte) [8]byte { return [8]byte{7: b} }

// sampleTrace is a root with two children, one grandchild and an orphan,
// given out of start order.
func sampleTrace() []traces.Span {
	res := []traces.Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "checkout"}}
	tid := [16]byte{15: 9}
	return []traces.Span{
		{TraceID: tid, SpanID: id8(3), ParentSpanID: id8(1), Name: "db.query", Service: "checkout", StartUnixNano: 30, EndUnixNano: 40,
			Attrs: []traces.Attr{{Key: "db.system", Type: abiv1.ValueString, Str: "postgresql"}, {Key: "rows", Type: abiv1.ValueInt, Num: uint64(math.MaxUint64)}}, ResourceAttrs: res},
		{TraceID: tid, SpanID: id8(1), Name: "checkout", Service: "checkout", Kind: abiv1.KindServer, StatusCode: abiv1.StatusError, StatusMessage: "boom",
			StartUnixNano: 10, EndUnixNano: 100, ResourceAttrs: res},
		{TraceID: tid, SpanID: id8(2), ParentSpanID: id8(1), Name: "payment.charge", Service: "checkout", StartUnixNano: 20, EndUnixNano: 50,
			Attrs: []traces.Attr{{Key: "amount", Type: abiv1.ValueDouble, Num: math.Float64bits(12.5)}, {Key: "pii", Type: abiv1.ValueBool, Num: 1}}, ResourceAttrs: res},
		{TraceID: tid, SpanID: id8(4), ParentSpanID: id8(2), Name: "fraud.check", StartUnixNano: 25, EndUnixNano: 26},
		{TraceID: tid, SpanID: id8(5), ParentSpanID: id8(99), Name: "orphan", StartUnixNano: 30, EndUnixNano: 31},
	}
}

// view reads an encoded buffer the way a guest does.
type view []byte

func (v view) u32(off int) uint32 { return le.Uint32(v[off:]) }
func (v view) span(i int) view {
	base := int(v.u32(abiv1.HeaderSpanTable)) + i*abiv1.SpanSize
	return v[base : base+abiv1.SpanSize]
}
func (v view) str(ref []byte) string {
	st := int(v.u32(abiv1.HeaderStringTable))
	off, n := int(le.Uint32(ref)), int(le.Uint32(ref[4:]))
	return string(v[st+off : st+off+n])
}
func (v view) attr(j int) view {
	base := int(v.u32(abiv1.HeaderAttrTable)) + j*abiv1.AttrSize
	return v[base : base+abiv1.AttrSize]
}

func TestEncode(t *testing.T) {
	e := NewEncoder()
	v := view(e.Encode(sampleTrace(), abiv1.TraceFlagFragment))

	if v.u32(abiv1.HeaderMagic) != abiv1.Magic || v.u32(abiv1.HeaderVersion) != 1 {
		t.Fatal("bad magic or version")
	}
	if n := v.u32(abiv1.HeaderSpanCount); n != 5 {
		t.Fatalf("span count %d", n)
	}
	if f := v.u32(abiv1.HeaderFlags); f != abiv1.TraceFlagFragment {
		t.Fatalf("flags %d", f)
	}
	if got := int(v.u32(abiv1.HeaderStringTable)) + int(v.u32(abiv1.HeaderStringSize)); got != len(v) {
		t.Fatalf("string table ends at %d, buffer is %d", got, len(v))
	}
	// Start order: checkout(10) payment(20) fraud(25) db(30) orphan(30, arrived later).
	wantNames := []string{"checkout", "payment.charge", "fraud.check", "db.query", "orphan"}
	wantParent := []uint32{abiv1.None, 0, 1, 0, abiv1.None}
	wantFirstChild := []uint32{1, 2, abiv1.None, abiv1.None, abiv1.None}
	wantNext := []uint32{abiv1.None, 3, abiv1.None, abiv1.None, abiv1.None}
	for i, name := range wantNames {
		s := v.span(i)
		if got := v.str(s[abiv1.SpanName:]); got != name {
			t.Errorf("span %d name %q, want %q", i, got, name)
		}
		if got := le.Uint32(s[abiv1.SpanParentIndex:]); got != wantParent[i] {
			t.Errorf("span %d parent %d, want %d", i, got, wantParent[i])
		}
		if got := le.Uint32(s[abiv1.SpanFirstChild:]); got != wantFirstChild[i] {
			t.Errorf("span %d first child %d, want %d", i, got, wantFirstChild[i])
		}
		if got := le.Uint32(s[abiv1.SpanNextSibling:]); got != wantNext[i] {
			t.Errorf("span %d next sibling %d, want %d", i, got, wantNext[i])
		}
	}
	if r := v.u32(abiv1.HeaderRootIndex); r != 0 {
		t.Errorf("root index %d", r)
	}
	root := v.span(0)
	if root[abiv1.SpanKind] != abiv1.KindServer || root[abiv1.SpanStatusCode] != abiv1.StatusError || v.str(root[abiv1.SpanStatusMessage:]) != "boom" {
		t.Error("kind/status not encoded")
	}
	if le.Uint64(root[abiv1.SpanStart:]) != 10 || le.Uint64(root[abiv1.SpanEnd:]) != 100 || root[abiv1.SpanSpanID+7] != 1 || root[abiv1.SpanTraceID+15] != 9 {
		t.Error("times or IDs not encoded")
	}

	pay := v.span(1)
	if n := le.Uint32(pay[abiv1.SpanAttrCount:]); n != 2 {
		t.Fatalf("payment attrs %d", n)
	}
	a := v.attr(int(le.Uint32(pay[abiv1.SpanAttrStart:])))
	if v.str(a[abiv1.AttrKey:]) != "amount" || a[abiv1.AttrType] != abiv1.ValueDouble || math.Float64frombits(le.Uint64(a[abiv1.AttrValue:])) != 12.5 {
		t.Error("double attribute not encoded")
	}
	db := v.span(3)
	a = v.attr(int(le.Uint32(db[abiv1.SpanAttrStart:])) + 1)
	if int64(le.Uint64(a[abiv1.AttrValue:])) != -1 || a[abiv1.AttrType] != abiv1.ValueInt {
		t.Error("int attribute not encoded")
	}
	// Resource attributes are laid out once and shared.
	if le.Uint32(root[abiv1.SpanResAttrStart:]) != le.Uint32(db[abiv1.SpanResAttrStart:]) || le.Uint32(db[abiv1.SpanResAttrCount:]) != 1 {
		t.Error("resource attributes not shared")
	}
	if n := v.u32(abiv1.HeaderAttrCount); n != 5 {
		t.Errorf("attribute records %d, want 5 (4 span + 1 resource)", n)
	}
	if e.SpanAt(0) != 1 || e.SpanAt(4) != 4 {
		t.Error("SpanAt does not map back to input order")
	}
}

func TestEncodeEmptyAndReuse(t *testing.T) {
	e := NewEncoder()
	v := view(e.Encode(nil, 0))
	if len(v) != abiv1.HeaderSize || v.u32(abiv1.HeaderRootIndex) != abiv1.None {
		t.Fatalf("empty trace: %d bytes, root %d", len(v), v.u32(abiv1.HeaderRootIndex))
	}
	first := string(e.Encode(sampleTrace(), 0))
	if second := string(e.Encode(sampleTrace(), 0)); first != second {
		t.Fatal("encoding is not deterministic across reuse")
	}
}

func TestEncodeAllocs(t *testing.T) {
	e := NewEncoder()
	spans := sampleTrace()
	e.Encode(spans, 0)
	if n := testing.AllocsPerRun(100, func() { e.Encode(spans, 0) }); n != 0 {
		t.Fatalf("warm Encode allocates %.0f times per trace", n)
	}
}

// result builds a result record.
type result []byte

func (r result) u32(v uint32) result { return le.AppendUint32(r, v) }
func (r result) str(s string) result { return append(r.u32(uint32(len(s))), s...) }

func TestDecodeResult(t *testing.T) {
	good := result(nil).u32(2).
		u32(1).str("payment.charge without fraud.check").u32(1).str("amount").str("12.5").
		u32(0).str("second").u32(0)
	vs, err := DecodeResult(nil, good, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].SpanIndex != 1 || vs[0].Message != "payment.charge without fraud.check" || vs[0].Attrs[0] != (KeyValue{"amount", "12.5"}) || vs[1].Message != "second" {
		t.Fatalf("decoded %+v", vs)
	}

	bad := []struct {
		name string
		out  []byte
	}{
		{"span index out of range", result(nil).u32(1).u32(3).str("m").u32(0)},
		{"truncated count", []byte{1, 0}},
		{"message past the end", result(nil).u32(1).u32(0).u32(100).str("x")},
		{"too many violations", result(nil).u32(abiv1.MaxViolations + 1)},
		{"message too long", result(nil).u32(1).u32(0).u32(abiv1.MaxMessageBytes + 1)},
		{"too many attributes", result(nil).u32(1).u32(0).str("m").u32(abiv1.MaxViolationAttrs + 1)},
		{"trailing bytes", append(result(nil).u32(0), 0xff)},
		{"count larger than content", result(nil).u32(2).u32(0).str("m").u32(0)},
		{"oversize result", make([]byte, abiv1.MaxResultBytes+1)},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeResult(nil, tt.out, 3); !errors.Is(err, ErrMalformedResult) {
				t.Fatalf("err = %v, want ErrMalformedResult", err)
			}
		})
	}
	if vs, err := DecodeResult(nil, nil, 0); err != nil || len(vs) != 0 {
		t.Fatal("empty result must mean no violations")
	}
}

func TestDecodeDescription(t *testing.T) {
	rec := result(nil).u32(5).str("id").str("payment-fraud-check").str("name").str("Payment fraud check").
		str("severity").str("CRITICAL").str("tags").str("payments, fraud,").str("x-future").str("ignored")
	d, err := DecodeDescription(rec)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "payment-fraud-check" || d.Name != "Payment fraud check" || d.Severity != "CRITICAL" || len(d.Tags) != 2 || d.Tags[1] != "fraud" {
		t.Fatalf("decoded %+v", d)
	}
	if _, err := DecodeDescription(result(nil).u32(1).str("id")); !errors.Is(err, ErrMalformedResult) {
		t.Fatalf("truncated description: %v", err)
	}
}

func FuzzDecodeResult(f *testing.F) {
	f.Add([]byte(result(nil).u32(1).u32(0).str("m").u32(1).str("k").str("v")), uint32(1))
	f.Add([]byte{}, uint32(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint32(10))
	f.Fuzz(func(t *testing.T, out []byte, spans uint32) {
		vs, err := DecodeResult(nil, out, spans)
		if err != nil {
			if !errors.Is(err, ErrMalformedResult) {
				t.Fatalf("error %v does not wrap ErrMalformedResult", err)
			}
			return
		}
		for _, v := range vs {
			if v.SpanIndex >= spans {
				t.Fatalf("accepted span index %d of %d", v.SpanIndex, spans)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		spans := syntheticTrace(n)
		b.Run(strconv.Itoa(n)+"spans", func(b *testing.B) {
			e := NewEncoder()
			b.ReportAllocs()
			for b.Loop() {
				e.Encode(spans, 0)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/span")
		})
	}
}

func syntheticTrace(n int) []traces.Span {
	res := []traces.Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "api"}, {Key: "host.name", Type: abiv1.ValueString, Str: "node-1"}}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := &spans[i]
		s.TraceID = [16]byte{1}
		s.SpanID = [8]byte{byte(i >> 8), byte(i), 1}
		if i > 0 {
			s.ParentSpanID = spans[(i-1)/4].SpanID
		}
		s.Name = "GET /api/orders"
		s.Service = "api"
		s.StartUnixNano = uint64(1000 + i)
		s.EndUnixNano = uint64(2000 + i)
		s.Attrs = []traces.Attr{
			{Key: "http.method", Type: abiv1.ValueString, Str: "GET"},
			{Key: "http.status_code", Type: abiv1.ValueInt, Num: 200},
			{Key: "db.system", Type: abiv1.ValueString, Str: "postgresql"},
		}
		s.ResourceAttrs = res
	}
	return spans
}
