package embedded

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Config.
const (
	DefaultMaxViolations = 1_000_000
	// DefaultMaxViolationsPerRule is a tenth of the total: a storming
	// rule can take at most that, leaving nine tenths to the others.
	DefaultMaxViolationsPerRule = 100_000
	DefaultMaxViolationAge      = 7 * 24 * time.Hour
)

// Config configures an embedded store.
type Config struct {
	// Dir is the data directory. Open creates it (0700) and keeps the
	// database in Dir/betrace.db. Required.
	Dir string
	// MaxViolations is how many violations are kept in total; when it is
	// reached, the rule holding the most loses its oldest. Zero means
	// DefaultMaxViolations (1,000,000).
	MaxViolations int
	// MaxViolationsPerRule is how many violations of one rule are kept;
	// past it the rule loses its own oldest, never another rule's. Zero
	// means DefaultMaxViolationsPerRule (100,000).
	MaxViolationsPerRule int
	// MaxViolationAge is how long a violation is kept, by its Timestamp.
	// Zero means DefaultMaxViolationAge.
	MaxViolationAge time.Duration
}

// DefaultConfig returns the defaults; the caller sets Dir.
func DefaultConfig() Config {
	return Config{MaxViolations: DefaultMaxViolations, MaxViolationsPerRule: DefaultMaxViolationsPerRule, MaxViolationAge: DefaultMaxViolationAge}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("embedded: config: data directory is not set")
	case c.MaxViolations < 0:
		return fmt.Errorf("embedded: config: max violations %d is negative", c.MaxViolations)
	case c.MaxViolationsPerRule < 0:
		return fmt.Errorf("embedded: config: max violations per rule %d is negative", c.MaxViolationsPerRule)
	case c.MaxViolationAge < 0:
		return fmt.Errorf("embedded: config: max violation age %s is negative", c.MaxViolationAge)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxViolations == 0 {
		c.MaxViolations = DefaultMaxViolations
	}
	if c.MaxViolationsPerRule == 0 {
		c.MaxViolationsPerRule = DefaultMaxViolationsPerRule
	}
	if c.MaxViolationAge == 0 {
		c.MaxViolationAge = DefaultMaxViolationAge
	}
	return c
}
