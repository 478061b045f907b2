package rule_test

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/guest-sdk/rule"
)

var (
	frontend = svc("frontend", S("deployment.environment", "prod"), I("host.cpus", 8), F("host.load", 0.5), B("canary", false))
	payments = svc("payments")
	ordersDB = svc("orders-db")
)

// fixture is a trace of seven spans; by start time:
//
//	0 checkout           frontend (root)
//	1   auth.check       frontend
//	2   payment.charge   payments
//	3     SELECT orders  orders-db
//	4     INSERT audit   orders-db
//	5   fraud.check      payments
//	6 late.callback      payments (orphan: its parent is not in the trace)
func fixture() []sp {
	return []sp{
		// Out of start order on purpose: the encoder sorts.
		{id: 6, parent: 1, name: "fraud.check", res: payments, start: 500, end: 600},
		{id: 1, name: "checkout", res: frontend, start: 0, end: 1500, kind: abiv1.KindServer, status: abiv1.StatusOK,
			attrs: []kv{S("http.method", "POST"), I("http.status_code", 200), F("ratio", 0.75), B("sampled", true)}},
		{id: 2, parent: 1, name: "auth.check", res: frontend, start: 10, end: 20, kind: abiv1.KindInternal},
		{id: 3, parent: 1, name: "payment.charge", res: payments, start: 30, end: 400, kind: abiv1.KindClient,
			status: abiv1.StatusError, statusMsg: "card declined", attrs: []kv{
				S("payment.currency", "EUR"), I("amount_cents", -1299), F("fx.rate", 1.0825),
				B("data.contains_pii", true), Raw("blob", []byte{0xde, 0xad}), Arr("items", `["a","b"]`),
				Map("meta", `{"k":1}`), Empty("nothing"), S("dup", "first"), S("dup", "second"),
			}},
		{id: 4, parent: 3, name: "SELECT orders", res: ordersDB, start: 40, end: 1300, attrs: []kv{S("db.system", "postgresql")}},
		{id: 5, parent: 3, name: "INSERT audit", res: ordersDB, start: 50, end: 60, attrs: []kv{S("db.system", "postgresql")}},
		{id: 7, parent: 99, name: "late.callback", res: payments, start: 700, end: 800, kind: abiv1.KindConsumer},
	}
}

// run evaluates check over input and returns the decoded violations.
func run(t *testing.T, input []byte, check rule.Check) []rule.Violation {
	t.Helper()
	vs, err := rule.DecodeResult(rule.EvaluateWith(check, input))
	if err != nil {
		t.Fatalf("DecodeResult: %v", err)
	}
	return vs
}

// with runs f against the trace encoded from spans.
func with(t *testing.T, input []byte, f func(tr *rule.Trace)) {
	t.Helper()
	called := false
	run(t, input, func(tr *rule.Trace) { called = true; f(tr) })
	if !called {
		t.Fatal("check not called")
	}
}

func names(seq func(func(rule.Span) bool)) []string {
	var out []string
	for s := range seq {
		out = append(out, s.Name())
	}
	return out
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("no panic; want one containing %q", want)
		}
		msg, _ := r.(string)
		if !strings.Contains(msg, want) {
			t.Fatalf("panic %v; want one containing %q", r, want)
		}
	}()
	f()
}

