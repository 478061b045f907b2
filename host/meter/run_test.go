package meter

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/betracehq/betrace/api/abiv1"
)

var ctx = context.Background()

func newRuntime(t testing.TB) wazero.Runtime {
	t.Helper()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	return rt
}

func mustInstrument(t testing.TB, bin []byte) []byte {
	t.Helper()
	out, err := Instrument(bin, Config{})
	if err != nil {
		t.Fatalf("Instrument: %v", err)
	}
	return out
}

// instantiate compiles and instantiates an anonymous instance, so one
// runtime can hold many instances of the same module.
func instantiate(t testing.TB, rt wazero.Runtime, bin []byte) api.Module {
	t.Helper()
	cm, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	return mod
}

func fuelGlobal(t testing.TB, mod api.Module) api.MutableGlobal {
	t.Helper()
	g, ok := mod.ExportedGlobal(abiv1.ExportFuel).(api.MutableGlobal)
	if !ok {
		t.Fatalf("no mutable %s export", abiv1.ExportFuel)
	}
	if g.Type() != api.ValueTypeI64 {
		t.Fatalf("fuel global has type %v, want i64", g.Type())
	}
	return g
}

// meteredCall sets the budget, calls fn and reports the results, the fuel
// used and the global's value afterwards.
func meteredCall(t testing.TB, mod api.Module, fn string, budget int64, args ...uint64) (res []uint64, used, left int64, err error) {
	t.Helper()
	g := fuelGlobal(t, mod)
	g.Set(uint64(budget))
	f := mod.ExportedFunction(fn)
	if f == nil {
		t.Fatalf("no export %q", fn)
	}
	res, err = f.Call(ctx, args...)
	left = int64(g.Get())
	return res, budget - left, left, err
}

const ample = int64(1) << 60

// loopForever is `loop br 0 end`.
func loopForever() []byte {
	return testModule{
		types:   [][]byte{funcType(nil, nil)},
		funcs:   []testFunc{{typ: 0, body: asm(oLoop, blockVoid, br(0), oEnd, oEnd)}},
		exports: [][]byte{exportFunc("run", 0)},
	}.encode()
}

// callTree is f(n) = n == 0 ? 1 : f(n-1) + f(n-1): no loop anywhere, yet
// exponential work.
func callTree() []byte {
	return testModule{
		types: [][]byte{funcType([]byte{tI32}, []byte{tI64})},
		funcs: []testFunc{{typ: 0, body: asm(
			lget(0), oI32Eqz,
			oIf, tI64,
			i64c(1),
			oElse,
			lget(0), i32c(1), oI32Sub, call(0),
			lget(0), i32c(1), oI32Sub, call(0),
			oI64Add,
			oEnd,
			oEnd)}},
		exports: [][]byte{exportFunc("tree", 0)},
	}.encode()
}

// sumLoop adds n, n-1, ..., 1 in a block/loop pair, the shape compilers
// emit for a while loop.
func sumLoop() []byte {
	return testModule{
		types: [][]byte{funcType([]byte{tI32}, []byte{tI64})},
		funcs: []testFunc{{typ: 0, locals: locals([2]uint32{1, tI64}), body: asm(
			oBlock, blockVoid, // S0
			oLoop, blockVoid, // S0, then S1 per iteration
			lget(0), oI32Eqz, brIf(1),
			lget(1), lget(0), oI64ExtendU, oI64Add, lset(1),
			lget(0), i32c(1), oI32Sub, lset(0),
			br(0),
			oEnd,
			oEnd,    // targeted by br_if: S2
			lget(1), // S2
			oEnd)}},
		exports: [][]byte{exportFunc("sum", 0)},
	}.encode()
}

func TestInfiniteLoopTraps(t *testing.T) {
	rt := newRuntime(t)
	mod := instantiate(t, rt, mustInstrument(t, loopForever()))
	for _, budget := range []int64{0, 1, 1000, 1 << 20} {
		_, _, left, err := meteredCall(t, mod, "run", budget)
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("budget %d: err = %v, want an unreachable trap", budget, err)
		}
		if left >= 0 {
			t.Fatalf("budget %d: fuel after trap = %d, want negative", budget, left)
		}
	}
}

