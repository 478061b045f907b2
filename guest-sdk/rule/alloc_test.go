package rule_test

import (
	"testing"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

// walkAll touches every accessor a typical rule uses, on every span.
func walkAll(tr *rule.Trace) {
	sink := 0
	for s := range tr.Spans() {
		sink += len(s.Name()) + len(s.Service()) + len(s.StatusMessage()) + int(s.Kind()) + int(s.Status())
		sink += int(s.Duration()) + int(s.Start()&1) + int(s.End()&1)
		if v, ok := s.Str("db.system"); ok {
			sink += len(v)
		}
		if v, ok := s.Int("http.status_code"); ok {
			sink += int(v)
		}
		if v, ok := s.Float("ratio"); ok {
			sink += int(v)
		}
		if v, ok := s.Bool("data.contains_pii"); ok && v {
			sink++
		}
		if v, ok := s.ResourceStr("deployment.environment"); ok {
			sink += len(v)
		}
		if v, ok := s.Attr("blob"); ok {
			b, _ := v.Bytes()
			sink += len(b)
		}
		for k, v := range s.Attrs() {
			sink += len(k) + int(v.Type())
		}
		if p, ok := s.Parent(); ok {
			sink += p.Index()
		}
		for c := range s.Children() {
			sink += c.Index()
		}
		for a := range s.Ancestors() {
			sink += a.Index()
		}
		for d := range s.Descendants() {
			sink += d.Index()
		}
		sink += s.Root().Index() + s.NumChildren()
		if s.HasAncestorNamed("auth.check") || s.IsRoot() || s.HasAttr("x") {
			sink++
		}
	}
	for i := range tr.Len() {
		sink += tr.Span(i).Index()
	}
	if s, ok := tr.FindByName("fraud.check"); ok {
		sink += s.Index()
	}
	for s := range tr.SpansNamed("payment.charge") {
		sink += s.Index()
	}
	if r, ok := tr.Root(); ok && tr.Fragment() {
		sink += r.Index()
	}
	if sink == 42 {
		tr.Report(tr.Span(0), "unlikely")
	}
}

func TestNoAllocations(t *testing.T) {
	in := encode(fixture())
	if n := testing.AllocsPerRun(100, func() { rule.EvaluateWith(walkAll, in) }); n != 0 {
		t.Errorf("walking every span allocates %v times per evaluation", n)
	}
	// Reporting writes into the reused result buffer: once it has grown,
	// reports do not allocate either.
	report := func(tr *rule.Trace) {
		for s := range tr.Spans() {
			tr.Report(s, "violation on "+"a span", rule.Attr("name", s.Name()), rule.AttrInt("ms", s.Duration().Milliseconds()),
				rule.AttrFloat("f", 0.5), rule.AttrBool("b", true))
		}
	}
	if n := testing.AllocsPerRun(100, func() { rule.EvaluateWith(report, in) }); n != 0 {
		t.Errorf("reporting allocates %v times per evaluation", n)
	}
}

func BenchmarkWalk(b *testing.B) {
	spans := fixture()
	for i := range 200 {
		spans = append(spans, sp{id: uint64(100 + i), parent: 3, name: "SELECT x", res: ordersDB,
			start: int64(40 + i), end: int64(41 + i), attrs: []kv{S("db.system", "postgresql"), S("db.statement", "SELECT 1")}})
	}
	in := encode(spans)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		rule.EvaluateWith(walkAll, in)
	}
}
