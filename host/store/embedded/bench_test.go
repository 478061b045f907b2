package embedded

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

// benchViolations is how many violations BenchmarkStore1M stores; set
// BETRACE_BENCH_VIOLATIONS for a quicker run.
func benchViolations() int {
	if n, err := strconv.Atoi(os.Getenv("BETRACE_BENCH_VIOLATIONS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// BenchmarkStore1M measures queries and appends over a store holding a
// million violations spread over the last six days, at its count limit.
//
//	go test -run '^$' -bench Store1M -benchtime 200x ./host/store/embedded/
func BenchmarkStore1M(b *testing.B) {
	n := benchViolations()
	dir := b.TempDir()
	s, err := Open(Config{Dir: dir, MaxViolations: n}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { s.Close() }()
	now := time.Now().UTC()
	span := 6 * 24 * time.Hour
	first := now.Add(-span)
	step := span / time.Duration(n)
	began := time.Now()
	const batch = 5000
	vs := make([]violations.Violation, 0, batch)
	for i := 0; i < n; i++ {
		vs = append(vs, storetest.BenchViolation(i, first.Add(time.Duration(i)*step)))
		if len(vs) == batch || i == n-1 {
			if err := s.AppendViolations(bg, vs); err != nil {
				b.Fatal(err)
			}
			vs = vs[:0]
		}
	}
	fill := time.Since(began)
	fi, _ := os.Stat(s.Path())
	b.Logf("stored %d violations in %v; database file %d MB", s.ViolationCount(), fill.Round(time.Millisecond), fi.Size()>>20)

	// Reopening rebuilds the index from every row's header.
	for i := 0; i < 3; i++ {
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if s, err = Open(Config{Dir: dir, MaxViolations: n}, nil); err != nil {
			b.Fatal(err)
		}
		b.Logf("open with %d violations (index rebuild): %v", s.ViolationCount(), time.Since(t0).Round(time.Millisecond))
	}
	b.Logf("index: %d chunks, %.1f MB", len(s.idx.chunks), float64(indexBytes(s.idx))/(1<<20))

	trace := fmt.Sprintf("%032x", n/3)
	queries := []struct {
		name string
		q    violations.Query
	}{
		{"Unfiltered", violations.Query{Limit: 100}},
		{"ByRule", violations.Query{RuleID: "rule-17", Limit: 100}},
		{"ByRuleLimit1", violations.Query{RuleID: "rule-17", Limit: 1}},
		{"BySeverity", violations.Query{Severity: "HIGH", Limit: 100}},
		{"ByTrace", violations.Query{TraceID: trace, Limit: 100}},
		{"ByTimeRange1h", violations.Query{Start: now.Add(-30 * time.Hour), End: now.Add(-29 * time.Hour), Limit: 100}},
		{"ByRuleSeverityDay", violations.Query{RuleID: "rule-03", Severity: "LOW", Start: now.Add(-3 * 24 * time.Hour), End: now.Add(-2 * 24 * time.Hour), Limit: 100}},
		{"Unfiltered1000", violations.Query{Limit: 1000}},
	}
	for _, c := range queries {
		b.Run("Query/"+c.name, func(b *testing.B) {
			var p violations.Page
			for b.Loop() {
				if p, err = s.QueryViolations(bg, c.q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.TotalCount), "matches")
		})
	}
	// A page deep in the results: the cursor is found by binary search.
	b.Run("Query/ByRuleDeepCursor", func(b *testing.B) {
		q := violations.Query{RuleID: "rule-17", Limit: 100}
		for i := 0; i < 50; i++ {
			p, err := s.QueryViolations(bg, q)
			if err != nil {
				b.Fatal(err)
			}
			q.Cursor = p.NextCursor
		}
		for b.Loop() {
			if _, err := s.QueryViolations(bg, q); err != nil {
				b.Fatal(err)
			}
		}
	})

	// Appends as the service makes them; every commit also trims as many
	// old violations as it adds, since the store is at its limit.
	next := n
	appendLatency := func(b *testing.B, workers int, pause time.Duration) {
		next += storetest.BenchAppendLatency(b, s, next, workers, pause)
	}
	b.Run("Append/8workers-paced", func(b *testing.B) { appendLatency(b, 8, 15*time.Millisecond) })
	b.Run("Append/16workers-saturated", func(b *testing.B) { appendLatency(b, 16, 0) })
	b.Logf("trimmed %d while appending; %d stored", s.Trimmed(), s.ViolationCount())
}

// indexBytes is the memory the index's columns hold.
func indexBytes(x *index) int {
	n := 0
	for _, c := range x.chunks {
		n += cap(c.ts)*8 + cap(c.rule)*4 + cap(c.sev)*4 + cap(c.flags) + cap(c.trace)*16 +
			cap(c.idOff)*4 + cap(c.idLen)*2 + cap(c.arena)
	}
	return n
}
