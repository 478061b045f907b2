package rules

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// QuarantinePolicy sets when faults become a quarantine. A rule is
// quarantined when, within Window, it faulted at least Strikes times and on at least
// FaultRate of its evaluations. The count stops a broken rule within a few
// traces; the rate keeps a healthy rule that faults on a few pathological
// traces (which a sender can craft at will) in service, each fault still
// recorded, counted and shown on the rule.
type QuarantinePolicy struct {
	// Strikes is the fewest faults within Window that quarantine. Default 3.
	Strikes int
	// FaultRate is the smallest share of evaluations within Window that
	// must have faulted, from 0 (any) to 1 (all). Default 0.5.
	FaultRate float64
	// Window over which faults and evaluations count. Default 1 minute.
	Window time.Duration
}

// Defaults of QuarantinePolicy.
const (
	DefaultStrikes   = 3
	DefaultFaultRate = 0.5
	DefaultWindow    = time.Minute
)

// DefaultQuarantinePolicy returns QuarantinePolicy at its defaults.
func DefaultQuarantinePolicy() QuarantinePolicy {
	return QuarantinePolicy{Strikes: DefaultStrikes, FaultRate: DefaultFaultRate, Window: DefaultWindow}
}

// Validate names every field out of range.
func (c QuarantinePolicy) Validate() error {
	var errs []error
	if c.Strikes < 1 || c.Strikes > 1000 {
		errs = append(errs, fmt.Errorf("quarantine strikes %d must be between 1 and 1000", c.Strikes))
	}
	if !(c.FaultRate >= 0 && c.FaultRate <= 1) {
		errs = append(errs, fmt.Errorf("quarantine fault rate %v must be between 0 and 1", c.FaultRate))
	}
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("quarantine window %s must be positive", c.Window))
	}
	return errors.Join(errs...)
}

// Strike is one fault charged to a rule.
type Strike struct {
	Reason   string // sandbox outcome: fuel, memory, trap, abi, deadline
	Err      string // what the sandbox reported
	FuelUsed uint64
	TraceID  string // hex trace ID being evaluated
}

// Quarantine records why a rule was quarantined.
type Quarantine struct {
	Reason    string `json:"reason"`
	LastError string `json:"lastError"`
	FuelUsed  uint64 `json:"fuelUsed"`
	TraceID   string `json:"traceId"`
	// Strikes is the faults within the window, Evaluations all the
	// evaluations they were among (on the instance that quarantined).
	Strikes     int       `json:"strikes"`
	Evaluations int       `json:"evaluations,omitempty"`
	At          time.Time `json:"at"`
}

// Strikes counts one rule's faults and evaluations over the window. It is
// safe for concurrent use.
type Strikes struct {
	cfg QuarantinePolicy
	now func() time.Time

	mu          sync.Mutex
	window      Window
	quarantined *Quarantine
}

// NewStrikes returns a counter; now is the clock (time.Now in production).
func NewStrikes(cfg QuarantinePolicy, now func() time.Time) *Strikes {
	return &Strikes{cfg: cfg, now: now, window: NewWindow(cfg.Window)}
}

// Evaluated counts an evaluation that did not fault, at now.
func (s *Strikes) Evaluated(now time.Time) {
	s.mu.Lock()
	s.window.Add(now, false)
	s.mu.Unlock()
}

// Record charges a fault. It returns the quarantine record when this fault
// is the one that quarantines the rule; once quarantined, further faults
// change nothing until Clear.
func (s *Strikes) Record(st Strike) (q Quarantine, tripped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quarantined != nil {
		return Quarantine{}, false
	}
	now := s.now()
	s.window.Add(now, true)
	faults, evals := s.window.Counts(now)
	if !s.cfg.Trips(faults, evals) {
		return Quarantine{}, false
	}
	s.quarantined = &Quarantine{Reason: st.Reason, LastError: st.Err, FuelUsed: st.FuelUsed, TraceID: st.TraceID,
		Strikes: faults, Evaluations: evals, At: now}
	return *s.quarantined, true
}

// Trips reports whether faults among evals, within the window, quarantine.
func (c QuarantinePolicy) Trips(faults, evals int) bool {
	return faults >= c.Strikes && float64(faults) >= c.FaultRate*float64(evals)
}

// Quarantined returns the record if the rule is quarantined.
func (s *Strikes) Quarantined() (Quarantine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quarantined == nil {
		return Quarantine{}, false
	}
	return *s.quarantined, true
}

// Fault counts a fault without judging it, and returns the faults and
// evaluations now within the window: for a caller that judges the rate
// with counts of its own, as the cluster does.
func (s *Strikes) Fault() (faults, evals int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.window.Add(now, true)
	return s.window.Counts(now)
}

// Clear lifts a quarantine and forgets past faults, as enabling does.
func (s *Strikes) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quarantined = nil
	s.window = NewWindow(s.cfg.Window)
}

// windowSlots is how finely a Window keeps time: counts leave it one
// slot (a 64th of the window) at a time.
const windowSlots = 64

// Window counts evaluations and faults over a sliding time window in
// fixed slots, so the hot path adds to a counter and allocates nothing.
// It is not safe for concurrent use.
type Window struct {
	width int64 // nanoseconds per slot
	slots [windowSlots]windowSlot
}

type windowSlot struct {
	epoch         int64 // which slot-width interval since the Unix epoch the counts are for
	evals, faults int
}

// NewWindow returns an empty Window of length d.
func NewWindow(d time.Duration) Window {
	return Window{width: max(1, int64(d)/windowSlots)}
}

// Add counts one evaluation at now, a fault or not.
func (w *Window) Add(now time.Time, fault bool) {
	e := now.UnixNano() / w.width
	s := &w.slots[e%windowSlots]
	if s.epoch != e {
		*s = windowSlot{epoch: e}
	}
	s.evals++
	if fault {
		s.faults++
	}
}

// Counts returns the faults and evaluations in the window ending at now.
func (w *Window) Counts(now time.Time) (faults, evals int) {
	e := now.UnixNano() / w.width
	for i := range w.slots {
		if s := &w.slots[i]; s.epoch > e-windowSlots && s.epoch <= e {
			faults += s.faults
			evals += s.evals
		}
	}
	return faults, evals
}