func TestExponentialCallTreeStopped(t *testing.T) {
	rt := newRuntime(t)
	mod := instantiate(t, rt, mustInstrument(t, callTree()))

	res, used, _, err := meteredCall(t, mod, "tree", ample, 10)
	if err != nil || res[0] != 1024 {
		t.Fatalf("tree(10) = %v, %v; want 1024", res, err)
	}
	if used <= 0 {
		t.Fatalf("tree(10) used %d fuel", used)
	}

	const budget = 10_000_000
	_, _, left, err := meteredCall(t, mod, "tree", budget, 60)
	if err == nil {
		t.Fatal("tree(60) finished within the budget")
	}
	if left >= 0 {
		t.Fatalf("fuel after trap = %d, want negative", left)
	}
}

func TestFuelDeterministicAndExact(t *testing.T) {
	rt := newRuntime(t)
	bin := mustInstrument(t, sumLoop())
	a, b := instantiate(t, rt, bin), instantiate(t, rt, bin)
	for _, n := range []uint64{0, 1, 10, 1000} {
		res, used, _, err := meteredCall(t, a, "sum", ample, n)
		if err != nil {
			t.Fatal(err)
		}
		if want := n * (n + 1) / 2; res[0] != want {
			t.Fatalf("sum(%d) = %d, want %d", n, res[0], want)
		}
		// Entry segment: block and loop, which are free. Loop segment: 13
		// instructions, run once per iteration plus the exiting pass. After
		// the block: 1.
		if want := int64(13*(n+1) + 1); used != want {
			t.Errorf("sum(%d) used %d fuel, want %d", n, used, want)
		}
		_, again, _, _ := meteredCall(t, a, "sum", ample, n)
		_, other, _, _ := meteredCall(t, b, "sum", 12345678, n)
		if again != used || other != used {
			t.Errorf("sum(%d): used %d, then %d, then %d on another instance", n, used, again, other)
		}
	}
	// A budget exactly equal to the cost suffices; one less traps.
	_, used, _, _ := meteredCall(t, a, "sum", ample, 50)
	if _, _, left, err := meteredCall(t, a, "sum", used, 50); err != nil || left != 0 {
		t.Errorf("exact budget: left %d, err %v", left, err)
	}
	if _, _, left, err := meteredCall(t, a, "sum", used-14, 50); err == nil || left >= 0 {
		t.Errorf("short budget: left %d, err %v; want a trap with negative fuel", left, err)
	}
}

func TestInstructionCostScales(t *testing.T) {
	rt := newRuntime(t)
	double, err := Instrument(sumLoop(), Config{InstructionCost: 3})
	if err != nil {
		t.Fatal(err)
	}
	one := instantiate(t, rt, mustInstrument(t, sumLoop()))
	three := instantiate(t, rt, double)
	_, u1, _, _ := meteredCall(t, one, "sum", ample, 20)
	_, u3, _, _ := meteredCall(t, three, "sum", ample, 20)
	if u3 != 3*u1 {
		t.Fatalf("InstructionCost 3 used %d, want 3 × %d", u3, u1)
	}
}

