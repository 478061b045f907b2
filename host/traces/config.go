package traces

import (
	"errors"
	"fmt"
	"time"
)

// Config bounds the assembler. Every field must be positive; DefaultConfig
// gives the defaults named in each comment.
type Config struct {
	// Settle is how long to wait for stragglers once a trace's root span
	// (ParentSpanID all zero) has arrived. Default 2s.
	Settle time.Duration
	// IdleTimeout completes a trace that has had no new span for this long.
	// Default 5s.
	IdleTimeout time.Duration
	// MaxAge completes a trace this long after its first span arrived, however
	// busy it still is. Default 30s.
	MaxAge time.Duration
	// MaxSpans is the most spans one trace holds. The span that would exceed
	// it completes the trace at once (CompletionSpanCap); it and every later
	// span of that trace are counted as late. Default 10,000.
	MaxSpans int
	// MaxBytes bounds the estimated memory of buffered spans, including
	// completed traces the consumer has not released yet. A batch that would
	// exceed it is refused whole with ErrFull. Default 256 MiB.
	MaxBytes int64
	// LateWindow is how long the ID of a completed trace is remembered, so
	// that its late spans are counted instead of starting a fresh trace.
	// IDs are kept for between one and two windows. Default 60s (2×MaxAge).
	LateWindow time.Duration
	// LateMaxTraces bounds how many completed trace IDs are remembered (about
	// 40 bytes each). When it is reached the oldest IDs are forgotten early,
	// shortening the late window under extreme load. Default 1,000,000.
	LateMaxTraces int
	// TickInterval is how often deadlines are checked: a trace completes at
	// most this much after its deadline. Default 100ms.
	TickInterval time.Duration
}

// DefaultConfig returns the defaults documented on each Config field.
func DefaultConfig() Config {
	return Config{
		Settle:        2 * time.Second,
		IdleTimeout:   5 * time.Second,
		MaxAge:        30 * time.Second,
		MaxSpans:      10_000,
		MaxBytes:      256 << 20,
		LateWindow:    60 * time.Second,
		LateMaxTraces: 1_000_000,
		TickInterval:  100 * time.Millisecond,
	}
}

// Validate reports every invalid field at once, each named.
func (c Config) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, d))
		}
	}
	positive("Settle", c.Settle)
	positive("IdleTimeout", c.IdleTimeout)
	positive("MaxAge", c.MaxAge)
	positive("LateWindow", c.LateWindow)
	positive("TickInterval", c.TickInterval)
	if c.MaxSpans <= 0 {
		errs = append(errs, fmt.Errorf("MaxSpans must be positive, got %d", c.MaxSpans))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("MaxBytes must be positive, got %d", c.MaxBytes))
	}
	if c.LateMaxTraces < 2*numShards {
		errs = append(errs, fmt.Errorf("LateMaxTraces must be at least %d, got %d", 2*numShards, c.LateMaxTraces))
	}
	return errors.Join(errs...)
}
