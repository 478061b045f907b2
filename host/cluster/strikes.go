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
// within the window quarantine the rule. The instance whose strike tips the
// count records the quarantine; the others learn of it through rule sync.
// When Redis cannot be reached, strikes count on this instance alone, so a
// hostile rule is still stopped during an outage.
type Strikes struct {
	client  redis.UniversalClient
	key     string
	cfg     rules.Config
	timeout time.Duration
	now     func() time.Time
	local   *rules.Strikes

	mu          sync.Mutex
	quarantined *rules.Quarantine
}

// NewStrikes returns the shared counter of ruleID.
func NewStrikes(client redis.UniversalClient, prefix, ruleID string, cfg rules.Config, timeout time.Duration, now func() time.Time) *Strikes {
	return &Strikes{client: client, key: prefix + "strikes:" + ruleID, cfg: cfg, timeout: timeout, now: now, local: rules.NewStrikes(cfg, now)}
}

// Record charges a strike; it reports the quarantine when this strike is
// the one that reaches the limit.
func (s *Strikes) Record(st rules.Strike) (rules.Quarantine, bool) {
	if _, q := s.Quarantined(); q {
		return rules.Quarantine{}, false
	}
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
	if err != nil {
		q, tripped := s.local.Record(st)
		if tripped {
			s.set(q)
		}
		return q, tripped
	}
	if count.Val() < int64(s.cfg.Strikes) {
		return rules.Quarantine{}, false
	}
	q := rules.Quarantine{Reason: st.Reason, LastError: st.Err, FuelUsed: st.FuelUsed, TraceID: st.TraceID, Strikes: int(count.Val()), At: now}
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
