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
	rs := loadRules(t, h, testrules.Real, rules.DefaultConfig())
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
