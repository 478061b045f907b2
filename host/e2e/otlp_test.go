package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc/metadata"

	"github.com/betracehq/betrace/host/internal/testrules"
)

func module(t testing.TB, id string) []byte {
	t.Helper()
	return testrules.Module(t, id)
}

// sampleBytes returns rules-examples/traces/<name>.json as is.
func sampleBytes(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "rules-examples", "traces", name+".json"))
	if err != nil {
		t.Fatalf("sample trace %s: %v", name, err)
	}
	return b
}

// sample returns a sample trace under a fresh trace ID, so that it can be
// sent any number of times, and that ID in hex.
func sample(t testing.TB, name string) (ptrace.Traces, string) {
	t.Helper()
	td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(sampleBytes(t, name))
	if err != nil {
		t.Fatalf("sample trace %s: %v", name, err)
	}
	id := newTraceID()
	forEachSpan(td, func(_ pcommon.Resource, sp ptrace.Span) { sp.SetTraceID(id) })
	return td, hex.EncodeToString(id[:])
}

func newTraceID() pcommon.TraceID {
	var id pcommon.TraceID
	rand.Read(id[:])
	return id
}

func forEachSpan(td ptrace.Traces, fn func(pcommon.Resource, ptrace.Span)) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				fn(rs.Resource(), ss.Spans().At(k))
			}
		}
	}
}

// spanInfo is what a violation should say about its span.
type spanInfo struct{ name, service string }

// spansOf maps each span ID (hex) of td to its name and service.
func spansOf(td ptrace.Traces) map[string]spanInfo {
	out := map[string]spanInfo{}
	forEachSpan(td, func(r pcommon.Resource, sp ptrace.Span) {
		svc, _ := r.Attributes().Get("service.name")
		id := sp.SpanID()
		out[hex.EncodeToString(id[:])] = spanInfo{sp.Name(), svc.AsString()}
	})
	return out
}

func spanCount(td ptrace.Traces) int { return td.SpanCount() }

