package export

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/betracehq/betrace/host/violations"
)

// newTestExporter builds an exporter for endpoint with fast backoff; edit
// tweaks the config first.
func newTestExporter(t *testing.T, endpoint string, logs *logBuffer, edit func(*Config)) *Exporter {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Endpoint = endpoint
	cfg.FlushInterval = 10 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	e, err := New(cfg, logs.logger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.backoffBase = time.Millisecond
	e.backoffMax = 10 * time.Millisecond
	return e
}

// counter reads one counter.
func counter(c prometheus.Counter) int {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

// series gathers reg and returns each metric's series, by name.
func series(t *testing.T, reg *prometheus.Registry) map[string][]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf.GetMetric()
	}
	return out
}

// failures returns the failed counter by reason, leaving out zeros.
func failures(e *Exporter) map[string]int {
	out := map[string]int{}
	for r, c := range e.m.failed {
		if n := counter(c); n != 0 {
			out[r] = n
		}
	}
	return out
}

func wantFailures(t *testing.T, e *Exporter, want map[string]int) {
	t.Helper()
	if got := failures(e); !maps.Equal(got, want) {
		t.Errorf("failed spans by reason = %v, want %v", got, want)
	}
}

func TestSpansArrive(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	srv := c.start()
	logs := &logBuffer{}
	e := newTestExporter(t, srv.Listener.Addr().String(), logs, func(cfg *Config) {
		cfg.InstanceID = "node-7"
		cfg.BatchSize = 2
	})

	vs := testViolations(3)
	vs[1].Severity = "LOW"
	vs[2].Severity = "HIGH"
	vs[2].Attributes = nil
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Export(vs)
	shutdown(t, e)

	got := c.spans()
	if len(got) != len(vs) {
		t.Fatalf("received %d spans, want %d", len(got), len(vs))
	}
	byID := map[string]received{}
	for _, r := range got {
		id, _ := r.span.Attributes().Get(attrID)
		byID[id.Str()] = r
	}
	seen := map[string]bool{}
	for _, v := range vs {
		r, ok := byID[v.ID]
		if !ok {
			t.Errorf("violation %s: no span", v.ID)
			continue
		}
		sp := r.span
		if sp.Name() != "betrace.violation" {
			t.Errorf("%s: name %q", v.ID, sp.Name())
		}
		if sp.TraceID().String() != v.TraceID {
			t.Errorf("%s: trace ID %s, want %s", v.ID, sp.TraceID(), v.TraceID)
		}
		if sp.ParentSpanID().String() != v.SpanID {
			t.Errorf("%s: parent %s, want %s", v.ID, sp.ParentSpanID(), v.SpanID)
		}
		if id := sp.SpanID().String(); sp.SpanID().IsEmpty() || id == v.SpanID || seen[id] {
			t.Errorf("%s: span ID %s is empty, the parent's or repeated", v.ID, id)
		}
		seen[sp.SpanID().String()] = true
		if sp.Kind() != ptrace.SpanKindInternal {
			t.Errorf("%s: kind %v", v.ID, sp.Kind())
		}
		if !sp.StartTimestamp().AsTime().Equal(v.Timestamp) || !sp.EndTimestamp().AsTime().Equal(v.Timestamp) {
			t.Errorf("%s: start %v end %v, want %v", v.ID, sp.StartTimestamp(), sp.EndTimestamp(), v.Timestamp)
		}
		wantCode := ptrace.StatusCodeError
		if v.Severity == "LOW" {
			wantCode = ptrace.StatusCodeUnset
		}
		if sp.Status().Code() != wantCode {
			t.Errorf("%s (%s): status %v, want %v", v.ID, v.Severity, sp.Status().Code(), wantCode)
		}
		wantAttrs := map[string]any{
			"betrace.violation":           true,
			"betrace.violation.rule_id":   v.RuleID,
			"betrace.violation.rule_name": v.RuleName,
			"betrace.violation.severity":  v.Severity,
			"betrace.violation.message":   v.Message,
			"betrace.violation.id":        v.ID,
			"betrace.violation.trace_id":  v.TraceID,
			"betrace.violation.trigger":   v.Trigger,
		}
		for k, val := range v.Attributes {
			wantAttrs["betrace.violation.attr."+k] = val
		}
		if got := sp.Attributes().AsRaw(); !maps.Equal(got, wantAttrs) {
			t.Errorf("%s: attributes\n got %v\nwant %v", v.ID, got, wantAttrs)
		}
		wantRes := map[string]any{"service.name": "betrace", "service.instance.id": "node-7"}
		if !maps.Equal(r.resource, wantRes) {
			t.Errorf("%s: resource %v, want %v", v.ID, r.resource, wantRes)
		}
		if r.scope != "github.com/betracehq/betrace" {
			t.Errorf("%s: scope %q", v.ID, r.scope)
		}
	}
	if n := c.requestCount(); n != 2 {
		t.Errorf("requests = %d, want 2 (batches of 2)", n)
	}
	if n := counter(e.m.emitted); n != 3 {
		t.Errorf("emitted = %d, want 3", n)
	}
	wantFailures(t, e, map[string]int{})
	if n := logs.count("export failing"); n != 0 {
		t.Errorf("logged %d failures:\n%s", n, logs)
	}
}

