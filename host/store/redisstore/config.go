package redisstore

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for Config.
const (
	DefaultPrefix        = "betrace:"
	DefaultMaxViolations = 250_000 // see the package doc for the memory each needs
	// DefaultMaxViolationsPerRule is a tenth of the total: a storming
	// rule can take at most that, leaving nine tenths to the others.
	DefaultMaxViolationsPerRule = 25_000
	DefaultMaxViolationAge      = 7 * 24 * time.Hour
	DefaultTimeout              = 2 * time.Second
	DefaultDedupTTL             = time.Hour
	DefaultTrimInterval         = time.Minute
)

// Config configures a Redis store. A zero field means its default.
type Config struct {
	// URL locates Redis (BETRACE_REDIS_URL), e.g. redis://host:6379/0 or
	// rediss://user:password@host:6380/2. It is parsed by redis.ParseURL,
	// so an unknown query parameter is an error. Required.
	URL string
	// Prefix starts every key this store uses (BETRACE_REDIS_PREFIX).
	// Instances that share a Prefix share rules and violations. Default
	// "betrace:".
	Prefix string
	// MaxViolations is how many violations are kept in total; when it is
	// reached, the rule holding the most loses its oldest. Default 250,000.
	MaxViolations int
	// MaxViolationsPerRule is how many violations of one rule are kept;
	// past it the rule loses its own oldest, never another rule's.
	// Default 25,000.
	MaxViolationsPerRule int
	// MaxViolationAge is how long a violation is kept, by its Timestamp.
	// Default 7 days.
	MaxViolationAge time.Duration
	// Timeout bounds every call to Redis, retries included. Default 2s.
	Timeout time.Duration
	// DedupTTL is how long a (rule, trace) pair that has violations is
	// remembered, so that a second evaluation of the same pair records
	// nothing (see the package doc). Default 1h; a negative value (-1)
	// disables de-duplication.
	DedupTTL time.Duration
	// TrimInterval is how often the store applies retention by itself,
	// besides on every append, so that violations past MaxViolationAge go
	// even when nothing is appended. Default 1 minute; negative turns it
	// off.
	TrimInterval time.Duration
}

// DefaultConfig returns the defaults; the caller sets URL.
func DefaultConfig() Config {
	return Config{
		Prefix:               DefaultPrefix,
		MaxViolations:        DefaultMaxViolations,
		MaxViolationsPerRule: DefaultMaxViolationsPerRule,
		MaxViolationAge:      DefaultMaxViolationAge,
		Timeout:              DefaultTimeout,
		DedupTTL:             DefaultDedupTTL,
		TrimInterval:         DefaultTrimInterval,
	}
}

// Validate reports every problem with c, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("redisstore: config: URL is not set: set BETRACE_REDIS_URL, e.g. redis://localhost:6379/0"))
	} else if _, err := parseURL(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("redisstore: config: URL: %w", err))
	}
	if c.MaxViolations < 0 {
		errs = append(errs, fmt.Errorf("redisstore: config: MaxViolations %d is negative", c.MaxViolations))
	}
	if c.MaxViolationsPerRule < 0 {
		errs = append(errs, fmt.Errorf("redisstore: config: MaxViolationsPerRule %d is negative", c.MaxViolationsPerRule))
	}
	if c.MaxViolationAge < 0 {
		errs = append(errs, fmt.Errorf("redisstore: config: MaxViolationAge %s is negative", c.MaxViolationAge))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("redisstore: config: Timeout %s is negative", c.Timeout))
	}
	if c.DedupTTL > 0 && c.DedupTTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("redisstore: config: DedupTTL %s is below Redis's resolution of 1ms", c.DedupTTL))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxViolations == 0 {
		c.MaxViolations = DefaultMaxViolations
	}
	if c.MaxViolationsPerRule == 0 {
		c.MaxViolationsPerRule = DefaultMaxViolationsPerRule
	}
	if c.MaxViolationAge == 0 {
		c.MaxViolationAge = DefaultMaxViolationAge
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DedupTTL == 0 {
		c.DedupTTL = DefaultDedupTTL
	}
	if c.TrimInterval == 0 {
		c.TrimInterval = DefaultTrimInterval
	}
	return c
}

// parseURL is how Open reads the URL, and so how Validate checks it: what
// passes here is what start-up dials. redis.ParseURL takes
// "redis://h1:6379,h2:6379" for one host named "h1:6379,h2" and leaves
// the failure to the dial; a list of addresses is refused here instead.
// Its errors quote the offending part, never the password.
func parseURL(u string) (*redis.Options, error) {
	opt, err := redis.ParseURL(u)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", opt.Addr, err)
	}
	if strings.ContainsAny(host, ",; ") {
		return nil, fmt.Errorf("%q is several addresses or not a host name: give the one address of the Redis primary (standalone, or the endpoint of Sentinel or a managed service; Redis Cluster is not supported)", host)
	}
	return opt, nil
}

// dedup reports whether de-duplication is on.
func (c Config) dedup() bool { return c.DedupTTL > 0 }
