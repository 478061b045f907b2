package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// Caps are the retention limits by count a retention test opens its store
// with.
type Caps struct {
	MaxViolations        int
	MaxViolationsPerRule int
}

// RunRetention runs the retention and summary part of the suite. open must
// return a new, empty store with the given caps each time it is called;
// RunRetention closes it when the subtest ends.
func RunRetention(t *testing.T, open func(t *testing.T, c Caps) store.Store) {
	fresh := func(t *testing.T, c Caps) store.Store {
		t.Helper()
		s := open(t, c)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	}
	t.Run("PerRuleCap", func(t *testing.T) {
		testPerRuleCap(t, fresh(t, Caps{MaxViolations: 1000, MaxViolationsPerRule: 20}))
	})
	t.Run("TotalCapEvictsLargestRule", func(t *testing.T) {
		testTotalCap(t, fresh(t, Caps{MaxViolations: 30, MaxViolationsPerRule: 1000}))
	})
	t.Run("SummaryCountsEveryViolation", func(t *testing.T) {
		testSummary(t, fresh(t, Caps{MaxViolations: 1000, MaxViolationsPerRule: 10}))
	})
}

// storm is n violations of rule, one a second from start, appended in
// shuffled batches of 7.
func storm(t *testing.T, s store.Store, rule string, n int, start time.Time) []violations.Violation {
	t.Helper()
	vs := make([]violations.Violation, n)
	for i := range vs {
		vs[i] = Violation(fmt.Sprintf("%s-%04d", rule, i), start.Add(time.Duration(i)*time.Second), rule, "HIGH", suiteTraces[i%len(suiteTraces)])
	}
	shuffled := slices.Clone(vs)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	appendAll(t, s, shuffled, 7)
	return vs
}

// kept checks that rule's stored violations are exactly the newest want
// of vs.
func kept(t *testing.T, s store.Store, rule string, vs []violations.Violation, want int) {
	t.Helper()
	var got []string
	for _, p := range pageAll(t, s, violations.Query{RuleID: rule, Limit: 1000}, nil) {
		got = append(got, ids(p.Violations)...)
	}
	exp := expect(vs[len(vs)-want:], violations.Query{})
	if !slices.Equal(got, exp) {
		t.Errorf("rule %s keeps %d violations %v…, want its newest %d %v…", rule, len(got), head(got), want, head(exp))
	}
}

func head(ids []string) []string { return ids[:min(3, len(ids))] }

// A storming rule past its cap loses its own oldest violations; a quiet
// rule, older than all of them, keeps all of its own.
func testPerRuleCap(t *testing.T, s store.Store) {
	quiet := storm(t, s, "quiet", 10, base())
	loud := storm(t, s, "loud", 100, base().Add(time.Hour))
	kept(t, s, "quiet", quiet, 10)
	kept(t, s, "loud", loud, 20)
	if p := query(t, s, violations.Query{Limit: 1}); p.TotalCount != 30 {
		t.Errorf("TotalCount %d, want 30", p.TotalCount)
	}
}

// At the total cap the rule holding the most loses its oldest, not the
// store's oldest violations (which belong to the quiet rules).
func testTotalCap(t *testing.T, s store.Store) {
	quiet := storm(t, s, "quiet", 5, base())
	medium := storm(t, s, "medium", 10, base().Add(time.Minute))
	loud := storm(t, s, "loud", 40, base().Add(time.Hour))
	kept(t, s, "quiet", quiet, 5)
	kept(t, s, "medium", medium, 10)
	kept(t, s, "loud", loud, 15)
	// Once the loud rule is down to the medium one, both give way.
	more := storm(t, s, "quiet", 12, base().Add(2*time.Hour))
	kept(t, s, "quiet", append(quiet, more...), 10)
	kept(t, s, "medium", medium, 10)
	kept(t, s, "loud", loud, 10)
}

// Every violation appended counts, kept and counted, whatever retention
// removed since; tallies count as counted only, once per token; the same
// violations appended again count nothing more.
func testSummary(t *testing.T, s store.Store) {
	start := base().Truncate(time.Hour)
	a := storm(t, s, "rule-a", 150, start) // 2.5 minutes, over its cap of 10
	appendAll(t, s, a[140:], 3)            // a retry of what is stored: nothing new
	b := Violation("b1", start.Add(90*time.Minute), "rule-b", "LOW", suiteTraces[0])
	appendAll(t, s, []violations.Violation{b}, 1)
	tallies := []violations.Tally{
		{RuleID: "rule-a", Severity: "HIGH", Minute: start, Count: 1000},
		{RuleID: "rule-a", Severity: "HIGH", Minute: start.Add(2 * time.Minute), Count: 7},
		{RuleID: "rule-c", Severity: "CRITICAL", Minute: start.Add(61 * time.Minute), Count: 3},
	}
	for range 2 { // the second call is a retry: it counts nothing
		if err := s.CountViolations(ctx, "token-1", tallies); err != nil {
			t.Fatalf("count violations: %v", err)
		}
	}
	summarize := func(q violations.SummaryQuery) []violations.SummaryRow {
		t.Helper()
		rows, err := s.SummarizeViolations(ctx, q)
		if err != nil {
			t.Fatalf("summarize %+v: %v", q, err)
		}
		return rows
	}
	row := func(rule, sev string, at time.Time, kept, counted int64) violations.SummaryRow {
		return violations.SummaryRow{RuleID: rule, Severity: sev, Start: at.UTC(), Kept: kept, Counted: counted}
	}
	check := func(q violations.SummaryQuery, want ...violations.SummaryRow) {
		t.Helper()
		got := summarize(q)
		if !slices.Equal(got, want) {
			t.Errorf("summary %+v:\n got %+v\nwant %+v", q, got, want)
		}
	}
	check(violations.SummaryQuery{},
		row("rule-a", "HIGH", start, 60, 1060),
		row("rule-a", "HIGH", start.Add(time.Minute), 60, 60),
		row("rule-a", "HIGH", start.Add(2*time.Minute), 30, 37),
		row("rule-c", "CRITICAL", start.Add(61*time.Minute), 0, 3),
		row("rule-b", "LOW", start.Add(90*time.Minute), 1, 1))
	check(violations.SummaryQuery{Bucket: time.Hour},
		row("rule-a", "HIGH", start, 150, 1157),
		row("rule-b", "LOW", start.Add(time.Hour), 1, 1),
		row("rule-c", "CRITICAL", start.Add(time.Hour), 0, 3))
	check(violations.SummaryQuery{Bucket: time.Hour, RuleID: "rule-a", Start: start.Add(time.Minute), End: start.Add(2 * time.Minute)},
		row("rule-a", "HIGH", start, 90, 97))
	check(violations.SummaryQuery{Severity: "CRITICAL"},
		row("rule-c", "CRITICAL", start.Add(61*time.Minute), 0, 3))
	if _, err := s.SummarizeViolations(ctx, violations.SummaryQuery{Bucket: 90 * time.Second}); err == nil {
		t.Error("a bucket of 90s was accepted")
	}
	// The records themselves went by retention; the counts stay.
	if p := query(t, s, violations.Query{RuleID: "rule-a", Limit: 1}); p.TotalCount != 10 {
		t.Errorf("rule-a keeps %d violations, want its cap of 10", p.TotalCount)
	}
}
