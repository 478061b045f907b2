package evaluation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/violations"
)

// Job is one completed trace to evaluate.
type Job struct {
	Spans       []traces.Span
	Flags       uint32 // abiv1.TraceFlag*
	Trigger     string // what completed the trace
	CompletedAt time.Time
	// Done is called once the trace's violations are handed to Record, so
	// the assembler can release the trace's bytes.
	Done func()
}

// PoolConfig sizes the worker pool.
type PoolConfig struct {
	// Workers evaluating traces in parallel. Default GOMAXPROCS.
	Workers int
	// Queue is how many completed traces may wait for a worker. Default 256.
	Queue int
	// Share is each rule's share of the workers while traces wait.
	Share ShareConfig
	// EvidenceSpans caps the spans of the snapshot stored with each
	// violating trace. Default (0) violations.MaxEvidenceSpans; negative
	// stores none (attribute values may be sensitive).
	EvidenceSpans int
}

// ErrStopped is returned by Submit after Shutdown.
var ErrStopped = errors.New("evaluation pool stopped")

// PoolDeps are what a pool reads and where it sends results.
type PoolDeps struct {
	// Rules returns the rules to run now (the registry's snapshot).
	Rules func() []*registry.Rule
	// Record takes one trace's violations on to be stored and exported
	// (the recorder). It returns without waiting on storage, so a slow or
	// full disk never slows evaluation; it counts what it cannot keep.
	Record violations.Sink
	// Quarantine is told when a rule's strike quarantined it.
	Quarantine func(ctx context.Context, ruleID string, q rules.Quarantine)
	// Tape, when set, is given each trace's encoded bytes after its
	// evaluation (see Tape).
	Tape       Tape
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Pool evaluates completed traces on a fixed set of workers, each with its
// own Evaluator, so encoding buffers are reused and never shared.
type Pool struct {
	cfg     PoolConfig
	deps    PoolDeps
	queue   chan Job
	share   *Share
	metrics *poolMetrics

	mu      sync.RWMutex // guards stopped against Submit racing Shutdown
	stopped bool
	wg      sync.WaitGroup
}

// NewPool returns a pool ready to Start.
func NewPool(cfg PoolConfig, deps PoolDeps) *Pool {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 256
	}
	if cfg.EvidenceSpans == 0 || cfg.EvidenceSpans > violations.MaxEvidenceSpans {
		cfg.EvidenceSpans = violations.MaxEvidenceSpans
	}
	return &Pool{cfg: cfg, deps: deps, queue: make(chan Job, cfg.Queue), share: NewShare(cfg.Share, cfg.Workers), metrics: newPoolMetrics(deps.Registerer)}
}

// Start launches the workers; they run until Shutdown.
func (p *Pool) Start(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	for range p.cfg.Workers {
		p.wg.Add(1)
		go p.work(ctx)
	}
	return nil
}

// Submit queues a trace, waiting while the queue is full: a slow pool
// holds traces in the assembler, which pushes back on ingest.
func (p *Pool) Submit(ctx context.Context, j Job) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopped {
		return ErrStopped
	}
	select {
	case p.queue <- j:
		p.metrics.queued.Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops intake and waits for queued traces to be evaluated, up to
// ctx's deadline.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.stopped {
		p.stopped = true
		close(p.queue)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("evaluation pool: %d traces still queued at shutdown deadline: %w", len(p.queue), ctx.Err())
	}
}

func (p *Pool) work(ctx context.Context) {
	defer p.wg.Done()
	ev := New(p.deps.Now)
	ev.share = p.share
	var found []violations.Violation
	for j := range p.queue {
		p.metrics.queued.Dec()
		if len(p.queue) > 0 {
			p.share.Waited(p.deps.Now()) // traces wait: shares apply
		}
		found = p.evaluate(ctx, ev, j, found[:0])
		if len(found) > 0 {
			// An error means Record dropped them; it counted and logged
			// that, rate-limited, so nothing is logged here per trace.
			_ = p.deps.Record(ctx, j.CompletedAt, found)
		}
		if j.Done != nil {
			j.Done()
		}
	}
}

