package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/store"
)

// ErrClosed is returned by every call after Close. It wraps
// store.ErrUnavailable.
var ErrClosed = fmt.Errorf("store is closed: %w", store.ErrUnavailable)

// Store keeps rules, modules and violations in Redis, shared by every
// instance configured with the same URL and Prefix. It is safe for
// concurrent use.
type Store struct {
	cfg   Config
	now   func() time.Time
	rdb   redis.UniversalClient
	where string   // names the deployment in messages
	kind  topology // standalone, Sentinel or Cluster
	wait  int      // replicas each write waits for; 0 for none
	k     keys

	closed atomic.Bool
	subsMu sync.Mutex
	subs   map[*subscription]struct{}

	trimmed    atomic.Uint64
	duplicates atomic.Uint64

	stopTrim chan struct{} // closed by Close
	trimDone chan struct{} // closed when the trim timer has stopped

	genMu sync.Mutex
	gen   string // the rules generation last read or written; "" before any
}

var _ store.Store = (*Store)(nil)

// Open connects to Redis and pings it once, so that a wrong URL or a
// server that is down is reported at startup; the error wraps
// store.ErrUnavailable when Redis did not answer. now is the clock
// retention uses; nil means time.Now.
func Open(ctx context.Context, cfg Config, now func() time.Time) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if now == nil {
		now = time.Now
	}
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: config: URL: %w", err)
	}
	s := &Store{
		cfg:   cfg,
		now:   now,
		rdb:   t.client(cfg.Timeout),
		where: t.where,
		kind:  t.kind,
		wait:  cfg.waitReplicas(t),
		k:     newKeys(cfg.Prefix),
		subs:  map[*subscription]struct{}{},

		stopTrim: make(chan struct{}),
		trimDone: make(chan struct{}),
	}
	c, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := s.rdb.Ping(c).Err(); err != nil {
		s.rdb.Close()
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("redisstore: open: %w", ctx.Err())
		}
		if t.kind == standalone && t.single.TLSConfig != nil && speaksPlainRedis(ctx, t.single.Addr, cfg.Timeout) {
			return nil, fmt.Errorf("redisstore: open: BETRACE_REDIS_URL is rediss:// (TLS) but Redis at %s answers without TLS: use redis://, or enable TLS on the server: %w", t.single.Addr, store.ErrUnavailable)
		}
		return nil, fmt.Errorf("redisstore: open: cannot reach %s: %w: %w (check BETRACE_REDIS_URL and that Redis is running and reachable)",
			s.where, store.ErrUnavailable, err)
	}
	if err := s.checkMode(c); err != nil {
		s.rdb.Close()
		return nil, err
	}
	if t.kind != redisCluster {
		if err := s.migrateLayout(c); err != nil {
			s.rdb.Close()
			return nil, err
		}
	}
	go s.trimLoop()
	return s, nil
}

// trimLoop applies retention every TrimInterval: appends trim as they
// write, but violations past their age must go when nothing is appended
// too. Every instance runs it; a trim with nothing due costs Redis two
// range reads. A failure waits for the next tick, or the next append.
func (s *Store) trimLoop() {
	defer close(s.trimDone)
	if s.cfg.TrimInterval < 0 {
		return
	}
	tick := time.NewTicker(s.cfg.TrimInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stopTrim:
			return
		case <-tick.C:
			s.Trim(context.Background())
		}
	}
}

// speaksPlainRedis reports whether addr answers a plain-text PING, to tell
// a TLS handshake that failed because the server has no TLS (it reads the
// ClientHello as a command and waits) from one that could not connect.
func speaksPlainRedis(ctx context.Context, addr string, timeout time.Duration) bool {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 64)
	n, _ := conn.Read(buf)
	// +PONG, or an error such as -NOAUTH: either way a plain RESP reply.
	return n > 0 && (buf[0] == '+' || buf[0] == '-')
}

// Where names the Redis deployment, from the URL, for messages: "Redis
// at host:6379", the Sentinels' primary, or the Cluster's seed nodes.
func (s *Store) Where() string { return s.where }

