package export

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a violation span was not delivered: the values of the reason
// label on betrace_compliance_span_emissions_failed_total.
const (
	// reasonQueueFull: Export found the queue full and dropped the violation.
	reasonQueueFull = "queue_full"
	// reasonRejected: the collector refused the span for good (a status
	// other than 2xx, 429, 502, 503 or 504, or a partial success).
	reasonRejected = "rejected"
	// reasonRetriesExhausted: retryable failures lasted past MaxRetryTime.
	reasonRetriesExhausted = "retries_exhausted"
	// reasonShutdown: still queued or in flight when Shutdown's deadline
	// passed, or handed to Export after Shutdown.
	reasonShutdown = "shutdown"
)

type metrics struct {
	emitted prometheus.Counter
	failed  map[string]prometheus.Counter // by reason
	retries prometheus.Counter
}

// newMetrics registers the exporter's metrics on reg; a nil reg leaves them
// unregistered. queueLength is read at each scrape.
func newMetrics(reg prometheus.Registerer, queueLength func() int) (*metrics, error) {
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "betrace_compliance_span_emissions_failed_total",
		Help: "Violation spans that could not be delivered to the OTLP collector, by reason: queue_full, rejected, retries_exhausted, shutdown.",
	}, []string{"reason"})
	m := &metrics{
		emitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_violation_spans_emitted_total",
			Help: "Violation spans the OTLP collector accepted.",
		}),
		failed: map[string]prometheus.Counter{},
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_export_retries_total",
			Help: "Export requests repeated after a retryable failure.",
		}),
	}
	// Every reason exists from the start, so that rate() and alerts see a
	// zero rather than no series.
	for _, r := range []string{reasonQueueFull, reasonRejected, reasonRetriesExhausted, reasonShutdown} {
		m.failed[r] = failed.WithLabelValues(r)
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "betrace_export_queue_length",
		Help: "Violations waiting in the export queue, not counting the batch being sent.",
	}, func() float64 { return float64(queueLength()) })
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.emitted, failed, m.retries, queue} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("export: register metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
