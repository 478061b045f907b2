package export

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/betracehq/betrace/host/violations"
)

// collector is a real OTLP/HTTP trace receiver: it decodes each request
// with pdata and keeps what it accepted. respond, if set, may answer a
// request instead (it is given the request's 1-based number) and reports
// whether it did; the spans of such a request are not kept.
type collector struct {
	t       *testing.T
	handler http.Handler
	respond func(n int, w http.ResponseWriter, r *http.Request) bool

	mu       sync.Mutex
	requests int
	accepted []ptrace.Traces
	arrived  chan struct{} // one value per accepted request, never blocks
}

func newCollector(t *testing.T) *collector {
	c := &collector{t: t, arrived: make(chan struct{}, 1000)}
	c.handler = http.HandlerFunc(c.serve)
	return c
}

// start serves on a free local port until the test ends.
func (c *collector) start() *httptest.Server {
	srv := httptest.NewServer(c.handler)
	c.t.Cleanup(srv.Close)
	return srv
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		c.t.Errorf("collector: %s %s, want POST /v1/traces", r.Method, r.URL.Path)
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		c.t.Errorf("collector: Content-Type %q", ct)
		http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		c.t.Errorf("collector: decode: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.requests++
	n := c.requests
	c.mu.Unlock()
	if c.respond != nil && c.respond(n, w, r) {
		return
	}
	c.mu.Lock()
	c.accepted = append(c.accepted, req.Traces())
	c.mu.Unlock()
	resp, _ := ptraceotlp.NewExportResponse().MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
	c.arrived <- struct{}{}
}

func (c *collector) requestCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// received is one accepted span with what surrounded it.
type received struct {
	resource map[string]any
	scope    string
	span     ptrace.Span
}

func (c *collector) spans() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []received
	for _, td := range c.accepted {
		for _, rs := range td.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, sp := range ss.Spans().All() {
					out = append(out, received{rs.Resource().Attributes().AsRaw(), ss.Scope().Name(), sp})
				}
			}
		}
	}
	return out
}

// violationIDs returns the betrace.violation.id of every span received,
// failing the test on a duplicate span ID.
func (c *collector) violationIDs(t *testing.T) map[string]int {
	t.Helper()
	ids := map[string]int{}
	spanIDs := map[string]bool{}
	for _, r := range c.spans() {
		if spanIDs[r.span.SpanID().String()] {
			t.Errorf("span ID %s received twice", r.span.SpanID())
		}
		spanIDs[r.span.SpanID().String()] = true
		v, _ := r.span.Attributes().Get(attrID)
		ids[v.Str()]++
	}
	return ids
}

// waitArrived waits for n accepted requests.
func (c *collector) waitArrived(t *testing.T, n int) {
	t.Helper()
	guard := time.NewTimer(10 * time.Second)
	defer guard.Stop()
	for range n {
		select {
		case <-c.arrived:
		case <-guard.C:
			t.Fatalf("collector: gave up waiting for %d requests", n)
		}
	}
}

// testViolation returns violation i of a test, every field set.
func testViolation(i int) violations.Violation {
	return violations.Violation{
		ID:          fmt.Sprintf("v-%d", i),
		RuleID:      "rule-1",
		RuleName:    "no-pii-in-logs",
		RuleVersion: 2,
		Severity:    "CRITICAL",
		TraceID:     fmt.Sprintf("%032x", 0xabc000+i),
		SpanID:      fmt.Sprintf("%016x", 0xdef000+i),
		Message:     "email address in log body",
		Attributes:  map[string]string{"field": "email", "index": fmt.Sprint(i)},
		Metadata:    map[string]string{"service_name": "checkout", "span_name": "log"},
		Trigger:     "root",
		Timestamp:   time.Date(2026, 5, 1, 12, 0, 0, i, time.UTC),
	}
}

func testViolations(n int) []violations.Violation {
	vs := make([]violations.Violation, n)
	for i := range vs {
		vs[i] = testViolation(i)
	}
	return vs
}

// logBuffer collects JSON log lines from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many lines contain s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeClock stands in for time in the sender: sleeping advances it at
// once and records how long was asked for.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.waits = append(c.waits, d)
	return nil
}

func (c *fakeClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// checkGoroutines fails the test if, once its other cleanups have run,
// goroutines are still above their number now.
func checkGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		guard := time.NewTimer(5 * time.Second)
		defer guard.Stop()
		for runtime.NumGoroutine() > base {
			select {
			case <-tick.C:
			case <-guard.C:
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d, want at most %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
				return
			}
		}
	})
}

// shutdown calls Shutdown with a generous deadline and fails on an error.
func shutdown(t *testing.T, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
