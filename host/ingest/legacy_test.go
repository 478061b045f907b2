package ingest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

const (
	tid = "0102030405060708090a0b0c0d0e0f10"
	sid = "a1a2a3a4a5a6a7a8"
	pid = "b1b2b3b4b5b6b7b8"
)

func legacyAnswer(t *testing.T, resp *http.Response) legacyResponse {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out legacyResponse
	if err := json.Unmarshal(b, &out); err != nil || out.Errors == nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return out
}

func TestLegacySpans(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	body := `{"spans":[
	  {"trace_id":"` + tid + `","span_id":"` + sid + `","parent_span_id":"` + pid + `","name":"payment.charge",
	   "start_time":1700000000000000000,"end_time":"1700000000500000000","attributes":{"amount":"1200","currency":"EUR"},
	   "status":"ERROR","service_name":"payments"},
	  {"traceId":"` + tid + `","spanId":"c1c2c3c4c5c6c7c8","name":"fraud.check","startTime":"1700000000100000000","durationMs":250,
	   "attributes":{"score":0.25,"count":3,"flagged":true,"note":null},"status":"ok","serviceName":"payments"},
	  {"trace_id":"` + tid + `","span_id":"d1d2d3d4d5d6d7d8","name":"root","status":"weird"}
	]}`
	out := legacyAnswer(t, f.post(t, "/v1/spans", "application/json", []byte(body)))
	if out.Accepted != 3 || out.Rejected != 0 || len(out.Errors) != 0 {
		t.Fatalf("answer %+v", out)
	}
	spans := f.rec.spans
	if len(spans) != 3 {
		t.Fatalf("sink got %d spans", len(spans))
	}
	a, b, c := spans[0], spans[1], spans[2]
	if fmt.Sprintf("%x/%x/%x", a.TraceID, a.SpanID, a.ParentSpanID) != tid+"/"+sid+"/"+pid ||
		a.Name != "payment.charge" || a.StartUnixNano != 1700000000000000000 || a.EndUnixNano != 1700000000500000000 ||
		a.StatusCode != abiv1.StatusError || a.Service != "payments" || len(a.ResourceAttrs) != 1 ||
		len(a.Attrs) != 2 || a.Attrs[0] != (traces.Attr{Key: "amount", Type: abiv1.ValueString, Str: "1200"}) {
		t.Fatalf("span 0: %+v", a)
	}
	if b.EndUnixNano != 1700000000100000000+250e6 || b.StatusCode != abiv1.StatusOK || &b.ResourceAttrs[0] != &a.ResourceAttrs[0] {
		t.Fatalf("span 1: %+v", b)
	}
	want := []traces.Attr{
		{Key: "count", Type: abiv1.ValueInt, Num: 3},
		{Key: "flagged", Type: abiv1.ValueBool, Num: 1},
		{Key: "note", Type: abiv1.ValueEmpty},
		{Key: "score", Type: abiv1.ValueDouble, Num: math.Float64bits(0.25)},
	}
	for i := range want {
		if b.Attrs[i] != want[i] {
			t.Fatalf("span 1 attribute %d: %+v, want %+v", i, b.Attrs[i], want[i])
		}
	}
	if !c.IsRoot() || c.StatusCode != abiv1.StatusUnset || c.StatusMessage != "weird" || c.Service != "" {
		t.Fatalf("span 2: %+v", c)
	}
	if got := value(t, f.reg, "betrace_ingest_requests_total", "transport", "legacy_http", "outcome", "ok"); got != 1 {
		t.Fatalf("requests{legacy_http, ok} = %v", got)
	}
}

