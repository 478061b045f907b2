package dsl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

func testHost(tb testing.TB) *sandbox.Host {
	tb.Helper()
	h, err := sandbox.NewHost(sandbox.HostConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// compileLoad compiles src and admits it into a sandbox with default limits.
func compileLoad(tb testing.TB, h *sandbox.Host, src string) (*Rule, *sandbox.Sandbox, []byte) {
	tb.Helper()
	r, err := Parse(src)
	if err != nil {
		tb.Fatalf("parse %q: %v", src, err)
	}
	mod, err := Compile(r, Meta{ID: "r1", Name: "test rule", Severity: "HIGH", Description: "compiled"})
	if err != nil {
		tb.Fatalf("compile %q: %v", src, err)
	}
	s, err := h.Load(context.Background(), mod, sandbox.Limits{})
	if err != nil {
		tb.Fatalf("load %q: %v", src, err)
	}
	tb.Cleanup(func() { s.Close(context.Background()) })
	return r, s, mod
}

// compiledVerdict runs spans through the compiled rule and maps the result
// back to a Verdict on the input slice.
func compiledVerdict(tb testing.TB, s *sandbox.Sandbox, spans []traces.Span) Verdict {
	tb.Helper()
	return compiledVerdictFlags(tb, s, spans, 0)
}

// compiledVerdictFlags is compiledVerdict with the trace flags set.
func compiledVerdictFlags(tb testing.TB, s *sandbox.Sandbox, spans []traces.Span, flags uint32) Verdict {
	tb.Helper()
	enc := abi.NewEncoder()
	buf := enc.Encode(spans, flags)
	res, err := s.Evaluate(context.Background(), buf, uint32(len(spans)), nil)
	if err != nil {
		tb.Fatalf("evaluate: %v", err)
	}
	switch len(res.Violations) {
	case 0:
		return Verdict{SpanIndex: -1}
	case 1:
		v := res.Violations[0]
		if len(v.Attrs) != 0 {
			tb.Fatalf("violation has attributes: %v", v.Attrs)
		}
		return Verdict{Fired: true, SpanIndex: enc.SpanAt(v.SpanIndex), Message: v.Message}
	}
	tb.Fatalf("%d violations, want at most 1", len(res.Violations))
	return Verdict{}
}

// checkSame requires the compiled rule and the interpreter to agree on
// spans, both as a whole trace and as a fragment.
func checkSame(tb testing.TB, r *Rule, s *sandbox.Sandbox, spans []traces.Span) {
	tb.Helper()
	for _, flags := range []uint32{0, abiv1.TraceFlagFragment} {
		want, err := EvaluateTrace(r, spans, flags)
		if err != nil {
			tb.Fatal(err)
		}
		if got := compiledVerdictFlags(tb, s, spans, flags); got != want {
			tb.Errorf("rule %s\ntrace %s (flags %#x)\ncompiled    %+v\ninterpreted %+v", r, traceString(spans), flags, got, want)
		}
	}
}

func traceString(spans []traces.Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "%s@%d%v ", s.Name, s.StartUnixNano, s.Attrs)
	}
	return b.String()
}

func strAttr(k, v string, t uint8) traces.Attr { return traces.Attr{Key: k, Type: t, Str: v} }