// Client is the store's go-redis client, for the cluster's membership,
// strikes and token, so that one process keeps one pool and follows one
// failover. It is closed by Close.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Trimmed is how many violations retention has removed since Open,
// counting only the trims this Store made.
func (s *Store) Trimmed() uint64 { return s.trimmed.Load() }

// Duplicates is how many violations AppendViolations has skipped since
// Open because their (rule, trace) pair was already recorded by another
// evaluation.
func (s *Store) Duplicates() uint64 { return s.duplicates.Load() }

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	const op = "ping"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	return s.fail(ctx, op, s.rdb.Ping(c).Err())
}

// Close stops the subscriptions and closes the connections. Calls in
// flight fail with ErrUnavailable. It is idempotent.
func (s *Store) Close() error {
	s.subsMu.Lock()
	if s.closed.Swap(true) {
		s.subsMu.Unlock()
		return nil
	}
	subs := make([]*subscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	s.subsMu.Unlock()
	close(s.stopTrim)
	<-s.trimDone
	for _, sub := range subs {
		sub.stop()
	}
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

// enter starts a call: it fails once the store is closed or ctx is done,
// and otherwise returns ctx bounded by the configured Timeout.
func (s *Store) enter(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, fmt.Errorf("redisstore: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	c, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	return c, cancel, nil
}

// Redis error replies that mean "not now" rather than "never".
var transientReplies = []struct{ prefix, hint string }{
	{"LOADING", "Redis is loading its data set"},
	{"BUSY", "Redis is busy running a script"},
	{"MASTERDOWN", "the replica has lost its primary"},
	{"READONLY", "the URL points at a read-only replica: point BETRACE_REDIS_URL at the primary"},
	{"TRYAGAIN", "Redis asked to try again"},
	{"CLUSTERDOWN", "the Redis cluster is down"},
	{"NOREPLICAS", "Redis has not enough replicas to accept writes"},
	{"OOM", "Redis is out of memory: raise its maxmemory or lower MaxViolations"},
}

// fail turns a go-redis error into this package's: nil stays nil; a
// connection failure or timeout wraps store.ErrUnavailable (so the API
// answers 503 and a caller may retry or spool); a reply that Redis cannot
// serve now does too; any other reply is an error of its own.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		// The caller gave up; Redis may be fine.
		return fmt.Errorf("redisstore: %s: %w", op, ctx.Err())
	case ctx.Err() != nil:
		return fmt.Errorf("redisstore: %s: %w: %w before %s answered", op, store.ErrUnavailable, ctx.Err(), s.where)
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		msg := reply.Error()
		for _, t := range transientReplies {
			if strings.HasPrefix(msg, t.prefix) {
				return fmt.Errorf("redisstore: %s: %w: %s (%s)", op, store.ErrUnavailable, msg, t.hint)
			}
		}
		if strings.HasPrefix(msg, "WRONGTYPE") {
			return fmt.Errorf("redisstore: %s: %s (is another application using keys under the prefix %q? set BETRACE_REDIS_PREFIX)", op, msg, s.cfg.Prefix)
		}
		return fmt.Errorf("redisstore: %s: redis: %s", op, msg)
	}
	if s.closed.Load() {
		return fmt.Errorf("redisstore: %s: %w", op, ErrClosed)
	}
	if errors.Is(err, errNotReplicated) {
		return fmt.Errorf("redisstore: %s: %w: %w (check the replicas of %s and their link to the primary, or set BETRACE_REDIS_WAIT_REPLICAS=-1 to stop waiting for them)", op, store.ErrUnavailable, err, s.where)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redisstore: %s: %w: %s did not answer within %s (check that it is running and reachable)", op, store.ErrUnavailable, s.where, s.cfg.Timeout)
	}
	return fmt.Errorf("redisstore: %s: %w: %w (check that %s is running and reachable)", op, store.ErrUnavailable, err, s.where)
}

// maybeSent reports whether a failed command may have reached Redis and
// run there: a timeout or a connection lost while waiting for the reply
// says nothing about whether Redis executed it (a stalled server runs the
// queued command when it wakes). Only failures that stop a command before
// it is written are known not to have run: a reply that is an error, no
// connection (dial, pool, closed client). Anything else counts as sent, so
// that a caller is never told "not applied" about a change that landed.
func maybeSent(err error) bool {
	var reply redis.Error
	if errors.As(err, &reply) || errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) {
		return false
	}
	var op *net.OpError
	return !errors.As(err, &op) || op.Op != "dial"
}

