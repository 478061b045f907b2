package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/betracehq/betrace/host/traces"
)

// recorder is a sink that keeps what it is given, or fails with err.
type recorder struct {
	mu    sync.Mutex
	spans []traces.Span
	calls int
	err   error
}

func (r *recorder) sink(_ context.Context, spans []traces.Span) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.err != nil {
		return r.err
	}
	r.spans = append(r.spans, spans...)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

type fixture struct {
	r   *Receiver
	rec *recorder
	reg *prometheus.Registry
	srv *httptest.Server
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	f := &fixture{rec: &recorder{}, reg: prometheus.NewRegistry()}
	cfg.GRPCAddr = ""
	r, err := New(cfg, f.rec.sink, Settings{Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	mux := http.NewServeMux()
	mux.Handle("/v1/traces", r.TracesHandler())
	mux.Handle("/v1/spans", r.SpansHandler())
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) post(t testing.TB, path, contentType string, body []byte, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func traceID(n int) pcommon.TraceID {
	var id pcommon.TraceID
	binary.BigEndian.PutUint64(id[:8], uint64(n)*0x9E3779B97F4A7C15+1)
	binary.BigEndian.PutUint64(id[8:], uint64(n)+1)
	return id
}

func spanID(n int) pcommon.SpanID {
	var id pcommon.SpanID
	binary.BigEndian.PutUint64(id[:], uint64(n)+1)
	return id
}

// makeTraces builds one resource with n spans of nAttrs attributes each,
// spread over traces of 10 spans.
func makeTraces(n, nAttrs int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	rs.Resource().Attributes().PutStr("host.name", "node-17")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("io.opentelemetry.checkout")
	for i := range n {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(traceID(i / 10))
		sp.SetSpanID(spanID(i))
		if i%10 != 0 {
			sp.SetParentSpanID(spanID(i - i%10))
		}
		sp.SetName(fmt.Sprintf("GET /api/items/%d", i%7))
		sp.SetKind(ptrace.SpanKindServer)
		sp.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + i*1000))
		sp.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_000_500_000 + i*1000))
		sp.Status().SetCode(ptrace.StatusCodeOk)
		attrs := sp.Attributes()
		for k := range nAttrs {
			switch k % 4 {
			case 0:
				attrs.PutStr(fmt.Sprintf("app.str.%d", k), "a moderately long attribute value")
			case 1:
				attrs.PutInt(fmt.Sprintf("app.int.%d", k), int64(k*1000))
			case 2:
				attrs.PutBool(fmt.Sprintf("app.bool.%d", k), k%3 == 0)
			default:
				attrs.PutDouble(fmt.Sprintf("app.double.%d", k), float64(k)/3)
			}
		}
	}
	return td
}

func protoBody(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonBody(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// value returns the sum of the counters or gauges called name whose labels
// include the given pairs.
func value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, val string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == val {
			return true
		}
	}
	return false
}

func TestMetricsLint(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	f.post(t, "/v1/traces", contentTypeProto, protoBody(t, makeTraces(3, 1)))
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range []string{"betrace_spans_received_total", "betrace_spans_rejected_total", "betrace_spans_ingested_total",
		"betrace_ingest_requests_total", "betrace_ingest_request_duration_seconds", "betrace_ingest_requests_in_flight",
		"betrace_ingest_buffered_bytes"} {
		if !have[name] {
			t.Errorf("metric %s not exposed", name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{GRPCAddr: "4317", Token: "a b"}
	err := cfg.Validate()
	for _, field := range []string{"GRPCAddr", "MaxRequestBytes", "MaxSpanAttributes", "MaxResourceAttributes", "MaxConcurrentRequests",
		"MaxBufferedBytes", "MinReadRate", "ReadGrace", "RetryAfter", "BETRACE_INGEST_TOKEN"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
	if _, err := New(cfg, (&recorder{}).sink, Settings{}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
	if _, err := New(DefaultConfig(), nil, Settings{}); err == nil {
		t.Fatal("New accepted a nil sink")
	}
	for addr, want := range map[string]bool{"": false, ":0": false, "127.0.0.1:0": false, ":4317": true} {
		if got := (Config{GRPCAddr: addr}).grpcEnabled(); got != want {
			t.Errorf("GRPCAddr %q enabled = %v", addr, got)
		}
	}
}
