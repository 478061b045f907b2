package evaluation

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
)

// shiftedClock is the wall clock plus an offset a test moves, so calls take
// real time while the test jumps windows.
type shiftedClock struct{ offset atomic.Int64 }

func (c *shiftedClock) now() time.Time       { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftedClock) jump(d time.Duration) { c.offset.Add(int64(d)) }
func newShiftedClock() *shiftedClock         { return &shiftedClock{} }

// shareRules are a cheap rule and a heavy one: runaway-loop spending
// 2,000,000 fuel (milliseconds) on every trace and never quarantined, as a
// legal rule near its budget would.
func shareRules(t *testing.T, clock func() time.Time) (cheap, heavy *registry.Rule) {
	h := newHost(t)
	never := rules.QuarantinePolicy{Strikes: 1000, FaultRate: 1, Window: time.Second}
	load := func(id string, lim sandbox.Limits) *registry.Rule {
		s, err := h.Load(context.Background(), testrules.Module(t, id), lim)
		if err != nil {
			t.Fatalf("load %s: %v", id, err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		return &registry.Rule{ID: id, Sandbox: s, Strikes: rules.NewStrikes(never, clock), Stats: &registry.Stats{}}
	}
	return load("payment-fraud-check", sandbox.Limits{}), load("runaway-loop", sandbox.Limits{Fuel: 2_000_000})
}

// TestShareThrottlesOnlyTheHeavyRule: while traces wait, a rule that takes
// more than its share of the workers skips traces, every skip counted on
// the rule, in the metric and in the verdicts; its neighbour runs on every
// trace; and once it has stayed within its share for a window, or traces
// stop waiting, it runs on every trace again.
func TestShareThrottlesOnlyTheHeavyRule(t *testing.T) {
	clock := newShiftedClock()
	cheap, heavy := shareRules(t, clock.now)
	const window = time.Second
	reg := prometheus.NewRegistry()
	spans := testrules.Trace(t, "payment-fraud-check.violating")
	rs := []*registry.Rule{cheap, heavy}
	pool := NewPool(PoolConfig{Workers: 1, Share: ShareConfig{Window: window}}, PoolDeps{
		Rules: func() []*registry.Rule { return rs }, Quarantine: func(context.Context, string, rules.Quarantine) {},
		Logger: slog.New(slog.DiscardHandler), Registerer: reg, Now: clock.now,
	})
	ev := New(clock.now)
	ev.share = pool.share

	// run evaluates traces as a pool worker does and returns, per rule,
	// how many it ran on and how many it skipped, from the rules' stats.
	run := func(traces int, wait bool) (ran, skipped map[string]int) {
		before := map[string]registry.StatsSnapshot{}
		for _, r := range rs {
			before[r.ID] = r.Stats.Snapshot(clock.now())
		}
		for range traces {
			if wait {
				pool.share.Waited(clock.now())
			}
			pool.evaluate(context.Background(), ev, Job{Spans: spans}, nil)
		}
		ran, skipped = map[string]int{}, map[string]int{}
		for _, r := range rs {
			s := r.Stats.Snapshot(clock.now())
			ran[r.ID], skipped[r.ID] = int(s.Evaluations-before[r.ID].Evaluations), int(s.Skipped-before[r.ID].Skipped)
			if ran[r.ID]+skipped[r.ID] != traces {
				t.Fatalf("%s: %d evaluations and %d skips for %d traces: every trace is one or the other", r.ID, ran[r.ID], skipped[r.ID], traces)
			}
		}
		return ran, skipped
	}

	// Traces wait: the heavy rule may take half of one worker's second.
	// Each of its calls takes milliseconds, so 400 traces are well past it.
	ran, skipped := run(400, true)
	if ran[cheap.ID] != 400 || skipped[cheap.ID] != 0 {
		t.Fatalf("the cheap rule ran on %d of 400 traces (%d skipped): a neighbour's share must not cost it any", ran[cheap.ID], skipped[cheap.ID])
	}
	if skipped[heavy.ID] == 0 {
		busy := heavy.Stats.Busy().Sum(pool.share.slot(clock.now()))
		t.Fatalf("the heavy rule ran on all 400 traces, taking %v of a %v window: it was never throttled", busy, window)
	}
	snap := heavy.Stats.Snapshot(clock.now())
	var m dto.Metric
	if err := pool.metrics.skipped.WithLabelValues(heavy.ID, SkipOverShare).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); int(got) != skipped[heavy.ID] {
		t.Fatalf("betrace_rule_evaluations_skipped_total = %v, want %d", got, skipped[heavy.ID])
	}
	if snap.Throttled == nil || snap.Throttled.Reason != SkipOverShare {
		t.Fatalf("a rule skipping traces shows throttled %+v, want reason %s", snap.Throttled, SkipOverShare)
	}
	if s := cheap.Stats.Snapshot(clock.now()); s.Throttled != nil || s.Skipped != 0 {
		t.Fatalf("the cheap rule shows %+v", s)
	}
	// Its time stays near its share: at most the share plus the calls
	// that were running when it was reached.
	if busy, most := heavy.Stats.Busy().Sum(pool.share.slot(clock.now())), window/2; busy > most+most/2 {
		t.Errorf("the throttled rule took %v of the window, its share is %v", busy, most)
	}

	// A window later, the rule runs again (and is throttled again as soon
	// as it is over).
	clock.jump(2 * window)
	if s := heavy.Stats.Snapshot(clock.now()); s.Throttled != nil {
		t.Fatalf("a window after its last skip the rule still shows throttled: %+v", s.Throttled)
	}
	ran, _ = run(1, true)
	if ran[heavy.ID] != 1 {
		t.Fatal("a window later the heavy rule was still skipped")
	}

	// No trace waits: there is room for everyone, nothing is skipped.
	clock.jump(2 * window)
	ran, skipped = run(400, false)
	if skipped[heavy.ID] != 0 || ran[heavy.ID] != 400 {
		t.Fatalf("with no trace waiting the heavy rule ran %d times and skipped %d of 400", ran[heavy.ID], skipped[heavy.ID])
	}
}

func TestShareConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg ShareConfig
		ok  bool
	}{
		{ShareConfig{}, true},
		{ShareConfig{Share: 0.25, Window: time.Minute}, true},
		{ShareConfig{Share: 1}, true},
		{ShareConfig{Share: -0.1}, false},
		{ShareConfig{Share: 1.5}, false},
		{ShareConfig{Window: -time.Second}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v", tc.cfg, err)
		}
	}
}