// kitchenSink exercises most of the instruction set's control flow and
// immediates; results must not change under metering.
func kitchenSink() []byte {
	const (
		tyI32I32 = iota // (i32) -> i32
		tyI32I64        // (i32) -> i64
		tyMulti         // (i32 i32) -> (i32 i32)
	)
	return testModule{
		types: [][]byte{
			funcType([]byte{tI32}, []byte{tI32}),
			funcType([]byte{tI32}, []byte{tI64}),
			funcType([]byte{tI32, tI32}, []byte{tI32, tI32}),
		},
		funcs: []testFunc{
			// 0 switch: br_table over nested blocks
			{typ: tyI32I32, locals: locals([2]uint32{1, tI32}), body: asm(
				oBlock, blockVoid, oBlock, blockVoid, oBlock, blockVoid, oBlock, blockVoid,
				lget(0), oBrTable, leb(3), leb(0), leb(1), leb(2), leb(3),
				oEnd, i32c(10), lset(1), br(2),
				oEnd, i32c(20), lset(1), br(1),
				oEnd, i32c(30), lset(1), br(0),
				oEnd, lget(1),
				oEnd)},
			// 1 fib: recursion, if/else with a result
			{typ: tyI32I64, body: asm(
				lget(0), i32c(2), oI32LtS,
				oIf, tI64,
				lget(0), oI64ExtendS,
				oElse,
				lget(0), i32c(1), oI32Sub, call(1),
				lget(0), i32c(2), oI32Sub, call(1),
				oI64Add,
				oEnd,
				oEnd)},
			// 2 mv: a block typed by a type index, with params and two results
			{typ: tyMulti, body: asm(
				lget(0), lget(1),
				oBlock, leb(tyMulti),
				oI32Add, lget(0), lget(1), oI32Mul,
				oEnd,
				oEnd)},
			// 3 memsel: load/store, select, typed select
			{typ: tyI32I32, body: asm(
				i32c(8), lget(0), oI32Store, memarg(2, 4),
				i32c(8), oI32Load, memarg(2, 4),
				i32c(7),
				lget(0), i32c(5), oI32GtS,
				oSelect,
				i32c(100), i32c(200), lget(0), oI32Eqz, oSelectT, leb(1), tI32,
				oI32Add,
				oEnd)},
			// 4 indirect: call_indirect through the table
			{typ: tyI32I32, body: asm(
				lget(0), lget(0), i32c(1), oI32And,
				oCallIndirect, leb(tyI32I32), leb(0),
				oEnd)},
			// 5, 6: table entries
			{typ: tyI32I32, body: asm(lget(0), i32c(1), oI32Add, oEnd)},
			{typ: tyI32I32, body: asm(lget(0), i32c(3), oI32Mul, oEnd)},
			// 7 glob: a module global that is not the fuel
			{typ: tyI32I32, body: asm(gget(0), lget(0), oI32Add, gset(0), gget(0), oEnd)},
			// 8 sat: saturating truncation and sign extension
			{typ: tyI32I32, body: asm(
				lget(0), oF64ConvertI, oF64Const, []byte{0, 0, 0, 0, 0, 0, 0x40, 0x40}, // 32.0
				0xa2, // f64.mul
				fc(2), oI32Extend8S,
				oEnd)},
			// 9 pairs: nested loops with an if inside and exits by br_if
			{typ: tyI32I32, locals: locals([2]uint32{3, tI32}), body: asm(
				oBlock, blockVoid,
				oLoop, blockVoid,
				lget(0), lget(1), oI32LeS, brIf(1),
				i32c(0), lset(2),
				oBlock, blockVoid,
				oLoop, blockVoid,
				lget(1), lget(2), oI32LeS, brIf(1),
				lget(1), lget(2), oI32Add, i32c(1), oI32And,
				oIf, blockVoid,
				lget(3), i32c(1), oI32Add, lset(3),
				oEnd,
				lget(2), i32c(1), oI32Add, lset(2),
				br(0),
				oEnd,
				oEnd,
				lget(1), i32c(1), oI32Add, lset(1),
				br(0),
				oEnd,
				oEnd,
				lget(3),
				oEnd)},
			// 10 refs: ref.null, ref.func, ref.is_null, table.get
			{typ: tyI32I32, body: asm(
				oRefNull, tFuncref, oRefIsNull,
				oRefFunc, leb(5), oRefIsNull, oI32Add,
				lget(0), i32c(1), oI32And, oTableGet, leb(0), oRefIsNull, oI32Add,
				oEnd)},
			// 11 early: return from inside nested blocks and an if without else
			{typ: tyI32I32, body: asm(
				oBlock, blockVoid,
				lget(0), oIf, blockVoid, i32c(99), oReturn, oEnd,
				lget(0), oI32Eqz, brIf(0),
				oUnreachable,
				oEnd,
				i32c(-1), oNop,
				oEnd)},
		},
		tables:  [][]byte{asm(tFuncref, limits(2, 2))},
		memory:  limits(1, 1),
		globals: [][]byte{asm(tI32, 1, i32c(5), oEnd)},
		exports: [][]byte{
			exportFunc("switch", 0), exportFunc("fib", 1), exportFunc("mv", 2),
			exportFunc("memsel", 3), exportFunc("indirect", 4), exportFunc("glob", 7),
			exportFunc("sat", 8), exportFunc("pairs", 9), exportFunc("refs", 10),
			exportFunc("early", 11),
		},
		elems: [][]byte{asm(0x00, i32c(0), oEnd, vec(leb(5), leb(6)))},
	}.encode()
}

