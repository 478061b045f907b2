package recorder

import (
	"time"

	"github.com/betracehq/betrace/host/violations"
)

// sampler decides which violations are kept as records once a rule fires
// faster than SampleRate a minute: the first SampleRate of each rule's
// minute (by violation timestamp) are kept, then one in SampleEvery; the
// others are only counted. Keeping the first ones keeps the start of an
// incident whole; keeping every Nth after that keeps its shape without its
// bulk. It is not safe for concurrent use: the recorder holds its mutex.
type sampler struct {
	rate, every int64 // rate < 0: keep everything
	windows     map[string]window
}

// window is one rule's current minute and how many violations it has seen.
type window struct {
	minute int64 // Unix ns
	seen   int64
}

// maxWindows bounds the rules the sampler tracks; past it, windows of
// minutes gone by are forgotten (rules deleted or quiet).
const maxWindows = 10_000

func newSampler(rate, every int) *sampler {
	return &sampler{rate: int64(rate), every: int64(max(every, 1)), windows: map[string]window{}}
}

// keep reports whether v's record is kept, counting v in its rule's window.
func (s *sampler) keep(v *violations.Violation) bool {
	if s.rate < 0 {
		return true
	}
	minute := v.Timestamp.Truncate(violations.CountResolution).UnixNano()
	w, ok := s.windows[v.RuleID]
	if !ok && len(s.windows) >= maxWindows {
		s.forget(minute)
	}
	if minute > w.minute {
		w = window{minute: minute}
	}
	// A violation stamped in an earlier minute than its rule's window
	// (a slow worker) counts in the current one: windows only move on.
	w.seen++
	s.windows[v.RuleID] = w
	return w.seen <= s.rate || (w.seen-s.rate)%s.every == 0
}

// forget drops the windows of minutes before minute.
func (s *sampler) forget(minute int64) {
	for rule, w := range s.windows {
		if w.minute < minute {
			delete(s.windows, rule)
		}
	}
}

// tallyKey is what the recorder counts sampled-out violations by.
type tallyKey struct {
	rule, severity string
	minute         int64 // Unix ns
}

// addTally counts v as found but not kept.
func addTally(m map[tallyKey]int64, v *violations.Violation) {
	m[tallyKey{v.RuleID, v.Severity, v.Timestamp.Truncate(violations.CountResolution).UnixNano()}]++
}

func tallies(m map[tallyKey]int64) []violations.Tally {
	out := make([]violations.Tally, 0, len(m))
	for k, n := range m {
		out = append(out, violations.Tally{RuleID: k.rule, Severity: k.severity, Minute: time.Unix(0, k.minute).UTC(), Count: n})
	}
	return out
}
