package meter

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/betracehq/betrace/api/abiv1"
)

// guestSource is a small rule-like Go reactor: a tight arithmetic loop and a
// string/map/sort workload. fmt pulls in enough of the standard library to
// make the module about as big as a real rule (2 MB).
const guestSource = `package main

import (
	"fmt"
	"sort"
	"strings"
)

//go:wasmexport compute
func compute(n int32) int64 {
	var h uint64 = 14695981039346656037
	buf := make([]uint32, 512)
	for i := int32(0); i < n; i++ {
		for j := range buf {
			buf[j] = buf[j]*31 + (uint32(i) ^ uint32(j))
		}
		for _, v := range buf {
			h ^= uint64(v)
			h *= 1099511628211
		}
	}
	return int64(h)
}

//go:wasmexport churn
func churn(n int32) int64 {
	counts := map[string]int{}
	for i := int32(0); i < n; i++ {
		counts[fmt.Sprintf("svc-%d", i%37)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var total int64
	for _, k := range keys {
		total = total*31 + int64(counts[k]) + int64(len(strings.ToUpper(k)))
	}
	return total
}

func main() {}
`

var guest struct {
	once sync.Once
	wasm []byte
	err  error
}

// goGuest builds guestSource for wasip1 once per test binary. It fails
// rather than skips without a Go toolchain: the Go guest is the case the
// pass exists for.
func goGuest(tb testing.TB) []byte {
	tb.Helper()
	guest.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
			if _, statErr := os.Stat(goBin); statErr != nil {
				guest.err = errors.New("no go toolchain on PATH or in GOROOT; the Go guest test needs one to build its wasip1 module")
				return
			}
		}
		dir := tb.TempDir() // the bytes are kept; the files may go with tb
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module guest\n\ngo 1.24\n"), 0o644); err != nil {
			guest.err = err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(guestSource), 0o644); err != nil {
			guest.err = err
			return
		}
		out := filepath.Join(dir, "guest.wasm")
		cmd := exec.Command(goBin, "build", "-buildmode=c-shared", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=-buildvcs=false", "GOWORK=off")
		if msg, err := cmd.CombinedOutput(); err != nil {
			guest.err = errors.New("building the Go guest: " + err.Error() + ": " + string(msg))
			return
		}
		guest.wasm, guest.err = os.ReadFile(out)
	})
	if guest.err != nil {
		tb.Fatal(guest.err)
	}
	return guest.wasm
}

