package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/traces"
)

func newHost(t testing.TB) *Host {
	t.Helper()
	h, err := NewHost(HostConfig{CacheDir: testrules.CacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

func load(t testing.TB, h *Host, module []byte, lim Limits) *Sandbox {
	t.Helper()
	s, err := h.Load(context.Background(), module, lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func evaluate(t testing.TB, s *Sandbox, spans []traces.Span) (Result, error) {
	t.Helper()
	enc := abi.NewEncoder()
	b := enc.Encode(spans, 0)
	return s.Evaluate(context.Background(), b, uint32(len(spans)), nil)
}

func TestRealRules(t *testing.T) {
	h := newHost(t)
	for _, id := range testrules.Real {
		t.Run(id, func(t *testing.T) {
			s := load(t, h, testrules.Module(t, id), Limits{})
			if got := s.Description().ID; got != id {
				t.Fatalf("module describes itself as %q", got)
			}
			res, err := evaluate(t, s, testrules.Trace(t, id+".violating"))
			if err != nil {
				t.Fatal(err)
			}
			if want := testrules.Expected[id]; len(res.Violations) != want {
				t.Fatalf("violating trace: %d violations, want %d: %+v", len(res.Violations), want, res.Violations)
			}
			for _, v := range res.Violations {
				if v.Message == "" {
					t.Fatal("violation without a message")
				}
			}
			if res.FuelUsed == 0 {
				t.Fatal("no fuel used")
			}
			res, err = evaluate(t, s, testrules.Trace(t, id+".clean"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Violations) != 0 {
				t.Fatalf("clean trace: %d violations: %+v", len(res.Violations), res.Violations)
			}
		})
	}
}

// TestMeteringChangesNoVerdict runs every real rule on every sample trace
// metered and unmetered: with an ample budget the answers must be identical.
func TestMeteringChangesNoVerdict(t *testing.T) {
	h := newHost(t)
	var samples [][]traces.Span
	for _, id := range testrules.Real {
		samples = append(samples, testrules.Trace(t, id+".violating"), testrules.Trace(t, id+".clean"))
	}
	for _, id := range testrules.Real {
		t.Run(id, func(t *testing.T) {
			mod := testrules.Module(t, id)
			metered := load(t, h, mod, Limits{})
			plain, err := h.load(context.Background(), mod, Limits{}, false)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close(context.Background())
			for i, spans := range samples {
				a, err := evaluate(t, metered, spans)
				if err != nil {
					t.Fatal(err)
				}
				b, err := evaluate(t, plain, spans)
				if err != nil {
					t.Fatal(err)
				}
				if !sameViolations(a.Violations, b.Violations) {
					t.Fatalf("sample %d: metered %+v, unmetered %+v", i, a.Violations, b.Violations)
				}
			}
		})
	}
}

func sameViolations(a, b []abi.Violation) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].SpanIndex != b[i].SpanIndex || a[i].Message != b[i].Message || len(a[i].Attrs) != len(b[i].Attrs) {
			return false
		}
		for j := range a[i].Attrs {
			if a[i].Attrs[j] != b[i].Attrs[j] {
				return false
			}
		}
	}
	return true
}

// TestFuelIsDeterministic: two fresh sandboxes given the same calls use
// exactly the same fuel call by call, and fuel grows with the work done.
func TestFuelIsDeterministic(t *testing.T) {
	h := newHost(t)
	mod := testrules.Module(t, "n-plus-one-queries")
	small := testrules.Trace(t, "n-plus-one-queries.clean")
	big := testrules.Trace(t, "n-plus-one-queries.violating")
	run := func() []uint64 {
		s := load(t, h, mod, Limits{Instances: 1})
		var used []uint64
		for _, spans := range [][]traces.Span{small, big, small, big, big} {
			r, err := evaluate(t, s, spans)
			if err != nil {
				t.Fatal(err)
			}
			used = append(used, r.FuelUsed)
		}
		return used
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Fatalf("fuel per call differs between identical sandboxes: %v and %v", a, b)
	}
	if a[3] <= a[2] {
		t.Fatalf("a %d-span trace used %d fuel, a %d-span trace %d", len(big), a[3], len(small), a[2])
	}
}

func TestAdversarialRules(t *testing.T) {
	h := newHost(t)
	spans := testrules.Trace(t, "payment-fraud-check.violating")
	tests := []struct {
		id      string
		spans   []traces.Span
		outcome Outcome
		says    string // part of the fault's message
	}{
		{"runaway-loop", spans, OutcomeFuelExhausted, "fuel budget"},
		{"exp-recursion", spans, OutcomeFuelExhausted, "fuel budget"},
		{"memory-hog", spans, OutcomeMemoryExceeded, "memory cap"},
		{"panicker", spans, OutcomeTrap, "panic"},
		{"abi-liar", spans, OutcomeABIViolation, "span index"},
		{"abi-liar", append(append([]traces.Span(nil), spans...), traces.Span{TraceID: spans[0].TraceID, SpanID: [8]byte{0xab}, Name: "abi.bad_length"}), OutcomeABIViolation, "past the end of memory"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			s := load(t, h, testrules.Module(t, tt.id), Limits{})
			for call := range 3 { // each call gets a fresh instance and fails the same way
				_, err := evaluate(t, s, tt.spans)
				for try := 0; err == nil && tt.outcome == OutcomeMemoryExceeded && try < 20; try++ {
					_, err = evaluate(t, s, tt.spans) // the hog needs a few calls to fill its cap
				}
				var f *Fault
				if !errors.As(err, &f) {
					t.Fatalf("call %d: err = %v, want a *Fault", call, err)
				}
				if f.Outcome != tt.outcome || !strings.Contains(f.Error(), tt.says) {
					t.Fatalf("call %d: fault %v (%s), want %s mentioning %q", call, f, f.Outcome, tt.outcome, tt.says)
				}
				if tt.outcome == OutcomeFuelExhausted && f.FuelUsed != s.Limits().Fuel {
					t.Fatalf("fuel used %d, budget %d", f.FuelUsed, s.Limits().Fuel)
				}
			}
			st := s.Stats()
			if st.Discarded < 3 || st.Created < 3 {
				t.Fatalf("instances created %d, discarded %d: failed instances must be replaced", st.Created, st.Discarded)
			}
		})
	}
}

func TestPanickerLogCaptured(t *testing.T) {
	h := newHost(t)
	s := load(t, h, testrules.Module(t, "panicker"), Limits{LogBytes: 2048})
	for range 10 {
		evaluate(t, s, testrules.Trace(t, "payment-fraud-check.violating"))
	}
	log := s.Log()
	if len(log) != 2048 || !strings.Contains(string(log), "panic: ") {
		t.Fatalf("log of %d bytes: %q", len(log), log)
	}
}

// TestMemoryCapHoldsForHost checks that a rule that keeps allocating is
// stopped at its cap and that neither the host's heap nor its resident
// memory grows with it: linear memory lives outside the Go heap and is
// returned to the system when an instance is discarded.
func TestMemoryCapHoldsForHost(t *testing.T) {
	h := newHost(t)
	lim := Limits{MemoryPages: 256, Instances: 1} // 16 MiB
	s := load(t, h, testrules.Module(t, "memory-hog"), lim)
	spans := testrules.Trace(t, "payment-fraud-check.violating")
	measure := func() (heap, rss int64) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse), residentBytes(t)
	}
	evaluate(t, s, spans) // warm up: code, caches, one instance
	heapBefore, rssBefore := measure()
	faults := 0
	for range 20 {
		var f *Fault
		if _, err := evaluate(t, s, spans); errors.As(err, &f) && f.Outcome == OutcomeMemoryExceeded {
			faults++
		}
	}
	heapAfter, rssAfter := measure()
	if faults != 20 {
		t.Fatalf("%d of 20 calls stopped at the memory cap", faults)
	}
	// Twenty hogs that were never stopped would hold over 1 GiB; stopped,
	// at most one live 16 MiB instance remains.
	if grown := heapAfter - heapBefore; grown > 32<<20 {
		t.Fatalf("host heap grew by %d MiB running memory-hog under a 16 MiB cap", grown>>20)
	}
	if grown := rssAfter - rssBefore; grown > 64<<20 {
		t.Fatalf("resident memory grew by %d MiB running memory-hog under a 16 MiB cap", grown>>20)
	}
}

