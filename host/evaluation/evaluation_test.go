package evaluation

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

func loadRules(t testing.TB, h *sandbox.Host, ids []string, cfg rules.QuarantinePolicy) []*registry.Rule {
	t.Helper()
	var rs []*registry.Rule
	for _, id := range ids {
		s, err := h.Load(context.Background(), testrules.Module(t, id), sandbox.Limits{})
		if err != nil {
			t.Fatalf("load %s: %v", id, err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		rs = append(rs, &registry.Rule{ID: id, Sandbox: s, Strikes: rules.NewStrikes(cfg, time.Now)})
	}
	return rs
}

func newHost(t testing.TB) *sandbox.Host {
	t.Helper()
	h, err := sandbox.NewHost(sandbox.HostConfig{CacheDir: testrules.CacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

func samples(t testing.TB) [][]traces.Span {
	var out [][]traces.Span
	for _, id := range testrules.Real {
		out = append(out, testrules.Trace(t, id+".violating"), testrules.Trace(t, id+".clean"))
	}
	return out
}

// verdicts renders what each rule said about a trace, by span name, so runs
// can be compared.
func verdicts(ev *Evaluator, spans []traces.Span, v Verdict) []string {
	var out []string
	if v.Fault != nil {
		return []string{v.Rule.ID + " fault " + v.Fault.Outcome.String()}
	}
	for _, viol := range v.Violations {
		out = append(out, fmt.Sprintf("%s %s %s", v.Rule.ID, spans[ev.SpanAt(viol.SpanIndex)].Name, viol.Message))
	}
	return out
}

// TestIsolation: while runaway-loop and memory-hog fail on every trace, the
// real rules give exactly the verdicts they give alone; the bad rules are
// quarantined after their strikes and then skipped.
func TestIsolation(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	real := loadRules(t, h, testrules.Real, rules.DefaultQuarantinePolicy())
	bad := loadRules(t, h, []string{"runaway-loop", "memory-hog"}, rules.QuarantinePolicy{Strikes: 3, Window: time.Hour})
	all := append(slices.Clone(real), bad...)
	ev := New(time.Now)

	var baseline [][]string
	for _, spans := range samples(t) {
		var got []string
		ev.Evaluate(ctx, spans, 0, real, func(v Verdict) { got = append(got, verdicts(ev, spans, v)...) })
		baseline = append(baseline, got)
	}
	violations := 0
	for _, b := range baseline {
		violations += len(b)
	}
	if violations == 0 {
		t.Fatal("the real rules found nothing in the sample traces")
	}

	faults := map[string]int{}
	quarantined := map[string]bool{}
	for round := range 3 {
		for i, spans := range samples(t) {
			var got []string
			ev.Evaluate(ctx, spans, 0, all, func(v Verdict) {
				if v.Fault != nil {
					if !slices.Contains([]string{"runaway-loop", "memory-hog"}, v.Rule.ID) {
						t.Fatalf("real rule %s faulted: %v", v.Rule.ID, v.Fault)
					}
					faults[v.Rule.ID]++
					if v.Quarantine != nil {
						quarantined[v.Rule.ID] = true
					}
					return
				}
				if v.Rule.ID == "runaway-loop" {
					t.Fatal("runaway-loop completed a call")
				}
				got = append(got, verdicts(ev, spans, v)...)
			})
			if !slices.Equal(got, baseline[i]) {
				t.Fatalf("round %d trace %d: with bad rules %q, alone %q", round, i, got, baseline[i])
			}
		}
	}
	if faults["runaway-loop"] != 3 || !quarantined["runaway-loop"] {
		t.Fatalf("runaway-loop: %d faults, quarantined %v; want exactly 3 then quarantine", faults["runaway-loop"], quarantined["runaway-loop"])
	}
	if !quarantined["memory-hog"] {
		t.Fatalf("memory-hog not quarantined after %d faults", faults["memory-hog"])
	}
	q, _ := bad[0].Strikes.Quarantined()
	if q.Reason != "fuel" || q.TraceID == "" || q.FuelUsed != sandbox.DefaultFuel || q.LastError == "" {
		t.Fatalf("runaway-loop quarantine record %+v", q)
	}
	q, _ = bad[1].Strikes.Quarantined()
	if q.Reason != "memory" {
		t.Fatalf("memory-hog quarantine record %+v", q)
	}
}

// BenchmarkIsolation reports what the five real rules cost per trace
// (real-ns/trace, their call time only): alone; beside runaway-loop and
// memory-hog failing on every trace and never quarantined (the worst case);
// and beside them under the default quarantine, which stops them after
// three strikes. Fuel, the deterministic cost, is identical in all three.
func BenchmarkIsolation(b *testing.B) {
	h := newHost(b)
	real := loadRules(b, h, testrules.Real, rules.DefaultQuarantinePolicy())
	traceSet := samples(b)
	never := rules.QuarantinePolicy{Strikes: 1000, Window: time.Nanosecond}
	for _, tc := range []struct {
		name string
		rs   func() []*registry.Rule
	}{
		{"real-only", func() []*registry.Rule { return real }},
		{"with-bad-rules-never-quarantined", func() []*registry.Rule {
			return append(slices.Clone(real), loadRules(b, h, []string{"runaway-loop", "memory-hog"}, never)...)
		}},
		{"with-bad-rules-quarantined", func() []*registry.Rule {
			return append(slices.Clone(real), loadRules(b, h, []string{"runaway-loop", "memory-hog"}, rules.DefaultQuarantinePolicy())...)
		}},
	} {
		rs := tc.rs()
		b.Run(tc.name, func(b *testing.B) {
			ev := New(time.Now)
			ctx := context.Background()
			var realTime time.Duration
			var realFuel uint64
			traces := 0
			for b.Loop() {
				for _, spans := range traceSet {
					ev.Evaluate(ctx, spans, 0, rs, func(v Verdict) {
						if v.Rule.ID != "runaway-loop" && v.Rule.ID != "memory-hog" {
							realTime += v.Duration
							realFuel += v.FuelUsed
						}
					})
					traces++
				}
			}
			b.ReportMetric(float64(realTime.Nanoseconds())/float64(traces), "real-ns/trace")
			b.ReportMetric(float64(realFuel)/float64(traces), "real-fuel/trace")
		})
	}
}
