package cluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
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

// Member is one live instance. Incarnation is drawn afresh by every process,
// so a restarted instance is told apart from the one it replaces: whatever
// that one held died with it.
type Member struct {
	ID          string
	Addr        string
	Incarnation string
}

// View is one picture of the cluster that every instance adopts at the same
// moment: its members, which member owns each partition, and when it takes
// effect.
type View struct {
	// Epoch numbers views in the order they were made; each membership
	// change makes exactly one.
	Epoch uint64
	// Start is when the view takes effect on every instance.
	Start   time.Time
	Members []Member // sorted by ID
	Self    int      // index of this instance in Members, -1 when it is none
	// Lost names the members of the previous view that died (their entry
	// expired, or a new incarnation replaced them) instead of leaving: they
	// handed nothing over.
	Lost   []string
	owners [Partitions]uint16
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

// NewView computes partition owners by rendezvous hashing: each partition
// goes to the member with the highest hash of (member ID, partition). When a
// member joins or leaves, only the partitions it wins or held move; a
// restarted instance keeps its ID and so wins the same partitions back.
// self is matched by ID, so a restarted instance takes the partitions of
// its predecessor for its own until a view names it.
func NewView(members []Member, self string) *View {
	v := &View{Members: members, Self: -1}
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

// keptViews is how many views Redis and every instance remember: enough to
// judge, for any trace still buffered, whether its partition changed owner
// while it was open.
const keptViews = 16

// Membership keeps this instance registered in Redis and adopts the views
// the cluster agrees on. Each instance refreshes its entry in a sorted set
// scored by its expiry; whoever first sees the live set differ from the
// latest view appends the next view to a list in the same script, starting
// SwitchDelay later, so that every instance has read it before it takes
// effect and all switch together. When Redis cannot be reached the known
// views are kept: evaluation goes on with the partition owners it knew.
type Membership struct {
	cfg         Config
	client      redis.UniversalClient
	logger      *slog.Logger
	now         func() time.Time
	incarnation string
	local       *View // before any view is known: this instance alone
	views       atomic.Pointer[[]*View]
	metrics     *metrics

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

	// amu serialises adoption of views: announced is the view the change
	// callbacks last saw, timer wakes the next pending view.
	amu       sync.Mutex
	announced *View
	timer     *time.Timer
	onChange  []func(old, next *View)
	changed   atomic.Pointer[chan struct{}]

	// contact holds, per peer incarnation, what forwarding learnt of it:
	// lost is a window per member a view declared lost, from contact.
	contact sync.Map // Member → *contact
	lmu     sync.Mutex
	lost    atomic.Pointer[[]lostWindow]
}

// contact is what this instance last heard from a peer, and when it first
// failed to reach it afterwards (Unix ms, 0 for never).
type contact struct{ heard, failed atomic.Int64 }

// lostWindow is when a member declared lost may have held spans it never
// passed on: from a little before this instance last heard from it until
// it was first found unreachable (or, failing that, its death was noticed).
type lostWindow struct{ from, to time.Time }

// forwardSlack is how long before this instance last heard from a peer the
// peer may have accepted spans it had not yet forwarded: its queue's
// latency, normally milliseconds.
const forwardSlack = time.Second

// Heard records a forwarded request received from peer.
func (m *Membership) Heard(peer Member) {
	c, _ := m.contact.LoadOrStore(peer, &contact{})
	c.(*contact).heard.Store(m.now().UnixMilli())
}

// Unreachable records that nothing listened at peer's address: the
// process is gone, and traces open here from a little before it was last
// heard from until an idle timeout after now may have lost spans with it.
func (m *Membership) Unreachable(peer Member) {
	c, _ := m.contact.LoadOrStore(peer, &contact{})
	cc := c.(*contact)
	now := m.now()
	heard := cc.heard.Load()
	if f := cc.failed.Load(); f != 0 && f >= heard {
		return // already known since it was last heard from
	}
	cc.failed.Store(now.UnixMilli())
	w := lostWindow{from: now.Add(-m.cfg.lostWindow()), to: now}
	if heard != 0 {
		w.from = time.UnixMilli(heard).Add(-forwardSlack)
	}
	m.addLost(w)
}

// suspectUntil returns the Unix ms up to which spans queued for peer may
// belong to a trace it held spans of: until an idle timeout after it was
// found gone, or forever when that is not known.
func (m *Membership) suspectUntil(peer Member, idle time.Duration) int64 {
	if c, ok := m.contact.Load(peer); ok && idle > 0 {
		cc := c.(*contact)
		if f := cc.failed.Load(); f != 0 && f >= cc.heard.Load() {
			return f + idle.Milliseconds()
		}
	}
	return math.MaxInt64
}

func (m *Membership) addLost(w lostWindow) {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	horizon := m.now().Add(-m.cfg.lostWindow() - time.Hour)
	keep := []lostWindow{w}
	for _, x := range *m.lost.Load() {
		if x.to.After(horizon) {
			keep = append(keep, x)
		}
	}
	m.lost.Store(&keep)
}

// SwitchDelay is how long after a view is made every instance adopts it:
// more than one heartbeat and one Redis timeout, so that every live instance
// has read it before it takes effect.
func (c Config) SwitchDelay() time.Duration { return c.Heartbeat + c.Timeout }

// lostWindow bounds how long before a view took effect the member it
// declared lost may have died: its last heartbeat, its TTL, the heartbeat
// that noticed, and the switch delay.
func (c Config) lostWindow() time.Duration { return c.MemberTTL + c.Heartbeat + c.SwitchDelay() }

// Fragment reports whether a trace assembled here from firstSeen to
// completed may lack spans that died with a member or went elsewhere:
//
//   - this instance did not own its partition when it completed;
//   - it was open while a member died: from a little before this instance
//     last heard from that member until an idle timeout after it found
//     nothing listening there (or, never having found that, from the
//     member's earliest possible death until the view without it), since
//     any member accepts spans of any trace;
//   - this instance is a restarted member that took its predecessor's
//     partitions for its own, and the trace was open there before the view
//     naming it took effect.
//
// idle is the assembler's idle timeout: a trace's spans come closer together
// than that, or the trace is judged in parts anyway. A partition that moved
// from a member that left is handed over whole (see OnChange), and spans
// queued for a dead member arrive marked when they may share a trace with
// what it held (Router), so neither needs a rule here.
func (m *Membership) Fragment(traceID [16]byte, firstSeen, completed time.Time, idle time.Duration) bool {
	views := *m.views.Load()
	if len(views) == 0 {
		return false
	}
	if m.fragment(views, traceID, firstSeen, completed, idle) {
		m.metrics.fragments.Inc()
		return true
	}
	return false
}

// CountFragment counts a trace evaluated as a fragment because spans of it
// came marked so (Router.SetFragmentSink).
func (m *Membership) CountFragment() { m.metrics.fragments.Inc() }

func (m *Membership) fragment(views []*View, traceID [16]byte, firstSeen, completed time.Time, idle time.Duration) bool {
	frag := false
	if _, self := m.viewAt(views, completed).Owner(traceID); !self {
		frag = true
	}
	p := Partition(traceID)
	for i := 1; i < len(views) && !frag; i++ {
		prev, v := views[i-1], views[i]
		if len(v.Lost) == 0 || firstSeen.After(v.Start.Add(idle)) || completed.Before(v.Start.Add(-m.cfg.lostWindow())) {
			continue
		}
		// A restarted instance took its predecessor's partitions for its
		// own at once, and peers' queues for the predecessor reached it:
		// traces it assembled there until the change are fragments. When
		// another member inherits a dead one's partitions, the spans
		// queued for the dead one arrive marked instead (Router).
		old, heir := prev.Members[prev.owners[p]], v.Members[v.owners[p]]
		if old.ID == heir.ID && old.Incarnation != heir.Incarnation && slices.Contains(v.Lost, old.ID) {
			frag = true
		}
	}
	// Any instance accepts any span, so a member that died may have taken
	// spans of any trace with it, not only of its own partitions.
	for _, w := range *m.lost.Load() {
		if !frag && !completed.Before(w.from) && !firstSeen.After(w.to.Add(idle)) {
			frag = true
		}
	}
	return frag
}

// NewMembership returns a Membership whose view holds only this instance
// until Start has heard from Redis.
func NewMembership(cfg Config, client redis.UniversalClient, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var inc [8]byte
	rand.Read(inc[:])
	m := &Membership{cfg: cfg, client: client, logger: logger, now: now, metrics: newMetrics(reg), incarnation: hex.EncodeToString(inc[:]),
		stop: make(chan struct{}), done: make(chan struct{})}
	m.local = NewView([]Member{{ID: cfg.InstanceID, Addr: cfg.AdvertiseAddr, Incarnation: m.incarnation}}, cfg.InstanceID)
	m.announced = m.local
	m.views.Store(&[]*View{})
	m.lost.Store(&[]lostWindow{})
	ch := make(chan struct{})
	m.changed.Store(&ch)
	m.metrics.members.Set(1)
	return m, nil
}

// OnChange registers f, called once per view this instance adopts, with
// the view before: the instance hands over there the traces it holds in
// partitions it no longer owns. Register before Start.
func (m *Membership) OnChange(f func(old, next *View)) { m.onChange = append(m.onChange, f) }

// Changed returns a channel closed when the next view takes effect.
func (m *Membership) Changed() <-chan struct{} { return *m.changed.Load() }

// View returns the view in effect now; it never blocks.
func (m *Membership) View() *View { return m.viewAt(*m.views.Load(), m.now()) }

// viewAt returns the newest view started by t; the oldest known if none
// has yet (a view list whose start is all ahead), or this instance alone
// before Redis answered.
func (m *Membership) viewAt(views []*View, t time.Time) *View {
	for i := len(views) - 1; i >= 0; i-- {
		if !views[i].Start.After(t) {
			return views[i]
		}
	}
	if len(views) > 0 {
		return views[0]
	}
	return m.local
}

// The member set and the views are written by one script, so they share
// a hash tag and so one slot of a Redis Cluster.
func (m *Membership) key() string      { return "{" + m.cfg.Prefix + "cluster}:members" }
func (m *Membership) viewsKey() string { return "{" + m.cfg.Prefix + "cluster}:views" }
func (m *Membership) entry() string {
	return m.cfg.InstanceID + "\x00" + m.cfg.AdvertiseAddr + "\x00" + m.incarnation
}

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

// exchange is one heartbeat (or, leaving, the removal of this instance's
// entry) and the view list, in one script: drop expired entries and older
// incarnations of this instance, refresh this instance's entry, and when the
// live set differs from the latest view, append the next view. Entries are
// "id NUL addr NUL incarnation"; a view is "epoch LF start-ms LF lost IDs
// (TAB-separated) LF" and its entries, LF-separated and sorted.
var exchange = redis.NewScript(`
local now = tonumber(ARGV[1])
local gone = {}
if ARGV[5] == '1' then
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])) do gone[e] = true end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
local prefix = ARGV[4]
for _, e in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if e ~= ARGV[3] and string.sub(e, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], e)
    gone[e] = true
  end
end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[3])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
end
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(live)
local members = table.concat(live, '\n')
local latest = redis.call('LINDEX', KEYS[2], 0)
local epoch, start, prev = 0, 0, nil
if latest then
  local a = string.find(latest, '\n', 1, true)
  local b = string.find(latest, '\n', a + 1, true)
  local c = string.find(latest, '\n', b + 1, true)
  epoch = tonumber(string.sub(latest, 1, a - 1))
  start = tonumber(string.sub(latest, a + 1, b - 1))
  prev = string.sub(latest, c + 1)
end
if members ~= prev then
  local known = tonumber(ARGV[7])
  local s = now + tonumber(ARGV[6])
  if not latest and known == 0 then s = now end
  if s < start then s = start end
  local lost = {}
  if prev then
    for e in string.gmatch(prev, '[^\n]+') do
      if gone[e] then
        lost[#lost + 1] = string.sub(e, 1, string.find(e, '\0', 1, true) - 1)
      end
    end
  end
  redis.call('LPUSH', KEYS[2], string.format('%.0f', math.max(epoch, known) + 1) .. '\n' .. string.format('%.0f', s) .. '\n' .. table.concat(lost, '\t') .. '\n' .. members)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[8]) - 1)
end
return redis.call('LRANGE', KEYS[2], 0, -1)
`)

// beat refreshes this instance's entry and reads the views, in one round
// trip.
func (m *Membership) beat(ctx context.Context) error {
	if m.left.Load() {
		return nil
	}
	return m.exchange(ctx, false)
}

func (m *Membership) exchange(ctx context.Context, leaving bool) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	now := m.now()
	expiry := strconv.FormatInt(now.Add(m.cfg.MemberTTL).UnixMilli(), 10)
	if leaving {
		expiry = ""
	}
	// Right after Redis comes back, every peer's entry may have expired
	// during the outage although the peers are alive: they have not had a
	// chance to heartbeat yet. Dropping them would move ownership twice and
	// split traces for nothing, so expired entries are kept for one TTL.
	returning := m.everUp.Load() && !m.up.Load()
	grace := returning || now.Sub(time.UnixMilli(m.reconnected.Load())) < m.cfg.MemberTTL
	expire := "1"
	if grace {
		expire = "0"
	}
	var known uint64
	if vs := *m.views.Load(); len(vs) > 0 {
		known = vs[len(vs)-1].Epoch
	}
	res, err := exchange.Run(ctx, m.client, []string{m.key(), m.viewsKey()},
		now.UnixMilli(), expiry, m.entry(), m.cfg.InstanceID+"\x00", expire,
		m.cfg.SwitchDelay().Milliseconds(), known, keptViews).StringSlice()
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
	m.install(res)
	return nil
}

// install merges the views read from Redis into the known ones (Redis may
// have lost some), then adopts whichever has started and wakes at the next.
func (m *Membership) install(encoded []string) {
	byEpoch := map[uint64]*View{}
	for _, v := range *m.views.Load() {
		byEpoch[v.Epoch] = v
	}
	for _, s := range encoded {
		v, err := m.decodeView(s)
		if err != nil {
			m.logger.Warn("ignoring a malformed cluster view in Redis", "err", err)
			continue
		}
		if _, ok := byEpoch[v.Epoch]; !ok && len(v.Members) > 0 {
			byEpoch[v.Epoch] = v
		}
	}
	views := make([]*View, 0, len(byEpoch))
	for _, v := range byEpoch {
		views = append(views, v)
	}
	slices.SortFunc(views, func(a, b *View) int { return cmp.Compare(a.Epoch, b.Epoch) })
	if len(views) > keptViews {
		views = views[len(views)-keptViews:]
	}
	m.views.Store(&views)
	m.adopt()
}

func (m *Membership) decodeView(s string) (*View, error) {
	parts := strings.SplitN(s, "\n", 4)
	if len(parts) < 3 {
		return nil, fmt.Errorf("view %.40q: want epoch, start, lost and members", s)
	}
	epoch, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("view epoch: %w", err)
	}
	start, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("view start: %w", err)
	}
	var members []Member
	seen := map[string]bool{}
	if len(parts) == 4 {
		for _, e := range strings.Split(parts[3], "\n") {
			f := strings.Split(e, "\x00")
			if len(f) != 3 || seen[f[0]] {
				continue // an instance that changed address: its old entry expires
			}
			seen[f[0]] = true
			members = append(members, Member{ID: f[0], Addr: f[1], Incarnation: f[2]})
		}
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	v := NewView(members, m.cfg.InstanceID)
	v.Epoch, v.Start = epoch, time.UnixMilli(start)
	if parts[2] != "" {
		v.Lost = strings.Split(parts[2], "\t")
	}
	return v, nil
}