func TestLegacyRejectsOnlyBadSpans(t *testing.T) {
	good := `{"trace_id":"` + tid + `","span_id":"` + sid + `","name":"ok"}`
	tests := []struct {
		span   string
		reason string
		msg    string
	}{
		{`{"span_id":"` + sid + `","name":"x"}`, "empty_trace_id", "trace_id is required"},
		{`{"trace_id":"00000000000000000000000000000000","span_id":"` + sid + `","name":"x"}`, "empty_trace_id", "all zeros"},
		{`{"trace_id":"abc","span_id":"` + sid + `","name":"x"}`, "bad_trace_id", `trace_id "abc" has 3 characters, want 32 hex digits`},
		{`{"trace_id":"` + tid + `","span_id":"zzzzzzzzzzzzzzzz","name":"x"}`, "bad_span_id", "not hexadecimal"},
		{`{"trace_id":"` + tid + `","name":"x"}`, "empty_span_id", "span_id is required"},
		{`{"trace_id":"` + tid + `","span_id":"` + sid + `","parent_span_id":"12","name":"x"}`, "bad_parent_span_id", "parent_span_id"},
		{`{"trace_id":"` + tid + `","span_id":"` + sid + `"}`, "empty_name", "name is required"},
		{`{"trace_id":"` + tid + `","span_id":"` + sid + `","name":"x","start_time":"soon"}`, "malformed", "not an integer"},
		{`{"trace_id":"` + tid + `","span_id":"` + sid + `","name":"x","attributes":{"a":[1]}}`, "malformed", "string, number or boolean"},
		{`"not an object"`, "malformed", "span is malformed"},
		{`{"trace_id":"` + tid + `","span_id":"` + sid + `","name":"x","attributes":{"a":"1","b":"2","c":"3"}}`, "too_many_attributes", "3, at most 2"},
	}
	for _, tt := range tests {
		t.Run(tt.reason+" "+tt.msg, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxSpanAttributes = 2
			f := newFixture(t, cfg)
			body := `{"spans":[` + good + `,` + tt.span + `,` + good + `]}`
			out := legacyAnswer(t, f.post(t, "/v1/spans", "application/json", []byte(body)))
			if out.Accepted != 2 || out.Rejected != 1 || len(out.Errors) != 1 || !strings.HasPrefix(out.Errors[0], "spans[1]: ") ||
				!strings.Contains(out.Errors[0], tt.msg) {
				t.Fatalf("answer %+v, want spans[1] rejected with %q", out, tt.msg)
			}
			if got := value(t, f.reg, "betrace_spans_rejected_total", "reason", tt.reason); got != 1 {
				t.Fatalf("rejected{%s} = %v", tt.reason, got)
			}
			if f.rec.count() != 2 {
				t.Fatalf("sink got %d spans", f.rec.count())
			}
		})
	}
}

func TestLegacyErrorsListIsBounded(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	var b strings.Builder
	b.WriteString(`{"spans":[`)
	for i := range 50 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"name":"x"}`)
	}
	b.WriteString(`]}`)
	out := legacyAnswer(t, f.post(t, "/v1/spans", "", []byte(b.String())))
	if out.Accepted != 0 || out.Rejected != 50 || len(out.Errors) != maxLegacyErrors+1 || out.Errors[maxLegacyErrors] != "and 30 more" {
		t.Fatalf("answer accepted=%d rejected=%d errors=%d last=%q", out.Accepted, out.Rejected, len(out.Errors), out.Errors[len(out.Errors)-1])
	}
	if f.rec.calls != 0 {
		t.Fatal("sink called with no valid span")
	}
}

func TestLegacyRequestErrors(t *testing.T) {
	small := DefaultConfig()
	small.MaxRequestBytes = 64
	tests := []struct {
		name    string
		cfg     Config
		body    string
		sinkErr error
		status  int
		code    int32
	}{
		{"not json", DefaultConfig(), `{"spans":`, nil, 400, 3},
		{"spans not a list", DefaultConfig(), `{"spans":{}}`, nil, 400, 3},
		{"too large", small, `{"spans":[` + strings.Repeat(" ", 100) + `]}`, nil, 413, 8},
		{"buffer full", DefaultConfig(), `{"spans":[{"trace_id":"` + tid + `","span_id":"` + sid + `","name":"x"}]}`, traces.ErrFull, 429, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.cfg)
			f.rec.err = tt.sinkErr
			resp := f.post(t, "/v1/spans", "application/json", []byte(tt.body))
			b, _ := io.ReadAll(resp.Body)
			var st jsonStatus
			if resp.StatusCode != tt.status || json.Unmarshal(b, &st) != nil || st.Code != tt.code || st.Details == nil {
				t.Fatalf("got %d %s, want %d with code %d", resp.StatusCode, b, tt.status, tt.code)
			}
			if tt.status == 429 && resp.Header.Get("Retry-After") != "1" {
				t.Fatal("429 without Retry-After")
			}
		})
	}
}

func TestLegacyGzip(t *testing.T) {
	f := newFixture(t, DefaultConfig())
	body := gzipped(t, []byte(`{"spans":[{"trace_id":"`+tid+`","span_id":"`+sid+`","name":"x"}]}`))
	out := legacyAnswer(t, f.post(t, "/v1/spans", "application/json", body, "Content-Encoding", "gzip"))
	if out.Accepted != 1 {
		t.Fatalf("answer %+v", out)
	}
}
