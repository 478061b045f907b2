package meter

import (
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
	seeds := [][]byte{
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
	})
}