// residentBytes reads the process's resident set size from /proc.
func residentBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("read resident memory: %v (this test needs Linux /proc)", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

func TestAdmission(t *testing.T) {
	h := newHost(t)
	good := abiModule(1)
	wrongVersion := abiModule(2)
	noEvaluate := abiModule(1)
	noEvaluate.funcs = noEvaluate.funcs[:2]
	fsImport := abiModule(1)
	fsImport.imports = []wasmImport{{"wasi_snapshot_preview1", "path_open", []byte{i32, i32, i32, i32, i32, i64, i64, i32, i32}, []byte{i32}}}
	sockImport := abiModule(1)
	sockImport.imports = []wasmImport{{"wasi_snapshot_preview1", "sock_accept", []byte{i32, i32, i32}, []byte{i32}}}
	envImport := abiModule(1)
	envImport.imports = []wasmImport{{"env", "abort", nil, nil}}
	badType := abiModule(1)
	badType.funcs[2].results = []byte{i32}
	badType.funcs[2].body = []byte{0x41, 0x00}
	noMemory := abiModule(1)
	noMemory.exportMem = false
	hugeTable := abiModule(1)
	hugeTable.tableMin = 1 << 27

	tests := []struct {
		name   string
		module []byte
		lim    Limits
		err    error
		says   string
	}{
		{"garbage bytes", []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3}, Limits{}, ErrNotWasm, "magic"},
		{"empty", nil, Limits{}, ErrNotWasm, "empty"},
		{"native executable", []byte("\x7fELF\x02\x01\x01\x00"), Limits{}, ErrNotWasm, "ELF"},
		{"wasm text", []byte("(module (func))"), Limits{}, ErrNotWasm, ".wat"},
		{"truncated wasm", good.bytes()[:30], Limits{}, ErrInvalidModule, ""},
		{"wrong binary version", append([]byte("\x00asm\x02\x00\x00\x00"), good.bytes()[8:]...), Limits{}, ErrInvalidModule, "version"},
		{"missing export", noEvaluate.bytes(), Limits{}, ErrMissingExport, "betrace_evaluate"},
		{"mistyped export", badType.bytes(), Limits{}, ErrMissingExport, "betrace_evaluate"},
		{"memory not exported", noMemory.bytes(), Limits{}, ErrMissingExport, "memory"},
		{"wrong ABI version", wrongVersion.bytes(), Limits{}, ErrABIVersion, "version 2"},
		{"filesystem import", fsImport.bytes(), Limits{}, ErrImportNotAllowed, "wasi_snapshot_preview1.path_open"},
		{"socket import", sockImport.bytes(), Limits{}, ErrImportNotAllowed, "wasi_snapshot_preview1.sock_accept"},
		{"foreign host import", envImport.bytes(), Limits{}, ErrImportNotAllowed, "env.abort"},
		{"huge table", hugeTable.bytes(), Limits{}, ErrMeteringFailed, "134217728 elements"},
		{"oversize module", good.bytes(), Limits{MaxModuleBytes: 16}, ErrModuleTooLarge, "limit is 16"},
		{"init out of fuel", testrules.Module(t, "payment-fraud-check"), Limits{InitFuel: 1000}, ErrInitFailed, "fuel"},
		{"memory cap below the module minimum", testrules.Module(t, "payment-fraud-check"), Limits{MemoryPages: 4}, ErrInvalidModule, "over limit of 4 pages"},
		{"bad limits", good.bytes(), Limits{MemoryPages: MaxMemoryPages + 1}, ErrInvalidLimits, "memoryPages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := h.Load(context.Background(), tt.module, tt.lim)
			if err == nil {
				s.Close(context.Background())
				t.Fatal("module admitted")
			}
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.err, tt.says)
			}
		})
	}
	s := load(t, h, good.bytes(), Limits{})
	if _, err := evaluate(t, s, testrules.Trace(t, "payment-fraud-check.clean")); err != nil {
		t.Fatalf("the minimal module fails: %v", err)
	}
}

