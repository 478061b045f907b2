package redisstore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

// benchViolations is how many violations BenchmarkStore100k stores; set
// BETRACE_BENCH_VIOLATIONS to change it.
func benchViolations() int {
	if n, err := strconv.Atoi(os.Getenv("BETRACE_BENCH_VIOLATIONS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// usedMemory is Redis's used_memory in bytes.
func usedMemory(b *testing.B, srv *redistest.Server) int64 {
	info, err := srv.Client().Info(bg, "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO")
	return 0
}

// BenchmarkStore100k measures queries and appends over a store holding
// 100,000 violations spread over the last six days, at its count limit,
// on a local redis-server.
//
//	go test -run '^$' -bench Store100k -benchtime 200x ./host/store/redisstore/
func BenchmarkStore100k(b *testing.B) {
	n := benchViolations()
	srv := redistest.Start(b)
	mem0 := usedMemory(b, srv)
	s := openT(b, srv, Config{MaxViolations: n}, nil)
	now := time.Now().UTC()
	span := 6 * 24 * time.Hour
	first := now.Add(-span)
	step := span / time.Duration(n)
	began := time.Now()
	const batch = 1000
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
	mem := usedMemory(b, srv) - mem0
	stored, _, _ := counts(b, srv, s)
	for _, k := range []string{s.k.violations, s.k.data, s.k.index} {
		u, err := srv.Client().MemoryUsage(bg, k, 0).Result()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: %d MB, %d bytes a violation", k, u>>20, u/int64(stored))
	}
	b.Logf("stored %d violations in %v (%.0f/s); Redis memory +%d MB, %d bytes a violation (dedup keys included)",
		stored, fill.Round(time.Millisecond), float64(n)/fill.Seconds(), mem>>20, mem/int64(n))

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
		{"ByRuleSeverity", violations.Query{RuleID: "rule-03", Severity: "LOW", Limit: 100}},
		{"ByRuleSeverityDay", violations.Query{RuleID: "rule-03", Severity: "LOW", Start: now.Add(-3 * 24 * time.Hour), End: now.Add(-2 * 24 * time.Hour), Limit: 100}},
		{"BySeverityRuleTrace", violations.Query{Severity: "HIGH", RuleID: "rule-17", TraceID: trace, Limit: 100}},
		{"Unfiltered1000", violations.Query{Limit: 1000}},
	}
	for _, c := range queries {
		b.Run("Query/"+c.name, func(b *testing.B) {
			var p violations.Page
			var err error
			resetStats(b, srv)
			for b.Loop() {
				if p, err = s.QueryViolations(bg, c.q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.TotalCount), "matches")
			b.ReportMetric(scriptMicros(b, srv), "redis-µs/op")
		})
	}
	// A page deep in the results.
	for _, q := range []violations.Query{{RuleID: "rule-17", Limit: 100}, {RuleID: "rule-17", Severity: "LOW", Limit: 10}} {
		name := "Query/ByRuleDeepCursor"
		if q.Severity != "" {
			name = "Query/ByRuleSeverityDeepCursor"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < 15; i++ {
				p, err := s.QueryViolations(bg, q)
				if err != nil {
					b.Fatal(err)
				}
				q.Cursor = p.NextCursor
			}
			resetStats(b, srv)
			for b.Loop() {
				if _, err := s.QueryViolations(bg, q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(scriptMicros(b, srv), "redis-µs/op")
		})
	}

	// Appends as the service makes them; every append also trims as many
	// old violations as it adds, since the store is at its limit.
	next := n
	appendLatency := func(b *testing.B, workers int, pause time.Duration) {
		next += storetest.BenchAppendLatency(b, s, next, workers, pause)
	}
	b.Run("Append/8workers-paced", func(b *testing.B) {
		resetStats(b, srv)
		appendLatency(b, 8, 15*time.Millisecond)
		b.ReportMetric(scriptMicros(b, srv), "redis-µs/op")
	})
	b.Run("Append/16workers-saturated", func(b *testing.B) {
		resetStats(b, srv)
		appendLatency(b, 16, 0)
		b.ReportMetric(scriptMicros(b, srv), "redis-µs/op")
	})
	stored, _, _ = counts(b, srv, s)
	b.Logf("trimmed %d while appending; %d stored", s.Trimmed(), stored)
}

// resetStats clears Redis's per-command statistics.
func resetStats(b *testing.B, srv *redistest.Server) {
	if err := srv.Client().ConfigResetStat(bg).Err(); err != nil {
		b.Fatal(err)
	}
}

// scriptMicros is the mean time Redis spent in one script call since
// resetStats: how long each call kept the server from serving anyone else.
func scriptMicros(b *testing.B, srv *redistest.Server) float64 {
	info, err := srv.Client().Info(bg, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
					x, _ := strconv.ParseFloat(v, 64)
					return x
				}
			}
		}
	}
	return 0
}
