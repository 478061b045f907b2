package evaluation

import (
	"slices"
	"sync"
	"sync/atomic"
)

// fuelWindow is how many recent calls the fuel percentile looks at.
const fuelWindow = 1024

// Stats counts one rule's evaluations for the API. It is safe for
// concurrent use; a nil *Stats ignores everything.
type Stats struct {
	evaluations, violations, errors atomic.Uint64

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

// StatsSnapshot is what Stats.Snapshot reports.
type StatsSnapshot struct {
	Evaluations uint64 `json:"evaluations"`
	Violations  uint64 `json:"violations"`
	Errors      uint64 `json:"errors"`
	FuelP99     uint64 `json:"fuelP99"` // over the last 1,024 calls
}

// Snapshot returns the counters and the 99th percentile of recent fuel use.
func (s *Stats) Snapshot() StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	s.mu.Lock()
	recent := slices.Clone(s.fuel[:s.n])
	s.mu.Unlock()
	snap := StatsSnapshot{Evaluations: s.evaluations.Load(), Violations: s.violations.Load(), Errors: s.errors.Load()}
	if len(recent) > 0 {
		slices.Sort(recent)
		snap.FuelP99 = recent[(len(recent)*99+99)/100-1]
	}
	return snap
}