func TestMeteredMatchesUnmetered(t *testing.T) {
	rt := newRuntime(t)
	bin := kitchenSink()
	plain := instantiate(t, rt, bin)
	metered := instantiate(t, rt, mustInstrument(t, bin))
	inputs := []uint64{0, 1, 2, 3, 5, 7, 10, 20}
	for _, fn := range []string{"switch", "fib", "mv", "memsel", "indirect", "glob", "sat", "pairs", "refs", "early"} {
		for _, x := range inputs {
			args := []uint64{x}
			if fn == "mv" {
				args = []uint64{x, x + 3}
			}
			want, wantErr := plain.ExportedFunction(fn).Call(ctx, args...)
			got, used, _, err := meteredCall(t, metered, fn, ample, args...)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%s(%d): err %v, unmetered err %v", fn, x, err, wantErr)
			}
			if len(got) != len(want) {
				t.Fatalf("%s(%d) = %v, unmetered %v", fn, x, got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s(%d) = %v, unmetered %v", fn, x, got, want)
				}
			}
			if used <= 0 {
				t.Errorf("%s(%d) used %d fuel", fn, x, used)
			}
		}
	}
	// Spot-check that the functions compute what they claim, so equality
	// above is not equality of two wrong answers.
	for _, c := range []struct {
		fn   string
		x    uint64
		want uint64
	}{
		{"switch", 1, 20}, {"switch", 9, 0}, {"fib", 20, 6765}, {"memsel", 0, 107},
		{"memsel", 9, 209}, {"indirect", 3, 9}, {"indirect", 4, 5}, {"sat", 3, 96},
		{"pairs", 10, 25}, {"refs", 1, 1}, {"early", 4, 99}, {"early", 0, ^uint64(0) >> 32},
	} {
		got, err := plain.ExportedFunction(c.fn).Call(ctx, c.x)
		if err != nil || got[0] != c.want {
			t.Errorf("unmetered %s(%d) = %v, %v; want %d", c.fn, c.x, got, err, c.want)
		}
	}
}

// bulk has one export per size-charged instruction, each (n i32) -> i32.
func bulk() []byte {
	ty := funcType([]byte{tI32}, []byte{tI32})
	return testModule{
		types: [][]byte{ty},
		funcs: []testFunc{
			{body: asm(i32c(0), i32c(7), lget(0), fc(11), 0x00, i32c(0), oEnd)},               // fill
			{body: asm(i32c(0), i32c(100), lget(0), fc(10), 0x00, 0x00, i32c(0), oEnd)},       // copy
			{body: asm(i32c(0), i32c(0), lget(0), fc(8), leb(0), 0x00, i32c(0), oEnd)},        // init
			{body: asm(lget(0), oMemoryGrow, 0x00, oEnd)},                                     // grow
			{body: asm(oRefNull, tFuncref, lget(0), fc(15), leb(0), oEnd)},                    // tgrow
			{body: asm(i32c(0), oRefNull, tFuncref, lget(0), fc(17), leb(0), i32c(0), oEnd)},  // tfill
			{body: asm(i32c(0), i32c(0), lget(0), fc(14), leb(0), leb(0), i32c(0), oEnd)},     // tcopy
			{body: asm(i32c(0), oI32Load8U, memarg(0, 0), oEnd)},                              // peek
			{locals: locals([2]uint32{2, tI64}), body: asm(lget(0), oMemoryGrow, 0x00, oEnd)}, // growl: scratch after own locals
		},
		tables:    [][]byte{asm(tFuncref, limits(1000, 100000))},
		memory:    limits(1, 20),
		exports:   [][]byte{exportFunc("fill", 0), exportFunc("copy", 1), exportFunc("init", 2), exportFunc("grow", 3), exportFunc("tgrow", 4), exportFunc("tfill", 5), exportFunc("tcopy", 6), exportFunc("peek", 7), exportFunc("growl", 8)},
		dataCount: true,
		data:      [][]byte{asm(0x01, leb(4096), make([]byte, 4096))},
	}.encode()
}

