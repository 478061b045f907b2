package ingest

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Transports, the transport label of the request metrics.
const (
	transportHTTP   = "otlp_http"
	transportGRPC   = "otlp_grpc"
	transportLegacy = "legacy_http"
)

// Request outcomes, the outcome label of betrace_ingest_requests_total.
const (
	outcomeOK              = "ok"
	outcomePartial         = "partial"
	outcomeMalformed       = "malformed"
	outcomeTooLarge        = "too_large"
	outcomeUnsupported     = "unsupported"
	outcomeMethod          = "method_not_allowed"
	outcomeUnauthenticated = "unauthenticated"
	outcomeFull            = "full"
	outcomeUnavailable     = "unavailable"
	outcomeCanceled        = "canceled"
	outcomeTooSlow         = "too_slow"
	outcomeBusy            = "busy"
	outcomeError           = "error"
)

type metrics struct {
	received prometheus.Counter
	ingested prometheus.Counter
	rejected map[string]prometheus.Counter
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, buffered *budget) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "betrace_spans_rejected_total",
		Help: "Spans refused one by one as invalid while the rest of their request was accepted, by reason.",
	}, []string{"reason"})
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_spans_received_total",
			Help: "Spans that arrived in decodable requests, valid or not.",
		}),
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "betrace_spans_ingested_total",
			Help: "Spans accepted into the trace buffer.",
		}),
		rejected: map[string]prometheus.Counter{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "betrace_ingest_requests_total",
			Help: "Ingest requests by transport (otlp_http, otlp_grpc, legacy_http) and outcome.",
		}, []string{"transport", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "betrace_ingest_request_duration_seconds",
			Help:    "Time to read, decode and buffer one ingest request.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"transport"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "betrace_ingest_requests_in_flight",
			Help: "Requests holding one of the MaxConcurrentRequests slots.",
		}),
	}
	for _, r := range reasons {
		m.rejected[r.label] = rejected.WithLabelValues(r.label)
	}
	m.rejected["other"] = rejected.WithLabelValues("other")
	bufferedBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "betrace_ingest_buffered_bytes",
		Help: "Memory held by HTTP request bodies being read or handled, bounded by MaxBufferedBytes.",
	}, func() float64 { return float64(buffered.used.Load()) })
	for _, c := range []prometheus.Collector{m.received, m.ingested, rejected, m.requests, m.duration, m.inFlight, bufferedBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) reject(rs []Rejected) {
	for _, r := range rs {
		m.rejected[r.Reason()].Inc()
	}
}