// compileTraces covers names, ties in start time, every attribute type,
// numbers as text and resource attributes.
func compileTraces() [][]traces.Span {
	res := []traces.Attr{sAttr("deployment.environment", "prod"), iAttr("host.cpus", 8)}
	withRes := func(s traces.Span) traces.Span { s.ResourceAttrs = res; return s }
	return [][]traces.Span{
		nil,
		{sp("checkout", 1)},
		{sp("payment.charge", 10), sp("checkout", 1)},
		{sp("payment.charge", 10), sp("fraud.check", 5), sp("checkout", 1)},
		{sp("checkout", 1), sp("payment.charge", 3), sp("payment.charge", 2), sp("fraud.check", 4)},
		{sp("payment.charge", 5), sp("payment.charge", 5), sp("payment.charge", 5)},
		{sp("fraud.check", 7), sp("audit", 1)},
		{sp("payment.charge", 2, iAttr("amount", 1500), sAttr("currency", "USD"), bAttr("vip", true)),
			sp("payment.charge", 1, iAttr("amount", 20), sAttr("currency", "EUR"), bAttr("vip", false))},
		{sp("payment.charge", 1, fAttr("amount", 999.5), sAttr("vip", "true")), sp("fraud.check", 2, sAttr("result", "ok"))},
		{sp("payment.charge", 1, fAttr("amount", math.NaN()), sAttr("currency", "1000")),
			sp("payment.charge", 2, sAttr("amount", " 1000 "), strAttr("currency", "USD", abiv1.ValueBytes))},
		{sp("payment.charge", 3, sAttr("amount", "1e3"), traces.Attr{Key: "vip", Type: abiv1.ValueEmpty}),
			sp("payment.charge", 4, sAttr("amount", "-0.5"), sAttr("currency", "usd")),
			sp("payment.charge", 5, sAttr("amount", "abc")), sp("payment.charge", 6, sAttr("amount", "12.50")),
			sp("payment.charge", 7, sAttr("amount", "0x10")), sp("payment.charge", 8, sAttr("amount", "1000.000"))},
		{withRes(sp("payment.charge", 1, iAttr("amount", -7))), withRes(sp("db.query", 2, iAttr("db.rows", 3))),
			sp("db.query", 3, iAttr("db.rows", 250)), withRes(sp("fraud.check", 4, bAttr("passed", false)))},
		intrinsicTrace(),
		{sp("db.query", 1, fAttr("db.rows", 100)), sp("db.query", 2, fAttr("db.rows", math.Inf(1))),
			sp("db.query", 3, sAttr("db.rows", "+100")), sp("db.query", 4, iAttr("db.rows", math.MaxInt64))},
	}
}

