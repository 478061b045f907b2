package recorder

import "github.com/prometheus/client_golang/prometheus"

// Drop reasons, the reason label of betrace_violations_dropped_total.
const (
	ReasonDiskFull         = "disk_full"
	ReasonStoreUnavailable = "store_unavailable"
	ReasonBufferFull       = "buffer_full"
	ReasonStoreError       = "store_error"
	ReasonShutdown         = "shutdown"
)

var reasons = []string{ReasonDiskFull, ReasonStoreUnavailable, ReasonBufferFull, ReasonStoreError, ReasonShutdown}

type metrics struct {
	dropped  map[string]prometheus.Counter
	held     prometheus.Gauge
	writable prometheus.Gauge
	writes   *prometheus.CounterVec
	latency  prometheus.Histogram
	sampled  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_violations_dropped_total",
		Help: "Violations found but not stored, by reason: disk_full or store_unavailable (the recorder's buffer was full while the store failed), buffer_full (the store was too slow), store_error (the store refused them), shutdown."}, []string{"reason"})
	m := &metrics{
		dropped: map[string]prometheus.Counter{},
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_recorder_buffer_bytes",
			Help: "Estimated bytes of violations the recorder holds: waiting for a write, in one, or kept for retry."}),
		writable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_recorder_store_writable",
			Help: "1 while the store accepts the recorder's writes, 0 while they fail and are retried (disk full, store unavailable)."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_recorder_writes_total",
			Help: "Violation batches the recorder wrote to the store, by result: ok, retry (failed, kept for retry), refused."}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "betrace_violation_record_latency_seconds",
			Help: "Time from a trace's completion to its violations being stored.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		sampled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_violations_sampled_total",
			Help: "Violations only counted, by rule: their rule was past its sampling rate (BETRACE_VIOLATION_SAMPLE_RATE), so their record was not kept. betrace_violations_total counts every violation found."}, []string{"rule_id"}),
	}
	for _, r := range reasons {
		m.dropped[r] = dropped.WithLabelValues(r) // every reason exists at 0, so increase() sees the first drop
	}
	for _, r := range []string{"ok", "retry", "refused"} {
		m.writes.WithLabelValues(r)
	}
	m.writable.Set(1)
	for _, c := range []prometheus.Collector{dropped, m.held, m.writable, m.writes, m.latency, m.sampled} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
