package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// exportResponse decodes a 200 answer in the request's encoding.
func exportResponse(t *testing.T, resp *http.Response) ptraceotlp.ExportResponse {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	out := ptraceotlp.NewExportResponse()
	if resp.Header.Get("Content-Type") == contentTypeProto {
		err = out.UnmarshalProto(b)
	} else {
		err = out.UnmarshalJSON(b)
	}
	if err != nil {
		t.Fatalf("decode response %q: %v", b, err)
	}
	return out
}

// errorStatus decodes an error answer (google.rpc.Status, protobuf or JSON).
func errorStatus(t *testing.T, resp *http.Response) (codes.Code, string) {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Type") == contentTypeProto {
		var st spb.Status
		if err := proto.Unmarshal(b, &st); err != nil {
			t.Fatalf("decode protobuf status %q: %v", b, err)
		}
		return codes.Code(st.Code), st.Message
	}
	var st struct {
		Code    int32    `json:"code"`
		Message string   `json:"message"`
		Details []string `json:"details"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Details == nil {
		t.Fatalf("decode JSON status %q: %v (details %v)", b, err, st.Details)
	}
	return codes.Code(st.Code), st.Message
}

func TestOTLPHTTP(t *testing.T) {
	td := makeTraces(25, 10)
	tests := []struct {
		name        string
		contentType string
		body        []byte
		encoding    string
	}{
		{"protobuf", contentTypeProto, protoBody(t, td), ""},
		{"protobuf with parameters", contentTypeProto + "; charset=binary", protoBody(t, td), ""},
		{"json", contentTypeJSON, jsonBody(t, td), ""},
		{"protobuf gzip", contentTypeProto, gzipped(t, protoBody(t, td)), "gzip"},
		{"json gzip", contentTypeJSON, gzipped(t, jsonBody(t, td)), "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, DefaultConfig())
			resp := f.post(t, "/v1/traces", tt.contentType, tt.body, "Content-Encoding", tt.encoding)
			out := exportResponse(t, resp)
			if ct, _ := otlpEncoding(tt.contentType); contentTypeOf(ct) != resp.Header.Get("Content-Type") {
				t.Fatalf("answered in %s", resp.Header.Get("Content-Type"))
			}
			if out.PartialSuccess().RejectedSpans() != 0 {
				t.Fatalf("rejected %d", out.PartialSuccess().RejectedSpans())
			}
			if f.rec.count() != 25 {
				t.Fatalf("sink got %d spans", f.rec.count())
			}
			s := f.rec.spans[11]
			if s.TraceID != traceID(1) || s.SpanID != spanID(11) || s.ParentSpanID != [8]byte(spanID(10)) ||
				s.Service != "checkout" || s.Kind != abiv1.KindServer || s.StatusCode != abiv1.StatusOK ||
				len(s.Attrs) != 10 || len(s.ResourceAttrs) != 2 || s.Name != "GET /api/items/4" {
				t.Fatalf("converted span: %+v", s)
			}
			if got := value(t, f.reg, "betrace_spans_received_total"); got != 25 {
				t.Fatalf("received = %v", got)
			}
			if got := value(t, f.reg, "betrace_spans_ingested_total"); got != 25 {
				t.Fatalf("ingested = %v", got)
			}
			if got := value(t, f.reg, "betrace_ingest_requests_total", "transport", "otlp_http", "outcome", "ok"); got != 1 {
				t.Fatalf("requests{ok} = %v", got)
			}
		})
	}
}

func TestOTLPHTTPPartialSuccess(t *testing.T) {
	td := makeTraces(6, 1)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.At(1).SetName("")
	spans.At(3).SetTraceID([16]byte{})
	spans.At(4).SetSpanID([8]byte{})
	for i := range 200 {
		spans.At(5).Attributes().PutInt(fmt.Sprintf("k%d", i), int64(i))
	}
	for _, enc := range []string{contentTypeProto, contentTypeJSON} {
		t.Run(enc, func(t *testing.T) {
			f := newFixture(t, DefaultConfig())
			var body []byte
			if enc == contentTypeProto {
				body = protoBody(t, td)
			} else {
				body = jsonBody(t, td)
			}
			out := exportResponse(t, f.post(t, "/v1/traces", enc, body))
			ps := out.PartialSuccess()
			if ps.RejectedSpans() != 4 {
				t.Fatalf("rejected_spans = %d, want 4", ps.RejectedSpans())
			}
			msg := ps.ErrorMessage()
			if !strings.Contains(msg, "span 1: span has an empty name") || !strings.Contains(msg, "empty trace ID") ||
				!strings.Contains(msg, "and 1 more") {
				t.Fatalf("error_message %q", msg)
			}
			if f.rec.count() != 2 {
				t.Fatalf("sink got %d spans, want the 2 valid", f.rec.count())
			}
			for reason, want := range map[string]float64{"empty_name": 1, "empty_trace_id": 1, "empty_span_id": 1, "too_many_attributes": 1} {
				if got := value(t, f.reg, "betrace_spans_rejected_total", "reason", reason); got != want {
					t.Errorf("rejected{%s} = %v", reason, got)
				}
			}
			if got := value(t, f.reg, "betrace_spans_received_total"); got != 6 {
				t.Fatalf("received = %v", got)
			}
			if got := value(t, f.reg, "betrace_ingest_requests_total", "outcome", "partial"); got != 1 {
				t.Fatalf("requests{partial} = %v", got)
			}
		})
	}
}

// badIDProto builds an ExportTraceServiceRequest by hand whose second span
// has a 15-byte trace ID, which pdata refuses for the whole request.
func badIDProto() []byte {
	span := func(tid []byte) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, tid)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{1, 2, 3, 4, 5, 6, 7, 8})
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		return protowire.AppendString(b, "op")
	}
	var ss []byte
	ss = protowire.AppendTag(ss, 2, protowire.BytesType)
	ss = protowire.AppendBytes(ss, span(make([]byte, 16)))
	ss = protowire.AppendTag(ss, 2, protowire.BytesType)
	ss = protowire.AppendBytes(ss, span(make([]byte, 15)))
	var rs []byte
	rs = protowire.AppendTag(rs, 2, protowire.BytesType)
	rs = protowire.AppendBytes(rs, ss)
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	return protowire.AppendBytes(req, rs)
}

func TestOTLPHTTPMalformed(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		encoding    string
		want        string // in the message
	}{
		{"protobuf garbage", contentTypeProto, "\x0a\xff\xff\xff\xff\x0f", "", "decode OTLP/protobuf request"},
		{"protobuf short trace ID", contentTypeProto, string(badIDProto()), "", "resource_spans[0].scope_spans[0].spans[1].trace_id: 15 bytes, want 16"},
		{"json syntax", contentTypeJSON, `{"resourceSpans": [`, "", "decode OTLP/JSON request"},
		{"json short trace ID", contentTypeJSON,
			`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102","spanId":"0102030405060708","name":"a"}]}]}]}`, "",
			`resourceSpans[0].scopeSpans[0].spans[0].traceId: "0102" has 4 characters, want 32 hex digits`},
		{"json long span ID, snake case", contentTypeJSON,
			`{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"010203040506070809","name":"a"}]}]}]}`, "",
			`resource_spans[0].scope_spans[0].spans[0].span_id: "010203040506070809" has 18 characters, want 16 hex digits`},
		{"json bad link ID", contentTypeJSON,
			`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"a","links":[{"traceId":"zz","spanId":"0102030405060708"}]}]}]}]}`, "",
			`spans[0].links[0].traceId`},
		{"json not hex", contentTypeJSON,
			`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz02030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"a"}]}]}]}`, "",
			`traceId: "zz02030405060708090a0b0c0d0e0f10" is not hexadecimal`},
		{"bad gzip", contentTypeProto, "not gzip at all", "gzip", "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, DefaultConfig())
			resp := f.post(t, "/v1/traces", tt.contentType, []byte(tt.body), "Content-Encoding", tt.encoding)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			if resp.Header.Get("Content-Type") != contentTypeOf(must(otlpEncoding(tt.contentType))) {
				t.Fatalf("error in %s for a %s request", resp.Header.Get("Content-Type"), tt.contentType)
			}
			code, msg := errorStatus(t, resp)
			if code != codes.InvalidArgument || !strings.Contains(msg, tt.want) {
				t.Fatalf("status %v %q, want InvalidArgument containing %q", code, msg, tt.want)
			}
			if f.rec.calls != 0 {
				t.Fatal("sink called for a malformed request")
			}
			if got := value(t, f.reg, "betrace_ingest_requests_total", "outcome", "malformed"); got != 1 {
				t.Fatalf("requests{malformed} = %v", got)
			}
		})
	}
}

