package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// httpClient talks to test servers; never through a proxy.
var httpClient = &http.Client{
	Timeout: 60 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     5 * time.Second,
	},
}

// response is one answer, as the tests and the OpenAPI check see it.
type response struct {
	Method, Path string // Path without the query
	Status       int
	Header       http.Header
	Body         []byte
}

// recorded holds every answer of the helpers below, for the OpenAPI check.
var recorded struct {
	sync.Mutex
	list []response
}

func record(r response) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		r.Body = nil // only JSON bodies are checked against schemas
	}
	recorded.Lock()
	recorded.list = append(recorded.list, r)
	recorded.Unlock()
}

// request is one call to a server.
type request struct {
	Method, Path string // Path may carry a query
	Body         []byte
	ContentType  string
	Header       map[string]string
	// Token overrides the server's API token: "-" sends none.
	Token string
}

// do sends req, records the answer and returns it. Unless req names a
// token, the API token is sent on /v1 paths other than ingest, and the
// ingest token on ingest paths.
func (s *server) do(t testing.TB, req request) response {
	t.Helper()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequest(req.Method, s.base+req.Path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	token := req.Token
	if token == "" {
		token = s.opts.APIToken
		if isIngest(req.Path) {
			token = s.opts.IngestToken
		}
	}
	if token != "" && token != "-" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range req.Header {
		hr.Header.Set(k, v)
	}
	resp, err := httpClient.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.Path, err)
	}
	path, _, _ := strings.Cut(req.Path, "?")
	r := response{Method: req.Method, Path: path, Status: resp.StatusCode, Header: resp.Header, Body: b}
	record(r)
	return r
}

func isIngest(path string) bool {
	return strings.HasPrefix(path, "/v1/traces") || strings.HasPrefix(path, "/v1/spans")
}

// call sends a JSON request (body nil: none; []byte: as is; else marshalled).
func (s *server) call(t testing.TB, method, path string, body any) response {
	t.Helper()
	req := request{Method: method, Path: path}
	switch b := body.(type) {
	case nil:
	case []byte:
		req.Body, req.ContentType = b, "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		req.Body, req.ContentType = j, "application/json"
	}
	return s.do(t, req)
}

// mustJSON calls and requires status want, returning the decoded body.
func (s *server) mustJSON(t testing.TB, method, path string, body any, want int) map[string]any {
	t.Helper()
	r := s.call(t, method, path, body)
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return decodeObject(t, r.Body)
}

func (s *server) get(t testing.TB, path string) map[string]any {
	t.Helper()
	return s.mustJSON(t, http.MethodGet, path, nil, http.StatusOK)
}

// decodeObject decodes a JSON object, numbers as json.Number.
func decodeObject(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("not a JSON object (%v): %.500s", err, b)
	}
	return m
}