func TestEndpointForms(t *testing.T) {
	for _, form := range []string{"host:port", "http://host:port", "http://host:port/"} {
		t.Run(form, func(t *testing.T) {
			checkGoroutines(t)
			c := newCollector(t)
			srv := c.start()
			endpoint := strings.Replace(form, "host:port", srv.Listener.Addr().String(), 1)
			e := newTestExporter(t, endpoint, &logBuffer{}, nil)
			if err := e.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			e.Export(testViolations(2))
			c.waitArrived(t, 1) // sent by FlushInterval, not by Shutdown
			shutdown(t, e)
			if n := len(c.spans()); n != 2 {
				t.Errorf("received %d spans, want 2", n)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	busy, _ := proto.Marshal(&statuspb.Status{Code: 14, Message: "collector busy"})
	c.respond = func(n int, w http.ResponseWriter, _ *http.Request) bool {
		if n > 3 {
			return false
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(busy)
		return true
	}
	srv := c.start()
	logs := &logBuffer{}
	clock := newFakeClock()
	e := newTestExporter(t, srv.URL, logs, nil)
	e.now, e.sleep = clock.now, clock.sleep

	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Export(testViolations(5))
	c.waitArrived(t, 1)
	shutdown(t, e)

	ids := c.violationIDs(t)
	for _, v := range testViolations(5) {
		if ids[v.ID] != 1 {
			t.Errorf("violation %s received %d times, want 1", v.ID, ids[v.ID])
		}
	}
	if n := c.requestCount(); n != 4 {
		t.Errorf("requests = %d, want 4", n)
	}
	if n := counter(e.m.retries); n != 3 {
		t.Errorf("retries = %d, want 3", n)
	}
	for _, w := range clock.recorded() {
		if w != 7*time.Second {
			t.Errorf("waited %v, want Retry-After's 7s: %v", w, clock.recorded())
		}
	}
	if n := counter(e.m.emitted); n != 5 {
		t.Errorf("emitted = %d, want 5", n)
	}
	wantFailures(t, e, map[string]int{})
	if logs.count("export failing") != 1 || logs.count("export recovered") != 1 {
		t.Errorf("want one failing and one recovered line:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "collector busy") {
		t.Errorf("the collector's message is not logged:\n%s", logs)
	}
}

func TestPermanentRejection(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	c.respond = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		http.Error(w, "bad spans", http.StatusBadRequest)
		return true
	}
	srv := c.start()
	logs := &logBuffer{}
	e := newTestExporter(t, srv.URL, logs, func(cfg *Config) { cfg.BatchSize = 2 })

	e.Export(testViolations(6))
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e)

	if n := c.requestCount(); n != 3 {
		t.Errorf("requests = %d, want 3: one per batch, none repeated", n)
	}
	if n := counter(e.m.retries); n != 0 {
		t.Errorf("retries = %d, want 0", n)
	}
	wantFailures(t, e, map[string]int{reasonRejected: 6})
	if n := logs.count("export failing"); n != 1 {
		t.Errorf("logged %d failures, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "bad spans") {
		t.Errorf("want an error line with the collector's message:\n%s", logs)
	}
}

func TestPartialSuccess(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	c.respond = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		resp := ptraceotlp.NewExportResponse()
		resp.PartialSuccess().SetRejectedSpans(2)
		resp.PartialSuccess().SetErrorMessage("span too old")
		b, _ := resp.MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
		return true
	}
	srv := c.start()
	logs := &logBuffer{}
	e := newTestExporter(t, srv.URL, logs, nil)
	e.Export(testViolations(5))
	shutdown(t, e) // without Start: still sends what was queued

	if n := counter(e.m.emitted); n != 3 {
		t.Errorf("emitted = %d, want 3", n)
	}
	wantFailures(t, e, map[string]int{reasonRejected: 2})
	if n := counter(e.m.retries); n != 0 {
		t.Errorf("retries = %d, want 0", n)
	}
	if !strings.Contains(logs.String(), "span too old") {
		t.Errorf("the collector's reason is not logged:\n%s", logs)
	}
}

func TestCollectorDownThenUp(t *testing.T) {
	checkGoroutines(t)
	// Reserve a port, then free it: connections are refused until the
	// collector listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c := newCollector(t)
	srv := httptest.NewUnstartedServer(c.handler)
	t.Cleanup(srv.Close)
	logs := &logBuffer{}
	e := newTestExporter(t, addr, logs, nil)
	sleeps := 0
	e.sleep = func(ctx context.Context, d time.Duration) error {
		sleeps++ // only the sender goroutine sleeps
		if sleeps == 3 {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("collector cannot listen on %s again: %v", addr, err)
				return err
			}
			srv.Listener.Close()
			srv.Listener = ln
			srv.Start()
		}
		return sleepContext(ctx, d)
	}

	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Export(testViolations(3))
	c.waitArrived(t, 1)
	shutdown(t, e)

	ids := c.violationIDs(t)
	if len(ids) != 3 {
		t.Errorf("received %v, want 3 violations once each", ids)
	}
	if n := counter(e.m.retries); n != 3 {
		t.Errorf("retries = %d, want 3", n)
	}
	if n := counter(e.m.emitted); n != 3 {
		t.Errorf("emitted = %d, want 3", n)
	}
	wantFailures(t, e, map[string]int{})
	if logs.count("export failing") != 1 || logs.count("export recovered") != 1 {
		t.Errorf("want one failing and one recovered line:\n%s", logs)
	}
}

func TestRetriesExhausted(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	c.respond = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusBadGateway)
		return true
	}
	srv := c.start()
	clock := newFakeClock()
	e := newTestExporter(t, srv.URL, &logBuffer{}, func(cfg *Config) {
		cfg.BatchSize = 1
		cfg.MaxRetryTime = 10 * time.Second
	})
	e.now, e.sleep = clock.now, clock.sleep
	e.backoffBase, e.backoffMax = time.Second, 4*time.Second

	// Three batches drained by Shutdown: the first is retried until
	// MaxRetryTime; the other two are then given up without a request.
	e.Export(testViolations(3))
	shutdown(t, e)

	wantFailures(t, e, map[string]int{reasonRetriesExhausted: 3})
	waits := clock.recorded()
	if n := counter(e.m.retries); n != len(waits) || n < 3 {
		t.Errorf("retries = %d after %d waits, want at least 3", n, len(waits))
	}
	if n := c.requestCount(); n != len(waits)+1 {
		t.Errorf("requests = %d, want %d: the first batch only", n, len(waits)+1)
	}
	var total time.Duration
	for i, w := range waits {
		hi := min(time.Second<<i, 4*time.Second)
		if w < hi/2 || w > hi {
			t.Errorf("wait %d = %v, want within [%v, %v]", i, w, hi/2, hi)
		}
		total += w
	}
	if total > 10*time.Second {
		t.Errorf("waited %v in all, more than MaxRetryTime", total)
	}
}

func TestNoRetries(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	c.respond = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	}
	srv := c.start()
	e := newTestExporter(t, srv.URL, &logBuffer{}, func(cfg *Config) { cfg.MaxRetryTime = 0 })
	e.Export(testViolations(2))
	shutdown(t, e)
	if n := c.requestCount(); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	wantFailures(t, e, map[string]int{reasonRetriesExhausted: 2})
}