func (p *Pool) evaluate(ctx context.Context, ev *Evaluator, j Job, found []violations.Violation) []violations.Violation {
	rs := p.deps.Rules()
	if len(j.Spans) == 0 {
		return found
	}
	defer p.tape(ev, j)
	if len(rs) == 0 {
		return found
	}
	first := len(found)
	var offending []int // span indexes; only traces that violate allocate
	ev.Evaluate(ctx, j.Spans, j.Flags, rs, func(v Verdict) {
		m := p.metrics.of(v.Rule)
		if v.Skipped == SkipFragment {
			m.skippedFragment.Inc()
			return
		}
		if v.Skipped != "" {
			m.skipped.Inc()
			return
		}
		m.duration.Observe(v.Duration.Seconds())
		m.fuel.Observe(float64(v.FuelUsed))
		switch {
		case v.Fault != nil:
			m.errors.Inc()
			if v.Rule.Shadow {
				return // its own strikes stop it here; the rule in force is not touched
			}
			p.metrics.faults.WithLabelValues(v.Rule.ID, v.Fault.Outcome.String()).Inc()
			if v.Quarantine != nil {
				p.deps.Quarantine(ctx, v.Rule.ID, *v.Quarantine)
			}
			return
		case len(v.Violations) == 0:
			m.pass.Inc()
			return
		}
		m.violation.Inc()
		p.metrics.violationsOf(v.Rule).WithLabelValues(v.Rule.ID, v.Rule.Severity).Add(float64(len(v.Violations)))
		now := p.deps.Now().UTC()
		for _, viol := range v.Violations {
			at := ev.SpanAt(viol.SpanIndex)
			offending = append(offending, at)
			s := &j.Spans[at]
			attrs := make(map[string]string, len(viol.Attrs))
			for _, kv := range viol.Attrs {
				attrs[kv.Key] = kv.Value
			}
			found = append(found, violations.Violation{
				ID: newID(), RuleID: v.Rule.ID, RuleName: v.Rule.Name, RuleVersion: v.Rule.Version, Severity: v.Rule.Severity,
				TraceID: hex.EncodeToString(s.TraceID[:]), SpanID: hex.EncodeToString(s.SpanID[:]),
				Message: viol.Message, Attributes: attrs,
				// Copies: the span's strings share the trace's buffer, which
				// must not outlive the trace in the recorder's queue.
				Metadata: map[string]string{"service_name": strings.Clone(s.Service), "span_name": strings.Clone(s.Name)},
				Trigger:  j.Trigger, Timestamp: now, Shadow: v.Rule.Shadow,
			})
		}
	})
	if n := ev.BrokenLinks(); n > 0 {
		p.metrics.brokenLinks.Add(float64(n))
	}
	if len(found) > first && p.cfg.EvidenceSpans > 0 {
		// On a live violation when there is one: shadow ones are hidden
		// and exported nowhere.
		at := first
		for i := first; i < len(found); i++ {
			if !found[i].Shadow {
				at = i
				break
			}
		}
		found[at].Evidence = evidence(j.Spans, offending, p.cfg.EvidenceSpans)
	}
	return found
}

// newID returns a random UUID (version 4) for a violation.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

type poolMetrics struct {
	duration    *prometheus.HistogramVec
	total       *prometheus.CounterVec
	faults      *prometheus.CounterVec
	fuel        *prometheus.HistogramVec
	violations  *prometheus.CounterVec
	queued      prometheus.Gauge
	skipped     *prometheus.CounterVec
	brokenLinks prometheus.Counter

	shadow *shadowMetrics

	mu    sync.RWMutex
	rules map[string]*ruleMetrics
}

// ruleMetrics caches one rule's series so the hot path does no label
// hashing.
type ruleMetrics struct {
	duration, fuel          prometheus.Observer
	pass, violation, errors prometheus.Counter
	skipped                 prometheus.Counter // reason over_share
	skippedFragment         prometheus.Counter // reason fragment
}

func newPoolMetrics(reg prometheus.Registerer) *poolMetrics {
	m := &poolMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "betrace_rule_evaluation_duration_seconds",
			Help: "Time one rule took to evaluate one trace.", Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}, []string{"rule_id"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_rule_evaluation_total",
			Help: "Rule evaluations by result: violation, pass or error."}, []string{"rule_id", "result"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_rule_evaluation_errors_total",
			Help: "Rule evaluations that faulted, by reason: fuel, memory, trap, abi, deadline."}, []string{"rule_id", "reason"}),
		fuel: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "betrace_rule_fuel_used",
			Help: "Fuel (metered wasm instructions) one rule used on one trace.", Buckets: prometheus.ExponentialBuckets(1000, 4, 12)}, []string{"rule_id"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_violations_total",
			Help: "Violations found, by rule and severity."}, []string{"rule_id", "severity"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_evaluation_queue_length",
			Help: "Completed traces waiting for an evaluation worker."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_rule_evaluations_skipped_total",
			Help: "Traces a rule was not run on, by reason: over_share, it had taken more than its share of the workers while traces waited; fragment, the trace was a fragment and the rule's module judges whole traces only."}, []string{"rule_id", "reason"}),
		brokenLinks: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_span_parent_cycles_broken_total",
			Help: "Parent links cut before evaluation because they closed a cycle (A's parent is B, B's is A): the sender's spans were malformed."}),
		rules: map[string]*ruleMetrics{},
	}
	reg.MustRegister(m.duration, m.total, m.faults, m.fuel, m.violations, m.queued, m.skipped, m.brokenLinks)
	m.shadow = newShadowMetrics(reg)
	return m
}

func (m *poolMetrics) forRule(id string) *ruleMetrics {
	m.mu.RLock()
	rm := m.rules[id]
	m.mu.RUnlock()
	if rm != nil {
		return rm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm = m.rules[id]; rm == nil {
		rm = &ruleMetrics{
			duration: m.duration.WithLabelValues(id), fuel: m.fuel.WithLabelValues(id),
			pass: m.total.WithLabelValues(id, "pass"), violation: m.total.WithLabelValues(id, "violation"), errors: m.total.WithLabelValues(id, "error"),
			skipped: m.skipped.WithLabelValues(id, SkipOverShare), skippedFragment: m.skipped.WithLabelValues(id, SkipFragment),
		}
		m.rules[id] = rm
	}
	return rm
}