// maybeApplied marks a write error as store.ErrMaybeApplied, keeping its
// message: the caller words the consequence for its own audience.
type maybeApplied struct{ error }

func (e maybeApplied) Is(target error) bool { return target == store.ErrMaybeApplied }
func (e maybeApplied) Unwrap() error        { return e.error }

// --- rules ---

func ruleOp(verb, id string) string { return fmt.Sprintf("%s rule %q", verb, id) }

// ListRules returns every rule, ordered by ID. It fails with
// store.ErrReset when Redis no longer holds the rules generation this store
// read before: the rules are then not the set that exists.
func (s *Store) ListRules(ctx context.Context) ([]rules.Record, error) {
	_, out, err := s.snapshot(ctx, "list rules")
	return out, err
}

func decodeRules(all map[string]string) ([]rules.Record, error) {
	out := make([]rules.Record, 0, len(all))
	for id, v := range all {
		var r rules.Record
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, fmt.Errorf("rule %q: %w: %v", id, store.ErrCorrupt, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b rules.Record) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Rule returns one rule or store.ErrNotFound.
func (s *Store) Rule(ctx context.Context, id string) (rules.Record, error) {
	op := ruleOp("get", id)
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return rules.Record{}, err
	}
	defer cancel()
	v, err := s.rdb.HGet(c, s.k.rules, id).Result()
	if errors.Is(err, redis.Nil) {
		return rules.Record{}, fmt.Errorf("redisstore: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return rules.Record{}, s.fail(ctx, op, err)
	}
	var r rules.Record
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return rules.Record{}, fmt.Errorf("redisstore: %s: %w: %v", op, store.ErrCorrupt, err)
	}
	return r, nil
}

// ruleWrite runs a rule script and maps its status to an error; rev is
// the revision an update must find, for the conflict message. The script
// writes only into the generation this store last saw, which a read
// learns first if there is none yet.
func (s *Store) ruleWrite(ctx context.Context, op string, rev int64, script *redis.Script, args ...any) error {
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	gen := s.generation()
	if gen == "" {
		if _, err := s.rulesVersion(ctx, c, op); err != nil {
			return err
		}
		gen = s.generation()
	}
	args = append(args, gen, s.k.rulesChanged, s.now().UnixMilli())
	res, err := s.run(c, script, s.ruleKeys(), args...).Slice()
	if err != nil {
		if maybeSent(err) {
			return maybeApplied{s.fail(ctx, op, err)}
		}
		return s.fail(ctx, op, err)
	}
	var status string
	var n int64
	if len(res) == 2 {
		status, _ = res[0].(string)
		n, _ = res[1].(int64)
	}
	switch status {
	case "ok", "same":
		return nil
	case "exists":
		return fmt.Errorf("redisstore: %s: %w", op, store.ErrExists)
	case "missing":
		return fmt.Errorf("redisstore: %s: %w", op, store.ErrNotFound)
	case "conflict":
		return fmt.Errorf("redisstore: %s: %w: stored revision is %d, this update is revision %d", op, store.ErrConflict, n, rev+1)
	case "corrupt":
		return fmt.Errorf("redisstore: %s: %w: the stored record is not JSON with a numeric revision", op, store.ErrCorrupt)
	case "reset":
		return s.resetErr(op)
	}
	return fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
}

func (s *Store) ruleKeys() []string {
	return []string{s.k.rules, s.k.rulesVersion, s.k.generation, s.k.deleted}
}

func (s *Store) resetErr(op string) error {
	return fmt.Errorf("redisstore: %s: %w: %s no longer holds the rules generation this instance read (it lost its data, or another instance put the rules back since); nothing was written: put back the rules held (RepublishRules), then retry",
		op, store.ErrReset, s.where)
}

func (s *Store) generation() string {
	s.genMu.Lock()
	defer s.genMu.Unlock()
	return s.gen
}

// observe checks a generation read from Redis against the one this store
// last saw: the first is adopted, a different one is ErrReset and is not
// adopted, so every read keeps reporting the loss until RepublishRules.
func (s *Store) observe(op, gen string) error {
	s.genMu.Lock()
	defer s.genMu.Unlock()
	switch s.gen {
	case gen:
		return nil
	case "":
		s.gen = gen
		return nil
	}
	return s.resetErr(op)
}

// newGeneration is a value that no earlier generation had.
func newGeneration() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateRule stores a new rule as given, or returns store.ErrExists. It
// bumps the rules version and publishes it. Storing a record identical to
// the stored one succeeds without a change, so a retried call that had
// been applied is not reported as a duplicate.
func (s *Store) CreateRule(ctx context.Context, r rules.Record) error {
	op := ruleOp("create", r.ID)
	if err := rules.ValidateID(r.ID); err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	return s.ruleWrite(ctx, op, 0, scriptCreateRule, r.ID, val)
}

// UpdateRule replaces a rule whose stored Revision is r.Revision-1:
// store.ErrNotFound if it is gone, store.ErrConflict if it moved. The
// check and the write are one script, so of concurrent updates from the
// same revision exactly one succeeds. It bumps the rules version and
// publishes it. An update identical to the stored record succeeds without
// a change (a retried call that had been applied).
func (s *Store) UpdateRule(ctx context.Context, r rules.Record) error {
	op := ruleOp("update", r.ID)
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	return s.ruleWrite(ctx, op, r.Revision-1, scriptUpdateRule, r.ID, val, r.Revision-1)
}

// DeleteRule removes a rule (not its modules) or returns
// store.ErrNotFound. It bumps the rules version and publishes it.
func (s *Store) DeleteRule(ctx context.Context, id string) error {
	return s.ruleWrite(ctx, ruleOp("delete", id), 0, scriptDeleteRule, id)
}

// --- modules ---

// normalizeSHA lower-cases a hex sha256 and checks its form.
func normalizeSHA(sha string) (string, error) {
	sha = strings.ToLower(sha)
	if _, err := hex.DecodeString(sha); err != nil || len(sha) != 2*sha256.Size {
		return sha, fmt.Errorf("sha256 must be %d hex digits", 2*sha256.Size)
	}
	return sha, nil
}

// PutModule stores module bytes under their sha256 (hex), after checking
// that they hash to it. Storing the same bytes again writes nothing;
// storing them over a corrupted copy repairs it.
func (s *Store) PutModule(ctx context.Context, sha string, module []byte) error {
	op := "put module " + sha
	sha, err := normalizeSHA(sha)
	if err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	sum := sha256.Sum256(module)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return fmt.Errorf("redisstore: %s: digest mismatch: the bytes hash to %s", op, got)
	}
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	err = s.run(c, scriptPutModule, []string{s.k.module(sha)}, module).Err()
	return s.fail(ctx, op, err)
}