// newWASIRuntime uses the optimizing compiler, as the host does, except
// under the race detector, where compiling a 2 MB module takes 20 s; the
// interpreter validates the same module and runs the same code.
func newWASIRuntime(tb testing.TB) wazero.Runtime {
	tb.Helper()
	cfg := wazero.NewRuntimeConfig()
	if raceEnabled {
		cfg = wazero.NewRuntimeConfigInterpreter()
	}
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	tb.Cleanup(func() { rt.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	return rt
}

// instantiateMetered instantiates without start functions, gives
// _initialize its own budget and returns the fuel it used.
func instantiateMetered(tb testing.TB, rt wazero.Runtime, cm wazero.CompiledModule) (api.Module, int64) {
	tb.Helper()
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		tb.Fatalf("instantiate metered guest: %v", err)
	}
	_, used, _, err := meteredCall(tb, mod, abiv1.ExportInitialize, ample)
	if err != nil {
		tb.Fatalf("_initialize: %v", err)
	}
	return mod, used
}

func TestGoGuest(t *testing.T) {
	bin := goGuest(t)
	metered := mustInstrument(t, bin)
	rt := newWASIRuntime(t)
	plainCM, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	meteredCM, err := rt.CompileModule(ctx, metered)
	if err != nil {
		t.Fatalf("wazero rejects the metered Go module: %v", err)
	}
	plain, err := rt.InstantiateModule(ctx, plainCM, wazero.NewModuleConfig().WithName("").WithStartFunctions(abiv1.ExportInitialize))
	if err != nil {
		t.Fatal(err)
	}

	a, initA := instantiateMetered(t, rt, meteredCM)
	b, initB := instantiateMetered(t, rt, meteredCM)
	if initA <= 0 || initA != initB {
		t.Fatalf("_initialize used %d then %d fuel; want the same positive amount", initA, initB)
	}

	for _, c := range []struct {
		fn string
		n  uint64
	}{{"compute", 1}, {"compute", 20}, {"churn", 10}, {"churn", 500}} {
		want, err := plain.ExportedFunction(c.fn).Call(ctx, c.n)
		if err != nil {
			t.Fatal(err)
		}
		got, used, _, err := meteredCall(t, a, c.fn, ample, c.n)
		if err != nil {
			t.Fatalf("metered %s(%d): %v", c.fn, c.n, err)
		}
		if got[0] != want[0] {
			t.Errorf("%s(%d) = %d metered, %d plain", c.fn, c.n, got[0], want[0])
		}
		_, again, _, _ := meteredCall(t, b, c.fn, ample, c.n)
		if used <= 0 || again != used {
			t.Errorf("%s(%d) used %d fuel, then %d on another instance", c.fn, c.n, used, again)
		}
	}
	_, u1, _, _ := meteredCall(t, a, "compute", ample, 10)
	_, u2, _, _ := meteredCall(t, a, "compute", ample, 20)
	if u2 <= u1 {
		t.Errorf("compute(20) used %d fuel, compute(10) %d", u2, u1)
	}

	// A runaway guest is stopped with the fuel negative, and the instance
	// can still tell that apart from other traps.
	start := time.Now()
	_, _, left, err := meteredCall(t, a, "compute", 5_000_000, 1<<30)
	if err == nil || left >= 0 {
		t.Fatalf("compute(2^30) on 5M fuel: left %d, err %v", left, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping took %v", d)
	}

	// Start functions run before the host can set a budget, on zero fuel.
	_, err = rt.InstantiateModule(ctx, meteredCM, wazero.NewModuleConfig().WithName("").WithStartFunctions(abiv1.ExportInitialize))
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("_initialize as a start function on zero fuel: err = %v, want a fuel trap", err)
	}
}

func BenchmarkInstrument(b *testing.B) {
	bin := goGuest(b)
	b.SetBytes(int64(len(bin)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Instrument(bin, Config{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGoGuest times the same calls in a plain and a metered instance
// of the Go guest, alternating so both see the same machine conditions, and
// reports metered/unmetered as "ratio". fuel/op is the last call's; it moves
// between runs when a garbage collection lands in that call, since the
// instance lives across iterations.
//
//	go test -run '^$' -bench GoGuest -benchtime 2s ./host/meter
func BenchmarkGoGuest(b *testing.B) {
	bin := goGuest(b)
	rt := newWASIRuntime(b)
	plainCM, err := rt.CompileModule(ctx, bin)
	if err != nil {
		b.Fatal(err)
	}
	meteredCM, err := rt.CompileModule(ctx, mustInstrument(b, bin))
	if err != nil {
		b.Fatal(err)
	}
	plain, err := rt.InstantiateModule(ctx, plainCM, wazero.NewModuleConfig().WithName("").WithStartFunctions(abiv1.ExportInitialize))
	if err != nil {
		b.Fatal(err)
	}
	metered, _ := instantiateMetered(b, rt, meteredCM)
	fuel := fuelGlobal(b, metered)

	for _, c := range []struct {
		fn string
		n  uint64
	}{{"compute", 200}, {"churn", 2000}} {
		b.Run(c.fn, func(b *testing.B) {
			pf, mf := plain.ExportedFunction(c.fn), metered.ExportedFunction(c.fn)
			var plainT, meteredT time.Duration
			var used int64
			for b.Loop() {
				t0 := time.Now()
				if _, err := pf.Call(ctx, c.n); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				fuel.Set(uint64(ample))
				if _, err := mf.Call(ctx, c.n); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				used = ample - int64(fuel.Get())
				plainT += t1.Sub(t0)
				meteredT += t2.Sub(t1)
			}
			b.ReportMetric(float64(plainT.Nanoseconds())/float64(b.N), "plain-ns/op")
			b.ReportMetric(float64(meteredT.Nanoseconds())/float64(b.N), "metered-ns/op")
			b.ReportMetric(float64(meteredT)/float64(plainT), "ratio")
			b.ReportMetric(float64(used), "fuel/op")
		})
	}
}
