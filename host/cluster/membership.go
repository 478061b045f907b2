package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/internal/bearer"
)

// Config sets how an instance joins the cluster.
type Config struct {
	// InstanceID names this instance; unique in the cluster. Default hostname:port.
	InstanceID string
	// AdvertiseAddr is how peers reach this instance's HTTP port (host:port).
	AdvertiseAddr string
	// Prefix namespaces every Redis key. Default "betrace:".
	Prefix string
	// Heartbeat is how often membership is refreshed. Default 2s.
	Heartbeat time.Duration
	// MemberTTL is how long a member stays without a heartbeat. Default 6s.
	MemberTTL time.Duration
	// Timeout bounds each Redis call. Default 1s.
	Timeout time.Duration
	// Token authenticates instances to each other on the internal routes.
	// Empty: the cluster shares one random token through Redis (TokenKey),
	// created by the first instance that needs it.
	Token string
}

// TokenKey is the Redis key, under the prefix, of the shared cluster token
// used when Config.Token is empty.
const TokenKey = "cluster:token"

// Partitions is the fixed number of trace partitions. A trace ID maps to a
// partition forever; only the owner of a partition changes with membership.
const Partitions = 256

// DefaultConfig returns the defaults; InstanceID and AdvertiseAddr are the
// caller's to set.
func DefaultConfig() Config {
	return Config{Prefix: "betrace:", Heartbeat: 2 * time.Second, MemberTTL: 6 * time.Second, Timeout: time.Second}
}