// adopt runs the change callbacks when the view in effect is not the one
// they last saw, and sets a timer for the next view to start.
func (m *Membership) adopt() {
	m.amu.Lock()
	defer m.amu.Unlock()
	views := *m.views.Load()
	now := m.now()
	cur := m.viewAt(views, now)
	if cur != m.announced {
		old := m.announced
		m.announced = cur
		m.metrics.members.Set(float64(len(cur.Members)))
		m.metrics.epoch.Set(float64(cur.Epoch))
		m.logChange(old, cur)
		m.noteLost(old, cur)
		for _, f := range m.onChange {
			f(old, cur)
		}
		next := make(chan struct{})
		close(*m.changed.Swap(&next))
	}
	if m.timer != nil {
		m.timer.Stop()
		m.timer = nil
	}
	for _, v := range views {
		if v.Start.After(now) {
			m.timer = time.AfterFunc(v.Start.Sub(now), m.adopt)
			break
		}
	}
}

// noteLost records, for each member cur declares lost that this instance
// never found gone itself, when it may have held spans it never passed on.
func (m *Membership) noteLost(old, cur *View) {
	for _, x := range old.Members {
		if !slices.Contains(cur.Lost, x.ID) || slices.Contains(cur.Members, x) {
			continue
		}
		w := lostWindow{from: cur.Start.Add(-m.cfg.lostWindow()), to: cur.Start.Add(-m.cfg.SwitchDelay())}
		if c, ok := m.contact.Load(x); ok {
			cc := c.(*contact)
			if f := cc.failed.Load(); f != 0 && f >= cc.heard.Load() {
				continue // Unreachable recorded its window
			}
			if h := cc.heard.Load(); h != 0 {
				w.from = time.UnixMilli(h).Add(-forwardSlack)
			}
		}
		m.addLost(w)
	}
}

