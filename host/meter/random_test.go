package meter

import (
	"math/rand/v2"
	"testing"

	"github.com/tetratelabs/wazero"
)

// progGen writes random structured functions of type (i32) -> i32: nested
// blocks, ifs, counted loops, forward branches, br_table, calls, memory and
// early returns. Every loop is bounded by a counter nothing else touches and
// branches only go forward, so each program terminates.
type progGen struct {
	rng    *rand.Rand
	out    []byte
	labels []byte // kind of each enclosing label, innermost last: 'b' forward, 'l' loop
	loops  int    // loop nesting, which picks the counter local
}

// Locals: 0 is the argument, 1..4 are scratch values, 5..8 loop counters.
const (
	genValues   = 4
	genCounters = 4
)

func (g *progGen) emit(parts ...any) { g.out = append(g.out, asm(parts...)...) }

func (g *progGen) value() uint32 { return 1 + uint32(g.rng.IntN(genValues)) }

func (g *progGen) expr(depth int) {
	switch n := g.rng.IntN(6); {
	case depth > 2 || n == 0:
		g.emit(lget(uint32(g.rng.IntN(genValues + 1))))
	case n == 1:
		g.emit(i32c(int32(g.rng.IntN(200) - 100)))
	case n == 2:
		g.expr(depth + 1)
		g.emit(call(1))
	case n == 3:
		g.emit(i32c(int32(g.rng.IntN(16)*4)), oI32Load, memarg(2, 0))
	default:
		g.expr(depth + 1)
		g.expr(depth + 1)
		g.emit([]byte{oI32Add, oI32Sub, oI32Mul, 0x73 /* xor */, oI32And}[g.rng.IntN(5)])
	}
}

// forward picks a branch depth that lands on a block or if end.
func (g *progGen) forward() (uint32, bool) {
	var ok []uint32
	for d := range g.labels {
		if g.labels[len(g.labels)-1-d] == 'b' {
			ok = append(ok, uint32(d))
		}
	}
	if len(ok) == 0 {
		return 0, false
	}
	return ok[g.rng.IntN(len(ok))], true
}

func (g *progGen) stmts(depth, n int) {
	for i := 0; i < n; i++ {
		g.stmt(depth)
	}
}

func (g *progGen) stmt(depth int) {
	k := g.rng.IntN(12)
	if depth > 3 && k > 4 {
		k %= 5
	}
	switch k {
	case 0, 1:
		g.expr(0)
		g.emit(lset(g.value()))
	case 2:
		g.emit(i32c(int32(g.rng.IntN(16) * 4)))
		g.expr(0)
		g.emit(oI32Store, memarg(2, 0))
	case 3:
		if d, ok := g.forward(); ok {
			g.expr(0)
			g.emit(brIf(d))
		}
	case 4:
		if g.rng.IntN(4) == 0 {
			g.expr(0)
			g.emit(oReturn)
		}
	case 5, 6:
		g.expr(0)
		g.emit(oIf, blockVoid)
		g.labels = append(g.labels, 'b')
		g.stmts(depth+1, g.rng.IntN(3))
		if g.rng.IntN(2) == 0 {
			g.emit(oElse)
			g.stmts(depth+1, g.rng.IntN(3))
		}
		g.labels = g.labels[:len(g.labels)-1]
		g.emit(oEnd)
	case 7, 8:
		g.emit(oBlock, blockVoid)
		g.labels = append(g.labels, 'b')
		g.stmts(depth+1, 1+g.rng.IntN(3))
		if g.rng.IntN(3) == 0 {
			// a br_table over forward labels, then dead code
			var targets []uint32
			for j := 0; j < 3; j++ {
				d, _ := g.forward()
				targets = append(targets, d)
			}
			g.expr(0)
			g.emit(oBrTable, leb(2), leb(targets[0]), leb(targets[1]), leb(targets[2]))
			g.stmts(depth+1, g.rng.IntN(2))
		}
		g.labels = g.labels[:len(g.labels)-1]
		g.emit(oEnd)
	case 9, 10:
		if g.loops == genCounters {
			return
		}
		c := uint32(1 + genValues + g.loops)
		g.emit(i32c(int32(g.rng.IntN(5))), lset(c))
		g.emit(oBlock, blockVoid) // exit label, so a zero count skips the body
		g.labels = append(g.labels, 'b')
		g.emit(lget(c), oI32Eqz, brIf(0))
		g.emit(oLoop, blockVoid)
		g.labels = append(g.labels, 'l')
		g.loops++
		g.stmts(depth+1, 1+g.rng.IntN(3))
		g.loops--
		g.emit(lget(c), i32c(1), oI32Sub, ltee(c), brIf(0))
		g.labels = g.labels[:len(g.labels)-1]
		g.emit(oEnd)
		g.labels = g.labels[:len(g.labels)-1]
		g.emit(oEnd)
	case 11:
		// a block with a result, left by br_if carrying the value
		g.emit(oBlock, tI32)
		g.labels = append(g.labels, 'x') // carries a value: not a plain target
		g.expr(0)
		g.expr(0)
		g.emit(brIf(0))
		g.labels = g.labels[:len(g.labels)-1]
		g.emit(oEnd, lset(g.value()))
	}
}

