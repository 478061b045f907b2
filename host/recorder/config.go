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
}

// DefaultConfig returns every default.
func DefaultConfig() Config {
	return Config{MaxBytes: DefaultMaxBytes, FlushInterval: DefaultFlushInterval, BatchBytes: DefaultBatchBytes,
		RetryMin: DefaultRetryMin, RetryMax: DefaultRetryMax}
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
	return c
}

// Settings are what the service provides, not the operator.
type Settings struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock of the completion-to-stored latency; nil means
	// time.Now.
	Now func() time.Time
}
