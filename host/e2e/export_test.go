package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// collector is an OTLP/HTTP receiver that keeps every span it gets.
type collector struct {
	*httptest.Server
	mu       sync.Mutex
	spans    []receivedSpan
	problems []string
}

type receivedSpan struct {
	traceID, spanID, parentID, name string
	attrs                           map[string]string
	resource                        map[string]string
}

func startCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			c.problems = append(c.problems, fmt.Sprintf("%s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type")))
			http.Error(w, "want POST /v1/traces with application/x-protobuf", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		req := ptraceotlp.NewExportRequest()
		if err == nil {
			err = req.UnmarshalProto(body)
		}
		if err != nil {
			c.problems = append(c.problems, "undecodable request: "+err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		forEachSpan(req.Traces(), func(res pcommon.Resource, sp ptrace.Span) {
			tid, sid, pid := sp.TraceID(), sp.SpanID(), sp.ParentSpanID()
			c.spans = append(c.spans, receivedSpan{
				traceID: hex.EncodeToString(tid[:]), spanID: hex.EncodeToString(sid[:]), parentID: hex.EncodeToString(pid[:]),
				name: sp.Name(), attrs: stringMap(sp.Attributes()), resource: stringMap(res.Attributes()),
			})
		})
		b, _ := ptraceotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	}))
	t.Cleanup(c.Close)
	return c
}

func stringMap(m pcommon.Map) map[string]string {
	out := map[string]string{}
	m.Range(func(k string, v pcommon.Value) bool {
		out[k] = v.AsString()
		return true
	})
	return out
}

func (c *collector) received() ([]receivedSpan, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]receivedSpan(nil), c.spans...), append([]string(nil), c.problems...)
}

func testExport(t *testing.T) {
	for _, form := range []string{"host:port", "http://host:port"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			col := startCollector(t)
			endpoint := strings.TrimPrefix(col.URL, "http://")
			if form == "http://host:port" {
				endpoint = col.URL
			}
			s := startServer(t, serverOptions{Env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}})
			s.loadRule(t, "payment-fraud-check")
			s.loadRule(t, "ai-tool-approval")
			var vs []map[string]any
			for i, name := range []string{"payment-fraud-check.violating", "ai-tool-approval.violating", "payment-fraud-check.clean"} {
				td, id := sample(t, name)
				s.mustExport(t, otlpJSON(t, td), "application/json", "")
				want := 0
				if strings.HasSuffix(name, ".violating") {
					want = map[string]int{"payment-fraud-check.violating": 2, "ai-tool-approval.violating": 1}[name]
				}
				s.waitQuiet(t, i+1)
				vs = append(vs, s.waitViolations(t, id, want)...)
			}

			var spans []receivedSpan
			eventually(t, 15*time.Second, fmt.Sprintf("%d violation spans at the collector", len(vs)), func() (bool, string) {
				var problems []string
				spans, problems = col.received()
				if len(problems) > 0 {
					t.Fatalf("the collector got bad requests: %v", problems)
				}
				return len(spans) >= len(vs), fmt.Sprintf("%d spans", len(spans))
			})
			if len(spans) != len(vs) {
				t.Errorf("the collector got %d spans for %d violations", len(spans), len(vs))
			}
			byID := map[string]receivedSpan{}
			for _, sp := range spans {
				byID[sp.attrs["betrace.violation.id"]] = sp
			}
			for _, v := range vs {
				sp, ok := byID[str(v, "id")]
				if !ok {
					t.Errorf("no span for violation %s", v["id"])
					continue
				}
				if sp.name != "betrace.violation" {
					t.Errorf("violation %s: span name %q, want betrace.violation", v["id"], sp.name)
				}
				if sp.traceID != str(v, "traceId") || sp.parentID != str(v, "spanId") {
					t.Errorf("violation %s: span in trace %s under %s, want a child of the offending span %s in trace %s",
						v["id"], sp.traceID, sp.parentID, v["spanId"], v["traceId"])
				}
				if sp.spanID == sp.parentID || sp.spanID == strings.Repeat("0", 16) {
					t.Errorf("violation %s: span ID %s", v["id"], sp.spanID)
				}
				for attr, field := range map[string]string{
					"betrace.violation.rule_id": "ruleId", "betrace.violation.rule_name": "ruleName",
					"betrace.violation.severity": "severity", "betrace.violation.message": "message",
					"betrace.violation.id": "id",
				} {
					if sp.attrs[attr] != str(v, field) {
						t.Errorf("violation %s: attribute %s = %q, want %q", v["id"], attr, sp.attrs[attr], v[field])
					}
				}
				if sp.resource["service.name"] != "betrace" {
					t.Errorf("violation %s: resource service.name %q, want betrace", v["id"], sp.resource["service.name"])
				}
			}
			eventually(t, 10*time.Second, "betrace_violation_spans_emitted_total", func() (bool, string) {
				n, _ := metricValue(s.metrics(t), "betrace_violation_spans_emitted_total", nil)
				return n == float64(len(vs)), fmt.Sprint(n)
			})
			mfs := s.metrics(t)
			if failed, _ := metricValue(mfs, "betrace_compliance_span_emissions_failed_total", nil); failed != 0 {
				t.Errorf("betrace_compliance_span_emissions_failed_total = %v, want 0", failed)
			}
		})
	}
}
