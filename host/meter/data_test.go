package meter

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// activeSeg is an active data segment in memory 0 at a constant offset.
func activeSeg(off int32, data []byte) []byte {
	return asm(0x00, i32c(off), oEnd, leb(uint32(len(data))), data)
}

// dataModule is a module with one exported memory of pages pages, the
// given data segments and optionally a function body using them.
func dataModule(pages uint32, segs [][]byte, body []byte) testModule {
	m := testModule{memory: limits(pages, -1), exports: [][]byte{exportMemory("memory", 0)}, data: segs}
	if body != nil {
		m.types = [][]byte{funcType(nil, nil)}
		m.funcs = []testFunc{{typ: 0, body: body}}
		m.dataCount = true
	}
	return m
}

// memoryAfterInstantiation instantiates module and returns its memory.
func memoryAfterInstantiation(t *testing.T, rt wazero.Runtime, module []byte) ([]byte, error) {
	t.Helper()
	mod, err := rt.InstantiateModule(ctx, mustCompile(t, rt, module), wazero.NewModuleConfig().WithName(""))
	if err != nil {
		return nil, err
	}
	defer mod.Close(ctx)
	b, _ := mod.Memory().Read(0, mod.Memory().Size())
	return bytes.Clone(b), nil
}

func mustCompile(t *testing.T, rt wazero.Runtime, module []byte) wazero.CompiledModule {
	t.Helper()
	cm, err := rt.CompileModule(ctx, module)
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func dataSegments(t *testing.T, module []byte) int {
	t.Helper()
	r := &reader{buf: module, pos: 8}
	for !r.done() {
		id := r.byte()
		body := r.bytes(r.u32())
		if id == secData {
			return int((&reader{buf: body}).u32())
		}
	}
	return 0
}

// Metering lays many data segments out again as a few, and the memory a
// new instance starts with is byte for byte the same.
func TestDataSegmentsMerged(t *testing.T) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			if rng.IntN(4) > 0 {
				b[i] = byte(rng.IntN(256))
			}
		}
		return b
	}
	var segs [][]byte
	for i := range 300 { // runs with small and page-sized gaps
		segs = append(segs, activeSeg(int32(i*300+rng.IntN(50)), random(1+rng.IntN(200))))
	}
	segs = append(segs,
		activeSeg(200_000, random(100)),             // far away: its own merged segment
		activeSeg(100, bytes.Repeat([]byte{0}, 50)), // zeros over earlier data: later segments win
		activeSeg(150, []byte("overwritten later")),
		activeSeg(0, nil),
		activeSeg(4*65536-3, []byte{7, 8, 9}), // ends exactly at the end of memory
	)
	in := dataModule(4, segs, nil).encode()
	out, err := Instrument(in, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if n := dataSegments(t, out); n > 3 {
		t.Errorf("%d segments after metering, want at most 3 (from %d)", n, len(segs))
	}
	want, err := memoryAfterInstantiation(t, rt, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := memoryAfterInstantiation(t, rt, out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the metered module starts with different memory")
	}
}

// Where merging could change behaviour the segments are kept as they are.
func TestDataSegmentsKept(t *testing.T) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	many := func(extra ...[]byte) [][]byte {
		var segs [][]byte
		for i := range 100 {
			segs = append(segs, activeSeg(int32(i*16), []byte{byte(i + 1)}))
		}
		return append(segs, extra...)
	}
	for _, tt := range []struct {
		name string
		m    testModule
	}{
		{"passive segment", dataModule(1, many(asm(0x01, leb(3), []byte{1, 2, 3})), nil)},
		{"offset from a global", func() testModule {
			m := dataModule(1, many(asm(0x00, gget(0), oEnd, leb(1), []byte{1})), nil)
			m.imports = [][]byte{importGlobal("env", "base", 0x7f, false)}
			return m
		}()},
		{"memory.init", dataModule(1, many(), asm(i32c(0), i32c(0), i32c(1), fc(8), leb(0), 0x00, oEnd))},
		{"data.drop", dataModule(1, many(), asm(fc(9), leb(0), oEnd))},
		{"few segments", dataModule(1, many()[:10], nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.m.encode()
			out, err := Instrument(in, Config{})
			if err != nil {
				t.Fatal(err)
			}
			if a, b := dataSegments(t, in), dataSegments(t, out); a != b {
				t.Fatalf("%d segments became %d", a, b)
			}
		})
	}
	// A segment past the end of memory fails instantiation before and after.
	in := dataModule(1, many(activeSeg(65536-2, []byte{0, 0, 0})), nil).encode()
	out, err := Instrument(in, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := memoryAfterInstantiation(t, rt, out); err == nil || !strings.Contains(err.Error(), "out of bounds") {
		t.Fatalf("instantiating the metered module: %v, want out of bounds", err)
	}
}