func TestBulkOperationsChargedBySize(t *testing.T) {
	rt := newRuntime(t)
	cm, err := rt.CompileModule(ctx, mustInstrument(t, bulk()))
	if err != nil {
		t.Fatal(err)
	}
	used := func(fn string, n uint64) int64 {
		mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		_, u, _, err := meteredCall(t, mod, fn, ample, n)
		if err != nil {
			t.Fatalf("%s(%d): %v", fn, n, err)
		}
		return u
	}
	for _, c := range []struct {
		fn    string
		n     uint64
		extra int64
	}{
		{"fill", 31, 0}, {"fill", 32, 1}, {"fill", 3200, 100}, {"fill", 65536, 2048},
		{"copy", 6400, 200},
		{"init", 4096, 128},
		{"grow", 1, 2048}, {"grow", 3, 3 * 2048}, {"grow", 1000, 1000 * 2048}, // the failed grow pays too
		{"growl", 2, 2 * 2048},
		{"tgrow", 400, 100},
		{"tfill", 1000, 250},
		{"tcopy", 999, 249},
	} {
		if got := used(c.fn, c.n) - used(c.fn, 0); got != c.extra {
			t.Errorf("%s(%d) cost %d more than %s(0), want %d", c.fn, c.n, got, c.fn, c.extra)
		}
	}

	// An oversized fill on a small budget traps before touching memory.
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, left, err := meteredCall(t, mod, "fill", 100, 65536); err == nil || left >= 0 {
		t.Fatalf("fill on a small budget: left %d, err %v", left, err)
	}
	if got, _, _, _ := meteredCall(t, mod, "peek", ample, 0); len(got) != 1 || got[0] != 0 {
		t.Fatalf("memory was filled (byte 0 = %d) although the fuel ran out", got[0])
	}
}

func TestBulkCostsConfigurable(t *testing.T) {
	rt := newRuntime(t)
	bin, err := Instrument(bulk(), Config{BytesPerFuel: 100, FuelPerPage: 7, ElementsPerFuel: 1})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := rt.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	used := func(fn string, n uint64) int64 {
		mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		_, u, _, err := meteredCall(t, mod, fn, ample, n)
		if err != nil {
			t.Fatalf("%s(%d): %v", fn, n, err)
		}
		return u
	}
	for _, c := range []struct {
		fn    string
		n     uint64
		extra int64
	}{{"fill", 3250, 32}, {"grow", 3, 21}, {"tfill", 10, 10}} {
		if got := used(c.fn, c.n) - used(c.fn, 0); got != c.extra {
			t.Errorf("%s(%d) cost %d extra, want %d", c.fn, c.n, got, c.extra)
		}
	}
}

// TestGlobalAppendedAfterImports checks the fuel global takes the index
// after imported and defined globals, so no existing global.get moves.
func TestGlobalAppendedAfterImports(t *testing.T) {
	provider := testModule{
		globals: [][]byte{asm(tI32, 0, i32c(7), oEnd), asm(tI64, 1, i64c(40), oEnd)},
		exports: [][]byte{exportGlobal("g", 0), exportGlobal("h", 1)},
	}.encode()
	consumer := testModule{
		types:   [][]byte{funcType(nil, []byte{tI64})},
		imports: [][]byte{importGlobal("provider", "g", tI32, false), importGlobal("provider", "h", tI64, true)},
		funcs: []testFunc{{typ: 0, body: asm(
			gget(0), oI64ExtendS, gget(1), oI64Add, gget(2), oI64ExtendS, oI64Add,
			oEnd)}},
		globals: [][]byte{asm(tI32, 1, gget(0), oEnd)},
		exports: [][]byte{exportFunc("get", 0)},
	}.encode()
	rt := newRuntime(t)
	if _, err := rt.InstantiateWithConfig(ctx, provider, wazero.NewModuleConfig().WithName("provider")); err != nil {
		t.Fatal(err)
	}
	mod := instantiate(t, rt, mustInstrument(t, consumer))
	res, used, _, err := meteredCall(t, mod, "get", 1000)
	if err != nil || res[0] != 54 {
		t.Fatalf("get() = %v, %v; want 54", res, err)
	}
	if used != 7 {
		t.Fatalf("used %d, want 7", used)
	}
}