var compileRules = []string{
	`when { payment.charge } always { fraud.check }`,
	`when { payment.charge } never { fraud.check }`,
	`when { payment.charge } always { fraud.check } never { audit }`,
	`when { payment.charge and checkout } always { fraud.check or audit }`,
	`when { payment.charge or fraud.check } always { not audit }`,
	`when { not payment.charge } always { checkout }`,
	`when { not (payment.charge and not fraud.check) } never { audit }`,
	`when { checkout or (payment.charge and not audit) } always { fraud.check and not db.query }`,
	`when { payment.charge.where(amount > 1000) } always { fraud.check }`,
	`when { payment.charge.where(amount >= 1000) } always { fraud.check }`,
	`when { payment.charge.where(amount < 100) } always { fraud.check }`,
	`when { payment.charge.where(amount <= 999.5) } always { fraud.check }`,
	`when { payment.charge.where(amount == 1000) } always { fraud.check }`,
	`when { payment.charge.where(amount != 1000) } always { fraud.check }`,
	`when { payment.charge.where(amount == 20.0) } always { fraud.check }`,
	`when { payment.charge.where(amount == "1000") } always { fraud.check }`,
	`when { payment.charge.where(amount == "NaN") } always { fraud.check }`,
	`when { payment.charge.where(amount > "12.5") } always { fraud.check }`,
	`when { payment.charge.where(amount > true) } always { fraud.check }`,
	`when { payment.charge.where(amount > -1.5e1) } always { fraud.check }`,
	`when { payment.charge.where(currency == "USD") } always { fraud.check }`,
	`when { payment.charge.where(currency != "USD") } always { fraud.check }`,
	`when { payment.charge.where(currency == USD) } always { fraud.check }`,
	`when { payment.charge.where(currency == 1000) } always { fraud.check }`,
	`when { payment.charge.where(vip == true) } always { fraud.check }`,
	`when { payment.charge.where(vip == false) } always { fraud.check }`,
	`when { payment.charge.where(vip != true) } always { fraud.check }`,
	`when { payment.charge.where(vip) } always { fraud.check }`,
	`when { payment.charge.where(not vip) } always { fraud.check }`,
	`when { payment.charge.where(vip == "true") } always { fraud.check }`,
	`when { payment.charge.where(amount > 100 and currency == "USD") } always { fraud.check }`,
	`when { payment.charge.where(amount > 100 or vip) } always { fraud.check.where(result == ok) }`,
	`when { payment.charge.where(amount > 10).where(currency == EUR) } always { fraud.check }`,
	`when { payment.charge.where(resource.deployment.environment == prod) } always { fraud.check.where(not passed) }`,
	`when { db.query.where(resource.host.cpus >= 8) } never { db.query.where(db.rows > 100) }`,
	`when { db.query.where(db.rows < 1e300) } never { db.query.where(db.rows == 100) }`,
	`when { db.query.where(db.rows > 9223372036854775806) } always { fraud.check }`,
	`when { count(payment.charge) > 1 } always { fraud.check }`,
	`when { count(payment.charge) >= 3 } never { fraud.check }`,
	`when { count(payment.charge) == 0 } always { checkout }`,
	`when { count(payment.charge) != 2 } always { fraud.check }`,
	`when { count(payment.charge) < 2 and checkout } always { fraud.check }`,
	`when { count(payment.charge) <= 1 or not checkout } always { fraud.check }`,
	`when { count(payment.charge) > count(fraud.check) } always { audit }`,
	`when { count(db.query.where(db.rows > 100)) >= 1 } always { fraud.check }`,
	`when { not payment.charge and count(fraud.check) > 0 } always { checkout }`,
	`when { payment.charge.where(currency in [USD, EUR]) } always { fraud.check }`,
	`when { payment.charge.where(amount in [1000, "12.5", 20, true]) } always { fraud.check }`,
	`when { payment.charge.where(vip in [true, "x"]) } never { audit }`,
	`when { payment.charge.where(amount in []) } always { fraud.check }`,
	`when { payment.charge.where(span.duration > 2ms) } always { fraud.check }`,
	`when { payment.charge.where(span.duration <= 1ms) } always { fraud.check }`,
	`when { payment.charge.where(span.duration == 1ms or span.duration in [5s, 1ms]) } always { fraud.check }`,
	`when { payment.charge.where(span.duration != 1ms) } always { fraud.check }`,
	`when { payment.charge.where(span.status == error) } always { fraud.check }`,
	`when { payment.charge.where(span.status != ok) } always { fraud.check }`,
	`when { payment.charge.where(span.status in [ok, unset]) } always { fraud.check }`,
	`when { payment.charge.where(span.kind == server) } always { fraud.check }`,
	`when { payment.charge.where(span.kind != client and span.kind in [internal, consumer]) } always { fraud.check }`,
	`when { payment.charge.where(span.name == "payment.charge") } always { fraud.check.where(span.service == fraud) }`,
	`when { payment.charge.where(span.service != checkout) } always { fraud.check }`,
	`when { payment.charge.where(span.service > 10) } always { fraud.check }`,
	`when { payment.charge.where(span.service == 1000) } always { fraud.check }`,
	`when { payment.charge.where(currency matches "^U") } always { fraud.check }`,
	`when { payment.charge.where(currency matches "(?i)^usd$") } always { fraud.check }`,
	`when { payment.charge.where(amount matches "^1") } always { fraud.check }`,
	`when { payment.charge.where(amount matches "\\.|NaN") } always { fraud.check }`,
	`when { payment.charge.where(vip matches "^t") } always { fraud.check }`,
	`when { payment.charge.where(not (currency matches "S")) } always { fraud.check }`,
	`when { payment.charge.where(currency contains "S") } always { fraud.check }`,
	`when { payment.charge.where(amount contains "00" or vip contains "ru") } always { fraud.check }`,
	`when { payment.charge.where(resource.deployment.environment contains "pro") } never { fraud.check }`,
	`when { db.query.where(resource.host.cpus matches "^8$") } never { db.query.where(db.rows contains "5") }`,
	`when { db.query.where(db.rows contains "+" or db.rows matches "^1e") } always { audit }`,
	`when { payment.charge.where(span.name matches "^pay") } always { fraud.check }`,
	`when { payment.charge.where(span.service contains "0" and span.service matches "^[0-9]+$") } never { fraud.check.where(span.name contains "fraud") }`,
	`when { payment.charge.where(amount > 100 and currency matches "^US") } always { fraud.check.where(result contains "o") }`,
}

func TestCompileMatchesInterpreter(t *testing.T) {
	h := testHost(t)
	trs := compileTraces()
	for _, src := range compileRules {
		t.Run(src, func(t *testing.T) {
			r, s, _ := compileLoad(t, h, src)
			for _, spans := range trs {
				checkSame(t, r, s, spans)
			}
		})
	}
}