func must[T any](v T, _ bool) T { return v }

func TestOTLPHTTPRefusals(t *testing.T) {
	small := DefaultConfig()
	small.MaxRequestBytes = 4096
	big := protoBody(t, makeTraces(200, 10))
	tests := []struct {
		name        string
		cfg         Config
		method      string
		contentType string
		body        []byte
		header      []string
		sinkErr     error
		status      int
		code        codes.Code
		retryAfter  string
		outcome     string
	}{
		{"too large", small, "POST", contentTypeProto, big, nil, nil, 413, codes.ResourceExhausted, "", "too_large"},
		{"too large after gunzip", small, "POST", contentTypeProto, gzipped(t, make([]byte, 1<<20)), []string{"Content-Encoding", "gzip"}, nil, 413, codes.ResourceExhausted, "", "too_large"},
		{"too large json", small, "POST", contentTypeJSON, jsonBody(t, makeTraces(200, 10)), nil, nil, 413, codes.ResourceExhausted, "", "too_large"},
		{"buffer full", DefaultConfig(), "POST", contentTypeProto, protoBody(t, makeTraces(3, 1)), nil, fmt.Errorf("add: %w", traces.ErrFull), 429, codes.ResourceExhausted, "1", "full"},
		{"buffer full json", DefaultConfig(), "POST", contentTypeJSON, jsonBody(t, makeTraces(3, 1)), nil, fmt.Errorf("add: %w", traces.ErrFull), 429, codes.ResourceExhausted, "1", "full"},
		{"unavailable", DefaultConfig(), "POST", contentTypeProto, protoBody(t, makeTraces(3, 1)), nil, traces.ErrUnavailable, 503, codes.Unavailable, "1", "unavailable"},
		{"batch larger than the buffer", DefaultConfig(), "POST", contentTypeProto, protoBody(t, makeTraces(3, 1)), nil, traces.ErrBatchTooLarge, 413, codes.ResourceExhausted, "", "too_large"},
		{"sink failure", DefaultConfig(), "POST", contentTypeProto, protoBody(t, makeTraces(3, 1)), nil, fmt.Errorf("disk on fire"), 500, codes.Internal, "", "error"},
		{"wrong method", DefaultConfig(), "GET", contentTypeProto, nil, nil, nil, 405, codes.Unimplemented, "", "method_not_allowed"},
		{"unsupported content type", DefaultConfig(), "POST", "text/plain", []byte("hi"), nil, nil, 415, codes.InvalidArgument, "", "unsupported"},
		{"unsupported encoding", DefaultConfig(), "POST", contentTypeProto, []byte("hi"), []string{"Content-Encoding", "br"}, nil, 415, codes.InvalidArgument, "", "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.cfg)
			f.rec.err = tt.sinkErr
			req, err := http.NewRequest(tt.method, f.srv.URL+"/v1/traces", strings.NewReader(string(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tt.contentType)
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d %s, want %d", resp.StatusCode, b, tt.status)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if code, msg := errorStatus(t, resp); code != tt.code || msg == "" {
				t.Fatalf("code %v %q, want %v", code, msg, tt.code)
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Fatal("405 without Allow")
			}
			if got := value(t, f.reg, "betrace_ingest_requests_total", "outcome", tt.outcome); got != 1 {
				t.Fatalf("requests{%s} = %v", tt.outcome, got)
			}
		})
	}
}