// wantError requires an error answer {"code","message","details"} with
// the status and a message containing every fragment.
func wantError(t testing.TB, r response, status int, fragments ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s %s: status %d, want %d: %s", r.Method, r.Path, r.Status, status, r.Body)
		return
	}
	var e struct {
		Code    *int      `json:"code"`
		Message string    `json:"message"`
		Details *[]string `json:"details"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || e.Code == nil || e.Details == nil {
		t.Errorf("%s %s: %d answer is not an error object {code,message,details} (%v): %s", r.Method, r.Path, r.Status, err, r.Body)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(strings.ToLower(e.Message), strings.ToLower(f)) {
			t.Errorf("%s %s: message %q does not mention %q", r.Method, r.Path, e.Message, f)
		}
	}
}

// uploadWasm uploads a module as application/wasm with metadata in the query.
func (s *server) uploadWasm(t testing.TB, module []byte, meta url.Values) response {
	t.Helper()
	path := "/v1/rules"
	if len(meta) > 0 {
		path += "?" + meta.Encode()
	}
	return s.do(t, request{Method: http.MethodPost, Path: path, Body: module, ContentType: "application/wasm"})
}

// uploadMultipart uploads a module as multipart/form-data with an optional
// metadata part (nil: none).
func (s *server) uploadMultipart(t testing.TB, method, path string, module []byte, metadata any) response {
	t.Helper()
	body, ctype := multipartBody(t, module, metadata)
	return s.do(t, request{Method: method, Path: path, Body: body, ContentType: ctype})
}

func multipartBody(t testing.TB, module []byte, metadata any) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if module != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="module"; filename="rule.wasm"`)
		h.Set("Content-Type", "application/wasm")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(module)
	}
	if metadata != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="metadata"`)
		h.Set("Content-Type", "application/json")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		json.NewEncoder(w).Encode(metadata)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// loadRule uploads an example rule under its own id and requires 201.
func (s *server) loadRule(t testing.TB, id string) map[string]any {
	t.Helper()
	r := s.uploadWasm(t, module(t, id), url.Values{"id": {id}})
	if r.Status != http.StatusCreated {
		t.Fatalf("upload %s: status %d: %s", id, r.Status, r.Body)
	}
	return decodeObject(t, r.Body)
}

// rule returns one rule.
func (s *server) rule(t testing.TB, id string) map[string]any {
	t.Helper()
	return s.get(t, "/v1/rules/"+id)
}

// violations lists every violation matching query (at most 1000).
func (s *server) violations(t testing.TB, query url.Values) []map[string]any {
	t.Helper()
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", "1000")
	page := s.get(t, "/v1/violations?"+q.Encode())
	return objects(t, page["violations"])
}

func (s *server) traceViolations(t testing.TB, traceID string) []map[string]any {
	t.Helper()
	return s.violations(t, url.Values{"trace_id": {traceID}})
}

// waitViolations polls until the trace has n violations.
func (s *server) waitViolations(t testing.TB, traceID string, n int) []map[string]any {
	t.Helper()
	var vs []map[string]any
	eventually(t, 15*time.Second, fmt.Sprintf("%d violations of trace %s", n, traceID), func() (bool, string) {
		vs = s.traceViolations(t, traceID)
		return len(vs) >= n, fmt.Sprintf("%d violations", len(vs))
	})
	if len(vs) != n {
		t.Fatalf("trace %s: %d violations, want %d", traceID, len(vs), n)
	}
	return vs
}

func objects(t testing.TB, v any) []map[string]any {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("not a JSON array: %#v", v)
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("element %d is not an object: %#v", i, e)
		}
		out[i] = m
	}
	return out
}

// str and num read fields of decoded JSON.
func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func num(m map[string]any, key string) int64 {
	n, ok := m[key].(json.Number)
	if !ok {
		return -1
	}
	i, err := n.Int64()
	if err != nil {
		return -1
	}
	return i
}

func obj(m map[string]any, key string) map[string]any {
	o, _ := m[key].(map[string]any)
	return o
}

// metrics scrapes /metrics.
func (s *server) metrics(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	r := s.do(t, request{Method: http.MethodGet, Path: "/metrics"})
	if r.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d", r.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return mfs
}

// metricValue sums the series of a family whose labels include labels;
// found is false when no series matches.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (sum float64, found bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for k, v := range labels {
			ok := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.Summary.GetSampleCount())
		}
	}
	return sum, found
}

// waitQuiet waits until at least completed traces have completed and
// nothing is buffered or queued any more, the recorder's buffer included:
// every completed trace's violations are then stored (a trace is released
// once its violations reach the recorder; the recorder lets them go once
// the store's write returned).
func (s *server) waitQuiet(t testing.TB, completed int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%d traces completed and evaluated", completed), func() (bool, string) {
		mfs := s.metrics(t)
		done, _ := metricValue(mfs, "betrace_traces_completed_total", nil)
		active, _ := metricValue(mfs, "betrace_traces_active", nil)
		buffered, _ := metricValue(mfs, "betrace_trace_buffer_bytes", nil)
		queued, _ := metricValue(mfs, "betrace_evaluation_queue_length", nil)
		recording, _ := metricValue(mfs, "betrace_recorder_buffer_bytes", nil)
		return int(done) >= completed && active == 0 && buffered == 0 && queued == 0 && recording == 0,
			fmt.Sprintf("completed %v, active %v, buffered bytes %v, queued %v, recorder bytes %v", done, active, buffered, queued, recording)
	})
}