func TestCompilePaymentFraudCheck(t *testing.T) {
	h := testHost(t)
	r, s, _ := compileLoad(t, h, `when { payment.charge } always { fraud.check }`)
	violating := []traces.Span{sp("checkout", 1), sp("payment.charge", 20), sp("payment.charge", 10)}
	got := compiledVerdict(t, s, violating)
	want := Verdict{Fired: true, SpanIndex: 2, Message: "payment.charge without fraud.check"}
	if got != want {
		t.Errorf("violating trace: got %+v, want %+v", got, want)
	}
	checkSame(t, r, s, violating)
	clean := append(violating, sp("fraud.check", 30))
	if got := compiledVerdict(t, s, clean); got.Fired {
		t.Errorf("clean trace fired: %+v", got)
	}
	checkSame(t, r, s, clean)
}

// TestCompileFragment: on a fragment a compiled rule reports only what the
// whole trace would be reported for whatever spans are missing: a `never`
// that held on the spans present, under a `when` and `never` that more
// spans cannot undo; never a failed `always`, a negation or a count that
// more spans could change.
func TestCompileFragment(t *testing.T) {
	h := testHost(t)
	charged := []traces.Span{sp("checkout", 1), sp("payment.charge", 2), sp("debug.dump", 3)}
	cases := []struct {
		src  string
		want bool // fires on charged as a fragment
	}{
		{`when { payment.charge } always { fraud.check }`, false},
		{`when { payment.charge } never { debug.dump }`, true},
		{`when { payment.charge } always { fraud.check } never { debug.dump }`, true},
		{`when { payment.charge and count(checkout) >= 1 } never { debug.dump or audit }`, true},
		{`when { payment.charge.where(not "feature.flag") } never { debug.dump }`, true},
		{`when { not fraud.check } never { debug.dump }`, false},
		{`when { payment.charge } never { debug.dump and not audit }`, false},
		{`when { count(payment.charge) < 2 } never { debug.dump }`, false},
		{`when { count(payment.charge) != count(fraud.check) } never { debug.dump }`, false},
	}
	for _, tc := range cases {
		t.Run(tc.src, func(t *testing.T) {
			r, s, _ := compileLoad(t, h, tc.src)
			whole := compiledVerdict(t, s, charged)
			if !whole.Fired {
				t.Fatalf("does not fire on the whole trace: %+v", whole)
			}
			got := compiledVerdictFlags(t, s, charged, abiv1.TraceFlagFragment)
			if got.Fired != tc.want {
				t.Fatalf("on a fragment: fired %v (%+v), want %v", got.Fired, got, tc.want)
			}
			if got.Fired && (got.SpanIndex != whole.SpanIndex || !strings.Contains(got.Message, " with ") || strings.Contains(got.Message, "without")) {
				t.Fatalf("on a fragment: %+v; want the never verdict on the whole trace's span %d", got, whole.SpanIndex)
			}
			checkSame(t, r, s, charged)
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	bogus := &Rule{When: &Exists{Pattern: &Pattern{Name: "a", Filters: []Expr{&Truthy{Attr: Attr{Kind: AttrIntrinsic, Key: "bogus"}}}}},
		Always: &Exists{Pattern: &Pattern{Name: "b"}}}
	if _, err := Compile(bogus, Meta{}); !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "span.bogus") {
		t.Errorf("unknown intrinsic: got %v", err)
	}
	ok, _ := Parse(`when { a } always { b }`)
	if _, err := Compile(ok, Meta{Severity: "urgent"}); err == nil {
		t.Error("bad severity accepted")
	}
	if _, err := Compile(ok, Meta{Description: strings.Repeat("d", abiv1.MaxValueBytes+1)}); err == nil {
		t.Error("oversized description accepted")
	}
	if _, err := Compile(&Rule{}, Meta{}); err == nil {
		t.Error("empty rule compiled")
	}
}

func TestCompileModule(t *testing.T) {
	h := testHost(t)
	src := `when { payment.charge } always { fraud.check }`
	r, s, mod := compileLoad(t, h, src)
	if len(mod) > 64<<10 {
		t.Errorf("module is %d bytes, more than 64 KiB", len(mod))
	}
	t.Logf("module size: %d bytes", len(mod))
	d := s.Description()
	if d.ID != "r1" || d.Name != "test rule" || d.Severity != "HIGH" || d.Description != "compiled" {
		t.Errorf("description: %+v", d)
	}
	if !bytes.HasSuffix(mod, append(wName(abiv1.CustomSectionSource), r.String()...)) || !bytes.Contains(mod, []byte(r.String())) {
		t.Error("no betrace.source custom section with the source")
	}
	// a large trace makes betrace_input grow memory
	spans := make([]traces.Span, 5000)
	for i := range spans {
		spans[i] = sp("payment.charge", uint64(i), sAttr("k", strings.Repeat("v", 40)))
	}
	if v := compiledVerdict(t, s, spans); !v.Fired || v.SpanIndex != 0 {
		t.Errorf("large trace: %+v", v)
	}
}

// intrinsicTrace varies kind, status, service and duration (including an
// end before the start and unknown codes).
func intrinsicTrace() []traces.Span {
	mk := func(start, dur uint64, kind, status uint8, service string) traces.Span {
		s := sp("payment.charge", start)
		s.EndUnixNano = start + dur
		s.Kind, s.StatusCode, s.Service = kind, status, service
		return s
	}
	back := mk(9, 0, abiv1.KindServer, abiv1.StatusOK, "checkout")
	back.EndUnixNano = 1
	return []traces.Span{
		mk(5, 1e6, abiv1.KindServer, abiv1.StatusError, "checkout"),
		mk(4, 3e6, abiv1.KindClient, abiv1.StatusOK, "10"),
		mk(6, 5e9, 9, 7, "1000"),
		mk(3, 0, abiv1.KindInternal, abiv1.StatusUnset, "true"),
		mk(2, 1e6, abiv1.KindConsumer, abiv1.StatusError, ""),
		back,
		{Name: "fraud.check", Service: "fraud", StartUnixNano: 1, EndUnixNano: math.MaxUint64},
	}
}

func TestCompileImportsOnlyWhatItUses(t *testing.T) {
	rt := wazero.NewRuntime(context.Background())
	defer rt.Close(context.Background())
	for src, want := range map[string][]string{
		`when { payment.charge } always { fraud.check }`:                                         nil,
		`when { payment.charge.where(currency == "USD") } always { fraud.check }`:                nil,
		`when { payment.charge.where(span.duration > 2ms) } always { fraud.check }`:              nil,
		`when { payment.charge.where(amount > 1000) } always { fraud.check }`:                    {abiv1.HostParseNumber},
		`when { payment.charge.where(currency matches "^U") } always { fraud.check }`:            {abiv1.HostRegexMatch},
		`when { a.where(x contains "1" and y matches "2" and z in [3]) } always { fraud.check }`: {abiv1.HostTextContains, abiv1.HostRegexMatch, abiv1.HostParseNumber},
	} {
		r, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		mod, err := Compile(r, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		cm, err := rt.CompileModule(context.Background(), mod)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		var got []string
		for _, f := range cm.ImportedFunctions() {
			m, name, _ := f.Import()
			got = append(got, m+"."+name)
		}
		var wantQ []string
		for _, w := range want {
			wantQ = append(wantQ, abiv1.HostModule+"."+w)
		}
		if !slices.Equal(got, wantQ) {
			t.Errorf("%s imports %v, want %v", src, got, wantQ)
		}
	}
}

// A rule longer than a violation message may be still compiles: the
// message is cut at a character boundary, the same way in both engines.
func TestCompileLongRuleMessage(t *testing.T) {
	items := make([]string, 400)
	for i := range items {
		items[i] = fmt.Sprintf(`"währung-%03d"`, i)
	}
	src := `when { payment.charge.where(currency in [` + strings.Join(items, ", ") + `, USD]) } always { fraud.check }`
	h := testHost(t)
	r, s, _ := compileLoad(t, h, src)
	spans := []traces.Span{sp("payment.charge", 1, sAttr("currency", "USD"))}
	got := compiledVerdict(t, s, spans)
	if !got.Fired || len(got.Message) > abiv1.MaxMessageBytes || !strings.HasSuffix(got.Message, "…") {
		t.Fatalf("verdict %+v: want a violation with a message cut to %d bytes", got, abiv1.MaxMessageBytes)
	}
	checkSame(t, r, s, spans)
}
