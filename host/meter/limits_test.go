package meter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
)

// runModule wraps one exported body, "run", in a module with a memory.
func runModule(localGroups, body []byte) []byte {
	return testModule{
		types:   [][]byte{funcType(nil, nil)},
		funcs:   []testFunc{{typ: 0, locals: localGroups, body: body}},
		memory:  limits(1, -1),
		exports: [][]byte{exportFunc("run", 0)},
	}.encode()
}

// nested opens depth blocks of the given opcode around inner and closes
// them, then ends the function.
func nested(op byte, depth int, inner []byte) []byte {
	body := bytes.Repeat([]byte{op, blockVoid}, depth)
	body = append(body, inner...)
	body = append(body, bytes.Repeat([]byte{oEnd}, depth)...)
	return append(body, oEnd)
}

// ifsAndLoops nests loops inside ifs; each if is taken and each loop runs
// once. It costs two fuel per if and one for the nop innermost, all charged
// by the time the innermost loop checks the fuel.
func ifsAndLoops(ifs, loops int) []byte {
	body := bytes.Repeat(asm(i32c(1), oIf, blockVoid), ifs)
	body = append(body, bytes.Repeat([]byte{oLoop, blockVoid}, loops)...)
	body = append(body, oNop)
	body = append(body, bytes.Repeat([]byte{oEnd}, loops+ifs)...)
	return append(body, oEnd)
}

// blocksBody is a flat body whose control flow counts exactly n basic
// blocks against MaxFunctionBlocks: the entry check, as many loops as fit,
// then blocks.
func blocksBody(n int) []byte {
	n -= blocksCheck
	loops := n / 2 / blocksLoop
	body := bytes.Repeat(asm(oLoop, blockVoid, oNop, oEnd), loops)
	body = append(body, bytes.Repeat(asm(oBlock, blockVoid, oEnd), n-loops*blocksLoop)...)
	return append(body, oEnd)
}

// nopBody is a body of exactly size bytes, local declarations included,
// that runs size-2 nops (runModule declares no locals: one byte).
func nopBody(size int) []byte {
	return append(bytes.Repeat([]byte{oNop}, size-2), oEnd)
}

func manyFuncs(n int) []byte {
	funcs := make([]testFunc, n)
	for i := range funcs {
		funcs[i] = testFunc{typ: 0, body: asm(oEnd)}
	}
	return testModule{types: [][]byte{funcType(nil, nil)}, funcs: funcs}.encode()
}