// exportReturns calls Export in another goroutine and fails the test if it
// does not return.
func exportReturns(t *testing.T, e *Exporter, vs []violations.Violation) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Export(vs)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Export blocked")
	}
}

func TestQueueFull(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	srv := c.start()
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	e, err := New(Config{
		Endpoint: srv.URL, QueueSize: 4, BatchSize: 10, FlushInterval: time.Second,
		Timeout: time.Second, MaxRetryTime: time.Second,
	}, logs.logger(), reg)
	if err != nil {
		t.Fatal(err)
	}

	exportReturns(t, e, testViolations(10)) // not started: nothing drains
	exportReturns(t, e, testViolations(3))
	wantFailures(t, e, map[string]int{reasonQueueFull: 9})
	if q := series(t, reg)["betrace_export_queue_length"]; len(q) != 1 || q[0].GetGauge().GetValue() != 4 {
		t.Errorf("queue length = %v, want 4", q)
	}
	if n := logs.count("export queue full"); n != 1 {
		t.Errorf("logged the full queue %d times, want 1:\n%s", n, logs)
	}

	shutdown(t, e)
	if n := len(c.spans()); n != 4 {
		t.Errorf("received %d spans, want the 4 queued", n)
	}
	exportReturns(t, e, testViolations(2))
	wantFailures(t, e, map[string]int{reasonQueueFull: 9, reasonShutdown: 2})
}