func TestSpanFields(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		if tr.Len() != 7 {
			t.Fatalf("Len = %d", tr.Len())
		}
		want := []string{"checkout", "auth.check", "payment.charge", "SELECT orders", "INSERT audit", "fraud.check", "late.callback"}
		var got []string
		for i := range tr.Len() {
			s := tr.Span(i)
			if s.Index() != i {
				t.Errorf("Span(%d).Index() = %d", i, s.Index())
			}
			got = append(got, s.Name())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("index order %q, want %q", got, want)
		}
		if got := names(tr.Spans()); !slices.Equal(got, want) {
			t.Fatalf("Spans() order %q, want %q", got, want)
		}
		// Breaking out of Spans early stops it.
		n := 0
		for range tr.Spans() {
			n++
			if n == 2 {
				break
			}
		}
		if n != 2 {
			t.Errorf("break after 2: n = %d", n)
		}

		root, charge := tr.Span(0), tr.Span(2)
		if root.Service() != "frontend" || charge.Service() != "payments" {
			t.Errorf("Service = %q, %q", root.Service(), charge.Service())
		}
		if root.Kind() != rule.KindServer || charge.Kind() != rule.KindClient || tr.Span(1).Kind() != rule.KindInternal ||
			tr.Span(3).Kind() != rule.KindUnspecified || tr.Span(6).Kind() != rule.KindConsumer {
			t.Errorf("Kind wrong")
		}
		if charge.Kind().String() != "client" || rule.Kind(9).String() != "kind(9)" {
			t.Errorf("Kind.String = %q, %q", charge.Kind(), rule.Kind(9))
		}
		if root.Status() != rule.StatusOK || charge.Status() != rule.StatusError || tr.Span(1).Status() != rule.StatusUnset {
			t.Errorf("Status wrong")
		}
		if !charge.IsError() || root.IsError() || charge.Status().String() != "error" {
			t.Errorf("IsError / Status.String wrong")
		}
		if charge.StatusMessage() != "card declined" || root.StatusMessage() != "" {
			t.Errorf("StatusMessage = %q, %q", charge.StatusMessage(), root.StatusMessage())
		}
		if charge.Start() != base+30e6 || charge.End() != base+400e6 {
			t.Errorf("Start, End = %d, %d", charge.Start(), charge.End())
		}
		if charge.Duration() != 370*rule.Millisecond {
			t.Errorf("Duration = %v", charge.Duration())
		}
		if charge.TraceID() != strings.Repeat("ab", 16) {
			t.Errorf("TraceID = %q", charge.TraceID())
		}
		if charge.SpanID() != "0000000000000003" || charge.ParentSpanID() != "0000000000000001" || root.ParentSpanID() != "" {
			t.Errorf("SpanID, ParentSpanID = %q, %q, %q", charge.SpanID(), charge.ParentSpanID(), root.ParentSpanID())
		}
		if tr.Fragment() {
			t.Error("Fragment() on a whole trace")
		}
	})
}

func TestNegativeDuration(t *testing.T) {
	with(t, encode([]sp{{id: 1, name: "skewed", start: 10, end: 5}}), func(tr *rule.Trace) {
		if d := tr.Span(0).Duration(); d != 0 {
			t.Errorf("Duration = %v, want 0", d)
		}
	})
}

func TestTree(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		root, ok := tr.Root()
		if !ok || root.Index() != 0 || !root.IsRoot() {
			t.Fatalf("Root = %v, %v", root.Index(), ok)
		}
		if _, ok := root.Parent(); ok {
			t.Error("root has a parent")
		}
		charge := tr.Span(2)
		if p, ok := charge.Parent(); !ok || p.Name() != "checkout" {
			t.Errorf("Parent = %v %v", p, ok)
		}
		if got := names(root.Children()); !slices.Equal(got, []string{"auth.check", "payment.charge", "fraud.check"}) {
			t.Errorf("Children = %q", got)
		}
		if got := names(charge.Children()); !slices.Equal(got, []string{"SELECT orders", "INSERT audit"}) {
			t.Errorf("Children = %q", got)
		}
		if n := root.NumChildren(); n != 3 {
			t.Errorf("NumChildren = %d", n)
		}
		if n := tr.Span(3).NumChildren(); n != 0 {
			t.Errorf("leaf NumChildren = %d", n)
		}
		insert := tr.Span(4)
		if got := names(insert.Ancestors()); !slices.Equal(got, []string{"payment.charge", "checkout"}) {
			t.Errorf("Ancestors = %q", got)
		}
		if got := names(root.Ancestors()); got != nil {
			t.Errorf("root Ancestors = %q", got)
		}
		if r := insert.Root(); r.Index() != 0 {
			t.Errorf("Root() = %d", r.Index())
		}
		if !insert.HasAncestorNamed("checkout") || !insert.HasAncestorNamed("payment.charge") ||
			insert.HasAncestorNamed("auth.check") || insert.HasAncestorNamed("INSERT audit") {
			t.Error("HasAncestorNamed wrong")
		}
		if got := names(root.Descendants()); !slices.Equal(got, []string{"auth.check", "payment.charge", "SELECT orders", "INSERT audit", "fraud.check"}) {
			t.Errorf("Descendants = %q", got)
		}
		if got := names(charge.Descendants()); !slices.Equal(got, []string{"SELECT orders", "INSERT audit"}) {
			t.Errorf("charge Descendants = %q", got)
		}
		if got := names(insert.Descendants()); got != nil {
			t.Errorf("leaf Descendants = %q", got)
		}

		orphan := tr.Span(6)
		if _, ok := orphan.Parent(); ok {
			t.Error("orphan has a parent")
		}
		if orphan.IsRoot() {
			t.Error("orphan IsRoot")
		}
		if orphan.ParentSpanID() != "0000000000000063" {
			t.Errorf("orphan ParentSpanID = %q", orphan.ParentSpanID())
		}
		if r := orphan.Root(); r.Index() != 6 {
			t.Errorf("orphan Root() = %d", r.Index())
		}
	})
}

