package traces

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/api/abiv1"
)

var ctx = context.Background()

// clock is a manual clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// collector is a consumer that records traces and, unless told to hold
// them, releases them at once.
type collector struct {
	mu     sync.Mutex
	traces []*Trace
	hold   bool
	ch     chan *Trace
}

func newCollector() *collector { return &collector{ch: make(chan *Trace, 1<<16)} }

func (c *collector) consume(t *Trace) {
	c.mu.Lock()
	c.traces = append(c.traces, t)
	hold := c.hold
	c.mu.Unlock()
	if !hold {
		t.Release()
	}
	c.ch <- t
}

// next waits for the next delivered trace.
func (c *collector) next(t *testing.T) *Trace {
	t.Helper()
	select {
	case tr := <-c.ch:
		return tr
	case <-time.After(10 * time.Second):
		t.Fatal("no trace delivered")
		return nil
	}
}

func (c *collector) none(t *testing.T) {
	t.Helper()
	runtime.Gosched()
	select {
	case tr := <-c.ch:
		t.Fatalf("unexpected trace %x (%v, %d spans)", tr.ID, tr.Completion, len(tr.Spans))
	default:
	}
}

type fixture struct {
	a   *Assembler
	c   *collector
	clk *clock
	reg *prometheus.Registry
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.TickInterval = time.Hour // tests drive Sweep themselves
	return cfg
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{c: newCollector(), clk: newClock(), reg: prometheus.NewRegistry()}
	a, err := New(cfg, f.c.consume, Settings{Registerer: f.reg, Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return f
}

func traceID(n uint64) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint64(id[:8], n*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(id[8:], n+1)
	return id
}

// span returns a span of trace n; span 0 is the root.
func span(n uint64, i int) Span {
	s := Span{
		TraceID: traceID(n),
		Name:    fmt.Sprintf("op-%d", i),
		Service: "checkout",
		Attrs:   []Attr{{Key: "http.route", Type: abiv1.ValueString, Str: "/cart"}},
	}
	binary.BigEndian.PutUint64(s.SpanID[:], uint64(i+1))
	if i > 0 {
		binary.BigEndian.PutUint64(s.ParentSpanID[:], 1)
	}
	return s
}

func TestCompletion(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpans = 10
	type step struct {
		advance time.Duration
		spans   []int // span indexes to add (0 = root)
	}
	tests := []struct {
		name  string
		steps []step
		// before: the trace must not complete one nanosecond earlier than the
		// last step.
		want      Completion
		wantSpans int
	}{
		{"root then settle", []step{{0, []int{1, 0}}, {cfg.Settle, nil}}, CompletionRoot, 2},
		{"settle counts from the root, not the stragglers", []step{{0, []int{0}}, {time.Second, []int{1}}, {cfg.Settle - time.Second, nil}}, CompletionRoot, 2},
		{"idle without root", []step{{0, []int{1, 2}}, {cfg.IdleTimeout, nil}}, CompletionIdle, 2},
		{"idle restarts with each span", []step{{0, []int{1}}, {4 * time.Second, []int{2}}, {cfg.IdleTimeout, nil}}, CompletionIdle, 2},
		{"max age under steady trickle", []step{
			{0, []int{1}}, {4 * time.Second, []int{2}}, {4 * time.Second, []int{3}}, {4 * time.Second, []int{4}},
			{4 * time.Second, []int{5}}, {4 * time.Second, []int{6}}, {4 * time.Second, []int{7}}, {4 * time.Second, []int{8}},
			{2 * time.Second, nil},
		}, CompletionMaxAge, 8},
		{"span cap", []step{{0, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}}}, CompletionSpanCap, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cfg)
			last := len(tt.steps) - 1
			for i, st := range tt.steps {
				adv := st.advance
				if i == last && adv > 0 {
					f.clk.Advance(adv - 1)
					if n := f.a.Sweep(); n != 0 {
						t.Fatalf("completed %d traces 1ns before the deadline", n)
					}
					adv = 1
				}
				f.clk.Advance(adv)
				var batch []Span
				for _, j := range st.spans {
					batch = append(batch, span(1, j))
				}
				if err := f.a.Add(ctx, batch); err != nil {
					t.Fatal(err)
				}
				if i < last {
					if n := f.a.Sweep(); n != 0 {
						t.Fatalf("step %d: completed early", i)
					}
				}
			}
			f.a.Sweep()
			tr := f.c.next(t)
			if tr.Completion != tt.want || len(tr.Spans) != tt.wantSpans {
				t.Fatalf("got %v with %d spans, want %v with %d", tr.Completion, len(tr.Spans), tt.want, tt.wantSpans)
			}
			if tr.ID != traceID(1) || tr.Fragment {
				t.Fatalf("trace %x fragment=%v", tr.ID, tr.Fragment)
			}
			if got := value(t, f.reg, "betrace_traces_completed_total", "trigger", tt.want.String()); got != 1 {
				t.Fatalf("betrace_traces_completed_total{trigger=%q} = %v", tt.want, got)
			}
			if f.a.Active() != 0 {
				t.Fatalf("%d traces still active", f.a.Active())
			}
		})
	}

	t.Run("shutdown", func(t *testing.T) {
		f := newFixture(t, cfg)
		if err := f.a.Add(ctx, []Span{span(1, 1), span(2, 0)}); err != nil {
			t.Fatal(err)
		}
		if err := f.a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if tr := f.c.next(t); tr.Completion != CompletionShutdown {
				t.Fatalf("got %v", tr.Completion)
			}
		}
		if err := f.a.Add(ctx, []Span{span(3, 0)}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Add after Shutdown: %v, want ErrUnavailable", err)
		}
	})
}

