package rules

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Config sets when strikes become a quarantine.
type Config struct {
	// Strikes within Window that quarantine a rule. Default 3.
	Strikes int
	// Window over which strikes count. Default 1 minute.
	Window time.Duration
}

// Defaults of Config.
const (
	DefaultStrikes = 3
	DefaultWindow  = time.Minute
)

// DefaultConfig returns Config at its defaults.
func DefaultConfig() Config { return Config{Strikes: DefaultStrikes, Window: DefaultWindow} }

// Validate names every field out of range.
func (c Config) Validate() error {
	var errs []error
	if c.Strikes < 1 || c.Strikes > 1000 {
		errs = append(errs, fmt.Errorf("quarantine strikes %d must be between 1 and 1000", c.Strikes))
	}
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("quarantine window %s must be positive", c.Window))
	}
	return errors.Join(errs...)
}

// Strike is one fault charged to a rule.
type Strike struct {
	Reason   string // sandbox outcome: fuel, memory, trap, abi
	Err      string // what the sandbox reported
	FuelUsed uint64
	TraceID  string // hex trace ID being evaluated
}

// Quarantine records why a rule was quarantined.
type Quarantine struct {
	Reason    string    `json:"reason"`
	LastError string    `json:"lastError"`
	FuelUsed  uint64    `json:"fuelUsed"`
	TraceID   string    `json:"traceId"`
	Strikes   int       `json:"strikes"`
	At        time.Time `json:"at"`
}

// Strikes counts one rule's strikes. It is safe for concurrent use.
type Strikes struct {
	cfg Config
	now func() time.Time

	mu          sync.Mutex
	times       []time.Time // ring of the last cfg.Strikes strike times
	next        int
	quarantined *Quarantine
}

// NewStrikes returns a counter; now is the clock (time.Now in production).
func NewStrikes(cfg Config, now func() time.Time) *Strikes {
	return &Strikes{cfg: cfg, now: now, times: make([]time.Time, 0, cfg.Strikes)}
}

// Record charges a strike. It returns the quarantine record when this strike
// is the one that quarantines the rule; once quarantined, further strikes
// change nothing until Clear.
func (s *Strikes) Record(st Strike) (q Quarantine, tripped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quarantined != nil {
		return Quarantine{}, false
	}
	now := s.now()
	if len(s.times) < s.cfg.Strikes {
		s.times = append(s.times, now)
	} else {
		s.times[s.next] = now
		s.next = (s.next + 1) % s.cfg.Strikes
	}
	// The ring holds the last cfg.Strikes strikes; the oldest sits at next
	// once full.
	if len(s.times) < s.cfg.Strikes {
		return Quarantine{}, false
	}
	oldest := s.times[s.next]
	if now.Sub(oldest) > s.cfg.Window {
		return Quarantine{}, false
	}
	s.quarantined = &Quarantine{Reason: st.Reason, LastError: st.Err, FuelUsed: st.FuelUsed, TraceID: st.TraceID, Strikes: s.cfg.Strikes, At: now}
	return *s.quarantined, true
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

// Clear lifts a quarantine and forgets past strikes, as enabling does.
func (s *Strikes) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quarantined = nil
	s.times = s.times[:0]
	s.next = 0
}