func (m *Membership) logChange(old, cur *View) {
	for _, x := range cur.Members {
		if !slices.Contains(old.Members, x) {
			m.logger.Info("cluster member joined", "member", x.ID, "addr", x.Addr, "members", len(cur.Members), "epoch", cur.Epoch)
		}
	}
	for _, x := range old.Members {
		if !slices.Contains(cur.Members, x) {
			m.logger.Info("cluster member left", "member", x.ID, "addr", x.Addr, "lost", slices.Contains(cur.Lost, x.ID), "members", len(cur.Members), "epoch", cur.Epoch)
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
// its TTL), stops heartbeating, and waits, serving, until the view without
// it takes effect on every instance: then the change callbacks hand what it
// holds over to the new owners (see OnChange). Without Redis it returns at
// once, and the caller evaluates what it holds as it is.
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
		xctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		err = m.exchange(xctx, true)
		cancel()
		if err != nil {
			err = fmt.Errorf("cluster: leave: %w", err)
			return
		}
		views := *m.views.Load()
		if len(views) == 0 {
			return
		}
		// Polled against the clock the views are stamped with, in short
		// steps, rather than one timer: the start is in that clock's terms.
		start := views[len(views)-1].Start
		for wait := start.Sub(m.now()); wait > 0; wait = start.Sub(m.now()) {
			select {
			case <-time.After(min(wait, 20*time.Millisecond)):
			case <-ctx.Done():
				err = fmt.Errorf("cluster: leave: waiting for the cluster to take over: %w", ctx.Err())
				return
			}
		}
		m.adopt()
		m.amu.Lock()
		if m.timer != nil {
			m.timer.Stop()
		}
		m.amu.Unlock()
	})
	return err
}

type metrics struct {
	members   prometheus.Gauge
	redisUp   prometheus.Gauge
	epoch     prometheus.Gauge
	fragments prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_cluster_members", Help: "Live cluster members as this instance sees them."}),
		redisUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_redis_up", Help: "1 when the last heartbeat reached Redis, 0 when it did not."}),
		epoch:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_cluster_view_epoch", Help: "Epoch of the cluster view in effect on this instance; equal on every instance once a change took effect."}),
		fragments: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_cluster_fragments_total",
			Help: "Traces evaluated as fragments because their partition changed owner while they were open and the old owner died (its spans died with it) or the trace reached an instance that no longer owns it: rules report no absence on them, so such verdicts are lost."}),
	}
	reg.MustRegister(m.members, m.redisUp, m.epoch, m.fragments)
	return m
}