func TestCompletionString(t *testing.T) {
	want := map[Completion]string{CompletionRoot: "root", CompletionIdle: "idle", CompletionMaxAge: "max_age",
		CompletionSpanCap: "span_cap", CompletionShutdown: "shutdown", CompletionUnknown: "unknown"}
	for c, w := range want {
		if c.String() != w {
			t.Errorf("%d.String() = %q, want %q", c, c.String(), w)
		}
	}
}

func TestFullLeavesBufferUnchanged(t *testing.T) {
	cfg := testConfig()
	one := SpanBytes([]Span{span(1, 1)})
	cfg.MaxBytes = 10 * one
	f := newFixture(t, cfg)
	var batch []Span
	for i := range 8 {
		batch = append(batch, span(uint64(i%3), i+1))
	}
	if err := f.a.Add(ctx, batch); err != nil {
		t.Fatal(err)
	}
	before, active := f.a.Bytes(), f.a.Active()
	big := []Span{span(7, 1), span(8, 1), span(1, 20)} // 3 more do not fit
	err := f.a.Add(ctx, big)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	if f.a.Bytes() != before || f.a.Active() != active {
		t.Fatalf("refused batch changed the buffer: %d→%d bytes, %d→%d traces", before, f.a.Bytes(), active, f.a.Active())
	}
	if got := value(t, f.reg, "betrace_spans_refused_total"); got != 3 {
		t.Fatalf("betrace_spans_refused_total = %v", got)
	}
	if err := f.a.Add(ctx, big[:2]); err != nil {
		t.Fatalf("a batch that fits: %v", err)
	}
	huge := make([]Span, 11)
	for i := range huge {
		huge[i] = span(9, i+1)
	}
	if err := f.a.Add(ctx, huge); !errors.Is(err, ErrBatchTooLarge) || errors.Is(err, ErrFull) {
		t.Fatalf("batch larger than the buffer: %v", err)
	}
	if err := f.a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := 0
	for range 5 {
		spans += len(f.c.next(t).Spans)
	}
	if spans != 10 {
		t.Fatalf("flushed %d spans, want the 10 accepted", spans)
	}
}

