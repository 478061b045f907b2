package recorder

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/store/embedded"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

func TestSampler(t *testing.T) {
	minute := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	at := func(rule string, sec int) violations.Violation {
		return violations.Violation{RuleID: rule, Timestamp: minute.Add(time.Duration(sec) * time.Second)}
	}
	repeat := func(n int, v violations.Violation) []violations.Violation {
		out := make([]violations.Violation, n)
		for i := range out {
			out[i] = v
		}
		return out
	}
	cat := func(vss ...[]violations.Violation) (out []violations.Violation) {
		for _, vs := range vss {
			out = append(out, vs...)
		}
		return out
	}
	for _, tt := range []struct {
		name        string
		rate, every int
		in          []violations.Violation
		kept        int
	}{
		{"under the rate: all kept", 10, 5, repeat(10, at("a", 1)), 10},
		{"over the rate: 1 in every after it", 10, 5, repeat(30, at("a", 1)), 10 + 4},
		{"every 1 keeps all", 10, 1, repeat(30, at("a", 1)), 30},
		{"rate 0 samples from the first", 0, 10, repeat(100, at("a", 1)), 10},
		{"negative rate keeps everything", -1, 10, repeat(100, at("a", 1)), 100},
		{"rules have their own windows", 10, 1000, cat(repeat(20, at("a", 1)), repeat(20, at("b", 1))), 20},
		{"a new minute opens a new window", 10, 1000, cat(repeat(20, at("a", 1)), repeat(20, at("a", 61))), 20},
		{"an earlier minute counts in the current window", 10, 1000, cat(repeat(10, at("a", 61)), repeat(10, at("a", 1))), 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(tt.rate, tt.every)
			kept := 0
			for i := range tt.in {
				if s.keep(&tt.in[i]) {
					kept++
				}
			}
			if kept != tt.kept {
				t.Errorf("kept %d of %d, want %d", kept, len(tt.in), tt.kept)
			}
		})
	}
}

func TestSamplerForgetsOldWindows(t *testing.T) {
	s := newSampler(1, 1)
	old := time.Unix(0, 0)
	for i := range maxWindows {
		s.keep(&violations.Violation{RuleID: string(rune('a'+i%26)) + time.Duration(i).String(), Timestamp: old})
	}
	s.keep(&violations.Violation{RuleID: "new", Timestamp: old.Add(time.Hour)})
	if len(s.windows) != 1 {
		t.Fatalf("%d windows after a new minute past the bound, want 1", len(s.windows))
	}
}

// TestSampledViolationsAreCounted: past the rate a storming rule keeps the
// first violations of its minute and 1 in SampleEvery of the rest, a quiet
// rule keeps all of its own, and the store's summary counts every one.
func TestSampledViolationsAreCounted(t *testing.T) {
	st, err := embedded.Open(embedded.Config{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	rec, err := New(Config{SampleRate: 100, SampleEvery: 10, FlushInterval: time.Millisecond}, st.AppendViolations, nil,
		Settings{Registerer: reg, Count: st.CountViolations})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	minute := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	for i := range 1000 {
		vs := []violations.Violation{storetest.Violation(fmt.Sprintf("s%04d", i), minute.Add(time.Duration(i)*time.Millisecond), "storm", "HIGH", "0af7651916cd43dd8448eb211c80319c")}
		if i%100 == 0 {
			vs = append(vs, storetest.Violation(fmt.Sprintf("q%04d", i), minute.Add(time.Duration(i)*time.Millisecond), "quiet", "LOW", "0af7651916cd43dd8448eb211c80319c"))
		}
		if err := rec.Record(context.Background(), time.Time{}, vs); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := st.SummarizeViolations(ctx, violations.SummaryQuery{Start: minute})
	if err != nil {
		t.Fatal(err)
	}
	want := []violations.SummaryRow{
		{RuleID: "quiet", Severity: "LOW", Start: minute, Kept: 10, Counted: 10},
		{RuleID: "storm", Severity: "HIGH", Start: minute, Kept: 100 + 90, Counted: 1000},
	}
	if !slices.Equal(rows, want) {
		t.Errorf("summary %+v, want %+v", rows, want)
	}
	p, err := st.QueryViolations(ctx, violations.Query{RuleID: "storm"})
	if err != nil || p.TotalCount != 190 {
		t.Errorf("storm keeps %d records (%v), want 190", p.TotalCount, err)
	}
	if got := value(rec.m.sampled.WithLabelValues("storm")); got != 810 {
		t.Errorf("betrace_violations_sampled_total{rule_id=storm} = %v, want 810", got)
	}
}
