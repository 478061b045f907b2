package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
)

// The betrace host module: what a rule may ask of the host beyond WASI
// (api/abi-v1.md §2). Each function charges its documented fuel to the
// calling instance before doing any work, so a rule that leans on the host
// is stopped by the same budget as one that loops, and traps with an error
// that names the problem on anything malformed. They are deterministic: the
// same arguments give the same answer and cost on every host.

// hostFuncTypes are the signatures of the betrace host functions.
var hostFuncTypes = map[string]struct{ params, results []api.ValueType }{
	abiv1.HostRegexMatch:   {[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI64}, []api.ValueType{api.ValueTypeI32}},
	abiv1.HostTextContains: {[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI64}, []api.ValueType{api.ValueTypeI32}},
	abiv1.HostParseNumber:  {[]api.ValueType{api.ValueTypeI32, api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32, api.ValueTypeI64}},
}

// errOutOfFuel ends a host call the remaining budget cannot pay for; the
// fuel global is negative by then, so the call is classified as out of fuel.
var errOutOfFuel = errors.New("fuel budget exhausted in a host function")

// hostFuncs serves the betrace module to the instances of one sandbox.
type hostFuncs struct {
	mu      sync.Mutex // serialises additions to regexes
	regexes atomic.Pointer[map[string]*abi.Regex]
	numText sync.Pool // *[40]byte, the text of a number being matched
}

func newHostFuncs() *hostFuncs {
	h := &hostFuncs{numText: sync.Pool{New: func() any { return new([40]byte) }}}
	h.regexes.Store(&map[string]*abi.Regex{})
	return h
}

func (h *hostFuncs) instantiate(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(abiv1.HostModule)
	for name, fn := range map[string]api.GoModuleFunc{
		abiv1.HostRegexMatch:   h.regexMatch,
		abiv1.HostTextContains: h.textContains,
		abiv1.HostParseNumber:  h.parseNumber,
	} {
		t := hostFuncTypes[name]
		b.NewFunctionBuilder().WithGoModuleFunction(fn, t.params, t.results).Export(name)
	}
	if _, err := b.Instantiate(ctx); err != nil {
		return fmt.Errorf("sandbox: instantiate the %s host module: %w", abiv1.HostModule, err)
	}
	return nil
}

// checkHostImport checks an import from the betrace module.
func checkHostImport(name string, params, results []api.ValueType) error {
	t, ok := hostFuncTypes[name]
	if !ok {
		return fmt.Errorf("%w: %s.%s; the %s module has only %s, %s and %s", ErrImportNotAllowed, abiv1.HostModule, name, abiv1.HostModule,
			abiv1.HostRegexMatch, abiv1.HostTextContains, abiv1.HostParseNumber)
	}
	if !sameTypes(params, t.params) || !sameTypes(results, t.results) {
		return fmt.Errorf("%w: import %s.%s has type %s, ABI v1 defines %s", ErrInvalidModule, abiv1.HostModule, name,
			signature(params, results), signature(t.params, t.results))
	}
	return nil
}

func (h *hostFuncs) regexMatch(ctx context.Context, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	re := h.regex(guestBytes(mem, uint32(stack[0]), uint32(stack[1]), "pattern"))
	text, buf := h.text(mem, uint32(stack[2]), stack[3])
	charge(ctx, mod, re.Fuel(len(text)))
	stack[0] = boolI32(re.Match(text))
	h.release(buf)
}

func (h *hostFuncs) textContains(ctx context.Context, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	needle := guestBytes(mem, uint32(stack[0]), uint32(stack[1]), "needle")
	text, buf := h.text(mem, uint32(stack[2]), stack[3])
	charge(ctx, mod, abi.ContainsFuel(len(text), len(needle)))
	stack[0] = boolI32(bytes.Contains(text, needle))
	h.release(buf)
}

func (h *hostFuncs) parseNumber(ctx context.Context, mod api.Module, stack []uint64) {
	text := guestBytes(mod.Memory(), uint32(stack[0]), uint32(stack[1]), "number text")
	charge(ctx, mod, abi.ParseNumberFuel(len(text)))
	kind, i, f := abi.ParseNumber(string(text))
	stack[0], stack[1] = uint64(kind), 0
	switch kind {
	case abiv1.NumberInt:
		stack[1] = uint64(i)
	case abiv1.NumberDouble:
		stack[1] = math.Float64bits(f)
	}
}

// text returns the text of a (type, value) argument: a view of guest memory
// for the text types, else the value's text in a pooled buffer that the
// caller hands back to release.
func (h *hostFuncs) text(mem api.Memory, typ uint32, v uint64) ([]byte, *[40]byte) {
	switch typ {
	case uint32(abiv1.ValueString), uint32(abiv1.ValueBytes), uint32(abiv1.ValueArray), uint32(abiv1.ValueMap):
		ptr, n := abiv1.Unpack(v)
		return guestBytes(mem, ptr, n, "value"), nil
	case uint32(abiv1.ValueBool), uint32(abiv1.ValueInt), uint32(abiv1.ValueDouble):
		buf := h.numText.Get().(*[40]byte)
		text, _ := abi.AppendValueText(buf[:0], uint8(typ), v)
		return text, buf
	}
	panic(fmt.Errorf("value type %d has no text; the value types are %d to %d (api/abi-v1.md §3)", typ, abiv1.ValueString, abiv1.ValueMap))
}

func (h *hostFuncs) release(buf *[40]byte) {
	if buf != nil {
		h.numText.Put(buf)
	}
}

func boolI32(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// guestBytes reads n bytes at ptr, trapping when they are out of bounds.
func guestBytes(mem api.Memory, ptr, n uint32, what string) []byte {
	b, ok := mem.Read(ptr, n)
	if !ok {
		panic(fmt.Errorf("the %s (%d bytes at %#x) is past the end of memory (%d bytes)", what, n, ptr, mem.Size()))
	}
	return b
}

// charge takes cost from the calling instance (see chargeInst). Unmetered
// modules (benchmarks only) are not charged.
func charge(ctx context.Context, mod api.Module, cost uint64) {
	if inst := callInstance(ctx); inst != nil {
		chargeInst(inst, cost)
		return
	}
	if g, ok := mod.ExportedGlobal(abiv1.ExportFuel).(api.MutableGlobal); ok {
		takeFuel(g, cost)
	}
}

func takeFuel(g api.MutableGlobal, cost uint64) {
	left := int64(g.Get())
	if cost > math.MaxInt64/2 || left < math.MinInt64/2 {
		cost, left = math.MaxInt64/2, min(left, 0)
	}
	left -= int64(cost)
	g.Set(uint64(left))
	if left < 0 {
		panic(errOutOfFuel)
	}
}

// regex returns the compiled pattern, compiling it on first use. Patterns
// live as long as the sandbox; a module may use at most abiv1.MaxRegexes.
func (h *hostFuncs) regex(pattern []byte) *abi.Regex {
	if re, ok := (*h.regexes.Load())[string(pattern)]; ok {
		return re
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := *h.regexes.Load()
	if re, ok := old[string(pattern)]; ok {
		return re
	}
	if len(old) >= abiv1.MaxRegexes {
		panic(fmt.Errorf("the rule uses more than %d distinct regular expressions", abiv1.MaxRegexes))
	}
	re, err := abi.CompileRegex(string(pattern))
	if err != nil {
		panic(err)
	}
	m := make(map[string]*abi.Regex, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[re.String()] = re
	h.regexes.Store(&m)
	return re
}
