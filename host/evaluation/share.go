package evaluation

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/betracehq/betrace/host/registry"
)

// Fair share. A fuel budget bounds one call, not how much of the workers a
// rule takes: one legal rule that burns most of its budget on every trace
// halved the throughput of nineteen cheap ones beside it. So while traces
// wait for a worker, a rule may take at most its share of the workers' time
// over a sliding window; past it, its evaluations are skipped (counted on
// the rule and in betrace_rule_evaluations_skipped_total) until the window
// slides, and the rule runs on a fraction of traces, slowing only itself.
// Time rather than fuel is counted because time is what neighbours lose,
// host calls included, and a faulted call's time counts as any other.
// While no trace waits, there is room for everyone and nothing is skipped.

// ShareConfig sets each rule's share of evaluation.
type ShareConfig struct {
	// Share is the fraction of the workers' time one rule may take while
	// traces wait, between 0 and 1. Default 0: an equal share, one over
	// the number of rules running.
	Share float64
	// Window is how long time is counted over. Default 10s.
	Window time.Duration
	// Disabled turns throttling off (benchmarks of one rule's cost).
	Disabled bool
}

// DefaultShareWindow is ShareConfig.Window's default.
const DefaultShareWindow = 10 * time.Second

// SkipOverShare is the reason of an evaluation skipped because its rule
// had taken more than its share of the workers (declared in registry,
// whose Stats show it).
const SkipOverShare = registry.SkipOverShare

// SkipFragment is the reason of an evaluation skipped because the trace is
// a fragment and the rule's module judges whole traces only
// (abiv1.ExportWholeTracesOnly).
const SkipFragment = "fragment"

// Validate reports a share outside [0, 1] or a negative window.
func (c ShareConfig) Validate() error {
	if c.Share < 0 || c.Share > 1 {
		return fmt.Errorf("%v must be between 0 (an equal share) and 1", c.Share)
	}
	if c.Window < 0 {
		return fmt.Errorf("window %v must not be negative", c.Window)
	}
	return nil
}

// shareSlots divide the window (registry.BusyTime counts per slot), so
// the window slides in steps of a tenth of it.
const shareSlots = registry.BusySlots

// Share decides, per rule and trace, whether the rule is over its share.
// One Share serves every worker of a pool.
type Share struct {
	cfg       ShareConfig
	workers   int
	slotWidth int64        // ns
	waitedAt  atomic.Int64 // slot in which a trace last waited for a worker
}

// NewShare returns the share of workers evaluation workers under cfg.
func NewShare(cfg ShareConfig, workers int) *Share {
	if cfg.Window <= 0 {
		cfg.Window = DefaultShareWindow
	}
	s := &Share{cfg: cfg, workers: max(workers, 1), slotWidth: int64(cfg.Window) / shareSlots}
	s.waitedAt.Store(-shareSlots)
	return s
}

func (s *Share) slot(now time.Time) int64 { return now.UnixNano() / s.slotWidth }

// Waited records that a trace waited for a worker at now.
func (s *Share) Waited(now time.Time) { s.waitedAt.Store(s.slot(now)) }

// over reports whether r, one of n rules running, has taken more than its
// share of the workers in the window ending now while traces waited.
func (s *Share) over(r *registry.Rule, n int, now time.Time) bool {
	if s == nil || s.cfg.Disabled || n < 2 || r.Stats == nil {
		return false
	}
	slot := s.slot(now)
	if slot-s.waitedAt.Load() >= shareSlots {
		return false
	}
	share := r.Share
	if share == 0 {
		share = s.cfg.Share
	}
	if share == 0 {
		share = 1 / float64(n)
	}
	allowed := share * float64(s.workers) * float64(s.cfg.Window)
	// Within the window, no slot may take more than twice its part: a rule
	// that spent its whole share at once would hold every worker for that
	// long, which is the stall the share exists to prevent.
	if float64(r.Stats.Busy().At(slot)) > 2*allowed/shareSlots {
		return true
	}
	return float64(r.Stats.Busy().Sum(slot)) > allowed
}

// spent counts d of worker time against r.
func (s *Share) spent(r *registry.Rule, now time.Time, d time.Duration) {
	if s == nil || r.Stats == nil {
		return
	}
	r.Stats.Busy().Add(s.slot(now), d)
}

// Window is the window over which shares are counted.
func (s *Share) Window() time.Duration { return s.cfg.Window }