func TestDescendantsDeep(t *testing.T) {
	// a
	// ├─ b
	// │  └─ c
	// │     └─ d
	// └─ e
	//    └─ f
	spans := []sp{
		{id: 1, name: "a", start: 0, end: 100},
		{id: 2, parent: 1, name: "b", start: 1, end: 10},
		{id: 3, parent: 2, name: "c", start: 2, end: 9},
		{id: 4, parent: 3, name: "d", start: 3, end: 8},
		{id: 5, parent: 1, name: "e", start: 20, end: 30},
		{id: 6, parent: 5, name: "f", start: 21, end: 29},
	}
	with(t, encode(spans), func(tr *rule.Trace) {
		if got := names(tr.Span(0).Descendants()); !slices.Equal(got, []string{"b", "c", "d", "e", "f"}) {
			t.Errorf("Descendants = %q", got)
		}
		if got := names(tr.Span(1).Descendants()); !slices.Equal(got, []string{"c", "d"}) {
			t.Errorf("b Descendants = %q", got)
		}
		n := 0
		for range tr.Span(0).Descendants() {
			n++
			if n == 3 {
				break
			}
		}
		if n != 3 {
			t.Errorf("break: n = %d", n)
		}
	})
}

func TestFind(t *testing.T) {
	spans := append(fixture(), sp{id: 8, parent: 1, name: "payment.charge", res: payments, start: 900, end: 950})
	with(t, encode(spans), func(tr *rule.Trace) {
		s, ok := tr.FindByName("payment.charge")
		if !ok || s.Index() != 2 {
			t.Errorf("FindByName = %d, %v", s.Index(), ok)
		}
		if _, ok := tr.FindByName("payment"); ok {
			t.Error("FindByName matched a prefix")
		}
		if _, ok := tr.FindByName("nope"); ok {
			t.Error("FindByName found a missing name")
		}
		var idx []int
		for s := range tr.SpansNamed("payment.charge") {
			idx = append(idx, s.Index())
		}
		if !slices.Equal(idx, []int{2, 7}) {
			t.Errorf("SpansNamed = %v", idx)
		}
		for range tr.SpansNamed("payment.charge") {
			break // must not panic
		}
	})
}

func TestEmptyTrace(t *testing.T) {
	with(t, encode(nil), func(tr *rule.Trace) {
		if tr.Len() != 0 {
			t.Errorf("Len = %d", tr.Len())
		}
		if _, ok := tr.Root(); ok {
			t.Error("Root of empty trace")
		}
		for range tr.Spans() {
			t.Error("span in empty trace")
		}
		mustPanic(t, "out of range", func() { tr.Span(0) })
	})
}

func TestFragment(t *testing.T) {
	with(t, encodeWith(encodeOpts{flags: abiv1.TraceFlagFragment}, fixture()), func(tr *rule.Trace) {
		if !tr.Fragment() {
			t.Error("Fragment() = false")
		}
	})
}