// TestSectionsCreatedInOrder meters modules lacking a global or export
// section, with start, element and data count sections around where the new
// ones must go.
func TestSectionsCreatedInOrder(t *testing.T) {
	start := uint32(0)
	cases := map[string]testModule{
		"empty": {},
		"no exports": {
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{{typ: 0, body: asm(oEnd)}},
		},
		"start elem datacount": {
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{
				{typ: 0, body: asm(oEnd)}, // a start function that costs nothing runs on the zero initial fuel
				{typ: 0, body: asm(i32c(0), i32c(1), i32c(1), fc(8), leb(0), 0x00, oEnd)},
			},
			tables:    [][]byte{asm(tFuncref, limits(1, -1))},
			memory:    limits(1, -1),
			start:     &start,
			elems:     [][]byte{asm(0x00, i32c(0), oEnd, vec(leb(1)))},
			dataCount: true,
			data:      [][]byte{asm(0x01, leb(1), 0x2a)},
			customs:   []customSection{{after: secMemory, payload: name("between")}, {after: secElement, payload: name("late")}},
		},
		"globals only": {
			globals: [][]byte{asm(tF64, 0, oF64Const, make([]byte, 8), oEnd)},
		},
		"every element form and a name section": {
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{{typ: 0, locals: locals([2]uint32{2, tI32}), body: asm(oEnd)}},
			tables: [][]byte{
				asm(tFuncref, limits(4, -1)),
				asm(tExtern, limits(1, -1)),
			},
			globals: [][]byte{asm(tI32, 0, i32c(1), oEnd)},
			elems: [][]byte{
				asm(0x00, i32c(0), oEnd, vec(leb(0))),
				asm(0x01, 0x00, vec(leb(0))),
				asm(0x02, leb(0), i32c(1), oEnd, 0x00, vec(leb(0), leb(0))),
				asm(0x03, 0x00, vec(leb(0))),
				asm(0x04, i32c(3), oEnd, vec(asm(oRefFunc, leb(0), oEnd))),
				asm(0x05, tFuncref, vec(asm(oRefNull, tFuncref, oEnd))),
				asm(0x06, leb(1), i32c(0), oEnd, tExtern, vec(asm(oRefNull, tExtern, oEnd))),
				asm(0x07, tFuncref, vec(asm(oRefFunc, leb(0), oEnd))),
			},
			customs: []customSection{{after: secCode, payload: asm(name("name"),
				0x00, name(string(name("mod"))),
				0x01, name(string(vec(asm(leb(0), name("f0"))))),
				0x02, name(string(vec(asm(leb(0), vec(asm(leb(0), name("a")), asm(leb(1), name("b"))))))),
				0x07, name("\x01\x02\x03"), // a subsection the runtime skips
			)}},
		},
	}
	for label, tm := range cases {
		t.Run(label, func(t *testing.T) {
			rt := newRuntime(t)
			mod := instantiate(t, rt, mustInstrument(t, tm.encode()))
			g := fuelGlobal(t, mod)
			g.Set(123)
			if g.Get() != 123 {
				t.Fatal("fuel global not writable")
			}
		})
	}
}