func TestStructuralLimits(t *testing.T) {
	cases := []struct {
		label     string
		at, over  []byte // at the limit, and one step beyond it
		fuel      int64  // what "run" costs at the limit; 0: not run
		wantError string
	}{
		{
			label:     "nesting depth",
			at:        runModule(nil, nested(oBlock, MaxNestingDepth, asm(oNop, oNop, oNop))),
			over:      runModule(nil, nested(oBlock, MaxNestingDepth+1, asm(oNop, oNop, oNop))),
			fuel:      3,
			wantError: fmt.Sprintf("nest more than %d deep, the limit for one function (meter.MaxNestingDepth)", MaxNestingDepth),
		},
		{
			label:     "nesting depth of ifs and loops",
			at:        runModule(nil, ifsAndLoops(MaxNestingDepth*3/4, MaxNestingDepth/4)),
			over:      runModule(nil, ifsAndLoops(MaxNestingDepth*3/4+1, MaxNestingDepth/4)),
			fuel:      int64(2*(MaxNestingDepth*3/4) + 1),
			wantError: "(meter.MaxNestingDepth)",
		},
		{
			label:     "basic blocks",
			at:        runModule(nil, blocksBody(MaxFunctionBlocks)),
			over:      runModule(nil, blocksBody(MaxFunctionBlocks+1)),
			fuel:      int64(MaxFunctionBlocks-blocksCheck) / 2 / blocksLoop,
			wantError: fmt.Sprintf("control flow of more than %d basic blocks, the limit for one function (meter.MaxFunctionBlocks)", MaxFunctionBlocks),
		},
		{
			label:     "basic blocks of a br_table",
			at:        runModule(nil, asm(oBlock, blockVoid, i32c(0), oBrTable, leb(MaxFunctionBlocks-blocksCheck-blocksBlock-1), bytes.Repeat([]byte{0}, MaxFunctionBlocks-blocksCheck-blocksBlock), oEnd, oEnd)),
			over:      runModule(nil, asm(oBlock, blockVoid, i32c(0), oBrTable, leb(MaxFunctionBlocks-blocksCheck-blocksBlock), bytes.Repeat([]byte{0}, MaxFunctionBlocks-blocksCheck-blocksBlock+1), oEnd, oEnd)),
			fuel:      2,
			wantError: "(meter.MaxFunctionBlocks)",
		},
		{
			label:     "body size",
			at:        runModule(nil, nopBody(MaxFunctionBodyBytes)),
			over:      runModule(nil, nopBody(MaxFunctionBodyBytes+1)),
			fuel:      MaxFunctionBodyBytes - 2,
			wantError: fmt.Sprintf("body of %d bytes, more than the %d allowed (meter.MaxFunctionBodyBytes)", MaxFunctionBodyBytes+1, MaxFunctionBodyBytes),
		},
		{
			label:     "functions",
			at:        manyFuncs(MaxFunctions),
			over:      manyFuncs(MaxFunctions + 1),
			wantError: fmt.Sprintf("declares %d functions, more than the %d allowed (meter.MaxFunctions)", MaxFunctions+1, MaxFunctions),
		},
		{
			label:     "locals",
			at:        runModule(locals([2]uint32{MaxLocals - 1, tI32}, [2]uint32{1, tI64}), asm(oNop, oEnd)),
			over:      runModule(locals([2]uint32{MaxLocals, tI32}, [2]uint32{1, tI64}), asm(oNop, oEnd)),
			fuel:      1,
			wantError: fmt.Sprintf("declares %d locals, more than the %d allowed (meter.MaxLocals)", MaxLocals+1, MaxLocals),
		},
	}
	rt := newRuntime(t)
	if raceEnabled {
		// The race detector slows the optimizing compiler tenfold.
		rt = wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
		t.Cleanup(func() { rt.Close(ctx) })
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			out, err := Instrument(c.over, Config{})
			if !errors.Is(err, ErrMalformed) || out != nil {
				t.Fatalf("one beyond the limit: err = %v, want ErrMalformed and no output", err)
			}
			if !strings.Contains(err.Error(), c.wantError) {
				t.Errorf("message %q, want it to contain %q", err, c.wantError)
			}

			metered, err := Instrument(c.at, Config{})
			if err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			if c.fuel == 0 {
				return
			}
			mod := instantiate(t, rt, metered)
			if _, used, _, err := meteredCall(t, mod, "run", ample); err != nil || used != c.fuel {
				t.Fatalf("run used %d fuel, err %v; want %d", used, err, c.fuel)
			}
			if _, _, left, err := meteredCall(t, mod, "run", c.fuel-1); err == nil || left >= 0 {
				t.Fatalf("run on %d fuel: left %d, err %v; want a fuel trap", c.fuel-1, left, err)
			}
		})
	}
}

// TestGoGuestWithinLimits keeps the limits several times above what a real
// Go module needs, so a toolchain change that approaches them shows up here
// before a rule author's upload is refused.
func TestGoGuestWithinLimits(t *testing.T) {
	got, err := measure(goGuest(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what       string
		got, limit int
	}{
		{"nesting depth", got.depth, MaxNestingDepth},
		{"basic blocks", got.blocks, MaxFunctionBlocks},
		{"body bytes", got.body, MaxFunctionBodyBytes},
		{"functions", got.funcs, MaxFunctions},
		{"locals", got.locals, MaxLocals},
	} {
		t.Logf("%s: %d of %d", c.what, c.got, c.limit)
		if c.got == 0 || c.got*4 > c.limit {
			t.Errorf("the Go guest's largest %s is %d, within 4x of the limit %d", c.what, c.got, c.limit)
		}
	}
}

type moduleShape struct {
	shape
	body, funcs, locals int
}

// measure returns the largest of each structural size in module.
func measure(module []byte) (moduleShape, error) {
	m, err := parseModule(module)
	if err != nil || m.code == nil {
		return moduleShape{}, err
	}
	r := &reader{buf: m.code.body, base: m.code.off}
	n := r.u32()
	ms := moduleShape{funcs: int(n)}
	fr := newFuncRewriter(ctx, DefaultConfig(), m.globals)
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		at := r.pos
		body := r.bytes(size)
		if err := fr.rewrite(body, m.code.off+at, int(i), m.paramCounts[m.funcTypes[i]]); err != nil {
			return ms, err
		}
		ms.body = max(ms.body, int(size))
		lr := &reader{buf: body}
		var locals int
		for g := lr.u32(); g > 0; g-- {
			locals += int(lr.u32())
			lr.valType()
		}
		ms.locals = max(ms.locals, locals)
	}
	ms.shape = fr.stats
	return ms, nil
}