func TestReversedLayout(t *testing.T) {
	// The decoder must follow the header offsets, not assume an order.
	with(t, encodeWith(encodeOpts{reversed: true}, fixture()), func(tr *rule.Trace) {
		s := tr.Span(2)
		if s.Name() != "payment.charge" || s.Service() != "payments" {
			t.Errorf("Name, Service = %q, %q", s.Name(), s.Service())
		}
		if v, ok := s.Str("payment.currency"); !ok || v != "EUR" {
			t.Errorf("Str = %q, %v", v, ok)
		}
		if v, ok := tr.Span(0).ResourceStr("deployment.environment"); !ok || v != "prod" {
			t.Errorf("ResourceStr = %q, %v", v, ok)
		}
		if got := names(tr.Span(0).Children()); len(got) != 3 {
			t.Errorf("Children = %q", got)
		}
	})
}

func TestAttributes(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		root, charge := tr.Span(0), tr.Span(2)

		if v, ok := root.Str("http.method"); !ok || v != "POST" {
			t.Errorf("Str = %q, %v", v, ok)
		}
		if v, ok := root.Int("http.status_code"); !ok || v != 200 {
			t.Errorf("Int = %d, %v", v, ok)
		}
		if v, ok := charge.Int("amount_cents"); !ok || v != -1299 {
			t.Errorf("negative Int = %d, %v", v, ok)
		}
		if v, ok := root.Float("ratio"); !ok || v != 0.75 {
			t.Errorf("Float = %v, %v", v, ok)
		}
		if v, ok := root.Float("http.status_code"); !ok || v != 200 {
			t.Errorf("Float of an int = %v, %v", v, ok)
		}
		if v, ok := root.Bool("sampled"); !ok || !v {
			t.Errorf("Bool = %v, %v", v, ok)
		}

		// Wrong types and missing keys.
		if v, ok := root.Str("http.status_code"); ok || v != "" {
			t.Errorf("Str of an int = %q, %v", v, ok)
		}
		if _, ok := root.Int("http.method"); ok {
			t.Error("Int of a string")
		}
		if _, ok := root.Int("ratio"); ok {
			t.Error("Int of a double")
		}
		if _, ok := root.Float("http.method"); ok {
			t.Error("Float of a string")
		}
		if _, ok := root.Bool("http.method"); ok {
			t.Error("Bool of a string")
		}
		if _, ok := root.Str("missing"); ok {
			t.Error("Str of a missing key")
		}
		if root.HasAttr("missing") || !root.HasAttr("sampled") || !charge.HasAttr("nothing") {
			t.Error("HasAttr wrong")
		}
		if v, ok := charge.Str("payment.currency "); ok {
			t.Errorf("Str matched a different key: %q", v)
		}

		// The other value types.
		v, ok := charge.Attr("blob")
		if b, isBytes := v.Bytes(); !ok || !isBytes || string(b) != "\xde\xad" || v.Type() != rule.ValueBytes {
			t.Errorf("Bytes = %x, %v", b, isBytes)
		}
		if v.String() != "dead" {
			t.Errorf("bytes String = %q", v.String())
		}
		if _, ok := v.Str(); ok {
			t.Error("Str of bytes")
		}
		v, _ = charge.Attr("items")
		if j, ok := v.JSON(); !ok || j != `["a","b"]` || v.Type() != rule.ValueArray || v.String() != j {
			t.Errorf("array JSON = %q, %v", j, ok)
		}
		v, _ = charge.Attr("meta")
		if j, ok := v.JSON(); !ok || j != `{"k":1}` || v.Type() != rule.ValueMap {
			t.Errorf("map JSON = %q, %v", j, ok)
		}
		if _, ok := v.Str(); ok {
			t.Error("Str of a map")
		}
		v, ok = charge.Attr("nothing")
		if !ok || v.Type() != rule.ValueEmpty || v.String() != "" {
			t.Errorf("empty = %v %v", v.Type(), ok)
		}
		if _, ok := v.Bool(); ok {
			t.Error("Bool of empty")
		}
		if _, ok := v.Bytes(); ok {
			t.Error("Bytes of empty")
		}
		// The first of duplicate keys wins.
		if v, _ := charge.Str("dup"); v != "first" {
			t.Errorf("dup = %q", v)
		}

		// Value.String formatting.
		for key, want := range map[string]string{
			"payment.currency": "EUR", "amount_cents": "-1299", "fx.rate": "1.0825", "data.contains_pii": "true",
		} {
			if v, _ := charge.Attr(key); v.String() != want {
				t.Errorf("%s String = %q, want %q", key, v.String(), want)
			}
		}
		if got := rule.ValueMap.String(); got != "map" {
			t.Errorf("ValueType.String = %q", got)
		}

		// Attrs iterates in order.
		var keys []string
		for k, v := range root.Attrs() {
			keys = append(keys, k+"="+v.String())
		}
		if want := []string{"http.method=POST", "http.status_code=200", "ratio=0.75", "sampled=true"}; !slices.Equal(keys, want) {
			t.Errorf("Attrs = %q", keys)
		}
		// Span attributes are not resource attributes and vice versa.
		if _, ok := root.Str("service.name"); ok {
			t.Error("resource attribute found among span attributes")
		}
		if _, ok := root.ResourceStr("http.method"); ok {
			t.Error("span attribute found among resource attributes")
		}
	})
}

