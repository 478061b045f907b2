package embedded

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Config.
const (
	DefaultMaxViolations   = 1_000_000
	DefaultMaxViolationAge = 7 * 24 * time.Hour
)

// Config configures an embedded store.
type Config struct {
	// Dir is the data directory. Open creates it (0700) and keeps the
	// database in Dir/betrace.db. Required.
	Dir string
	// MaxViolations is how many violations are kept; the oldest go first.
	// Zero means DefaultMaxViolations.
	MaxViolations int
	// MaxViolationAge is how long a violation is kept, by its Timestamp.
	// Zero means DefaultMaxViolationAge.
	MaxViolationAge time.Duration
}

// DefaultConfig returns the defaults; the caller sets Dir.
func DefaultConfig() Config {
	return Config{MaxViolations: DefaultMaxViolations, MaxViolationAge: DefaultMaxViolationAge}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("embedded: config: data directory is not set")
	case c.MaxViolations < 0:
		return fmt.Errorf("embedded: config: max violations %d is negative", c.MaxViolations)
	case c.MaxViolationAge < 0:
		return fmt.Errorf("embedded: config: max violation age %s is negative", c.MaxViolationAge)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxViolations == 0 {
		c.MaxViolations = DefaultMaxViolations
	}
	if c.MaxViolationAge == 0 {
		c.MaxViolationAge = DefaultMaxViolationAge
	}
	return c
}