func TestShutdownHungCollector(t *testing.T) {
	checkGoroutines(t)
	c := newCollector(t)
	release := make(chan struct{})
	inFlight := make(chan struct{}, 10)
	c.respond = func(_ int, w http.ResponseWriter, r *http.Request) bool {
		inFlight <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	srv := c.start()
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	e := newTestExporter(t, srv.URL, &logBuffer{}, func(cfg *Config) { cfg.QueueSize = 10 })

	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Export(testViolations(3))
	select {
	case <-inFlight:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the collector")
	}
	// The sender is stuck on the collector; Export still returns.
	exportReturns(t, e, testViolations(25))
	wantFailures(t, e, map[string]int{reasonQueueFull: 15})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- e.Shutdown(ctx) }()
	var err error
	select {
	case err = <-result:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after its deadline")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline", err)
	}
	// 3 in flight and 10 queued are abandoned.
	wantFailures(t, e, map[string]int{reasonQueueFull: 15, reasonShutdown: 13})
	if n := counter(e.m.emitted); n != 0 {
		t.Errorf("emitted = %d, want 0", n)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	checkGoroutines(t)
	e := newTestExporter(t, "127.0.0.1:4318", &logBuffer{}, nil)
	for range 2 {
		if err := e.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown without Start = %v", err)
		}
	}
	if err := e.Start(context.Background()); err == nil {
		t.Error("Start after Shutdown succeeded")
	}

	e = newTestExporter(t, "127.0.0.1:4318", &logBuffer{}, nil)
	for range 2 {
		if err := e.Start(context.Background()); err != nil {
			t.Errorf("Start = %v", err)
		}
	}
	shutdown(t, e)
	shutdown(t, e)
}

func TestDisabled(t *testing.T) {
	checkGoroutines(t)
	reg := prometheus.NewRegistry()
	e, err := New(DefaultConfig(), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.Export(testViolations(3))
	shutdown(t, e)
	e.Export(testViolations(3))
	wantFailures(t, e, map[string]int{})
	// The metrics exist all the same, so dashboards show zeros.
	n := 0
	for _, ms := range series(t, reg) {
		n += len(ms)
	}
	if n != 7 {
		t.Errorf("%d series, want 7", n)
	}
}

func TestInvalidIDs(t *testing.T) {
	v := testViolation(1)
	v.TraceID = "not-hex"
	v.SpanID = ""
	w := testViolation(2)
	w.SpanID = "00000000000000zz"
	w.Timestamp = time.Time{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	spans := toTraces([]violations.Violation{v, w}, "", now).ResourceSpans().At(0).ScopeSpans().At(0).Spans()

	a := spans.At(0)
	if a.TraceID().IsEmpty() || !a.ParentSpanID().IsEmpty() {
		t.Errorf("bad trace ID: trace %s parent %s, want a fresh trace and no parent", a.TraceID(), a.ParentSpanID())
	}
	if got, _ := a.Attributes().Get(attrTraceID); got.Str() != "not-hex" {
		t.Errorf("trace_id attribute %q", got.Str())
	}
	b := spans.At(1)
	if b.TraceID().String() != w.TraceID || !b.ParentSpanID().IsEmpty() {
		t.Errorf("bad span ID: trace %s parent %s", b.TraceID(), b.ParentSpanID())
	}
	if !b.StartTimestamp().AsTime().Equal(now) {
		t.Errorf("zero timestamp became %v, want %v", b.StartTimestamp().AsTime(), now)
	}
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(DefaultConfig(), nil, reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
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
	want := []string{
		"betrace_violation_spans_emitted_total",
		"betrace_compliance_span_emissions_failed_total",
		"betrace_export_queue_length",
		"betrace_export_retries_total",
	}
	got := series(t, reg)
	for _, name := range want {
		if len(got[name]) == 0 {
			t.Errorf("%s is not exposed", name)
		}
	}
	// A second exporter on the same registry is refused, not a panic.
	if _, err := New(DefaultConfig(), nil, reg); err == nil {
		t.Error("second New on one registry succeeded")
	}
}
