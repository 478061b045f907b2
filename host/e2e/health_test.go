package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// issueMetrics are the metric names the service must expose after traffic.
var issueMetrics = []string{
	"betrace_spans_received_total",
	"betrace_spans_rejected_total",
	"betrace_traces_active",
	"betrace_traces_completed_total",
	"betrace_trace_buffer_bytes",
	"betrace_rule_evaluation_duration_seconds",
	"betrace_rule_evaluation_total",
	"betrace_rule_evaluation_errors_total",
	"betrace_rule_fuel_used",
	"betrace_rule_quarantines_total",
	"betrace_rules",
	"betrace_violations_total",
	"betrace_violation_spans_emitted_total",
	"betrace_compliance_span_emissions_failed_total",
	"http_requests_total",
	"http_request_duration_seconds",
	"go_goroutines",
	"process_resident_memory_bytes",
}

func testHealth(t *testing.T) {
	// One strike quarantines, so one trace makes every rule metric appear.
	s := startServer(t, serverOptions{Env: map[string]string{"BETRACE_QUARANTINE_STRIKES": "1"}})

	for _, path := range []string{"/health", "/v1/health"} {
		b := s.get(t, path)
		if str(b, "status") != "HEALTHY" {
			t.Errorf("%s: status %q, want HEALTHY", path, b["status"])
		}
		if _, ok := b["version"].(string); !ok {
			t.Errorf("%s: version missing or not a string: %v", path, b["version"])
		}
		if num(b, "uptimeSeconds") < 0 {
			t.Errorf("%s: uptimeSeconds missing or not a whole number: %v", path, b["uptimeSeconds"])
		}
	}
	for _, path := range []string{"/ready", "/v1/ready"} {
		b := s.get(t, path)
		if str(b, "status") != "READY" {
			t.Errorf("%s: status %q, want READY", path, b["status"])
		}
		checks := obj(b, "checks")
		if len(checks) == 0 {
			t.Errorf("%s: no checks: %v", path, b)
		}
		for name, v := range checks {
			if v != "ok" {
				t.Errorf("%s: check %s = %v, want ok", path, name, v)
			}
		}
	}

	// Traffic: a violating trace, a rule that faults (and is quarantined),
	// a rejected span.
	s.loadRule(t, "payment-fraud-check")
	s.loadRule(t, "runaway-loop")
	td, traceID := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	_, res := s.postSpans(t, []map[string]any{{"trace_id": strings.Repeat("ab", 16), "span_id": "abcd", "name": "bad"}})
	if res.Rejected != 1 {
		t.Errorf("legacy span with a 4-digit span_id: rejected %d, want 1", res.Rejected)
	}
	s.waitQuiet(t, 1)
	s.waitViolations(t, traceID, 2)
	eventually(t, 10*time.Second, "runaway-loop quarantined", func() (bool, string) {
		st := str(s.rule(t, "runaway-loop"), "state")
		return st == "quarantined", st
	})

	r := s.do(t, request{Method: http.MethodGet, Path: "/metrics"})
	if r.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", r.Status)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics: Content-Type %q, want text/plain", ct)
	}
	mfs := s.metrics(t)
	for _, name := range issueMetrics {
		if mfs[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"betrace_violations_total", map[string]string{"rule_id": "payment-fraud-check", "severity": "CRITICAL"}, 2},
		{"betrace_rule_quarantines_total", map[string]string{"rule_id": "runaway-loop"}, 1},
		{"betrace_rule_evaluation_errors_total", map[string]string{"rule_id": "runaway-loop", "reason": "fuel"}, 1},
		{"betrace_rule_evaluation_total", map[string]string{"rule_id": "payment-fraud-check", "result": "violation"}, 1},
		{"betrace_rules", map[string]string{"state": "active"}, 1},
		{"betrace_rules", map[string]string{"state": "quarantined"}, 1},
		{"betrace_traces_completed_total", map[string]string{"trigger": "root"}, 1},
		{"betrace_traces_active", nil, 0},
	} {
		got, found := metricValue(mfs, c.name, c.labels)
		if !found || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, found, c.want)
		}
	}
	if n, _ := metricValue(mfs, "betrace_spans_received_total", nil); n < float64(spanCount(td)+1) {
		t.Errorf("betrace_spans_received_total = %v, want at least %d", n, spanCount(td)+1)
	}
	if n, _ := metricValue(mfs, "betrace_spans_rejected_total", nil); n != 1 {
		t.Errorf("betrace_spans_rejected_total = %v, want 1", n)
	}
	if n, _ := metricValue(mfs, "http_requests_total", map[string]string{"route": "/v1/rules/{id}", "method": "GET", "status": "200"}); n < 1 {
		t.Errorf(`http_requests_total{route="/v1/rules/{id}"} = %v: routes should be labelled by template`, n)
	}
}