func TestLateSpans(t *testing.T) {
	cfg := testConfig()
	f := newFixture(t, cfg)
	if err := f.a.Add(ctx, []Span{span(1, 0), span(1, 1)}); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(cfg.Settle)
	f.a.Sweep()
	if tr := f.c.next(t); tr.Completion != CompletionRoot {
		t.Fatalf("got %v", tr.Completion)
	}
	// A straggler of trace 1 in the same batch as a new trace 2.
	if err := f.a.Add(ctx, []Span{span(1, 2), span(2, 1), span(1, 3)}); err != nil {
		t.Fatal(err)
	}
	if got := value(t, f.reg, "betrace_spans_late_total"); got != 2 {
		t.Fatalf("betrace_spans_late_total = %v, want 2", got)
	}
	if f.a.Active() != 1 {
		t.Fatalf("%d active traces, want only trace 2", f.a.Active())
	}
	f.clk.Advance(cfg.IdleTimeout)
	f.a.Sweep()
	if tr := f.c.next(t); tr.ID != traceID(2) || len(tr.Spans) != 1 {
		t.Fatalf("got trace %x with %d spans", tr.ID, len(tr.Spans))
	}
	f.c.none(t)

	// After the late window (remembered for one to two windows) the ID is
	// forgotten and a span starts a new trace.
	for range 2 {
		f.clk.Advance(cfg.LateWindow)
		f.a.Sweep()
	}
	if err := f.a.Add(ctx, []Span{span(1, 9)}); err != nil {
		t.Fatal(err)
	}
	if f.a.Active() != 1 {
		t.Fatal("span after the late window was not assembled")
	}
	if f.a.Bytes() != SpanBytes([]Span{span(1, 9)}) {
		t.Fatalf("late spans' bytes not returned: %d", f.a.Bytes())
	}
}

func TestSpanCapLate(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSpans = 2
	f := newFixture(t, cfg)
	if err := f.a.Add(ctx, []Span{span(1, 1), span(1, 2)}); err != nil {
		t.Fatal(err)
	}
	f.c.none(t) // exactly MaxSpans is not over the cap
	if err := f.a.Add(ctx, []Span{span(1, 3), span(1, 4)}); err != nil {
		t.Fatal(err)
	}
	tr := f.c.next(t)
	if tr.Completion != CompletionSpanCap || len(tr.Spans) != 2 {
		t.Fatalf("got %v with %d spans", tr.Completion, len(tr.Spans))
	}
	if got := value(t, f.reg, "betrace_spans_late_total"); got != 2 {
		t.Fatalf("betrace_spans_late_total = %v, want 2", got)
	}
}

func TestBytesReturnToZero(t *testing.T) {
	f := newFixture(t, testConfig())
	f.c.hold = true
	for n := range uint64(50) {
		if err := f.a.Add(ctx, []Span{span(n, 0), span(n, 1), span(n, 2)}); err != nil {
			t.Fatal(err)
		}
	}
	f.clk.Advance(time.Hour)
	f.a.Sweep()
	for range 50 {
		f.c.next(t)
	}
	if f.a.Bytes() == 0 {
		t.Fatal("held traces are not counted")
	}
	if got := value(t, f.reg, "betrace_traces_completed_total", "trigger", "root"); got != 50 {
		t.Fatalf("completed{root} = %v", got)
	}
	for _, tr := range f.c.traces {
		tr.Release()
		tr.Release() // idempotent
	}
	if f.a.Bytes() != 0 {
		t.Fatalf("%d bytes left after releasing every trace", f.a.Bytes())
	}
}

