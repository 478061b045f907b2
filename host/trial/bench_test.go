package trial

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/violations"
)

// BenchmarkLiveDuringReplay measures live evaluation (the five real rules
// on a real pool, the tape fed) alone and while replays of a runaway
// candidate (every trace burns its whole 25 M fuel, never stopped early)
// run back to back: with the replay yielding while live traces wait, as in
// the service, and without yielding, to show what the yield buys. Compare
// traces/s between the sub-benchmarks.
func BenchmarkLiveDuringReplay(b *testing.B) {
	h := newHost(b)
	var live []*evaluation.Rule
	for _, id := range testrules.Real {
		sb, err := h.Load(context.Background(), testrules.Module(b, id), sandbox.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sb.Close(context.Background()) })
		live = append(live, &evaluation.Rule{ID: id, Sandbox: sb, Strikes: rules.NewStrikes(rules.DefaultConfig(), time.Now)})
	}
	traces := mixedTraces(b, 20)
	for _, mode := range []string{"alone", "replaying", "replaying-without-yield"} {
		b.Run(mode, func(b *testing.B) {
			tape := NewTape(DefaultTapeBytes, nil)
			pool := evaluation.NewPool(evaluation.PoolConfig{}, evaluation.PoolDeps{
				Rules:      func() []*evaluation.Rule { return live },
				Record:     violations.Sink(func(context.Context, time.Time, []violations.Violation) error { return nil }),
				Quarantine: func(context.Context, string, rules.Quarantine) {},
				Tape:       tape.Add,
				Logger:     slog.New(slog.DiscardHandler),
				Registerer: prometheus.NewRegistry(),
				Now:        time.Now,
			})
			ctx := context.Background()
			pool.Start(ctx)
			defer pool.Shutdown(ctx)
			enc := abi.NewEncoder()
			for _, spans := range traces { // a tape to replay
				tape.Add(spans[0].TraceID, enc.Encode(spans, 0), uint32(len(spans)), time.Now())
			}
			stop := make(chan struct{})
			var replays sync.WaitGroup
			replayed := 0
			if mode != "alone" {
				busy := func() bool { return pool.Waiting() > 0 }
				if mode == "replaying-without-yield" {
					busy = nil
				}
				r := NewRunner(Config{ReplayFuel: 1 << 62, ReplayTimeout: time.Hour, Quarantine: rules.Config{Strikes: 1 << 30, Window: time.Hour}},
					Deps{Host: h, Tape: tape, Busy: busy})
				cand, err := r.Load(ctx, Candidate{Module: testrules.Module(b, "runaway-loop")})
				if err != nil {
					b.Fatal(err)
				}
				defer cand.Close(ctx)
				rctx, cancel := context.WithCancel(ctx)
				defer cancel()
				replays.Add(1)
				go func() {
					defer replays.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						res, _ := r.Replay(rctx, ReplayOptions{Candidate: cand})
						replayed += res.Evaluated
					}
				}()
				go func() { <-stop; cancel() }()
			}
			var done sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				done.Add(1)
				spans := traces[i%len(traces)]
				if err := pool.Submit(ctx, evaluation.Job{Spans: spans, Trigger: "root", CompletedAt: time.Now(), Done: done.Done}); err != nil {
					b.Fatal(err)
				}
			}
			done.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			replays.Wait()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "traces/s")
			if mode != "alone" {
				b.ReportMetric(float64(replayed)/elapsed.Seconds(), "replayed/s")
			}
		})
	}
}

// BenchmarkTapeAdd is what feeding the tape costs an evaluation worker per
// trace: one copy of its encoded bytes (20 spans here), shedding the
// oldest once the tape is full.
func BenchmarkTapeAdd(b *testing.B) {
	spans := testrules.Trace(b, "checkout-slow-db.violating")
	for len(spans) < 20 {
		spans = append(spans, spans...)
	}
	spans = spans[:20]
	encoded := abi.NewEncoder().Encode(spans, 0)
	tape := NewTape(1<<20, nil) // small, so that most adds shed
	b.SetBytes(int64(len(encoded)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tape.Add(traceID(i), encoded, uint32(len(spans)), time.Time{})
	}
}