// Module returns the bytes stored under sha, verifying their digest:
// store.ErrCorrupt on mismatch, store.ErrNotFound if absent.
func (s *Store) Module(ctx context.Context, sha string) ([]byte, error) {
	op := "get module " + sha
	sha, err := normalizeSHA(sha)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	b, err := s.rdb.Get(c, s.k.module(sha)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: %s: %w", op, store.ErrNotFound)
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return nil, fmt.Errorf("redisstore: %s: %w: the stored bytes hash to %s", op, store.ErrCorrupt, got)
	}
	return b, nil
}

// --- rule synchronisation ---

// RulesVersion returns the rules version: a counter that every successful
// CreateRule, UpdateRule and DeleteRule of any instance increments in the
// same script as its change. 0 means no rule was ever changed under this
// prefix. The first change starts the counter at the current Unix time in
// milliseconds, so that versions keep growing even if Redis loses its
// data (and with it the rules). A cache holding the rules of version v is
// current while RulesVersion returns v; it should reload whenever the
// version differs from v. It fails with store.ErrReset once Redis lost the
// rules generation this store read before, even when nothing was written
// since.
func (s *Store) RulesVersion(ctx context.Context) (int64, error) {
	const op = "get rules version"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return 0, err
	}
	defer cancel()
	return s.rulesVersion(ctx, c, op)
}