// TestBackpressure: a consumer that does not release makes Add refuse, and
// releasing lets it accept again.
func TestBackpressure(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBytes = 4 * SpanBytes([]Span{span(1, 1)})
	f := newFixture(t, cfg)
	f.c.hold = true
	for n := range uint64(4) {
		if err := f.a.Add(ctx, []Span{span(n, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	f.clk.Advance(cfg.IdleTimeout)
	f.a.Sweep()
	for range 4 {
		f.c.next(t)
	}
	if err := f.a.Add(ctx, []Span{span(9, 1)}); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull while the consumer holds every trace", err)
	}
	f.c.traces[0].Release()
	if err := f.a.Add(ctx, []Span{span(9, 1)}); err != nil {
		t.Fatalf("after a release: %v", err)
	}
}

func TestHammer(t *testing.T) {
	base := runtime.NumGoroutine()
	cfg := testConfig()
	cfg.MaxSpans = 50
	clk := newClock()
	var delivered, lateSeen atomic.Int64
	reg := prometheus.NewRegistry()
	a, err := New(cfg, func(tr *Trace) {
		delivered.Add(int64(len(tr.Spans)))
		tr.Release()
	}, Settings{Registerer: reg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	const workers, batches, batchSize = 16, 200, 32
	var wg sync.WaitGroup
	var added atomic.Int64
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // the "ticker": sweeps while time moves
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				clk.Advance(50 * time.Millisecond)
				a.Sweep()
				runtime.Gosched()
			}
		}
	}()
	var adders sync.WaitGroup
	for w := range workers {
		adders.Add(1)
		go func() {
			defer adders.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range batches {
				batch := make([]Span, batchSize)
				for i := range batch {
					// 300 shared traces: workers collide on the same traces.
					batch[i] = span(r.Uint64N(300), int(r.Uint64N(8)))
				}
				if err := a.Add(ctx, batch); err != nil {
					t.Error(err)
					return
				}
				added.Add(batchSize)
			}
		}()
	}
	adders.Wait()
	close(stop)
	wg.Wait()
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := value(t, reg, "betrace_spans_late_total")
	lateSeen.Store(int64(m))
	if got := delivered.Load() + lateSeen.Load(); got != added.Load() {
		t.Fatalf("%d spans added, %d delivered + %d late", added.Load(), delivered.Load(), lateSeen.Load())
	}
	if a.Bytes() != 0 || a.Active() != 0 {
		t.Fatalf("after shutdown: %d bytes, %d active", a.Bytes(), a.Active())
	}
	waitGoroutines(t, base)
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}

func TestShutdown(t *testing.T) {
	t.Run("flushes and returns goroutines to baseline", func(t *testing.T) {
		base := runtime.NumGoroutine()
		c := newCollector()
		a, err := New(testConfig(), c.consume, Settings{Now: newClock().Now})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		for n := range uint64(100) {
			if err := a.Add(ctx, []Span{span(n, 1), span(n, 2)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatalf("second Shutdown: %v", err)
		}
		if len(c.traces) != 100 {
			t.Fatalf("flushed %d traces, want 100", len(c.traces))
		}
		for _, tr := range c.traces {
			if tr.Completion != CompletionShutdown {
				t.Fatalf("completion %v", tr.Completion)
			}
		}
		if a.Bytes() != 0 {
			t.Fatalf("%d bytes left", a.Bytes())
		}
		waitGoroutines(t, base)
		if err := a.Start(context.Background()); err == nil {
			t.Fatal("Start after Shutdown succeeded")
		}
	})
	t.Run("without Start", func(t *testing.T) {
		base := runtime.NumGoroutine()
		c := newCollector()
		a, err := New(testConfig(), c.consume, Settings{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Add(ctx, []Span{span(1, 1)}); err != nil {
			t.Fatal(err)
		}
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(c.traces) != 1 || c.traces[0].Completion != CompletionShutdown {
			t.Fatalf("got %d traces", len(c.traces))
		}
		waitGoroutines(t, base)
	})
	t.Run("honours the deadline", func(t *testing.T) {
		unblock := make(chan struct{})
		var got atomic.Int32
		a, err := New(testConfig(), func(tr *Trace) {
			got.Add(1)
			<-unblock
			tr.Release()
		}, Settings{})
		if err != nil {
			t.Fatal(err)
		}
		for n := range uint64(3) {
			if err := a.Add(ctx, []Span{span(n, 1)}); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := a.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want the context's error", err)
		}
		close(unblock)
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got.Load() > 1 {
			t.Fatalf("%d traces handed over after the deadline", got.Load())
		}
		if a.Bytes() != 0 {
			t.Fatalf("%d bytes left", a.Bytes())
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Settle, cfg.MaxSpans, cfg.MaxBytes, cfg.LateMaxTraces = 0, -1, 0, 1
	err := cfg.Validate()
	for _, field := range []string{"Settle", "MaxSpans", "MaxBytes", "LateMaxTraces"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
	if _, err := New(cfg, func(*Trace) {}, Settings{}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
	if _, err := New(DefaultConfig(), nil, Settings{}); err == nil {
		t.Fatal("New accepted a nil consumer")
	}
}

func TestMetricsLint(t *testing.T) {
	f := newFixture(t, testConfig())
	if err := f.a.Add(ctx, []Span{span(1, 0)}); err != nil {
		t.Fatal(err)
	}
	have := lint(t, f.reg)
	want := []string{"betrace_traces_active", "betrace_traces_completed_total", "betrace_trace_buffer_bytes",
		"betrace_spans_late_total", "betrace_spans_refused_total", "betrace_traces_queued", "betrace_trace_buffer_capacity_bytes"}
	for _, name := range want {
		if !have[name] {
			t.Errorf("metric %s not exposed", name)
		}
	}
	if got := value(t, f.reg, "betrace_trace_buffer_bytes"); got != float64(f.a.Bytes()) || got == 0 {
		t.Errorf("betrace_trace_buffer_bytes = %v, want %d", got, f.a.Bytes())
	}
	if got := value(t, f.reg, "betrace_traces_active"); got != 1 {
		t.Errorf("betrace_traces_active = %v", got)
	}
}

// BenchmarkAdd measures Add throughput with realistic batches: 100 spans of
// 10 traces, 10 attributes each, one shared resource, from parallel senders.
func BenchmarkAdd(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Settle, cfg.IdleTimeout = 10*time.Millisecond, 50*time.Millisecond
	var tick atomic.Int64
	base := time.Now()
	now := func() time.Time { return base.Add(time.Duration(tick.Load()) * time.Millisecond) }
	a, err := New(cfg, func(t *Trace) { t.Release() }, Settings{Now: now})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	res := []Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "checkout"}, {Key: "host.name", Type: abiv1.ValueString, Str: "node-17"},
		{Key: "deployment.environment", Type: abiv1.ValueString, Str: "production"}}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		batch := make([]Span, 100)
		for i := range batch {
			s := span(0, i%10)
			s.ResourceAttrs = res
			s.Attrs = make([]Attr, 10)
			for k := range s.Attrs {
				s.Attrs[k] = Attr{Key: fmt.Sprintf("app.attr.%d", k), Type: abiv1.ValueString, Str: "some value of moderate length"}
			}
			batch[i] = s
		}
		for n := 0; pb.Next(); n++ {
			first := next.Add(10)
			for i := range batch {
				batch[i].TraceID = traceID(first + uint64(i/10))
			}
			if err := a.Add(ctx, batch); err != nil {
				b.Error(err)
				return
			}
			if n%16 == 0 {
				tick.Add(1)
				a.Sweep()
			}
		}
	})
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "spans/s")
	b.StopTimer()
	if err := a.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// TestExtract: traces taken out for another owner leave nothing behind, not
// even their bytes, are not completed here, and a later span of one is
// assembled afresh rather than dropped as late.
func TestExtract(t *testing.T) {
	f := newFixture(t, testConfig())
	ctx := context.Background()
	if err := f.a.Add(ctx, []Span{span(1, 1), span(1, 2), span(2, 1), span(3, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.AddFragments(ctx, []Span{span(3, 2)}); err != nil {
		t.Fatal(err)
	}
	whole, frags := f.a.Extract(func(id [16]byte) bool { return id == traceID(1) || id == traceID(3) })
	if len(whole) != 2 || len(frags) != 2 || f.a.Active() != 1 {
		t.Fatalf("extracted %d spans whole and %d of fragments, %d traces left; want 2, 2 and 1", len(whole), len(frags), f.a.Active())
	}
	if want := SpanBytes([]Span{span(2, 1)}); f.a.Bytes() != want {
		t.Fatalf("%d bytes still counted, want %d (trace 2 alone)", f.a.Bytes(), want)
	}
	f.clk.Advance(time.Hour)
	f.a.Sweep()
	if tr := f.c.next(t); tr.ID != traceID(2) {
		t.Fatalf("completed %x, want only trace 2", tr.ID)
	}
	f.c.none(t)
	if err := f.a.Add(ctx, []Span{span(1, 3)}); err != nil || f.a.Active() != 1 {
		t.Fatalf("a later span of an extracted trace: %v, %d active", err, f.a.Active())
	}
}

// TestAddFragments: a trace any of whose spans came as part of a fragment
// completes as a fragment; others do not.
func TestAddFragments(t *testing.T) {
	f := newFixture(t, testConfig())
	ctx := context.Background()
	if err := f.a.Add(ctx, []Span{span(1, 1), span(2, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.AddFragments(ctx, []Span{span(1, 2)}); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	f.a.Sweep()
	got := map[[16]byte]bool{}
	for range 2 {
		tr := f.c.next(t)
		got[tr.ID] = tr.Fragment
		tr.Release()
	}
	if !got[traceID(1)] || got[traceID(2)] {
		t.Fatalf("fragment flags %v: want trace 1 only", got)
	}
}
