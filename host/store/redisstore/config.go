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
	// URL locates Redis (BETRACE_REDIS_URL): one server
	// (redis://host:6379/0, rediss://user:password@host:6380/2), the
	// primary of a Sentinel group (redis+sentinel://s1:26379,s2:26379/mymaster)
	// or a Redis Cluster (redis+cluster://n1:6379,n2:6379); see url.go
	// for every form. An unknown query parameter is an error. Required.
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
	// WaitReplicas is how many replicas must hold a write before it
	// counts as done (Redis WAIT, BETRACE_REDIS_WAIT_REPLICAS), so that a
	// failover cannot lose what was acknowledged: a write the replicas do
	// not confirm within Timeout fails with store.ErrUnavailable, and is
	// retried or spooled like any other. Default 1 with Sentinel, none
	// otherwise; -1 means none. Not supported with Redis Cluster.
	WaitReplicas int
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
	} else if t, err := parseTarget(c.URL); err != nil {
		errs = append(errs, fmt.Errorf("redisstore: config: URL: %w", err))
	} else if t.kind == redisCluster && c.WaitReplicas > 0 {
		errs = append(errs, fmt.Errorf("redisstore: config: WaitReplicas %d: waiting for replicas is not supported with Redis Cluster: unset BETRACE_REDIS_WAIT_REPLICAS", c.WaitReplicas))
	}
	if c.WaitReplicas < -1 {
		errs = append(errs, fmt.Errorf("redisstore: config: WaitReplicas %d: give a number of replicas, or -1 for none", c.WaitReplicas))
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		errs = append(errs, fmt.Errorf("redisstore: config: Prefix %q contains a brace: BeTrace adds the hash tags Redis Cluster needs itself; remove { and } from BETRACE_REDIS_PREFIX", c.Prefix))
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
	if opt.Network == "unix" {
		return opt, nil
	}
	host, _, err := net.SplitHostPort(opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", opt.Addr, err)
	}
	if strings.ContainsAny(host, ",; ") {
		return nil, fmt.Errorf("%q is several addresses or not a host name: redis:// takes one server; for Sentinel use redis+sentinel://s1:26379,s2:26379/mymaster, for Redis Cluster redis+cluster://n1:6379,n2:6379", host)
	}
	return opt, nil
}

// waitReplicas is how many replicas each write waits for on t.
func (c Config) waitReplicas(t target) int {
	switch {
	case c.WaitReplicas > 0:
		return c.WaitReplicas
	case c.WaitReplicas == 0 && t.kind == sentinel:
		return 1
	}
	return 0
}

// dedup reports whether de-duplication is on.
func (c Config) dedup() bool { return c.DedupTTL > 0 }