func TestResourceAttributes(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		root, auth, charge := tr.Span(0), tr.Span(1), tr.Span(2)
		for _, s := range []rule.Span{root, auth} {
			if v, ok := s.ResourceStr("service.name"); !ok || v != "frontend" {
				t.Errorf("ResourceStr = %q, %v", v, ok)
			}
			if v, ok := s.ResourceInt("host.cpus"); !ok || v != 8 {
				t.Errorf("ResourceInt = %d, %v", v, ok)
			}
			if v, ok := s.ResourceFloat("host.load"); !ok || v != 0.5 {
				t.Errorf("ResourceFloat = %v, %v", v, ok)
			}
			if v, ok := s.ResourceBool("canary"); !ok || v {
				t.Errorf("ResourceBool = %v, %v", v, ok)
			}
		}
		if _, ok := root.ResourceInt("service.name"); ok {
			t.Error("ResourceInt of a string")
		}
		if _, ok := root.ResourceBool("host.cpus"); ok {
			t.Error("ResourceBool of an int")
		}
		if v, ok := root.ResourceAttr("deployment.environment"); !ok || v.Type() != rule.ValueString {
			t.Errorf("ResourceAttr = %v, %v", v, ok)
		}
		if _, ok := charge.ResourceStr("deployment.environment"); ok {
			t.Error("payments resource has frontend's attribute")
		}
		n := 0
		for k := range root.ResourceAttrs() {
			n++
			_ = k
		}
		if n != 5 {
			t.Errorf("ResourceAttrs yielded %d", n)
		}
	})
	// A span without resource attributes.
	with(t, encode([]sp{{id: 1, name: "bare"}}), func(tr *rule.Trace) {
		s := tr.Span(0)
		if s.Service() != "" {
			t.Errorf("Service = %q", s.Service())
		}
		if _, ok := s.ResourceStr("service.name"); ok {
			t.Error("resource attribute on a bare span")
		}
	})
}

func TestReport(t *testing.T) {
	vs := run(t, encode(fixture()), func(tr *rule.Trace) {
		charge, _ := tr.FindByName("payment.charge")
		tr.Report(charge, "payment.charge without fraud.check in the same trace",
			rule.Attr("service", charge.Service()),
			rule.AttrInt("amount_cents", -1299),
			rule.AttrFloat("ratio", 0.25),
			rule.AttrBool("pii", true),
			rule.AttrBool("retried", false),
		)
		tr.Report(tr.Span(6), "")
		if tr.Reported() != 2 || tr.Dropped() != 0 {
			t.Errorf("Reported, Dropped = %d, %d", tr.Reported(), tr.Dropped())
		}
	})
	if len(vs) != 2 {
		t.Fatalf("got %d violations", len(vs))
	}
	if vs[0].Span != 2 || vs[0].Message != "payment.charge without fraud.check in the same trace" {
		t.Errorf("violation 0 = %v", vs[0])
	}
	want := "span 2: payment.charge without fraud.check in the same trace [service=payments amount_cents=-1299 ratio=0.25 pii=true retried=false]"
	if got := vs[0].String(); got != want {
		t.Errorf("String:\n got %s\nwant %s", got, want)
	}
	if v, ok := vs[0].Attr("amount_cents"); !ok || v != "-1299" {
		t.Errorf("Attr = %q, %v", v, ok)
	}
	if _, ok := vs[0].Attr("nope"); ok {
		t.Error("Attr of a missing key")
	}
	if vs[1].Span != 6 || vs[1].Message != "" || len(vs[1].Attrs) != 0 {
		t.Errorf("violation 1 = %v", vs[1])
	}
}

