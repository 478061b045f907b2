package meter

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument checks that Instrument never panics, and that whenever
// wazero accepts the input it either accepts the metered output too or
// Instrument refused with one of its documented errors: never a silently
// broken module. Anything Instrument accepts goes on to wazero, so an input
// that makes wazero allocate by an absurd declared count (see checkCounts)
// shows up here as a hung or killed worker.
func FuzzInstrument(f *testing.F) {
	var segs [][]byte
	for i := range 70 {
		segs = append(segs, activeSeg(int32(i*40), []byte{byte(i), 0, byte(i + 1)}))
	}
	seeds := [][]byte{
		dataModule(1, segs, nil).encode(),
		loopForever(), callTree(), sumLoop(), kitchenSink(), bulk(),
		withBody(asm(oNop, oEnd)),
		withBody(asm(0xfd, leb(0x0c), make([]byte, 16), oDrop, oEnd)),
		withBody(asm(0x06, blockVoid, oEnd, oEnd)),
		withBody(asm(0x12, leb(0), oEnd)),
		withBody(asm(oBlock, blockVoid, br(2), oEnd, oEnd)),
		wasmHeader,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// The interpreter validates exactly as the compiler does and compiles
	// far faster, which is all this needs.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)

	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Instrument(data, Config{})
		if err != nil {
			if out != nil {
				t.Fatalf("output returned along with error %v", err)
			}
			// A documented refusal satisfies the invariant whatever wazero
			// thinks of the input; anything else is a bug.
			var ue *UnsupportedError
			if errors.As(err, &ue) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrAlreadyMetered) {
				return
			}
			t.Fatalf("undocumented error: %v", err)
		}
		in, err := rt.CompileModule(ctx, data)
		if err != nil {
			return
		}
		in.Close(ctx)
		metered, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("wazero accepts the input but rejects the metered output: %v", err)
		}
		metered.Close(ctx)
		// Merged data segments must give a new instance the same memory.
		if m, err := parseModule(data); err == nil && m.memKnown && m.memMin <= 16*65536 && m.data != nil {
			want, errIn := initialMemory(rt, data)
			got, errOut := initialMemory(rt, out)
			if (errIn == nil) != (errOut == nil) || !bytes.Equal(want, got) {
				t.Fatalf("initial memory differs after metering (instantiation errors: %v / %v)", errIn, errOut)
			}
		}
	})
}

// initialMemory instantiates module without running any start function and
// returns a copy of its memory (nil if it has none).
func initialMemory(rt wazero.Runtime, module []byte) ([]byte, error) {
	cm, err := rt.CompileModule(ctx, module)
	if err != nil {
		return nil, err
	}
	defer cm.Close(ctx)
	mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return nil, err
	}
	defer mod.Close(ctx)
	if mod.Memory() == nil {
		return nil, nil
	}
	b, _ := mod.Memory().Read(0, mod.Memory().Size())
	return bytes.Clone(b), nil
}