func (g *progGen) module() []byte {
	g.out = nil
	g.labels = []byte{'x'} // the function's own label carries its result
	g.stmts(0, 2+g.rng.IntN(5))
	g.expr(0)
	g.emit(oEnd)
	ty := funcType([]byte{tI32}, []byte{tI32})
	return testModule{
		types: [][]byte{ty},
		funcs: []testFunc{
			{locals: locals([2]uint32{genValues + genCounters, tI32}), body: g.out},
			// 1: a leaf helper with its own if
			{body: asm(lget(0), i32c(3), oI32Mul, i32c(1), oI32Add, ltee(0), i32c(100), oI32GtS,
				oIf, tI32, lget(0), i32c(7), oI32And, oElse, lget(0), oEnd, oEnd)},
		},
		memory:  limits(1, 1),
		exports: [][]byte{exportFunc("f", 0)},
	}.encode()
}

// TestRandomPrograms meters random programs and checks each still validates,
// computes what the original computes, and uses the same fuel on a second
// instance. The fuzz test covers malformed input; this covers the semantics
// of well-formed input, which random bytes rarely are.
func TestRandomPrograms(t *testing.T) {
	n := 300
	if testing.Short() || raceEnabled {
		n = 60
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	g := &progGen{rng: rand.New(rand.NewPCG(1, 2))}
	for i := 0; i < n; i++ {
		bin := g.module()
		plain, err := rt.Instantiate(ctx, bin)
		if err != nil {
			t.Fatalf("program %d does not validate (generator bug): %v", i, err)
		}
		out, err := Instrument(bin, Config{})
		if err != nil {
			t.Fatalf("program %d: %v", i, err)
		}
		cm, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("program %d: metered module rejected: %v", i, err)
		}
		metered, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		twin, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []uint64{0, 1, 7, 1 << 31} {
			want, err := plain.ExportedFunction("f").Call(ctx, x)
			if err != nil {
				t.Fatalf("program %d(%d): %v", i, x, err)
			}
			// Each instance keeps its own memory, which the calls change, so
			// all three instances see the same sequence of calls.
			got, used, _, err := meteredCall(t, metered, "f", ample, x)
			if err != nil || got[0] != want[0] {
				t.Fatalf("program %d(%d) = %v (err %v), unmetered %v", i, x, got, err, want)
			}
			_, again, _, _ := meteredCall(t, twin, "f", ample/3, x)
			if used <= 0 || again != used {
				t.Fatalf("program %d(%d) used %d fuel, then %d on a twin instance", i, x, used, again)
			}
		}
		plain.Close(ctx)
		metered.Close(ctx)
		twin.Close(ctx)
		cm.Close(ctx)
	}
}