func (s *Store) rulesVersion(ctx, c context.Context, op string) (int64, error) {
	res, err := scriptRulesVersion.Run(c, s.rdb, s.ruleKeys()[:3], newGeneration()).Slice()
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	v, gen, ok := versionAndGeneration(res)
	if !ok {
		return 0, fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
	}
	if err := s.observe(op, gen); err != nil {
		return 0, err
	}
	return v, nil
}

func versionAndGeneration(res []any) (int64, string, bool) {
	if len(res) < 2 {
		return 0, "", false
	}
	v, ok1 := res[0].(int64)
	gen, ok2 := res[1].(string)
	return v, gen, ok1 && ok2 && gen != ""
}

// RulesSnapshot returns every rule, ordered by ID, and the rules version
// they are at, read in one instant: no change is half in the snapshot. It
// fails with store.ErrReset as ListRules does.
func (s *Store) RulesSnapshot(ctx context.Context) (int64, []rules.Record, error) {
	return s.snapshot(ctx, "snapshot rules")
}

func (s *Store) snapshot(ctx context.Context, op string) (int64, []rules.Record, error) {
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return 0, nil, err
	}
	defer cancel()
	res, err := scriptRulesSnapshot.Run(c, s.rdb, s.ruleKeys()[:3], newGeneration()).Slice()
	if err != nil {
		return 0, nil, s.fail(ctx, op, err)
	}
	version, gen, ok := versionAndGeneration(res)
	if !ok || len(res)%2 != 0 {
		return 0, nil, fmt.Errorf("redisstore: %s: unexpected script reply", op)
	}
	if err := s.observe(op, gen); err != nil {
		return 0, nil, err
	}
	all := make(map[string]string, len(res)/2)
	for i := 2; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		all[id], _ = res[i+1].(string)
	}
	out, err := decodeRules(all)
	if err != nil {
		return 0, nil, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	return version, out, nil
}

// RepublishRules writes back the rules an instance holds after Redis lost
// its data, in one script: a reader sees all of them or none, and the
// version moves once. A rule is written when it is missing, unless it was
// deleted since the loss, or when the stored record has a lower revision;
// the others stay as they are. Modules are written first, one by one: bytes
// no record names are invisible. Afterwards this store works in the
// generation it found or started, so ErrReset stops for this loss. It
// answers how many records it wrote.
func (s *Store) RepublishRules(ctx context.Context, held []store.HeldRule) (int, error) {
	const op = "republish rules"
	args := []any{newGeneration(), len(held)}
	for _, h := range held {
		if err := rules.ValidateID(h.Record.ID); err != nil {
			return 0, fmt.Errorf("redisstore: %s: %w", op, err)
		}
		val, err := json.Marshal(h.Record)
		if err != nil {
			return 0, fmt.Errorf("redisstore: %s: rule %q: %w", op, h.Record.ID, err)
		}
		args = append(args, h.Record.ID, val, h.Record.Revision)
	}
	for _, h := range held {
		if err := s.PutModule(ctx, h.Record.Module.SHA256, h.Module); err != nil {
			return 0, fmt.Errorf("redisstore: %s: module of %q: %w", op, h.Record.ID, err)
		}
	}
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return 0, err
	}
	defer cancel()
	args = append(args, s.k.rulesChanged, s.now().UnixMilli())
	res, err := s.run(c, scriptRepublish, s.ruleKeys(), args...).Slice()
	if err != nil {
		if maybeSent(err) {
			return 0, maybeApplied{s.fail(ctx, op, err)}
		}
		return 0, s.fail(ctx, op, err)
	}
	if len(res) != 3 {
		return 0, fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
	}
	written, ok1 := res[0].(int64)
	gen, ok2 := res[2].(string)
	if !ok1 || !ok2 || gen == "" {
		return 0, fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
	}
	s.genMu.Lock()
	s.gen = gen
	s.genMu.Unlock()
	return int(written), nil
}
