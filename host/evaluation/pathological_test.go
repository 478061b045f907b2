package evaluation

import (
	"context"
	"testing"
	"time"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

// crafted builds a trace of n spans whose span i has parent span ID
// parent(i) (0: root). Every span is a database call under a checkout root
// and every 50th is also a violation of each real rule: PII without an
// auth.check, a slow query, a high-risk tool call approved only later. So
// the rules walk every span's ancestors, children and attributes while
// writing a realistic number of violations.
func crafted(n int, parent func(i int) int) []traces.Span {
	id := func(i int) [8]byte { return [8]byte{0: 1, 6: byte(i >> 8), 7: byte(i)} }
	db := []traces.Attr{{Key: "db.system", Type: abiv1.ValueString, Str: "postgresql"}}
	bad := []traces.Attr{
		{Key: "data.contains_pii", Type: abiv1.ValueBool, Num: 1},
		{Key: "db.system", Type: abiv1.ValueString, Str: "postgresql"},
		{Key: "tool.risk", Type: abiv1.ValueString, Str: "high"},
	}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := traces.Span{TraceID: [16]byte{1}, SpanID: id(i + 1), Name: "db.query", Service: "svc",
			StartUnixNano: uint64(i) * 1e6, EndUnixNano: uint64(i)*1e6 + 1e6, Attrs: db}
		switch {
		case i == 0:
			s.Name = "checkout"
		case i == n-1:
			s.Name = "human.approval"
		case i%50 == 0:
			s.Name, s.Attrs, s.EndUnixNano = "agent.tool_call", bad, s.StartUnixNano+5e9
		}
		if p := parent(i + 1); p != 0 {
			s.ParentSpanID = id(p)
		}
		spans[i] = s
	}
	return spans
}

// TestPathologicalTracesDoNotFaultRealRules: whatever parent links a
// sender makes up, the real rules neither panic nor run out of fuel, so a
// crafted trace cannot strike (let alone quarantine) a healthy rule. Span
// i's parent is given by the functions below (spans are numbered from 1).
func TestPathologicalTracesDoNotFaultRealRules(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	rs := loadRules(t, h, testrules.Real, rules.DefaultQuarantinePolicy())
	for _, tc := range []struct {
		name   string
		n      int
		parent func(i int) int
		broken int
	}{
		{"self-parent", 3, func(i int) int { return i }, 0},
		{"two-span cycle", 2, func(i int) int { return 3 - i }, 1},
		{"cycle of three under a root", 4, func(i int) int { return []int{0, 0, 4, 2, 3}[i] }, 1},
		{"every span its own cycle of two", 600, func(i int) int { return i + 1 - 2*(1-i%2) }, 300},
		{"chain of 3,000", 3000, func(i int) int { return i - 1 }, 0},
		{"chain of 3,000 closed into a cycle", 3000, func(i int) int { return (i+2998)%3000 + 1 }, 1},
		{"3,000 children of one span", 3000, func(i int) int { return min(i-1, 1) }, 0},
	} {
		for _, flags := range []uint32{0, abiv1.TraceFlagFragment} {
			spans := crafted(tc.n, tc.parent)
			ev := New(time.Now)
			var most uint64
			ev.Evaluate(ctx, spans, flags, rs, func(v Verdict) {
				if v.Fault != nil {
					t.Errorf("%s (flags %d): %s faulted: %v", tc.name, flags, v.Rule.ID, v.Fault)
				}
				most = max(most, v.FuelUsed)
			})
			if ev.BrokenLinks() != tc.broken {
				t.Errorf("%s: %d parent links broken, want %d", tc.name, ev.BrokenLinks(), tc.broken)
			}
			t.Logf("%s (flags %d): most fuel used by one rule %d (%.1f%% of the default budget)", tc.name, flags, most, 100*float64(most)/sandbox.DefaultFuel)
		}
	}
}

// TestCraftedFaultsDoNotQuarantineAHealthyRule: a sender can still make a
// healthy rule run out of fuel (a 3,000-span trace whose every span is a
// violation costs more than the budget to report), but three such traces
// among the rule's ordinary traffic are three error verdicts, not a
// quarantine; runaway-loop, faulting on everything, is still quarantined
// on its third trace.
func TestCraftedFaultsDoNotQuarantineAHealthyRule(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	rs := loadRules(t, h, []string{"pii-access-audit", "runaway-loop"}, rules.DefaultQuarantinePolicy())
	storm := crafted(3000, func(i int) int { return i - 1 })
	for i := range storm {
		storm[i].Attrs = []traces.Attr{{Key: "data.contains_pii", Type: abiv1.ValueBool, Num: 1}}
	}
	ordinary := testrules.Trace(t, "pii-access-audit.violating")
	ev := New(time.Now)
	faults := map[string]int{}
	runawayTraces := 0
	for round := range 6 {
		for _, spans := range [][]traces.Span{ordinary, ordinary, storm} {
			ev.Evaluate(ctx, spans, 0, rs, func(v Verdict) {
				if v.Rule.ID == "runaway-loop" {
					runawayTraces++
				}
				if v.Fault != nil {
					faults[v.Rule.ID]++
				}
				if v.Quarantine != nil && v.Rule.ID == "pii-access-audit" {
					t.Fatalf("round %d: pii-access-audit quarantined after %d faults: %+v", round, faults[v.Rule.ID], *v.Quarantine)
				}
			})
		}
	}
	if faults["pii-access-audit"] == 0 {
		t.Fatal("the crafted trace did not make pii-access-audit fault: the test no longer tests a fault")
	}
	if _, q := rs[1].Strikes.Quarantined(); !q || runawayTraces != 3 {
		t.Fatalf("runaway-loop ran %d traces, quarantined %v; want quarantined on its third", runawayTraces, q)
	}
}