func TestAuthHTTP(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Token = "s3cret-token"
	body := protoBody(t, makeTraces(2, 1))
	legacy := []byte(`{"spans":[]}`)
	tests := []struct {
		name   string
		path   string
		ct     string
		body   []byte
		auth   string
		status int
	}{
		{"otlp without token", "/v1/traces", contentTypeJSON, jsonBody(t, makeTraces(2, 1)), "", 401},
		{"otlp wrong token", "/v1/traces", contentTypeProto, body, "Bearer nope", 401},
		{"otlp token without scheme", "/v1/traces", contentTypeProto, body, "s3cret-token", 401},
		{"otlp right token", "/v1/traces", contentTypeProto, body, "Bearer s3cret-token", 200},
		{"otlp scheme in any case", "/v1/traces", contentTypeProto, body, "bearer s3cret-token", 200},
		{"legacy without token", "/v1/spans", contentTypeJSON, legacy, "", 401},
		{"legacy right token", "/v1/spans", contentTypeJSON, legacy, "Bearer s3cret-token", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cfg)
			resp := f.post(t, tt.path, tt.ct, tt.body, "Authorization", tt.auth)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 {
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
				if code, msg := errorStatus(t, resp); code != codes.Unauthenticated || !strings.Contains(msg, "Bearer") {
					t.Fatalf("code %v %q", code, msg)
				}
				if f.rec.calls != 0 {
					t.Fatal("sink called without a token")
				}
			}
		})
	}
	t.Run("json body for json and legacy", func(t *testing.T) {
		f := newFixture(t, cfg)
		resp := f.post(t, "/v1/spans", "", legacy)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 401 || string(b) != `{"code":16,"message":"missing or invalid bearer token: send the header \"Authorization: Bearer \u003ctoken\u003e\"","details":[]}`+"\n" {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})
}