func TestCustomSectionsKept(t *testing.T) {
	moduleName := name("main")
	funcNames := vec(asm(leb(0), name("noop")))
	nameSec := asm(name("name"), 0x00, leb(uint32(len(moduleName))), moduleName, 0x01, leb(uint32(len(funcNames))), funcNames)
	source := asm(name(abiv1.CustomSectionSource), []byte("rule r { when true }"))
	bin := testModule{
		types:   [][]byte{funcType(nil, nil)},
		funcs:   []testFunc{{typ: 0, body: asm(oNop, oEnd)}},
		customs: []customSection{{after: 0, payload: source}, {after: secCode, payload: nameSec}},
	}.encode()
	out := mustInstrument(t, bin)
	for _, c := range [][]byte{sectionBytes(secCustom, source), sectionBytes(secCustom, nameSec)} {
		if !strings.Contains(string(out), string(c)) {
			t.Errorf("custom section %q lost or changed", c[:12])
		}
	}
	rt := newRuntime(t)
	cm, err := rt.CompileModule(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Name(); got != "main" {
		t.Errorf("module name = %q, want main", got)
	}
}

func TestZeroConfigIsDefault(t *testing.T) {
	a, err := Instrument(kitchenSink(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Instrument(kitchenSink(), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Fatal("zero Config and DefaultConfig meter differently")
	}
	for _, c := range []Config{{InstructionCost: 1 << 21}, {FuelPerPage: 1 << 31}} {
		if _, err := Instrument(kitchenSink(), c); err == nil || !strings.HasPrefix(err.Error(), "meter: config:") {
			t.Errorf("%+v: err = %v, want a config error", c, err)
		}
	}
}

func TestAlreadyMeteredRefused(t *testing.T) {
	once := mustInstrument(t, sumLoop())
	_, err := Instrument(once, Config{})
	if !errors.Is(err, ErrAlreadyMetered) {
		t.Fatalf("metering twice: err = %v, want ErrAlreadyMetered", err)
	}
	// The name is reserved whatever it exports.
	fn := testModule{
		types:   [][]byte{funcType(nil, nil)},
		funcs:   []testFunc{{typ: 0, body: asm(oEnd)}},
		exports: [][]byte{exportFunc(abiv1.ExportFuel, 0)},
	}.encode()
	if _, err := Instrument(fn, Config{}); !errors.Is(err, ErrAlreadyMetered) {
		t.Fatalf("function named %s: err = %v, want ErrAlreadyMetered", abiv1.ExportFuel, err)
	}
}

// TestStartRunsOnZeroFuel pins down the documented behaviour: the fuel global
// starts at zero, so start code that does any work traps during
// instantiation, and a host meters initialisation by calling the initializer
// itself after setting a budget.
func TestStartRunsOnZeroFuel(t *testing.T) {
	start := uint32(0)
	bin := mustInstrument(t, testModule{
		types:   [][]byte{funcType(nil, nil)},
		funcs:   []testFunc{{typ: 0, body: asm(oNop, oEnd)}},
		start:   &start,
		exports: [][]byte{exportFunc("init", 0)},
	}.encode())
	rt := newRuntime(t)
	if _, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName("")); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("start section on zero fuel: err = %v, want an unreachable trap", err)
	}
}

// TestSegmentCosts pins down where charges go, with exact expected fuel.
func TestSegmentCosts(t *testing.T) {
	cases := []struct {
		label string
		body  []byte
		used  map[uint64]int64 // input -> fuel
	}{
		{
			// The then arm (6 instructions) is charged when it runs; the
			// 2-instruction else arm is folded into the code before the if.
			label: "arms",
			body: asm(
				lget(0), i32c(5), oI32LtS, // 3
				oIf, tI32, // 1
				lget(0), lget(0), oI32Mul, i32c(1), oI32Add, oNop, // 6
				oElse,
				lget(0), oNop, // 2, folded
				oEnd,
				oEnd),
			used: map[uint64]int64{0: 12, 4: 12, 5: 6, 100: 6},
		},
		{
			// Code after a targeted block is its own segment; the code a
			// br_if skips is charged anyway.
			label: "targeted block",
			body: asm(
				oBlock, blockVoid,
				lget(0), brIf(0), i32c(1), oDrop, // 4
				oEnd,
				lget(0), // 1
				oEnd),
			used: map[uint64]int64{0: 5, 1: 5},
		},
		{
			// An untargeted if's join is charged with the code before it.
			label: "if join",
			body: asm(
				lget(0),        // 1
				oIf, blockVoid, // 1
				i32c(1), oDrop, // 2, folded
				oEnd,
				lget(0), i32c(1), oI32Add, // 3
				oEnd),
			used: map[uint64]int64{0: 7, 1: 7},
		},
	}
	rt := newRuntime(t)
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			mod := instantiate(t, rt, mustInstrument(t, testModule{
				types:   [][]byte{funcType([]byte{tI32}, []byte{tI32})},
				funcs:   []testFunc{{typ: 0, body: c.body}},
				exports: [][]byte{exportFunc("f", 0)},
			}.encode()))
			for in, want := range c.used {
				if _, used, _, err := meteredCall(t, mod, "f", ample, in); err != nil || used != want {
					t.Errorf("f(%d) used %d (err %v), want %d", in, used, err, want)
				}
			}
		})
	}
}
