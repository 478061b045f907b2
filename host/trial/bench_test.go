package trial

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/dsl"
	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/violations"
)

// BenchmarkLiveDuringReplay measures live evaluation (the five real rules
// on a real pool, the tape fed) alone and while replays of a runaway
// candidate (every trace burns its whole 25 M fuel, never stopped early)
// run back to back: with the replay yielding while live traces wait, as in
// the service, and without yielding, to show what the yield buys. The
// three are measured in turn, round after round, so that a machine whose
// load drifts (a shared CI runner) biases none of them; the ratios are
// the medians of the rounds' ratios to the same round's "alone".
func BenchmarkLiveDuringReplay(b *testing.B) {
	h := newHost(b)
	var live []*registry.Rule
	for _, id := range testrules.Real {
		sb, err := h.Load(context.Background(), testrules.Module(b, id), sandbox.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sb.Close(context.Background()) })
		live = append(live, &registry.Rule{ID: id, Sandbox: sb, Strikes: rules.NewStrikes(rules.DefaultQuarantinePolicy(), time.Now)})
	}
	traces := mixedTraces(b, 20)
	ctx := context.Background()
	tape := NewTape(DefaultTapeBytes, nil)
	pool := evaluation.NewPool(evaluation.PoolConfig{}, evaluation.PoolDeps{
		Rules:      func() []*registry.Rule { return live },
		Record:     violations.Sink(func(context.Context, time.Time, []violations.Violation) error { return nil }),
		Quarantine: func(context.Context, string, rules.Quarantine) {},
		Tape:       tape.Add,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewRegistry(),
		Now:        time.Now,
	})
	pool.Start(ctx)
	defer pool.Shutdown(ctx)
	enc := abi.NewEncoder()
	for _, spans := range traces { // a tape to replay
		tape.Add(spans[0].TraceID, enc.Encode(spans, 0), uint32(len(spans)), time.Now())
	}
	never := rules.QuarantinePolicy{Strikes: 1 << 30, Window: time.Hour}
	cfg := Config{ReplayFuel: 1 << 62, ReplayTimeout: time.Hour, Quarantine: never}
	yielding := NewRunner(cfg, Deps{Host: h, Tape: tape, Busy: func() bool { return pool.Waiting() > 0 }})
	greedy := NewRunner(cfg, Deps{Host: h, Tape: tape})
	cand, err := yielding.Load(ctx, Candidate{Module: testrules.Module(b, "runaway-loop")})
	if err != nil {
		b.Fatal(err)
	}
	defer cand.Close(ctx)

	const perPhase = 2000
	// phase evaluates perPhase traces live, with r replaying meanwhile
	// unless nil, and returns live traces/s and traces replayed/s.
	phase := func(r *Runner) (float64, float64) {
		rctx, cancel := context.WithCancel(ctx)
		var replays sync.WaitGroup
		replayed := 0
		if r != nil {
			replays.Add(1)
			go func() {
				defer replays.Done()
				for rctx.Err() == nil {
					res, _ := r.Replay(rctx, ReplayOptions{Candidate: cand})
					replayed += res.Evaluated
				}
			}()
		}
		var done sync.WaitGroup
		start := time.Now()
		for i := range perPhase {
			done.Add(1)
			if err := pool.Submit(ctx, evaluation.Job{Spans: traces[i%len(traces)], Trigger: "root", CompletedAt: time.Now(), Done: done.Done}); err != nil {
				b.Fatal(err)
			}
		}
		done.Wait()
		elapsed := time.Since(start)
		cancel()
		replays.Wait()
		return perPhase / elapsed.Seconds(), float64(replayed) / elapsed.Seconds()
	}
	var alone, withYield, withoutYield, ratioYield, ratioGreedy, replayedYield []float64
	for b.Loop() {
		a, _ := phase(nil)
		y, ry := phase(yielding)
		g, _ := phase(greedy)
		alone, withYield, withoutYield = append(alone, a), append(withYield, y), append(withoutYield, g)
		ratioYield, ratioGreedy, replayedYield = append(ratioYield, y/a), append(ratioGreedy, g/a), append(replayedYield, ry)
	}
	b.ReportMetric(median(alone), "alone-traces/s")
	b.ReportMetric(median(withYield), "replaying-traces/s")
	b.ReportMetric(median(withoutYield), "greedy-traces/s")
	b.ReportMetric(median(ratioYield), "ratio-replaying")
	b.ReportMetric(median(ratioGreedy), "ratio-greedy")
	b.ReportMetric(median(replayedYield), "replayed/s")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
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

// BenchmarkReplaySpeed is how fast one replay goes through the tape (the
// mixed sample traces) on its one sandbox instance, for a DSL rule and
// for the same rule in Go: traces/s per core when nothing else runs.
func BenchmarkReplaySpeed(b *testing.B) {
	h := newHost(b)
	ctx := context.Background()
	tape := NewTape(DefaultTapeBytes, nil)
	enc := abi.NewEncoder()
	entries := 0
	for _, spans := range mixedTraces(b, 20) {
		tape.Add(spans[0].TraceID, enc.Encode(spans, 0), uint32(len(spans)), time.Now())
		entries++
	}
	never := rules.QuarantinePolicy{Strikes: 1 << 30, Window: time.Hour}
	r := NewRunner(Config{ReplayFuel: 1 << 62, ReplayTimeout: time.Hour, Quarantine: never}, Deps{Host: h, Tape: tape})
	rule, err := dsl.Parse("when { payment.charge } always { fraud.check }")
	if err != nil {
		b.Fatal(err)
	}
	dslModule, err := dsl.Compile(rule, dsl.Meta{ID: "pay"})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		module []byte
	}{{"dsl", dslModule}, {"go", testrules.Module(b, "payment-fraud-check")}} {
		b.Run(c.name, func(b *testing.B) {
			cand, err := r.Load(ctx, Candidate{Module: c.module})
			if err != nil {
				b.Fatal(err)
			}
			defer cand.Close(ctx)
			evaluated := 0
			start := time.Now()
			for b.Loop() {
				res, err := r.Replay(ctx, ReplayOptions{Candidate: cand})
				if err != nil || res.Evaluated != entries {
					b.Fatalf("replay: %v, %d of %d traces", err, res.Evaluated, entries)
				}
				evaluated += res.Evaluated
			}
			b.ReportMetric(float64(evaluated)/time.Since(start).Seconds(), "traces/s")
		})
	}
}
