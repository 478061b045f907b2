package recorder

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/store/embedded"
	"github.com/betracehq/betrace/host/violations"
)

// BenchmarkRecordSlowStore: what evaluation pays per trace when every
// store write takes 20 ms. Record must stay in the microseconds; once the
// buffer is full it drops (counted) rather than waits.
func BenchmarkRecordSlowStore(b *testing.B) {
	write := func(ctx context.Context, vs []violations.Violation) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	rec, err := New(Config{}, write, nil, Settings{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	rec.Start(context.Background())
	defer rec.Shutdown(context.Background())
	vs := trace(2)
	dropped := 0
	b.ResetTimer()
	for b.Loop() {
		if err := rec.Record(context.Background(), time.Now(), vs); err != nil {
			dropped++
		}
	}
	b.StopTimer()
	_, held := rec.Held()
	b.ReportMetric(float64(held), "held_violations")
	b.ReportMetric(float64(dropped)/float64(b.N), "dropped/op")
}

// BenchmarkRecordToStored measures, on the real embedded store in a
// temporary directory, how long a violation waits between Record and the
// end of its fsynced write: what kill -9 can lose while the store is
// healthy. Eight goroutines record traces of two violations.
func BenchmarkRecordToStored(b *testing.B) {
	st, err := embedded.Open(embedded.Config{Dir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var mu sync.Mutex
	var waits []time.Duration
	rec, err := New(Config{}, st.AppendViolations, nil, Settings{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	rec.export = func(vs []violations.Violation) {
		now := time.Now()
		mu.Lock()
		for i := range vs {
			waits = append(waits, now.Sub(vs[i].Timestamp))
		}
		mu.Unlock()
	}
	rec.Start(context.Background())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			vs := trace(2)
			now := time.Now()
			for i := range vs {
				vs[i].Timestamp = now
			}
			rec.Record(context.Background(), now, vs)
			time.Sleep(time.Millisecond) // a worker's evaluation time
		}
	})
	rec.Shutdown(context.Background())
	b.StopTimer()
	slices.Sort(waits)
	if len(waits) > 0 {
		b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "p99_ms")
		b.ReportMetric(float64(waits[len(waits)-1].Microseconds())/1000, "max_ms")
	}
}

// BenchmarkStormStored records a storm of one rule (traces of two
// violations, as fast as the recorder takes them) into the real embedded
// store and reports violations found per second end to end, with the
// default sampling and with every violation kept.
func BenchmarkStormStored(b *testing.B) {
	for _, c := range []struct {
		name string
		rate int
	}{{"sampled", DefaultSampleRate}, {"keep-all", -1}} {
		b.Run(c.name, func(b *testing.B) {
			st, err := embedded.Open(embedded.Config{Dir: b.TempDir()}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			rec, err := New(Config{SampleRate: c.rate}, st.AppendViolations, nil,
				Settings{Registerer: prometheus.NewRegistry(), Count: st.CountViolations})
			if err != nil {
				b.Fatal(err)
			}
			rec.Start(context.Background())
			began := time.Now()
			b.ResetTimer()
			for b.Loop() {
				for rec.Record(context.Background(), time.Time{}, trace(2)) != nil {
					time.Sleep(time.Millisecond) // buffer full: wait for the store, as ingest would
				}
			}
			if err := rec.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(2*b.N)/time.Since(began).Seconds(), "violations/s")
			b.ReportMetric(float64(st.ViolationCount())/float64(2*b.N), "kept/found")
		})
	}
}
