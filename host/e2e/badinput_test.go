package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/betracehq/betrace/host/internal/leb128"
)

// snapshot is the state bad input must not change: the rule list without
// its evaluation counters, and the violation list byte for byte.
func (s *server) snapshot(t testing.TB) (rules, violations string) {
	t.Helper()
	list := s.get(t, "/v1/rules")
	for _, r := range objects(t, list["rules"]) {
		delete(r, "stats")
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	vr := s.do(t, request{Method: http.MethodGet, Path: "/v1/violations?limit=1000"})
	if vr.Status != http.StatusOK {
		t.Fatalf("GET /v1/violations: status %d", vr.Status)
	}
	return string(b), string(vr.Body)
}

// unchanged requires /health 200 and the same snapshot.
func (s *server) unchanged(t testing.TB, what, rules, violations string) {
	t.Helper()
	if r := s.do(t, request{Method: http.MethodGet, Path: "/health"}); r.Status != http.StatusOK {
		t.Errorf("after %s: /health status %d", what, r.Status)
	}
	r, v := s.snapshot(t)
	if r != rules {
		t.Errorf("after %s the rules changed:\nbefore %s\n after %s", what, rules, r)
	}
	if v != violations {
		t.Errorf("after %s the violations changed:\nbefore %s\n after %s", what, violations, v)
	}
}

// Hand-made WebAssembly modules.

func uleb(n int) []byte { return leb128.AppendUint(nil, uint64(n)) }

func wasmSection(id byte, content ...[]byte) []byte {
	body := bytes.Join(content, nil)
	return append(append([]byte{id}, uleb(len(body))...), body...)
}

func wasmName(s string) []byte { return append(uleb(len(s)), s...) }

var wasmHeader = []byte{0, 'a', 's', 'm', 1, 0, 0, 0}

// memoryOnlyModule is valid WebAssembly that exports a memory and no
// function: it lacks the whole BeTrace ABI.
func memoryOnlyModule() []byte {
	return bytes.Join([][]byte{
		wasmHeader,
		wasmSection(5, []byte{1, 0, 1}), // one memory, min 1 page
		wasmSection(7, []byte{1}, wasmName("memory"), []byte{2, 0}), // export it
	}, nil)
}

// wrongABIModule has every ABI export, but betrace_abi_version returns 99.
func wrongABIModule() []byte {
	return bytes.Join([][]byte{
		wasmHeader,
		wasmSection(1, []byte{3, // types
			0x60, 0, 1, 0x7f, // () -> i32
			0x60, 1, 0x7f, 1, 0x7f, // (i32) -> i32
			0x60, 1, 0x7f, 1, 0x7e}), // (i32) -> i64
		wasmSection(3, []byte{3, 0, 1, 2}), // functions
		wasmSection(5, []byte{1, 0, 1}),    // memory
		wasmSection(7, []byte{4},
			wasmName("betrace_abi_version"), []byte{0, 0},
			wasmName("betrace_input"), []byte{0, 1},
			wasmName("betrace_evaluate"), []byte{0, 2},
			wasmName("memory"), []byte{2, 0}),
		wasmSection(10, []byte{3},
			[]byte{5, 0, 0x41, 0xe3, 0x00, 0x0b}, // i32.const 99
			[]byte{4, 0, 0x41, 0x00, 0x0b},       // i32.const 0
			[]byte{4, 0, 0x42, 0x00, 0x0b}),      // i64.const 0
	}, nil)
}

// protoField encodes a length-delimited protobuf field.
func protoField(num int, b []byte) []byte {
	return append(append(uleb(num<<3|2), uleb(len(b))...), b...)
}

// otlpProtoWithSpanID is an ExportTraceServiceRequest with one span whose
// span ID has the given number of bytes (8 is valid).
func otlpProtoWithSpanID(n int) []byte {
	span := bytes.Join([][]byte{
		protoField(1, bytes.Repeat([]byte{0xab}, 16)), // trace_id
		protoField(2, bytes.Repeat([]byte{0xcd}, n)),  // span_id
		protoField(5, []byte("bad span")),             // name
	}, nil)
	return protoField(1, protoField(2, protoField(2, span)))
}

// rawCodec sends and receives gRPC messages as given bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// grpcRaw calls the OTLP trace service with body as the request message.
func grpcRaw(t testing.TB, conn *grpc.ClientConn, body []byte) error {
	t.Helper()
	var out []byte
	return conn.Invoke(ctxTimeout(t, 10*time.Second), "/opentelemetry.proto.collector.trace.v1.TraceService/Export", &body, &out, grpc.ForceCodec(rawCodec{}))
}

func testBadInput(t *testing.T) {
	s := startServer(t, serverOptions{GRPC: true})
	s.loadRule(t, "payment-fraud-check")
	s.uploadWasm(t, module(t, "checkout-slow-db"), url.Values{"enabled": {"false"}})
	td, id := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	s.waitQuiet(t, 1)
	s.waitViolations(t, id, 2)
	rules, violations := s.snapshot(t)

	payment := module(t, "payment-fraud-check")
	readme, err := os.ReadFile(filepath.Join(repoRoot, "rules-examples", "traces", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	wasm := func(path string, body []byte) request {
		return request{Method: http.MethodPost, Path: path, Body: body, ContentType: "application/wasm"}
	}
	putWasm := func(path string, body []byte) request {
		return request{Method: http.MethodPut, Path: path, Body: body, ContentType: "application/wasm"}
	}
	jsonReq := func(method, path, body string) request {
		return request{Method: method, Path: path, Body: []byte(body), ContentType: "application/json"}
	}
	multi := func(method, path string, module []byte, metadata any) request {
		body, ctype := multipartBody(t, module, metadata)
		return request{Method: method, Path: path, Body: body, ContentType: ctype}
	}
	big := bytes.Repeat([]byte{0}, 17<<20+1)
	// A violating trace: were any refused request kept, spans would be
	// ingested and violations stored.
	validOTLP := sampleBytes(t, "payment-fraud-check.violating")
	ingested, _ := metricValue(s.metrics(t), "betrace_spans_ingested_total", nil)
	for _, c := range []struct {
		name    string
		req     request
		status  int
		mention []string
	}{
		{"garbage bytes as wasm", wasm("/v1/rules?id=junk", []byte("\x13\x37 this is no module")), 400, []string{"wasm magic"}},
		{"a text file as wasm", wasm("/v1/rules?id=junk", readme), 400, []string{"wasm magic"}},
		{"an empty module", wasm("/v1/rules?id=junk", nil), 400, []string{"module"}},
		{"a truncated module", wasm("/v1/rules?id=junk", payment[:4096]), 400, nil},
		{"a module without the ABI", wasm("/v1/rules?id=junk", memoryOnlyModule()), 400, []string{"betrace_abi_version"}},
		{"a module of another ABI version", wasm("/v1/rules?id=junk", wrongABIModule()), 400, []string{"ABI version 99"}},
		{"the wrong module as a new version", putWasm("/v1/rules/payment-fraud-check", memoryOnlyModule()), 400, []string{"betrace_abi_version"}},
		{"unknown severity on upload", wasm("/v1/rules?id=junk&severity=urgent", payment), 400, []string{"severity"}},
		{"unknown severity in multipart metadata", multi(http.MethodPost, "/v1/rules", payment, map[string]any{"id": "junk", "severity": "urgent"}), 400, []string{"severity"}},
		{"unknown severity on PUT", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"severity":"urgent"}`), 400, []string{"severity"}},
		{"a bad enabled flag", wasm("/v1/rules?id=junk&enabled=perhaps", payment), 400, []string{"enabled"}},
		{"zero fuel", wasm("/v1/rules?id=junk&fuel=0", payment), 400, []string{"fuel"}},
		{"bad memory pages", wasm("/v1/rules?id=junk&memory_pages=lots", payment), 400, []string{"memory_pages"}},
		{"a bad rule id", wasm("/v1/rules?id=no%20spaces%21", payment), 400, []string{"rule id"}},
		{"a 1 MiB tag", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"tags":["`+strings.Repeat("t", 1<<20)+`"]}`), 400, []string{"tag", "64"}},
		{"a share above 1", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"share":1.5}`), 400, []string{"share"}},
		{"an empty tag", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"tags":[""]}`), 400, []string{"tag"}},
		{"a memory cap over the rule memory budget", wasm("/v1/rules?id=junk&memory_pages=16384", payment), 400, []string{"BETRACE_RULE_MEMORY_BUDGET"}},
		{"a duplicate id", wasm("/v1/rules", payment), 409, []string{"payment-fraud-check"}},
		{"multipart without a module part", multi(http.MethodPost, "/v1/rules", nil, map[string]any{"id": "junk"}), 400, []string{"module part"}},
		{"multipart metadata with an unknown field", multi(http.MethodPost, "/v1/rules", payment, map[string]any{"id": "junk", "colour": "red"}), 400, []string{"colour"}},
		{"a JSON body on create", jsonReq(http.MethodPost, "/v1/rules", `{"id":"junk"}`), 400, []string{"module"}},
		{"an unsupported Content-Type", request{Method: http.MethodPost, Path: "/v1/rules", Body: payment, ContentType: "text/plain"}, 415, []string{"Content-Type"}},
		{"PUT with an unknown field", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"sevrity":"LOW"}`), 400, []string{"sevrity"}},
		{"PUT naming another id", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"id":"other"}`), 400, []string{"other"}},
		{"PUT with an expression", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"expression":"trace.has(x)"}`), 400, []string{"expression"}},
		{"PUT with an empty body", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", ""), 400, []string{"empty"}},
		{"PUT with broken JSON", jsonReq(http.MethodPut, "/v1/rules/payment-fraud-check", `{"severity":`), 400, []string{"JSON"}},
		{"an oversize wasm upload", wasm("/v1/rules?id=junk", big), 413, []string{"limit"}},
		{"an oversize multipart upload", multi(http.MethodPost, "/v1/rules", big, nil), 413, []string{"limit"}},
		{"an oversize PUT", putWasm("/v1/rules/payment-fraud-check", big), 413, []string{"limit"}},
		{"an oversize OTLP request", request{Method: http.MethodPost, Path: "/v1/traces", Body: big, ContentType: "application/x-protobuf"}, 413, nil},
		{"malformed OTLP protobuf", request{Method: http.MethodPost, Path: "/v1/traces", Body: []byte("\xff\xff\xff not protobuf"), ContentType: "application/x-protobuf"}, 400, nil},
		{"malformed OTLP JSON", jsonReq(http.MethodPost, "/v1/traces", `{"resourceSpans": [`), 400, nil},
		{"OTLP JSON with a 4-digit span ID", jsonReq(http.MethodPost, "/v1/traces", strings.Replace(string(validOTLP), `"spanId": "`, `"spanId": "abcd", "x": "`, 1)), 400, []string{"spanId"}},
		{"OTLP protobuf with a 4-byte span ID", request{Method: http.MethodPost, Path: "/v1/traces", Body: otlpProtoWithSpanID(4), ContentType: "application/x-protobuf"}, 400, nil},
		{"OTLP as text/plain", request{Method: http.MethodPost, Path: "/v1/traces", Body: validOTLP, ContentType: "text/plain"}, 415, nil},
		{"OTLP with an unknown Content-Encoding", request{Method: http.MethodPost, Path: "/v1/traces", Body: validOTLP, ContentType: "application/json", Header: map[string]string{"Content-Encoding": "br"}}, 415, nil},
		{"OTLP claiming gzip that is not", request{Method: http.MethodPost, Path: "/v1/traces", Body: validOTLP, ContentType: "application/json", Header: map[string]string{"Content-Encoding": "gzip"}}, 400, nil},
		{"malformed legacy spans", jsonReq(http.MethodPost, "/v1/spans", `{"spans": {`), 400, nil},
		{"a bad start_time", jsonReq(http.MethodGet, "/v1/violations?start_time=last+tuesday", ""), 400, []string{"start_time"}},
		{"an unknown rule (GET)", jsonReq(http.MethodGet, "/v1/rules/no-such-rule", ""), 404, []string{"no-such-rule"}},
		{"an unknown rule (PUT)", jsonReq(http.MethodPut, "/v1/rules/no-such-rule", `{"severity":"LOW"}`), 404, []string{"no-such-rule"}},
		{"an unknown rule (DELETE)", jsonReq(http.MethodDelete, "/v1/rules/no-such-rule", ""), 404, []string{"no-such-rule"}},
		{"an unknown rule (enable)", jsonReq(http.MethodPost, "/v1/rules/no-such-rule/enable", ""), 404, []string{"no-such-rule"}},
		{"an unknown rule (disable)", jsonReq(http.MethodPost, "/v1/rules/no-such-rule/disable", ""), 404, []string{"no-such-rule"}},
		{"an unknown rule (rollback)", jsonReq(http.MethodPost, "/v1/rules/no-such-rule/rollback", ""), 404, []string{"no-such-rule"}},
		{"an unknown rule (module)", jsonReq(http.MethodGet, "/v1/rules/no-such-rule/module", ""), 404, []string{"no-such-rule"}},
		{"an unknown endpoint", jsonReq(http.MethodGet, "/v1/rulez", ""), 404, []string{"no such endpoint"}},
	} {
		r := s.do(t, c.req)
		if r.Path == "/v1/traces" || r.Path == "/v1/spans" {
			if r.Status != c.status {
				t.Errorf("%s: status %d, want %d: %.300s", c.name, r.Status, c.status, r.Body)
			}
			if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
				wantError(t, r, c.status, c.mention...)
			}
		} else {
			wantError(t, r, c.status, c.mention...)
		}
		s.unchanged(t, c.name, rules, violations)
	}

	// Spans refused one by one: nothing of them is kept.
	for _, c := range []struct {
		name string
		span map[string]any
	}{
		{"a legacy span with a 4-digit span_id", map[string]any{"trace_id": strings.Repeat("ab", 16), "span_id": "abcd", "name": "x"}},
		{"a legacy span with a 20-digit span_id", map[string]any{"trace_id": strings.Repeat("ab", 16), "span_id": strings.Repeat("1", 20), "name": "x"}},
		{"a legacy span with a 30-digit trace_id", map[string]any{"trace_id": strings.Repeat("ab", 15), "span_id": strings.Repeat("1", 16), "name": "x"}},
		{"a legacy span with a non-hex span_id", map[string]any{"trace_id": strings.Repeat("ab", 16), "span_id": "zzzzzzzzzzzzzzzz", "name": "x"}},
	} {
		r, res := s.postSpans(t, []map[string]any{c.span})
		if r.Status != http.StatusOK || res.Accepted != 0 || res.Rejected != 1 || len(res.Errors) != 1 {
			t.Errorf("%s: status %d, %+v; want 200 with the span rejected and an error", c.name, r.Status, res)
		}
		s.unchanged(t, c.name, rules, violations)
	}

	// OTLP/gRPC: malformed messages are INVALID_ARGUMENT, not INTERNAL.
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"gRPC: a message that is not protobuf", []byte("\xff\xff\xff not protobuf")},
		{"gRPC: a 4-byte span ID", otlpProtoWithSpanID(4)},
	} {
		err := grpcRaw(t, s.grpc(t), c.body)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", c.name, err)
		}
		s.unchanged(t, c.name, rules, violations)
	}
	// Nothing refused reached the trace buffer.
	if now, _ := metricValue(s.metrics(t), "betrace_spans_ingested_total", nil); now != ingested {
		t.Errorf("betrace_spans_ingested_total went from %v to %v: a refused request was ingested", ingested, now)
	}

	// The same raw path accepts a valid message, so the cases above test
	// what they mean to.
	if err := grpcRaw(t, s.grpc(t), otlpProtoWithSpanID(8)); err != nil {
		t.Errorf("gRPC: a valid raw message: %v", err)
	}
}

func testTokens(t *testing.T) {
	const apiToken, ingestToken = "api-secret", "ingest-secret"
	s := startServer(t, serverOptions{GRPC: true, APIToken: apiToken, IngestToken: ingestToken})
	s.loadRule(t, "payment-fraud-check")
	td, id := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	s.waitQuiet(t, 1)
	s.waitViolations(t, id, 2)
	rules, violations := s.snapshot(t)

	payment := module(t, "payment-fraud-check")
	protected := []request{
		{Method: http.MethodGet, Path: "/v1/rules"},
		{Method: http.MethodPost, Path: "/v1/rules?id=sneaky", Body: payment, ContentType: "application/wasm"},
		{Method: http.MethodGet, Path: "/v1/rules/payment-fraud-check"},
		{Method: http.MethodPut, Path: "/v1/rules/payment-fraud-check", Body: []byte(`{"severity":"LOW"}`), ContentType: "application/json"},
		{Method: http.MethodDelete, Path: "/v1/rules/payment-fraud-check"},
		{Method: http.MethodGet, Path: "/v1/rules/payment-fraud-check/module"},
		{Method: http.MethodPost, Path: "/v1/rules/payment-fraud-check/disable"},
		{Method: http.MethodPost, Path: "/v1/rules/payment-fraud-check/enable"},
		{Method: http.MethodPost, Path: "/v1/rules/payment-fraud-check/rollback"},
		{Method: http.MethodGet, Path: "/v1/violations"},
		{Method: http.MethodGet, Path: "/v1/violations/summary"},
	}
	for _, req := range protected {
		for _, tok := range []struct{ name, token, mention string }{
			{"no token", "-", "missing bearer token"},
			{"a wrong token", "wrong", "invalid bearer token"},
			{"the ingest token", ingestToken, "invalid bearer token"},
		} {
			req.Token = tok.token
			r := s.do(t, req)
			what := fmt.Sprintf("%s %s with %s", req.Method, req.Path, tok.name)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", what, r.Status)
			} else {
				wantError(t, r, http.StatusUnauthorized, tok.mention)
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q", what, r.Header.Get("WWW-Authenticate"))
				}
			}
			s.unchanged(t, what, rules, violations)
		}
	}
	for _, path := range []string{"/health", "/v1/health", "/ready", "/v1/ready", "/metrics"} {
		if r := s.do(t, request{Method: http.MethodGet, Path: path, Token: "-"}); r.Status != http.StatusOK {
			t.Errorf("GET %s without a token: status %d, want 200 (it stays open)", path, r.Status)
		}
	}

	// Ingest needs the ingest token, on every transport.
	ingested, _ := metricValue(s.metrics(t), "betrace_spans_ingested_total", nil)
	clean, _ := sample(t, "payment-fraud-check.clean")
	body := otlpProto(t, clean)
	spans, _ := json.Marshal(map[string]any{"spans": legacySpans(clean)})
	for _, tok := range []struct{ name, token string }{{"no token", "-"}, {"a wrong token", "wrong"}, {"the API token", apiToken}} {
		for _, req := range []request{
			{Method: http.MethodPost, Path: "/v1/traces", Body: body, ContentType: "application/x-protobuf", Token: tok.token},
			{Method: http.MethodPost, Path: "/v1/traces", Body: otlpJSON(t, clean), ContentType: "application/json", Token: tok.token},
			{Method: http.MethodPost, Path: "/v1/spans", Body: spans, ContentType: "application/json", Token: tok.token},
		} {
			if r := s.do(t, req); r.Status != http.StatusUnauthorized {
				t.Errorf("POST %s (%s) with %s: status %d, want 401", req.Path, req.ContentType, tok.name, r.Status)
			}
			s.unchanged(t, "ingest with "+tok.name, rules, violations)
		}
		_, err := s.exportGRPC(t, clean, tok.token)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("OTLP/gRPC with %s: %v, want Unauthenticated", tok.name, err)
		}
		s.unchanged(t, "gRPC with "+tok.name, rules, violations)
	}
	if now, _ := metricValue(s.metrics(t), "betrace_spans_ingested_total", nil); now != ingested {
		t.Errorf("betrace_spans_ingested_total went from %v to %v: a request without the ingest token was ingested", ingested, now)
	}
	// With the right token each transport is accepted.
	for _, tp := range transports {
		td, _ := sample(t, "payment-fraud-check.clean")
		tp.send(t, s, td)
	}
	if r, res := s.postSpans(t, legacySpans(clean)); r.Status != http.StatusOK || res.Rejected != 0 {
		t.Errorf("POST /v1/spans with the ingest token: status %d %+v", r.Status, res)
	}
}

// testMethodNotAllowed: a documented path asked with a method it does not
// serve answers 405 naming the method (httpapi sets a
// MethodNotAllowedHandler for this), and changes nothing.
func testMethodNotAllowed(t *testing.T) {
	s := startServer(t, serverOptions{})
	s.loadRule(t, "payment-fraud-check")
	rules, violations := s.snapshot(t)
	for _, c := range []struct{ method, path string }{
		{http.MethodPut, "/health"},
		{http.MethodPost, "/metrics"},
		{http.MethodGet, "/v1/traces"},
		{http.MethodDelete, "/v1/violations"},
		{http.MethodPut, "/v1/rules"},
		{http.MethodDelete, "/v1/rules"},
		{http.MethodPatch, "/v1/rules/payment-fraud-check"},
		{http.MethodPost, "/v1/rules/payment-fraud-check"},
		{http.MethodGet, "/v1/rules/payment-fraud-check/enable"},
		{http.MethodDelete, "/v1/rules/payment-fraud-check/module"},
	} {
		r := s.call(t, c.method, c.path, nil)
		wantError(t, r, http.StatusMethodNotAllowed, c.method)
		s.unchanged(t, c.method+" "+c.path, rules, violations)
	}
}
