package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/cluster"
	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/redisstore"
)

// rulePoll is how often an instance checks the rules version in Redis, so
// a pub/sub hint lost across a reconnect delays a change by at most this.
const rulePoll = time.Second

// clustered is what an instance adds when it shares Redis with others:
// the shared store, membership, forwarding, shared strikes, the violation
// spool and the rule sync loop.
type clustered struct {
	cfg     Config
	store   *redisstore.Store
	client  redis.UniversalClient
	members *cluster.Membership
	token   bearer.Token // authenticates this instance to its peers
	router  *cluster.Router
	spool   *cluster.Spool
	rules   *registry.Registry
	logger  *slog.Logger
	now     func() time.Time
	syncLag prometheus.Gauge

	stop    chan struct{}
	done    chan struct{}
	syncing bool // the sync loop was started; set before Start returns
}

func newClustered(cfg Config, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*clustered, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := redisstore.Open(ctx, cfg.Redis, now)
	if err != nil {
		return nil, fmt.Errorf("open the Redis store: %w", err)
	}
	// One client for the store and the cluster: one pool, and one view of
	// where the primary is after a failover.
	client := st.Client()
	cl := cfg.Cluster
	cl.Prefix = cfg.Redis.Prefix
	token, err := cluster.SharedToken(ctx, client, cl, bearer.Token{})
	if err != nil {
		st.Close()
		return nil, err
	}
	members, err := cluster.NewMembership(cl, client, logger.With("component", "cluster"), reg, now)
	if err != nil {
		st.Close()
		return nil, err
	}
	c := &clustered{cfg: cfg, store: st, client: client, members: members, token: token, logger: logger.With("component", "cluster"), now: now,
		spool: cluster.NewSpool(st.AppendViolations, 0, logger.With("component", "cluster"), reg),
		syncLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_rule_sync_lag_seconds",
			Help: "Time from a rule change anywhere in the cluster until this instance applied it (last change seen)."}),
		stop: make(chan struct{}), done: make(chan struct{})}
	reg.MustRegister(c.syncLag)
	return c, nil
}

func (c *clustered) strikes(ruleID string) registry.Striker {
	return cluster.NewStrikes(c.client, c.cfg.Redis.Prefix, ruleID, c.cfg.Quarantine, c.cfg.Cluster.Timeout, c.now)
}

// Start joins the cluster and starts the spool and the rule sync loop.
func (c *clustered) Start(ctx context.Context) error {
	if err := c.members.Start(ctx); err != nil {
		return err
	}
	if err := c.spool.Start(ctx); err != nil {
		return err
	}
	c.syncing = true
	go c.syncLoop()
	return nil
}

// syncLoop applies rule changes made on other instances: a pub/sub hint
// triggers a sync at once, and a poll of the rules version catches any hint
// that was lost.
func (c *clustered) syncLoop() {
	defer close(c.done)
	hints, unsubscribe := c.store.Subscribe(context.Background())
	defer unsubscribe()
	tick := time.NewTicker(rulePoll)
	defer tick.Stop()
	var applied int64 = -1
	for {
		select {
		case <-c.stop:
			return
		case _, ok := <-hints:
			if !ok {
				hints = nil // the store closed; polling carries on
			}
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := c.store.RulesVersion(ctx)
		// Redis lost the rules (restarted empty, flushed) even if a rule was
		// written since: Sync puts back what this instance holds before it
		// reads the set, and so never takes the loss for deletions.
		reset := errors.Is(err, store.ErrReset)
		if reset {
			err = nil
		}
		if err == nil {
			// Changes queued while Redis was unreachable. One that cannot be
			// written stays queued and must not hold up syncing the others.
			if ferr := c.rules.Flush(ctx); ferr != nil {
				c.logger.Debug("queued rule changes not written yet", "err", ferr)
			}
		}
		if err == nil {
			err = c.syncToken(ctx)
		}
		if err == nil && (reset || v != applied) {
			if err = c.rules.Sync(ctx); err == nil {
				if applied >= 0 && !reset {
					c.observeLag() // a change made while running, not the state found at start
				}
				applied = v
				if reset {
					applied = -1 // the version read was of the lost set
				}
			}
		}
		cancel()
		if err != nil {
			c.logger.Debug("rule sync failed; running on cached rules", "err", err)
		}
	}
}

// syncToken keeps the shared cluster token in Redis (stored again if
// Redis lost it) and adopts the stored one if another instance got there
// first, so forwarding heals within a poll after Redis restarts empty.
func (c *clustered) syncToken(ctx context.Context) error {
	if c.cfg.Cluster.Token != "" {
		return nil
	}
	cl := c.cfg.Cluster
	cl.Prefix = c.cfg.Redis.Prefix
	t, err := cluster.SharedToken(ctx, c.client, cl, c.token)
	if err != nil {
		return err
	}
	if t.Value() != c.token.Value() {
		c.logger.Warn("the cluster token shared through Redis changed; using the new one")
		c.token = t
		c.router.SetToken(t)
	}
	return nil
}

func (c *clustered) observeLag() {
	var newest time.Time
	for _, v := range c.rules.List() {
		if v.Record.UpdatedAt.After(newest) {
			newest = v.Record.UpdatedAt
		}
	}
	if !newest.IsZero() {
		c.syncLag.Set(max(0, c.now().Sub(newest).Seconds()))
	}
}

// Shutdown stops the sync loop and writes what is spooled.
func (c *clustered) Shutdown(ctx context.Context) error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
		if c.syncing { // a start-up that failed before the loop began has none to wait for
			<-c.done
		}
	}
	return c.spool.Shutdown(ctx)
}
