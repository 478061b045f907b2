package registry

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fuelWindow is how many recent calls the fuel percentile looks at.
const fuelWindow = 1024

// SkipOverShare is the reason of an evaluation skipped because its rule
// had taken more than its share of the workers; Stats shows it as the
// reason a rule is throttled.
const SkipOverShare = "over_share"

// Stats counts one rule's evaluations for the API. It is safe for
// concurrent use; a nil *Stats ignores everything.
type Stats struct {
	evaluations, violations, errors, skipped atomic.Uint64

	busy           BusyTime     // worker time in calls (evaluation.Share)
	throttledUntil atomic.Int64 // unix ns: the last skip, plus the share window

	mu   sync.Mutex
	fuel [fuelWindow]uint64
	n    int // calls recorded, capped at fuelWindow for reading
	next int
}

// Record counts one evaluation: the violations it reported, whether it
// failed and the fuel it used.
func (s *Stats) Record(violations int, failed bool, fuel uint64) {
	if s == nil {
		return
	}
	s.evaluations.Add(1)
	s.violations.Add(uint64(violations))
	if failed {
		s.errors.Add(1)
	}
	s.mu.Lock()
	s.fuel[s.next] = fuel
	s.next = (s.next + 1) % fuelWindow
	s.n = min(s.n+1, fuelWindow)
	s.mu.Unlock()
}

// Skip counts an evaluation skipped at now because the rule was over its
// share; the rule shows as throttled for window from now.
func (s *Stats) Skip(now time.Time, window time.Duration) {
	if s == nil {
		return
	}
	s.skipped.Add(1)
	s.throttledUntil.Store(now.Add(window).UnixNano())
}

// Busy is the worker time the rule's calls took, which the evaluation's
// fair share counts; nil for a nil *Stats.
func (s *Stats) Busy() *BusyTime {
	if s == nil {
		return nil
	}
	return &s.busy
}

// StatsSnapshot is what Stats.Snapshot reports.
type StatsSnapshot struct {
	Evaluations uint64 `json:"evaluations"`
	Violations  uint64 `json:"violations"`
	Errors      uint64 `json:"errors"`
	FuelP99     uint64 `json:"fuelP99"` // over the last 1,024 calls
	// Skipped counts evaluations not run because the rule was over its
	// share of the workers (evaluation.Share).
	Skipped uint64 `json:"skipped"`
	// Throttled is set while the rule is skipping evaluations.
	Throttled *Throttled `json:"throttled,omitempty"`
}

// Throttled says why and until when a rule runs on a fraction of traces.
type Throttled struct {
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"` // if it stays within its share from now on
}

// Snapshot returns the counters, the 99th percentile of recent fuel use,
// and whether the rule is throttled at now.
func (s *Stats) Snapshot(now time.Time) StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	s.mu.Lock()
	recent := slices.Clone(s.fuel[:s.n])
	s.mu.Unlock()
	snap := StatsSnapshot{Evaluations: s.evaluations.Load(), Violations: s.violations.Load(), Errors: s.errors.Load(), Skipped: s.skipped.Load()}
	if until := time.Unix(0, s.throttledUntil.Load()); until.After(now) {
		snap.Throttled = &Throttled{Reason: SkipOverShare, Until: until.UTC()}
	}
	if len(recent) > 0 {
		slices.Sort(recent)
		snap.FuelP99 = recent[(len(recent)*99+99)/100-1]
	}
	return snap
}

// BusySlots divide the share window; time is counted per slot, so the
// window slides in steps of a tenth of it.
const BusySlots = 10

// BusyTime is time spent in calls over the last BusySlots slots. Two
// workers recording as a slot turns over can lose a call's time to the
// reset: the share is a control, not an account (skips are exact).
type BusyTime struct {
	slots [BusySlots]struct{ slot, ns atomic.Int64 }
}

// Add counts d in slot.
func (b *BusyTime) Add(slot int64, d time.Duration) {
	s := &b.slots[slot%BusySlots]
	if s.slot.Load() != slot {
		s.slot.Store(slot)
		s.ns.Store(0)
	}
	s.ns.Add(int64(d))
}

// At returns the time counted in slot.
func (b *BusyTime) At(slot int64) time.Duration {
	s := &b.slots[slot%BusySlots]
	if s.slot.Load() != slot {
		return 0
	}
	return time.Duration(s.ns.Load())
}

// Sum returns the time counted in the BusySlots slots ending with slot.
func (b *BusyTime) Sum(slot int64) time.Duration {
	var ns int64
	for i := range b.slots {
		s := &b.slots[i]
		if at := s.slot.Load(); at > slot-BusySlots && at <= slot {
			ns += s.ns.Load()
		}
	}
	return time.Duration(ns)
}