func TestReportBytes(t *testing.T) {
	res := rule.EvaluateWith(func(tr *rule.Trace) {
		tr.Report(tr.Span(1), "msg", rule.Attr("k", "vv"), rule.AttrInt("n", 42))
	}, encode(fixture()))
	le := func(v uint32) string { return string(binary.LittleEndian.AppendUint32(nil, v)) }
	want := le(1) + le(1) + le(3) + "msg" + le(2) + le(1) + "k" + le(2) + "vv" + le(1) + "n" + le(2) + "42"
	if string(res) != want {
		t.Errorf("result\n got %q\nwant %q", res, want)
	}
}

func TestNoViolationsIsEmpty(t *testing.T) {
	in := encode(fixture())
	// Fill the result buffer first, so an empty result is not just an
	// untouched buffer.
	rule.EvaluateWith(func(tr *rule.Trace) { tr.Report(tr.Span(0), "x") }, in)
	res := rule.EvaluateWith(func(tr *rule.Trace) {
		for s := range tr.Spans() {
			_ = s.Name()
		}
	}, in)
	if len(res) != 0 {
		t.Fatalf("result has %d bytes, want 0", len(res))
	}
	if vs, err := rule.DecodeResult(res); err != nil || vs != nil {
		t.Errorf("DecodeResult = %v, %v", vs, err)
	}
}

func TestResultReusedAcrossCalls(t *testing.T) {
	in := encode(fixture())
	for i := range 3 {
		vs := run(t, in, func(tr *rule.Trace) { tr.Report(tr.Span(i), "m") })
		if len(vs) != 1 || vs[0].Span != i {
			t.Fatalf("call %d: %v", i, vs)
		}
	}
}

func TestReportLimits(t *testing.T) {
	in := encode(fixture())
	long := strings.Repeat("é", abiv1.MaxMessageBytes) // 2 bytes each
	vs := run(t, in, func(tr *rule.Trace) {
		attrs := make([]rule.Attribute, 40)
		for i := range attrs {
			attrs[i] = rule.AttrInt("k", int64(i))
		}
		attrs[0] = rule.Attr(strings.Repeat("k", 300), strings.Repeat("v", 5000))
		tr.Report(tr.Span(0), "x"+long, attrs...)
		tr.Report(tr.Span(0), "bad \xff utf-8")
	})
	m := vs[0].Message
	if len(m) > abiv1.MaxMessageBytes || len(m) < abiv1.MaxMessageBytes-1 || !strings.HasPrefix(m, "xé") || !utf8Valid(m) {
		t.Errorf("message cut to %d bytes (valid %v)", len(m), utf8Valid(m))
	}
	if len(vs[0].Attrs) != abiv1.MaxViolationAttrs {
		t.Errorf("%d attributes", len(vs[0].Attrs))
	}
	if len(vs[0].Attrs[0].Key()) != abiv1.MaxKeyBytes || len(vs[0].Attrs[0].Value()) != abiv1.MaxValueBytes {
		t.Errorf("key, value lengths %d, %d", len(vs[0].Attrs[0].Key()), len(vs[0].Attrs[0].Value()))
	}
	if vs[1].Message != "bad \uFFFD utf-8" {
		t.Errorf("invalid UTF-8 message = %q", vs[1].Message)
	}

	// Too many violations.
	vs = run(t, in, func(tr *rule.Trace) {
		for range abiv1.MaxViolations + 5 {
			tr.Report(tr.Span(0), "m")
		}
		if tr.Reported() != abiv1.MaxViolations || tr.Dropped() != 5 {
			t.Errorf("Reported, Dropped = %d, %d", tr.Reported(), tr.Dropped())
		}
	})
	if len(vs) != abiv1.MaxViolations {
		t.Errorf("%d violations", len(vs))
	}

	// Too many bytes.
	var res []byte
	res = rule.EvaluateWith(func(tr *rule.Trace) {
		msg := strings.Repeat("m", abiv1.MaxMessageBytes)
		for range 1000 {
			tr.Report(tr.Span(0), msg, rule.Attr("k", msg))
		}
		if tr.Dropped() == 0 {
			t.Error("nothing dropped")
		}
	}, in)
	if len(res) > abiv1.MaxResultBytes || len(res) < abiv1.MaxResultBytes-2*(abiv1.MaxMessageBytes+32) {
		t.Errorf("result of %d bytes", len(res))
	}
	if _, err := rule.DecodeResult(res); err != nil {
		t.Error(err)
	}
}

