package traces

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	completed [CompletionShutdown + 1]prometheus.Counter
	late      prometheus.Counter
	refused   prometheus.Counter
}

// newMetrics registers the assembler's metrics on reg (a private registry
// when reg is nil). Gauges read the assembler's counters when scraped.
func newMetrics(reg prometheus.Registerer, a *Assembler) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	completed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "betrace_traces_completed_total",
		Help: "Traces completed, by what completed them (root, idle, max_age, span_cap, shutdown).",
	}, []string{"trigger"})
	m := &metrics{
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_spans_late_total",
			Help: "Spans that arrived for a trace already completed (within the late window, or beyond the span cap); counted and dropped.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_spans_refused_total",
			Help: "Spans in batches refused because the trace buffer was full; senders are told to retry.",
		}),
	}
	for _, c := range completions {
		m.completed[c] = completed.WithLabelValues(c.String())
	}
	cs := []prometheus.Collector{
		completed, m.late, m.refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "betrace_traces_active",
			Help: "Traces being assembled (not yet complete).",
		}, func() float64 { return float64(a.active.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "betrace_traces_queued",
			Help: "Completed traces waiting to be handed to the evaluator.",
		}, func() float64 { return float64(a.q.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "betrace_trace_buffer_bytes",
			Help: "Estimated bytes of buffered spans, including completed traces not yet released by the evaluator.",
		}, func() float64 { return float64(a.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "betrace_trace_buffer_capacity_bytes",
			Help: "Configured bound of betrace_trace_buffer_bytes (MaxBytes); ingest refuses batches beyond it.",
		}, func() float64 { return float64(a.cfg.MaxBytes) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