func otlpJSON(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func otlpProto(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// transport is one way of sending OTLP to a server.
type transport struct {
	name string
	send func(t testing.TB, s *server, td ptrace.Traces)
}

var transports = []transport{
	{"otlp-http-json", func(t testing.TB, s *server, td ptrace.Traces) {
		s.mustExport(t, otlpJSON(t, td), "application/json", "")
	}},
	{"otlp-http-json-gzip", func(t testing.TB, s *server, td ptrace.Traces) {
		s.mustExport(t, gzipped(t, otlpJSON(t, td)), "application/json", "gzip")
	}},
	{"otlp-http-protobuf", func(t testing.TB, s *server, td ptrace.Traces) {
		s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	}},
	{"otlp-http-protobuf-gzip", func(t testing.TB, s *server, td ptrace.Traces) {
		s.mustExport(t, gzipped(t, otlpProto(t, td)), "application/x-protobuf", "gzip")
	}},
	{"otlp-grpc", func(t testing.TB, s *server, td ptrace.Traces) {
		s.mustExportGRPC(t, td)
	}},
}

// export POSTs an OTLP body to /v1/traces.
func (s *server) export(t testing.TB, body []byte, ctype, encoding string) response {
	t.Helper()
	req := request{Method: http.MethodPost, Path: "/v1/traces", Body: body, ContentType: ctype}
	if encoding != "" {
		req.Header = map[string]string{"Content-Encoding": encoding}
	}
	return s.do(t, req)
}

// mustExport requires a 200 without rejected spans.
func (s *server) mustExport(t testing.TB, body []byte, ctype, encoding string) {
	t.Helper()
	r := s.export(t, body, ctype, encoding)
	if r.Status != http.StatusOK {
		t.Fatalf("POST /v1/traces (%s %s): status %d: %s", ctype, encoding, r.Status, r.Body)
	}
	resp := ptraceotlp.NewExportResponse()
	var err error
	if ctype == "application/x-protobuf" {
		err = resp.UnmarshalProto(r.Body)
	} else {
		err = resp.UnmarshalJSON(r.Body)
	}
	if err != nil {
		t.Fatalf("POST /v1/traces: answer is not an ExportTraceServiceResponse: %v", err)
	}
	if n := resp.PartialSuccess().RejectedSpans(); n != 0 {
		t.Fatalf("POST /v1/traces: %d spans rejected: %s", n, resp.PartialSuccess().ErrorMessage())
	}
}

// exportGRPC sends over OTLP/gRPC with token (""; the server's ingest token).
func (s *server) exportGRPC(t testing.TB, td ptrace.Traces, token string) (ptraceotlp.ExportResponse, error) {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	if token == "" {
		token = s.opts.IngestToken
	}
	if token != "" && token != "-" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ptraceotlp.NewGRPCClient(s.grpc(t)).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
}

func (s *server) mustExportGRPC(t testing.TB, td ptrace.Traces) {
	t.Helper()
	resp, err := s.exportGRPC(t, td, "")
	if err != nil {
		t.Fatalf("OTLP/gRPC export: %v", err)
	}
	if n := resp.PartialSuccess().RejectedSpans(); n != 0 {
		t.Fatalf("OTLP/gRPC export: %d spans rejected: %s", n, resp.PartialSuccess().ErrorMessage())
	}
}

// legacySpans turns a trace into the body of the legacy POST /v1/spans.
func legacySpans(td ptrace.Traces) []map[string]any {
	var out []map[string]any
	forEachSpan(td, func(r pcommon.Resource, sp ptrace.Span) {
		tid, sid, pid := sp.TraceID(), sp.SpanID(), sp.ParentSpanID()
		attrs := map[string]any{}
		sp.Attributes().Range(func(k string, v pcommon.Value) bool {
			switch v.Type() {
			case pcommon.ValueTypeBool:
				attrs[k] = v.Bool()
			case pcommon.ValueTypeInt:
				attrs[k] = v.Int()
			case pcommon.ValueTypeDouble:
				attrs[k] = v.Double()
			default:
				attrs[k] = v.AsString()
			}
			return true
		})
		svc, _ := r.Attributes().Get("service.name")
		s := map[string]any{
			"trace_id":     hex.EncodeToString(tid[:]),
			"span_id":      hex.EncodeToString(sid[:]),
			"name":         sp.Name(),
			"start_time":   int64(sp.StartTimestamp()),
			"end_time":     int64(sp.EndTimestamp()),
			"attributes":   attrs,
			"status":       sp.Status().Code().String(),
			"service_name": svc.AsString(),
		}
		if !pid.IsEmpty() {
			s["parent_span_id"] = hex.EncodeToString(pid[:])
		}
		out = append(out, s)
	})
	return out
}

// legacyResult is the answer of POST /v1/spans.
type legacyResult struct {
	Accepted int      `json:"accepted"`
	Rejected int      `json:"rejected"`
	Errors   []string `json:"errors"`
}

func (s *server) postSpans(t testing.TB, spans []map[string]any) (response, legacyResult) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"spans": spans})
	if err != nil {
		t.Fatal(err)
	}
	r := s.do(t, request{Method: http.MethodPost, Path: "/v1/spans", Body: b, ContentType: "application/json"})
	var res legacyResult
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &res); err != nil {
			t.Fatalf("POST /v1/spans: %v: %s", err, r.Body)
		}
	}
	return r, res
}

// paymentStorm builds one trace with a root and n payment.charge children
// and no fraud.check: payment-fraud-check reports n violations on it.
func paymentStorm(n int) (ptrace.Traces, string) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "payments")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	tid := newTraceID()
	now := time.Now()
	root := spans.AppendEmpty()
	root.SetTraceID(tid)
	root.SetSpanID(newSpanID())
	root.SetName("checkout")
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Second)))
	for range n {
		sp := spans.AppendEmpty()
		sp.SetTraceID(tid)
		sp.SetSpanID(newSpanID())
		sp.SetParentSpanID(root.SpanID())
		sp.SetName("payment.charge")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Millisecond)))
	}
	return td, hex.EncodeToString(tid[:])
}

func newSpanID() pcommon.SpanID {
	var id pcommon.SpanID
	rand.Read(id[:])
	return id
}