func TestShutdownHTTP(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	if err := f.r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp := f.post(t, "/v1/traces", contentTypeProto, protoBody(t, makeTraces(1, 0)))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after Shutdown: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestWithAssembler runs the receiver into a real assembler whose buffer
// fills: the sender is told to retry, and nothing is half-kept.
func TestWithAssembler(t *testing.T) {
	tcfg := traces.DefaultConfig()
	tcfg.MaxBytes = 64 << 10
	held := make(chan *traces.Trace, 100)
	asm, err := traces.New(tcfg, func(tr *traces.Trace) { held <- tr }, traces.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.MaxRequestBytes, cfg.MaxConcurrentRequests, cfg.RetryAfter = "", 1<<20, 4, 2500e6
	r, err := New(cfg, asm.Add, Settings{})
	if err != nil {
		t.Fatal(err)
	}
	body := protoBody(t, makeTraces(30, 10))
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", "/v1/traces", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", contentTypeProto)
		w := httptest.NewRecorder()
		r.TracesHandler().ServeHTTP(w, req)
		return w.Result()
	}
	var full *http.Response
	for range 100 {
		if resp := post(); resp.StatusCode != 200 {
			full = resp
			break
		}
	}
	if full == nil || full.StatusCode != 429 || full.Header.Get("Retry-After") != "3" {
		t.Fatalf("buffer never reported full: %+v", full)
	}
	before := asm.Bytes()
	if resp := post(); resp.StatusCode != 429 || asm.Bytes() != before {
		t.Fatalf("refused request changed the buffer: %d, %d→%d bytes", resp.StatusCode, before, asm.Bytes())
	}
	if err := asm.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(held)
	for tr := range held {
		tr.Release()
	}
	if asm.Bytes() != 0 {
		t.Fatalf("%d bytes left", asm.Bytes())
	}
	if resp := post(); resp.StatusCode != 503 {
		t.Fatalf("after the assembler's Shutdown: %d, want 503", resp.StatusCode)
	}
}
