package recorder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/embedded"
	"github.com/betracehq/betrace/host/violations"
)

// fixture is a recorder in front of a real embedded store. The writer
// counts calls and, while full is set, fails as a full disk would
// (ENOSPC through store.CheckFull); the real full disk is TestFullDisk.
type fixture struct {
	st       *embedded.Store
	rec      *Recorder
	reg      *prometheus.Registry
	writes   atomic.Int64
	full     atomic.Bool
	exported atomic.Int64
	gate     chan struct{} // when non-nil, each write waits for a value
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	st, err := embedded.Open(embedded.Config{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newFixtureOn(t, cfg, st, nil)
}

func newFixtureOn(t *testing.T, cfg Config, st *embedded.Store, gate chan struct{}) *fixture {
	t.Helper()
	f := &fixture{st: st, reg: prometheus.NewRegistry(), gate: gate}
	write := func(ctx context.Context, vs []violations.Violation) error {
		f.writes.Add(1)
		if f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if f.full.Load() {
			return store.CheckFull(fmt.Errorf("append violations: write betrace.db: %w", syscall.ENOSPC))
		}
		return st.AppendViolations(ctx, vs)
	}
	rec, err := New(cfg, write, func(vs []violations.Violation) { f.exported.Add(int64(len(vs))) }, Settings{Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec.Shutdown(ctx)
	})
	f.rec = rec
	return f
}

func (f *fixture) dropped(reason string) float64 { return value(f.rec.m.dropped[reason]) }

func (f *fixture) droppedAll() (n float64) {
	for _, r := range reasons {
		n += f.dropped(r)
	}
	return n
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

var seq atomic.Int64

// trace returns n violations of one trace.
func trace(n int) []violations.Violation {
	id := seq.Add(1)
	vs := make([]violations.Violation, n)
	for i := range vs {
		vs[i] = violations.Violation{
			ID: fmt.Sprintf("v-%d-%d", id, i), RuleID: "payment-fraud-check", RuleName: "Payment fraud check", Severity: "CRITICAL",
			TraceID: fmt.Sprintf("%032x", id), SpanID: fmt.Sprintf("%016x", i), Message: "payment.charge without fraud.check",
			Attributes: map[string]string{"amount": "100"}, Metadata: map[string]string{"service_name": "checkout"},
			Trigger: "root", Timestamp: time.Now().UTC(),
		}
	}
	return vs
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGroupCommit(t *testing.T) {
	for _, c := range []struct {
		name              string
		workers, traces   int
		interval          time.Duration
		maxWritesPerTrace float64
	}{
		{"one worker", 1, 200, 50 * time.Millisecond, 0.2},
		{"many workers", 8, 50, 50 * time.Millisecond, 0.2},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, Config{FlushInterval: c.interval})
			var wg sync.WaitGroup
			for range c.workers {
				wg.Go(func() {
					buf := trace(2)
					for range c.traces {
						copy(buf, trace(2))
						if err := f.rec.Record(context.Background(), time.Now(), buf); err != nil {
							t.Error(err)
						}
						// The pool reuses its slice: the recorder must have copied it.
						buf[0].ID, buf[1].ID = "reused", "reused"
					}
				})
			}
			wg.Wait()
			total := c.workers * c.traces * 2
			eventually(t, "every violation stored", func() bool { return f.st.ViolationCount() == total })
			if w := float64(f.writes.Load()); w > float64(c.workers*c.traces)*c.maxWritesPerTrace {
				t.Errorf("%v writes for %d traces: want at most %.0f (group commit)", w, c.workers*c.traces, float64(c.workers*c.traces)*c.maxWritesPerTrace)
			}
			eventually(t, "every violation exported", func() bool { return f.exported.Load() == int64(total) })
			if n := f.droppedAll(); n != 0 {
				t.Errorf("dropped %v", n)
			}
		})
	}
}

func TestByteBoundAndPushback(t *testing.T) {
	one := sizeOf(trace(1))
	for _, c := range []struct {
		name       string
		full       bool // the store fails as a full disk; otherwise it is stalled
		wantReason string
		wantText   string
	}{
		{"disk full", true, ReasonDiskFull, "disk full"},
		{"slow store", false, ReasonBufferFull, "violation buffer is full"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := embedded.Open(embedded.Config{Dir: t.TempDir()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			var gate chan struct{}
			if !c.full {
				gate = make(chan struct{})
			}
			f := newFixtureOn(t, Config{MaxBytes: 40 * one, BatchBytes: one, FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond}, st, gate)
			f.full.Store(c.full)
			kept := 0
			for i := 0; i < 100; i++ {
				if err := f.rec.Record(context.Background(), time.Now(), trace(1)); err != nil {
					if !errors.Is(err, ErrFull) {
						t.Fatalf("Record: %v, want ErrFull", err)
					}
					continue
				}
				kept++
				if i == 0 {
					eventually(t, "the first write", func() bool { return f.writes.Load() > 0 })
				}
			}
			held, _ := f.rec.Held()
			if held > 40*one {
				t.Errorf("held %d bytes, bound %d", held, 40*one)
			}
			if got := f.dropped(c.wantReason); got != float64(100-kept) || got == 0 {
				t.Errorf("dropped{reason=%s} = %v, want %d (> 0)", c.wantReason, got, 100-kept)
			}
			if got := f.droppedAll(); got != float64(100-kept) {
				t.Errorf("dropped in all = %v, want %d", got, 100-kept)
			}
			err = f.rec.Accepting()
			if err == nil || !strings.Contains(err.Error(), c.wantText) {
				t.Errorf("Accepting() = %v, want an error saying %q", err, c.wantText)
			}
			if cerr := f.rec.Check(context.Background()); cerr == nil {
				t.Error("Check() = nil while pushing back")
			}
			// Space returns / the store catches up: everything kept is stored.
			f.full.Store(false)
			if gate != nil {
				close(gate)
			}
			eventually(t, "the kept violations stored", func() bool { return f.st.ViolationCount() == kept })
			eventually(t, "pushback lifted", func() bool { return f.rec.Accepting() == nil })
		})
	}
}

func TestRetryThenRecover(t *testing.T) {
	f := newFixture(t, Config{FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond})
	f.full.Store(true)
	for range 10 {
		if err := f.rec.Record(context.Background(), time.Now(), trace(3)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "retries", func() bool { return value(f.rec.m.writes.WithLabelValues("retry")) >= 3 })
	if err := f.rec.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Check() = %v, want disk full", err)
	}
	if v := value(f.rec.m.writable); v != 0 {
		t.Errorf("betrace_recorder_store_writable = %v while failing", v)
	}
	if n := f.st.ViolationCount(); n != 0 {
		t.Fatalf("%d stored while the disk is full", n)
	}
	if f.exported.Load() != 0 {
		t.Error("exported before the store accepted")
	}
	f.full.Store(false)
	eventually(t, "recovery", func() bool { return f.st.ViolationCount() == 30 && f.rec.Check(context.Background()) == nil })
	if v := value(f.rec.m.writable); v != 1 {
		t.Errorf("betrace_recorder_store_writable = %v after recovery", v)
	}
	eventually(t, "export after recovery", func() bool { return f.exported.Load() == 30 })
	if n := f.droppedAll(); n != 0 {
		t.Errorf("dropped %v", n)
	}
}

func TestDropReasons(t *testing.T) {
	t.Run("store_error", func(t *testing.T) {
		// Gather several traces into one batch, one of them unstorable.
		f := newFixture(t, Config{FlushInterval: 50 * time.Millisecond})
		bad := trace(1)
		bad[0].ID = "" // the store refuses a violation without an ID
		for _, vs := range [][]violations.Violation{trace(2), bad, trace(2)} {
			if err := f.rec.Record(context.Background(), time.Now(), vs); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "the good traces stored", func() bool { return f.st.ViolationCount() == 4 })
		eventually(t, "the bad one counted", func() bool { return f.dropped(ReasonStoreError) == 1 })
		if n := f.droppedAll(); n != 1 {
			t.Errorf("dropped %v in all, want 1", n)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		f := newFixture(t, Config{})
		if err := f.rec.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := f.rec.Record(context.Background(), time.Now(), trace(2)); !errors.Is(err, ErrStopped) {
			t.Fatalf("Record after Shutdown: %v, want ErrStopped", err)
		}
		if n := f.dropped(ReasonShutdown); n != 2 {
			t.Errorf("dropped{shutdown} = %v, want 2", n)
		}
	})
	t.Run("shutdown deadline while the disk is full", func(t *testing.T) {
		f := newFixture(t, Config{FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond})
		f.full.Store(true)
		for range 5 {
			f.rec.Record(context.Background(), time.Now(), trace(2))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := f.rec.Shutdown(ctx)
		if err == nil || !strings.Contains(err.Error(), "10 violations") || !errors.Is(err, store.ErrFull) {
			t.Errorf("Shutdown = %v, want 10 violations lost to a full disk", err)
		}
		if n := f.dropped(ReasonShutdown); n != 10 {
			t.Errorf("dropped{shutdown} = %v, want 10", n)
		}
	})
}

func TestDrainOnShutdown(t *testing.T) {
	dir := t.TempDir()
	st, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A flush interval far beyond the test: only the drain can write.
	f := newFixtureOn(t, Config{FlushInterval: time.Hour, BatchBytes: 32 << 20}, st, nil)
	for range 100 {
		if err := f.rec.Record(context.Background(), time.Now(), trace(3)); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.ViolationCount(); n != 0 {
		t.Fatalf("%d stored before the drain: the interval did not hold", n)
	}
	if err := f.rec.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := st.ViolationCount(); n != 300 {
		t.Errorf("%d violations after the drain and a reopen, want 300", n)
	}
	if f.exported.Load() != 300 {
		t.Errorf("exported %d, want 300", f.exported.Load())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{DefaultConfig(), ""},
		{Config{}, ""},
		{Config{MaxBytes: -1}, "MaxBytes"},
		{Config{MaxBytes: 1 << 20, BatchBytes: 2 << 20}, "BatchBytes"},
		{Config{RetryMin: time.Minute, RetryMax: time.Second}, "RetryMin"},
	} {
		err := c.cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	f := newFixture(t, Config{})
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
}