// TestShareOfItsOwn: a rule's own share wins over the pool's, so an
// operator can let one expensive rule take more than an equal share.
func TestShareOfItsOwn(t *testing.T) {
	clock := newShiftedClock()
	cheap, heavy := shareRules(t, clock.now)
	share := NewShare(ShareConfig{Window: time.Second}, 1)
	now := clock.now()
	share.Waited(now)
	for i := range int64(shareSlots) { // more than half of one worker's second, spread over it
		heavy.Stats.Busy().Add(share.slot(now)-i, 60*time.Millisecond)
	}
	rs := []*registry.Rule{cheap, heavy}
	if !share.over(heavy, len(rs), now) {
		t.Fatal("600 ms of a 1 s window is over an equal share of two rules, yet the rule is not over")
	}
	heavy.Share = 0.9
	if share.over(heavy, len(rs), now) {
		t.Fatal("a rule with a share of 0.9 is over at 600 ms of a 1 s window")
	}

	// Nor may a rule spend its share at once: within the window, a slot
	// takes at most twice its part (here 2 × 0.5 × 100 ms).
	heavy.Share = 0
	later := now.Add(10 * time.Second)
	share.Waited(later)
	cheap.Stats.Busy().Add(share.slot(later), 150*time.Millisecond)
	if !share.over(cheap, len(rs), later) {
		t.Fatal("150 ms in one 100 ms slot is within a share of half the worker")
	}
}
