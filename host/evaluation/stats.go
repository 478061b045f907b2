package evaluation

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fuelWindow is how many recent calls the fuel percentile looks at.
const fuelWindow = 1024

// Stats counts one rule's evaluations for the API. It is safe for
// concurrent use; a nil *Stats ignores everything.
type Stats struct {
	evaluations, violations, errors, skipped atomic.Uint64

	busy           busyTime     // worker time in calls (Share)
	throttledUntil atomic.Int64 // unix ns: the last skip, plus the share window

	mu   sync.Mutex
	fuel [fuelWindow]uint64
	n    int // calls recorded, capped at fuelWindow for reading
	next int
}

func (s *Stats) record(violations int, failed bool, fuel uint64) {
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

func (s *Stats) skip(now time.Time, window time.Duration) {
	if s == nil {
		return
	}
	s.skipped.Add(1)
	s.throttledUntil.Store(now.Add(window).UnixNano())
}

// StatsSnapshot is what Stats.Snapshot reports.
type StatsSnapshot struct {
	Evaluations uint64 `json:"evaluations"`
	Violations  uint64 `json:"violations"`
	Errors      uint64 `json:"errors"`
	FuelP99     uint64 `json:"fuelP99"` // over the last 1,024 calls
	// Skipped counts evaluations not run because the rule was over its
	// share of the workers (Share).
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
