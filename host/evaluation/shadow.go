package evaluation

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/registry"
)

// A rule version installed in shadow runs on every trace beside the
// version in force, under the same sandbox limits, but nothing it finds may
// page anyone: its violations are marked Shadow (stored, listed, never
// exported), its evaluations are counted under metrics of their own so no
// alert on the live ones sees them, and a fault that trips its strikes
// stops it on this instance without quarantining the rule.
type shadowMetrics struct {
	total      *prometheus.CounterVec
	violations *prometheus.CounterVec
	fuel       *prometheus.HistogramVec
}

func newShadowMetrics(reg prometheus.Registerer) *shadowMetrics {
	m := &shadowMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_shadow_rule_evaluation_total",
			Help: "Evaluations of rule versions installed in shadow, by result: violation, pass or error."}, []string{"rule_id", "result"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_shadow_violations_total",
			Help: "Violations found by rule versions installed in shadow (stored marked shadow, never exported)."}, []string{"rule_id", "severity"}),
		fuel: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "betrace_shadow_rule_fuel_used",
			Help: "Fuel one rule version installed in shadow used on one trace.", Buckets: prometheus.ExponentialBuckets(1000, 4, 12)}, []string{"rule_id"}),
	}
	reg.MustRegister(m.total, m.violations, m.fuel)
	return m
}

// discard is an observer for what shadow versions do not record.
type discard struct{}

func (discard) Observe(float64) {}

// of returns the series of a rule's evaluations: the live ones, or for a
// shadow version its own.
func (m *poolMetrics) of(r *registry.Rule) *ruleMetrics {
	if !r.Shadow {
		return m.forRule(r.ID)
	}
	key := r.ID + "\x00shadow" // not a valid rule id, so never a live rule's key
	m.mu.RLock()
	rm := m.rules[key]
	m.mu.RUnlock()
	if rm != nil {
		return rm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm = m.rules[key]; rm == nil {
		s := m.shadow
		rm = &ruleMetrics{
			duration: discard{}, fuel: s.fuel.WithLabelValues(r.ID),
			pass: s.total.WithLabelValues(r.ID, "pass"), violation: s.total.WithLabelValues(r.ID, "violation"), errors: s.total.WithLabelValues(r.ID, "error"),
			// Not the live rule's series: a shadow version's skips are its own.
			skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_shadow_skipped"}),
		}
		m.rules[key] = rm
	}
	return rm
}

// violationsOf is the violation counter of a rule or shadow version.
func (m *poolMetrics) violationsOf(r *registry.Rule) *prometheus.CounterVec {
	if r.Shadow {
		return m.shadow.violations
	}
	return m.violations
}
