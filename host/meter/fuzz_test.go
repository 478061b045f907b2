package meter

import (
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
)

// FuzzInstrument checks that Instrument never panics, and that whenever
// wazero accepts the input it either accepts the metered output too or
// Instrument refused with one of its documented errors: never a silently
// broken module.
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
		if !cheapToDecode(data) {
			return
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

// cheapToDecode rejects inputs wazero would refuse only after allocating for
// an absurd declared count (a vector of 2^28 globals in 70 bytes, 2^32
// locals): they stall the fuzzer for seconds each and prove nothing, since
// such a module is invalid anyway. It assumes Instrument accepted data, so
// the section framing is sound.
func cheapToDecode(data []byte) bool {
	r := &reader{buf: data, pos: 8}
	for !r.done() {
		id := r.byte()
		body := r.bytes(r.u32())
		if r.failed() {
			return false
		}
		if id == secCustom || id == secStart || id == secDataCount {
			continue
		}
		sr := &reader{buf: body}
		n := sr.u32()
		if sr.failed() || uint64(n) > uint64(len(body)) {
			return false
		}
		if id != secCode {
			continue
		}
		for i := uint32(0); i < n; i++ {
			fb := &reader{buf: sr.bytes(sr.u32())}
			groups := fb.u32()
			var locals uint64
			for g := uint32(0); g < groups && !fb.failed(); g++ {
				locals += uint64(fb.u32())
				fb.valType()
			}
			if sr.failed() || fb.failed() || locals > 1<<16 {
				return false
			}
		}
	}
	return true
}
