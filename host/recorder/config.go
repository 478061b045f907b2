package recorder

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config.
const (
	// DefaultMaxBytes holds about 100,000 typical violations (~600 bytes
	// each): minutes of a violation storm, or of a full disk at the
	// hundreds of violations a second a busy service records.
	DefaultMaxBytes = 64 << 20
	// DefaultFlushInterval bounds the delay group commit adds, far below
	// the 100 ms completion-to-stored target; it is also what kill -9 can
	// lose of a healthy store.
	DefaultFlushInterval = 10 * time.Millisecond
	// DefaultBatchBytes is the largest batch one write takes: big enough
	// for thousands of violations per fsync, small enough that a commit
	// stays a few milliseconds.
	DefaultBatchBytes = 1 << 20
	DefaultRetryMin   = 100 * time.Millisecond
	DefaultRetryMax   = 5 * time.Second
	// DefaultSampleRate is how many violations of one rule a minute are
	// kept in full: far above what a rule that finds real problems
	// records, far below a rule firing on every trace at 50k spans/s.
	DefaultSampleRate = 1000
	// DefaultSampleEvery keeps one in 100 of a rule's violations past
	// the rate: a storm of 100,000 a minute keeps about 2,000 records.
	DefaultSampleEvery = 100
)

// Config sizes the recorder. A zero field means its default.
type Config struct {
	// MaxBytes bounds the violations held (waiting for or in a write,
	// or kept for retry), as estimated by their size. Default 64 MiB.
	MaxBytes int64
	// FlushInterval is how long the oldest violation of a batch waits for
	// others before the batch is written. Default 10ms.
	FlushInterval time.Duration
	// BatchBytes writes a batch at once when it holds this much; one
	// write takes at most this much (or one trace, if larger). Default 1 MiB.
	BatchBytes int64
	// RetryMin and RetryMax bound the backoff between retries of a
	// failing write. Defaults 100ms and 5s.
	RetryMin, RetryMax time.Duration
	// SampleRate is how many violations of one rule per minute (by
	// their timestamp) are kept as records; past it one in SampleEvery
	// is kept and the others are only counted (the summary and
	// betrace_violations_sampled_total count them all). Default 1000;
	// -1 keeps every violation.
	SampleRate int
	// SampleEvery is the 1 in N kept past SampleRate. Default 100.
	SampleEvery int
}

// DefaultConfig returns every default.
func DefaultConfig() Config {
	return Config{MaxBytes: DefaultMaxBytes, FlushInterval: DefaultFlushInterval, BatchBytes: DefaultBatchBytes,
		RetryMin: DefaultRetryMin, RetryMax: DefaultRetryMax, SampleRate: DefaultSampleRate, SampleEvery: DefaultSampleEvery}
}

// Validate names every field that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxBytes must not be negative, got %d", c.MaxBytes))
	}
	if c.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("FlushInterval must not be negative, got %v", c.FlushInterval))
	}
	if c.BatchBytes < 0 {
		errs = append(errs, fmt.Errorf("BatchBytes must not be negative, got %d", c.BatchBytes))
	}
	if c.RetryMin < 0 || c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("RetryMin and RetryMax must not be negative, got %v and %v", c.RetryMin, c.RetryMax))
	}
	if c.SampleRate < -1 {
		errs = append(errs, fmt.Errorf("SampleRate must be -1 (keep every violation) or more, got %d", c.SampleRate))
	}
	if c.SampleEvery < 0 {
		errs = append(errs, fmt.Errorf("SampleEvery must not be negative, got %d", c.SampleEvery))
	}
	d := c.withDefaults()
	if d.BatchBytes > d.MaxBytes {
		errs = append(errs, fmt.Errorf("BatchBytes (%d) must not exceed MaxBytes (%d)", d.BatchBytes, d.MaxBytes))
	}
	if d.RetryMin > d.RetryMax {
		errs = append(errs, fmt.Errorf("RetryMin (%v) must not exceed RetryMax (%v)", d.RetryMin, d.RetryMax))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = min(DefaultBatchBytes, c.MaxBytes)
	}
	if c.RetryMin == 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	if c.SampleRate == 0 {
		c.SampleRate = DefaultSampleRate
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = DefaultSampleEvery
	}
	return c
}

// Settings are what the service provides, not the operator.
type Settings struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock of the completion-to-stored latency; nil means
	// time.Now.
	Now func() time.Time
	// Count stores tallies of violations that were only counted (the
	// store's CountViolations). Nil keeps every violation: there would
	// be nowhere to count the others.
	Count CountFunc
}