// Validate names every problem.
func (c Config) Validate() error {
	var errs []error
	if c.InstanceID == "" {
		errs = append(errs, errors.New("cluster: instance id is empty"))
	}
	if c.AdvertiseAddr == "" {
		errs = append(errs, errors.New("cluster: advertise address is empty"))
	}
	if c.Heartbeat <= 0 || c.MemberTTL < 2*c.Heartbeat {
		errs = append(errs, fmt.Errorf("cluster: member ttl %s must be at least twice the heartbeat %s", c.MemberTTL, c.Heartbeat))
	}
	if c.Timeout <= 0 || c.Timeout >= c.Heartbeat {
		errs = append(errs, fmt.Errorf("cluster: redis timeout %s must be positive and below the heartbeat %s", c.Timeout, c.Heartbeat))
	}
	if c.Token != "" {
		if _, err := bearer.Parse("BETRACE_CLUSTER_TOKEN", c.Token); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SharedToken returns the cluster token: cfg.Token when set, otherwise the
// one stored in Redis under TokenKey. When none is stored, it stores held
// (the token this instance already uses, so that a Redis that lost its
// data gets it back), or 32 random bytes when held is the zero Token.
// Every instance of a cluster must use the same one; the stored token
// never expires, and an operator rotates it by setting BETRACE_CLUSTER_TOKEN
// on every instance (or deleting the key and restarting them all).
func SharedToken(ctx context.Context, client redis.UniversalClient, cfg Config, held bearer.Token) (bearer.Token, error) {
	if cfg.Token != "" {
		return bearer.Parse("BETRACE_CLUSTER_TOKEN", cfg.Token)
	}
	v := held.Value()
	if v == "" {
		var seed [32]byte
		rand.Read(seed[:])
		v = hex.EncodeToString(seed[:])
	}
	key := cfg.Prefix + TokenKey
	// SET NX … GET would be one round trip but needs Redis 7; we support 6.2.
	if err := client.SetNX(ctx, key, v, 0).Err(); err != nil {
		return bearer.Token{}, fmt.Errorf("cluster: create the shared cluster token in Redis (%s): %w; or set BETRACE_CLUSTER_TOKEN", key, err)
	}
	stored, err := client.Get(ctx, key).Result()
	if err != nil {
		return bearer.Token{}, fmt.Errorf("cluster: read the shared cluster token from Redis (%s): %w; or set BETRACE_CLUSTER_TOKEN", key, err)
	}
	t, err := bearer.Parse(key, stored)
	if err != nil {
		return bearer.Token{}, fmt.Errorf("cluster: the token stored in Redis is unusable: %w; delete %s and restart the instances, or set BETRACE_CLUSTER_TOKEN", err, key)
	}
	return t, nil
}

// Member is one live instance.
type Member struct {
	ID   string
	Addr string
}

// View is one consistent picture of the cluster: its members, and which
// member owns each partition.
type View struct {
	Members []Member // sorted by ID
	Self    int      // index of this instance in Members
	owners  [Partitions]uint16
}

// Owner returns the member that owns traceID, and whether that is this
// instance.
func (v *View) Owner(traceID [16]byte) (Member, bool) {
	i := int(v.owners[Partition(traceID)])
	return v.Members[i], i == v.Self
}

// Partition maps a trace ID to its partition. Trace IDs are random, so the
// low bytes spread evenly.
func Partition(traceID [16]byte) int {
	return int(binary.BigEndian.Uint64(traceID[8:]) % Partitions)
}

// newView computes partition owners by rendezvous hashing: each partition
// goes to the member with the highest hash of (member, partition). When a
// member joins or leaves, only the partitions it wins or held move.
func NewView(members []Member, self string) *View {
	v := &View{Members: members}
	for i, m := range members {
		if m.ID == self {
			v.Self = i
		}
	}
	for p := range Partitions {
		best, bestScore := 0, uint64(0)
		for i, m := range members {
			if s := score(m.ID, p); i == 0 || s > bestScore {
				best, bestScore = i, s
			}
		}
		v.owners[p] = uint16(best)
	}
	return v
}

func score(member string, partition int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(partition))
	h.Write(b[:])
	// FNV's low bits mix poorly on short inputs; finish with a 64-bit mixer.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Membership keeps this instance registered in Redis and the cluster view
// current. Each instance refreshes its entry in a sorted set scored by its
// expiry; entries whose expiry passed are dropped by whoever sees them
// first. When Redis cannot be reached the last view is kept: evaluation
// goes on with the partition owners it knew.
type Membership struct {
	cfg     Config
	client  redis.UniversalClient
	logger  *slog.Logger
	now     func() time.Time
	view    atomic.Pointer[View]
	metrics *metrics

	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	started atomic.Bool // the heartbeat loop runs: Leave waits for it
	left    atomic.Bool
	up      atomic.Bool // the last heartbeat reached Redis
	// everUp and reconnected tell a return after an outage from the first
	// contact at start-up.
	everUp      atomic.Bool
	reconnected atomic.Int64 // Unix ms

	// changed holds, per partition, when its owner last changed (Unix ms).
	changed [Partitions]atomic.Int64
}

// Fragment reports whether the trace's partition changed owner between
// from and to: spans of a trace open across the change may have gone to
// two instances, so neither holds the whole trace.
func (m *Membership) Fragment(traceID [16]byte, from, to time.Time) bool {
	c := m.changed[Partition(traceID)].Load()
	return c != 0 && c >= from.UnixMilli() && c <= to.UnixMilli()
}

// NewMembership returns a Membership whose view holds only this instance
// until Start has heard from Redis.
func NewMembership(cfg Config, client redis.UniversalClient, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Membership{cfg: cfg, client: client, logger: logger, now: now, metrics: newMetrics(reg),
		stop: make(chan struct{}), done: make(chan struct{})}
	m.view.Store(NewView([]Member{{ID: cfg.InstanceID, Addr: cfg.AdvertiseAddr}}, cfg.InstanceID))
	m.metrics.members.Set(1)
	return m, nil
}

// View returns the current view; it never blocks.
func (m *Membership) View() *View { return m.view.Load() }

func (m *Membership) key() string { return m.cfg.Prefix + "members" }

// Start joins the cluster (one heartbeat now, so the first view is real when
// Redis is up) and keeps heartbeating until Leave.
func (m *Membership) Start(ctx context.Context) error {
	if err := m.beat(ctx); err != nil {
		m.logger.Warn("could not join the cluster yet; running on the local view until Redis answers", "err", err)
	}
	m.started.Store(true)
	go m.loop()
	return nil
}

func (m *Membership) loop() {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			if err := m.beat(context.Background()); err != nil {
				m.logger.Debug("heartbeat failed", "err", err)
			}
		}
	}
}

