package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/violations"
)

var benchSeverities = []string{"CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"}

// BenchViolation is violation i of a benchmark, of realistic size (about
// 450 bytes of JSON): one of 50 rules, one of 5 severities, two violations
// per trace.
func BenchViolation(i int, at time.Time) violations.Violation {
	return violations.Violation{
		ID:          fmt.Sprintf("01J%023d", i),
		RuleID:      fmt.Sprintf("rule-%02d", i%50),
		RuleName:    fmt.Sprintf("Rule number %d", i%50),
		RuleVersion: 3,
		Severity:    benchSeverities[(i/7)%5],
		TraceID:     fmt.Sprintf("%032x", i/2),
		SpanID:      fmt.Sprintf("%016x", i),
		Message:     "payment span without a preceding fraud check span in the same trace",
		Attributes:  map[string]string{"http.status_code": "500", "payment.amount": "129.90"},
		Metadata:    map[string]string{"service_name": "checkout", "span_name": "POST /payments/authorize"},
		Trigger:     "root",
		Timestamp:   at,
	}
}

// Appender is what BenchAppendLatency needs of a store.
type Appender interface {
	AppendViolations(ctx context.Context, vs []violations.Violation) error
}

// BenchAppendLatency appends as the service does: workers each append one
// two-violation batch per completed trace, pausing up to 2×pause between
// batches, numbering violations from first. ns/op is meaningless here; it
// reports the latency of an append (p50, p99, max, over at least 3000
// appends) and batches per second, and returns how many violations it
// added.
func BenchAppendLatency(b *testing.B, s Appender, first, workers int, pause time.Duration) int {
	count := max(b.N, 3000)
	lat := make([]time.Duration, count)
	var k atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				i := int(k.Add(1)) - 1
				if i >= count {
					return
				}
				batch := []violations.Violation{BenchViolation(first+2*i, time.Now()), BenchViolation(first+2*i+1, time.Now())}
				t0 := time.Now()
				if err := s.AppendViolations(context.Background(), batch); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
				if pause > 0 {
					time.Sleep(time.Duration(r.Int64N(int64(2 * pause))))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := b.Elapsed()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(count)/elapsed.Seconds(), "batches/s")
	return 2 * count
}