// errAfter is a context whose Err turns to Canceled after it has been
// asked n times, to stop the pass at a chosen check.
type errAfter struct {
	context.Context
	n int
}

func (c *errAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

func TestInstrumentContextStops(t *testing.T) {
	long := runModule(nil, nopBody(3*checkEvery))
	cases := []struct {
		label  string
		ctx    context.Context
		module []byte
		want   string
	}{
		{"ended before", &errAfter{ctx, 0}, sumLoop(), "stopped at function[0]"},
		{"ends between functions", &errAfter{ctx, 1}, manyFuncs(3), "stopped at function[1]"},
		{"ends inside one long body", &errAfter{ctx, 1}, long, "stopped at function[0]"},
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			out, err := InstrumentContext(c.ctx, c.module, Config{})
			if !errors.Is(err, context.Canceled) || out != nil {
				t.Fatalf("err = %v, want context.Canceled and no output", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("message %q, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := InstrumentContext(&errAfter{ctx, 1}, sumLoop(), Config{}); err != nil {
		t.Errorf("a context that ends after the last check: %v", err)
	}
}

// TestCompileStopsAtDeadline checks what admission relies on for a module
// of many functions each within the limits: wazero's compiler, given more
// than one compilation worker, gives up between functions once its context
// ends. A single worker would compile the whole module first.
func TestCompileStopsAtDeadline(t *testing.T) {
	funcs := make([]testFunc, 2000)
	for i := range funcs {
		funcs[i] = testFunc{typ: 0, body: blocksBody(MaxFunctionBlocks / 16)}
	}
	metered := mustInstrument(t, testModule{types: [][]byte{funcType(nil, nil)}, funcs: funcs}.encode())
	rt := newRuntime(t)
	dctx, cancel := context.WithTimeout(experimental.WithCompilationWorkers(ctx, 2), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	cm, err := rt.CompileModule(dctx, metered)
	if err == nil {
		cm.Close(ctx)
		t.Fatalf("compiled in %v, past its 100 ms deadline", time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	// The whole module takes minutes under the race detector; stopping
	// takes as long as the functions being compiled at the deadline.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("compilation stopped %v after starting", d)
	}
}

// BenchmarkInstrumentDeepNesting meters, and compiles as admission does,
// a function nested MaxNestingDepth deep whose innermost level is a run of
// loops and blocks taking it to MaxFunctionBlocks: the deepest and most
// branching function the limits allow.
//
//	go test -run '^$' -bench InstrumentDeepNesting ./host/meter
func BenchmarkInstrumentDeepNesting(b *testing.B) {
	inner := blocksBody(MaxFunctionBlocks - MaxNestingDepth*blocksBlock)
	bin := runModule(nil, nested(oBlock, MaxNestingDepth-1, inner[:len(inner)-1])) // the body is a level too
	if _, err := measure(bin); err != nil {
		b.Fatal(err)
	}
	b.Run("instrument", func(b *testing.B) {
		b.SetBytes(int64(len(bin)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Instrument(bin, Config{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("admit", func(b *testing.B) {
		for b.Loop() {
			metered, err := Instrument(bin, Config{})
			if err != nil {
				b.Fatal(err)
			}
			rt := wazero.NewRuntime(ctx)
			if _, err := rt.CompileModule(experimental.WithCompilationWorkers(ctx, 2), metered); err != nil {
				b.Fatal(err)
			}
			rt.Close(ctx)
		}
	})
}