func utf8Valid(s string) bool {
	return !strings.ContainsRune(s, '\uFFFD') && strings.ToValidUTF8(s, "?") == s
}

func TestReportZeroSpan(t *testing.T) {
	with(t, encode(fixture()), func(tr *rule.Trace) {
		mustPanic(t, "zero Span", func() { tr.Report(rule.Span{}, "m") })
	})
}

func TestSpanAfterEvaluation(t *testing.T) {
	var kept rule.Span
	in := encode(fixture())
	with(t, in, func(tr *rule.Trace) { kept = tr.Span(3) })
	mustPanic(t, "outside the evaluation", func() { kept.Name() })
	// Nor may it be used in a later evaluation, where index 3 exists again.
	with(t, in, func(tr *rule.Trace) {
		mustPanic(t, "outside the evaluation", func() { kept.Name() })
		mustPanic(t, "outside the evaluation", func() { tr.Report(kept, "stale") })
		if tr.Span(3).Name() != "SELECT orders" {
			t.Error("fresh span broken")
		}
	})
}

func TestNilInput(t *testing.T) {
	mustPanic(t, "shorter than the header", func() {
		rule.EvaluateWith(func(*rule.Trace) { t.Error("check ran") }, nil)
	})
}

func TestDecodeResultErrors(t *testing.T) {
	le := func(v uint32) string { return string(binary.LittleEndian.AppendUint32(nil, v)) }
	for name, rec := range map[string]string{
		"short count":       "\x01",
		"missing violation": le(1),
		"message past end":  le(1) + le(0) + le(10) + "abc",
		"trailing bytes":    le(1) + le(0) + le(0) + le(0) + "x",
		"too many":          le(abiv1.MaxViolations + 1),
		"long message":      le(1) + le(0) + le(abiv1.MaxMessageBytes+1) + strings.Repeat("m", abiv1.MaxMessageBytes+1) + le(0),
		"too many attrs":    le(1) + le(0) + le(0) + le(abiv1.MaxViolationAttrs+1),
		"attr past end":     le(1) + le(0) + le(0) + le(1) + le(1) + "k" + le(5) + "v",
	} {
		if _, err := rule.DecodeResult([]byte(rec)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFloatSpecials(t *testing.T) {
	in := encode([]sp{{id: 1, name: "n", attrs: []kv{F("inf", math.Inf(1)), F("nan", math.NaN())}}})
	with(t, in, func(tr *rule.Trace) {
		if v, ok := tr.Span(0).Float("inf"); !ok || !math.IsInf(v, 1) {
			t.Errorf("inf = %v", v)
		}
		if v, ok := tr.Span(0).Float("nan"); !ok || !math.IsNaN(v) {
			t.Errorf("nan = %v", v)
		}
	})
}

func TestRootIsATrueRoot(t *testing.T) {
	// An orphan that starts first is not the root; a trace of orphans has
	// none.
	spans := []sp{
		{id: 5, parent: 99, name: "orphan", start: 0, end: 10},
		{id: 1, name: "real-root", start: 5, end: 50},
	}
	with(t, encode(spans), func(tr *rule.Trace) {
		if r, ok := tr.Root(); !ok || r.Name() != "real-root" {
			t.Errorf("Root = %v, %v", r.Index(), ok)
		}
	})
	with(t, encode(spans[:1]), func(tr *rule.Trace) {
		if _, ok := tr.Root(); ok {
			t.Error("a trace of orphans has a root")
		}
	})
}
