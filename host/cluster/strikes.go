package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/rules"
)

// Strikes counts one rule's strikes across the cluster: every instance adds
// its faults to one Redis sorted set scored by time, so K faults anywhere
// within the window count toward a quarantine. The fault rate is judged on
// this instance's own evaluations: traces are spread over instances by
// trace ID, so each sees a fair sample, and counting evaluations costs no
// Redis call. The instance whose strike tips both records the quarantine;
// the others learn of it through rule sync. When Redis cannot be reached,
// faults count on this instance alone, so a broken rule is still stopped
// during an outage.
type Strikes struct {
	client  redis.UniversalClient
	key     string
	cfg     rules.QuarantinePolicy
	timeout time.Duration
	now     func() time.Time
	local   *rules.Strikes

	mu          sync.Mutex
	quarantined *rules.Quarantine
}

// NewStrikes returns the shared counter of ruleID.
func NewStrikes(client redis.UniversalClient, prefix, ruleID string, cfg rules.QuarantinePolicy, timeout time.Duration, now func() time.Time) *Strikes {
	return &Strikes{client: client, key: prefix + "strikes:" + ruleID, cfg: cfg, timeout: timeout, now: now, local: rules.NewStrikes(cfg, now)}
}

// Evaluated counts an evaluation that did not fault, on this instance.
func (s *Strikes) Evaluated(now time.Time) { s.local.Evaluated(now) }

// Record charges a strike; it reports the quarantine when this strike is
// the one that reaches the limit.
func (s *Strikes) Record(st rules.Strike) (rules.Quarantine, bool) {
	if _, q := s.Quarantined(); q {
		return rules.Quarantine{}, false
	}
	faults, evals := s.local.Fault()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	now := s.now()
	var id [8]byte
	rand.Read(id[:])
	var count *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.key, redis.Z{Score: float64(now.UnixMilli()), Member: hex.EncodeToString(id[:])})
		p.ZRemRangeByScore(ctx, s.key, "-inf", "("+strconv.FormatInt(now.Add(-s.cfg.Window).UnixMilli(), 10))
		count = p.ZCard(ctx, s.key)
		p.PExpire(ctx, s.key, s.cfg.Window)
		return nil
	})
	shared := faults // Redis unreachable: this instance's faults alone
	if err == nil {
		shared = max(int(count.Val()), faults)
	}
	if shared < s.cfg.Strikes || float64(faults) < s.cfg.FaultRate*float64(evals) {
		return rules.Quarantine{}, false
	}
	q := rules.Quarantine{Reason: st.Reason, LastError: st.Err, FuelUsed: st.FuelUsed, TraceID: st.TraceID, Strikes: shared, Evaluations: evals, At: now}
	s.set(q)
	return q, true
}

func (s *Strikes) set(q rules.Quarantine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quarantined = &q
}

// Quarantined reports a quarantine this instance recorded.
func (s *Strikes) Quarantined() (rules.Quarantine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quarantined == nil {
		return rules.Quarantine{}, false
	}
	return *s.quarantined, true
}

// Clear forgets strikes here and in Redis (best effort), as enabling does.
func (s *Strikes) Clear() {
	s.mu.Lock()
	s.quarantined = nil
	s.mu.Unlock()
	s.local.Clear()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	s.client.Del(ctx, s.key)
}