func TestConcurrentEvaluate(t *testing.T) {
	h := newHost(t)
	s := load(t, h, testrules.Module(t, "payment-fraud-check"), Limits{Instances: 2})
	spans := testrules.Trace(t, "payment-fraud-check.violating")
	want := testrules.Expected["payment-fraud-check"]
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := abi.NewEncoder()
			b := enc.Encode(spans, 0)
			for range 25 {
				res, err := s.Evaluate(context.Background(), b, uint32(len(spans)), nil)
				if err != nil || len(res.Violations) != want {
					errs <- fmt.Errorf("wrong verdict under concurrency: %d violations, err %v", len(res.Violations), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Created > 2 {
		t.Fatalf("%d instances created for a pool of 2", st.Created)
	}
}

func TestCanceledWhileWaiting(t *testing.T) {
	h := newHost(t)
	s := load(t, h, testrules.Module(t, "payment-fraud-check"), Limits{Instances: 1})
	inst, err := s.acquire(context.Background()) // hold the only instance
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Evaluate(ctx, abi.NewEncoder().Encode(nil, 0), 0, nil)
	var f *Fault
	if !errors.As(err, &f) || f.Outcome != OutcomeCanceled {
		t.Fatalf("err = %v, want a canceled fault", err)
	}
	s.idle <- inst
}

func TestCloseTwice(t *testing.T) {
	h := newHost(t)
	s, err := h.Load(context.Background(), abiModule(1).bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Evaluate(context.Background(), nil, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("evaluate after close: %v", err)
	}
}

// alwaysReports is an ABI v1 rule that reports one violation on span 0 of
// every trace, without reading the trace at all: it cannot tell a fragment.
func alwaysReports(wholeOnly bool) []byte {
	m := abiModule(1)
	// Record at address 0: count 1, span 0, empty message, no attributes.
	m.funcs[2].body = []byte{0x41, 0x00, 0x41, 0x01, 0x36, 0x02, 0x00, 0x42, 0x10}
	if wholeOnly {
		m.funcs = append(m.funcs, wasmFunc{export: abiv1.ExportWholeTracesOnly})
	}
	return m.bytes()
}

// TestWholeTracesOnly: a module that exports abiv1.ExportWholeTracesOnly is
// not run on a fragment, so none of its verdicts is reported on one; on a
// whole trace, and for a module without the marker, nothing changes.
func TestWholeTracesOnly(t *testing.T) {
	h := newHost(t)
	spans := []traces.Span{{TraceID: [16]byte{1}, SpanID: [8]byte{1}, Name: "payment.charge"}}
	for _, tc := range []struct {
		wholeOnly bool
		flags     uint32
		reported  bool
	}{
		{false, 0, true},
		{false, abiv1.TraceFlagFragment, true}, // the module reads the flag itself, or should
		{true, 0, true},
		{true, abiv1.TraceFlagFragment, false},
	} {
		s := load(t, h, alwaysReports(tc.wholeOnly), Limits{})
		res, err := s.Evaluate(context.Background(), abi.NewEncoder().Encode(spans, tc.flags), uint32(len(spans)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Violations) == 1; got != tc.reported || res.NotRun == tc.reported {
			t.Errorf("marker %v, flags %#x: %d violations, not run %v; want reported %v", tc.wholeOnly, tc.flags, len(res.Violations), res.NotRun, tc.reported)
		}
	}
	// The marker has a fixed type, like every export of the ABI.
	bad := abiModule(1)
	bad.funcs = append(bad.funcs, wasmFunc{results: []byte{i32}, body: []byte{0x41, 0x00}, export: abiv1.ExportWholeTracesOnly})
	if _, err := h.Load(context.Background(), bad.bytes(), Limits{}); !errors.Is(err, ErrMissingExport) {
		t.Errorf("a marker of type () -> i32 was admitted: %v", err)
	}
}