// beat refreshes this instance's entry and reads everyone's, in one round
// trip.
func (m *Membership) beat(ctx context.Context) error {
	if m.left.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	now := m.now()
	expiry := float64(now.Add(m.cfg.MemberTTL).UnixMilli())
	member := m.cfg.InstanceID + "\x00" + m.cfg.AdvertiseAddr
	// Right after Redis comes back, every peer's entry may have expired
	// during the outage although the peers are alive: they have not had a
	// chance to heartbeat yet. Dropping them would move ownership twice and
	// split traces for nothing, so expired entries are kept for one TTL.
	returning := m.everUp.Load() && !m.up.Load()
	grace := returning || now.Sub(time.UnixMilli(m.reconnected.Load())) < m.cfg.MemberTTL
	var live *redis.ZSliceCmd
	_, err := m.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if !grace {
			p.ZRemRangeByScore(ctx, m.key(), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		}
		p.ZAdd(ctx, m.key(), redis.Z{Score: expiry, Member: member})
		live = p.ZRangeWithScores(ctx, m.key(), 0, -1)
		return nil
	})
	if err != nil {
		if m.up.Swap(false) {
			m.logger.Warn("Redis lost: evaluating on cached rules and the last cluster view; violations are spooled", "err", err)
		}
		m.metrics.redisUp.Set(0)
		return fmt.Errorf("cluster: heartbeat: %w", err)
	}
	if !m.up.Swap(true) {
		if m.everUp.Swap(true) {
			m.reconnected.Store(now.UnixMilli())
		}
		m.logger.Info("Redis reachable: cluster membership current")
	}
	m.metrics.redisUp.Set(1)
	var members []Member
	seen := map[string]bool{}
	for _, z := range live.Val() {
		s, _ := z.Member.(string)
		id, addr, ok := cut(s)
		if !ok || seen[id] {
			continue // an instance that changed address: its old entry expires
		}
		seen[id] = true
		members = append(members, Member{ID: id, Addr: addr})
	}
	slices.SortFunc(members, func(a, b Member) int { return compareStrings(a.ID, b.ID) })
	m.update(members)
	return nil
}

func (m *Membership) update(members []Member) {
	old := m.view.Load()
	if slices.Equal(old.Members, members) {
		return
	}
	if !slices.ContainsFunc(members, func(x Member) bool { return x.ID == m.cfg.InstanceID }) {
		return // our own entry is missing (we are leaving): keep routing as before
	}
	next := NewView(members, m.cfg.InstanceID)
	now := m.now().UnixMilli()
	for p := range Partitions {
		if old.Members[old.owners[p]] != next.Members[next.owners[p]] {
			m.changed[p].Store(now)
		}
	}
	m.view.Store(next)
	m.metrics.members.Set(float64(len(members)))
	for _, x := range members {
		if !slices.Contains(old.Members, x) {
			m.logger.Info("cluster member joined", "member", x.ID, "addr", x.Addr, "members", len(members))
		}
	}
	for _, x := range old.Members {
		if !slices.Contains(members, x) {
			m.logger.Info("cluster member left", "member", x.ID, "addr", x.Addr, "members", len(members))
		}
	}
}

// RedisUp reports whether the last heartbeat reached Redis (for /ready).
func (m *Membership) RedisUp(context.Context) error {
	if !m.up.Load() {
		return errors.New("redis unreachable: evaluating on cached rules, violations spooled")
	}
	return nil
}

// Leave removes this instance from the cluster at once (rather than after
// its TTL) so peers stop routing traces to it, then stops heartbeating.
func (m *Membership) Leave(ctx context.Context) error {
	var err error
	m.once.Do(func() {
		m.left.Store(true)
		close(m.stop)
		if !m.started.Load() {
			return // never joined (start-up failed before): nothing to leave, no loop to wait for
		}
		select {
		case <-m.done:
		case <-ctx.Done(): // a heartbeat stuck on Redis must not hold the process
		}
		ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		defer cancel()
		err = m.client.ZRem(ctx, m.key(), m.cfg.InstanceID+"\x00"+m.cfg.AdvertiseAddr).Err()
		if err != nil {
			err = fmt.Errorf("cluster: leave: %w", err)
		}
	})
	return err
}

func cut(s string) (id, addr string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type metrics struct {
	members prometheus.Gauge
	redisUp prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_cluster_members", Help: "Live cluster members as this instance sees them."}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_redis_up", Help: "1 when the last heartbeat reached Redis, 0 when it did not."}),
	}
	reg.MustRegister(m.members, m.redisUp)
	return m
}
