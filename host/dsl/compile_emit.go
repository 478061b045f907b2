package dsl

// A minimal WebAssembly binary emitter for the compiler: value types, the
// opcodes the generated code uses, LEB128 and section framing.

import (
	"math"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/internal/leb128"
)

const (
	wI32 byte = 0x7f
	wI64 byte = 0x7e
	wF64 byte = 0x7c

	blockVoid byte = 0x40
)

// Opcodes used by the generated code.
const (
	opUnreachable = 0x00
	opBlock       = 0x02
	opLoop        = 0x03
	opIf          = 0x04
	opElse        = 0x05
	opEnd         = 0x0b
	opBr          = 0x0c
	opBrIf        = 0x0d
	opReturn      = 0x0f
	opCall        = 0x10
	opDrop        = 0x1a
	opSelect      = 0x1b
	opLocalGet    = 0x20
	opLocalSet    = 0x21
	opLocalTee    = 0x22
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opI32Load     = 0x28
	opI64Load     = 0x29
	opF64Load     = 0x2b
	opI32Load8U   = 0x2d
	opI32Store    = 0x36
	opMemorySize  = 0x3f
	opMemoryGrow  = 0x40
	opI32Const    = 0x41
	opI64Const    = 0x42
	opF64Const    = 0x44
	opI32Eqz      = 0x45
	opI32Eq       = 0x46
	opI32Ne       = 0x47
	opI32LtU      = 0x49
	opI32GtU      = 0x4b
	opI32LeU      = 0x4d
	opI32GeU      = 0x4f
	opI64Eqz      = 0x50
	opI64Eq       = 0x51
	opI64Ne       = 0x52
	opI64LtS      = 0x53
	opI64LtU      = 0x54
	opI64GtS      = 0x55
	opI64GtU      = 0x56
	opI64LeS      = 0x57
	opI64GeS      = 0x59
	opF64Eq       = 0x61
	opF64Ne       = 0x62
	opF64Lt       = 0x63
	opF64Gt       = 0x64
	opF64Le       = 0x65
	opF64Ge       = 0x66
	opI32Add      = 0x6a
	opI32Sub      = 0x6b
	opI32Mul      = 0x6c
	opI32And      = 0x71
	opI32Or       = 0x72
	opI32ShrU     = 0x76
	opI64Add      = 0x7c
	opI64Sub      = 0x7d
	opI64Mul      = 0x7e
	opI64Or       = 0x84
	opI64Shl      = 0x86
	opF64Mul      = 0xa2
	opF64Div      = 0xa3
	opI64ExtendU  = 0xad
	opF64FromI64S = 0xb9
	opF64FromI64U = 0xba
	opF64Neg      = 0x9a
	opI64ShrU     = 0x88
	opI64RemU     = 0x82
	opI64DivU     = 0x80
	opI64LeU      = 0x58
	opI32GtS      = 0x4a
	opI32LtS      = 0x48
	opI32GeS      = 0x4e
	opI32WrapI64  = 0xa7
	opI64Store    = 0x37
	opF64Store    = 0x39

	opF64ReinterpretI64 = 0xbf
)

func uleb(v uint64) []byte { return leb128.AppendUint(nil, v) }
func sleb(v int64) []byte  { return leb128.AppendInt(nil, v) }

func wVec(items [][]byte) []byte {
	out := uleb(uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func wName(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func wSection(id byte, content []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(content)))...), content...)
}

// code is a function body under construction.
type code struct{ b []byte }

func (c *code) op(ops ...byte) *code { c.b = append(c.b, ops...); return c }
func (c *code) i32(v int64) *code {
	c.b = append(append(c.b, opI32Const), sleb(int64(int32(v)))...)
	return c
}
func (c *code) i64(v int64) *code { c.b = append(append(c.b, opI64Const), sleb(v)...); return c }
func (c *code) f64(v float64) *code {
	c.b = append(c.b, opF64Const)
	bits := math.Float64bits(v)
	for i := 0; i < 8; i++ {
		c.b = append(c.b, byte(bits>>(8*i)))
	}
	return c
}
func (c *code) get(l uint32) *code {
	c.b = append(append(c.b, opLocalGet), uleb(uint64(l))...)
	return c
}
func (c *code) set(l uint32) *code {
	c.b = append(append(c.b, opLocalSet), uleb(uint64(l))...)
	return c
}
func (c *code) tee(l uint32) *code {
	c.b = append(append(c.b, opLocalTee), uleb(uint64(l))...)
	return c
}
func (c *code) gget(g uint32) *code {
	c.b = append(append(c.b, opGlobalGet), uleb(uint64(g))...)
	return c
}
func (c *code) gset(g uint32) *code {
	c.b = append(append(c.b, opGlobalSet), uleb(uint64(g))...)
	return c
}
func (c *code) call(f uint32) *code { c.b = append(append(c.b, opCall), uleb(uint64(f))...); return c }
func (c *code) br(d uint32) *code   { c.b = append(append(c.b, opBr), uleb(uint64(d))...); return c }
func (c *code) brIf(d uint32) *code { c.b = append(append(c.b, opBrIf), uleb(uint64(d))...); return c }

// mem emits a load or store with alignment hint 0 and a constant offset.
func (c *code) mem(op byte, off uint32) *code {
	c.b = append(append(c.b, op, 0), uleb(uint64(off))...)
	return c
}

// wFunc is one defined function.
type wFunc struct {
	params, results []byte
	locals          []byte // one entry per extra local
	body            code
	export          string
}

func funcType(params, results []byte) []byte {
	b := append([]byte{0x60}, uleb(uint64(len(params)))...)
	b = append(b, params...)
	b = append(b, uleb(uint64(len(results)))...)
	return append(b, results...)
}

// hostSigs are the (params, results) of the betrace host functions
// (api/abi-v1.md §2).
var hostSigs = map[string][2][]byte{
	abiv1.HostRegexMatch:   {{wI32, wI32, wI32, wI64}, {wI32}},
	abiv1.HostTextContains: {{wI32, wI32, wI32, wI64}, {wI32}},
	abiv1.HostParseNumber:  {{wI32, wI32}, {wI32, wI64}},
}

// wModule is a module importing only betrace host functions, with one
// exported memory, mutable globals, one active data segment and custom
// sections.
type wModule struct {
	imports  []string // betrace host functions, function indexes 0..n-1
	funcs    []*wFunc
	globals  []byte // value types of mutable globals, zero-initialised
	memPages uint32
	data     []byte // placed at offset 0
	custom   [][2]string
}

func (m *wModule) bytes() []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	var types, imports, funcs, exports, codes, globals [][]byte
	typeIdx := map[string]int{}
	typeOf := func(params, results []byte) []byte {
		ft := funcType(params, results)
		ti, ok := typeIdx[string(ft)]
		if !ok {
			ti = len(types)
			typeIdx[string(ft)] = ti
			types = append(types, ft)
		}
		return uleb(uint64(ti))
	}
	for _, name := range m.imports {
		sig := hostSigs[name]
		im := append(wName(abiv1.HostModule), wName(name)...)
		imports = append(imports, append(append(im, 0x00), typeOf(sig[0], sig[1])...))
	}
	for i, f := range m.funcs {
		funcs = append(funcs, typeOf(f.params, f.results))
		var locals [][]byte
		for _, t := range f.locals {
			locals = append(locals, []byte{1, t})
		}
		body := append(wVec(locals), f.body.b...)
		body = append(body, opEnd)
		codes = append(codes, append(uleb(uint64(len(body))), body...))
		if f.export != "" {
			exports = append(exports, append(wName(f.export), append([]byte{0x00}, uleb(uint64(len(m.imports)+i))...)...))
		}
	}
	for _, t := range m.globals {
		g := []byte{t, 1}
		switch t {
		case wI32:
			g = append(g, opI32Const, 0)
		case wI64:
			g = append(g, opI64Const, 0)
		case wF64:
			g = append(g, opF64Const, 0, 0, 0, 0, 0, 0, 0, 0)
		}
		globals = append(globals, append(g, opEnd))
	}
	exports = append(exports, append(wName("memory"), 0x02, 0x00))
	out = append(out, wSection(1, wVec(types))...)
	if len(imports) > 0 {
		out = append(out, wSection(2, wVec(imports))...)
	}
	out = append(out, wSection(3, wVec(funcs))...)
	out = append(out, wSection(5, wVec([][]byte{append([]byte{0x00}, uleb(uint64(m.memPages))...)}))...)
	if len(globals) > 0 {
		out = append(out, wSection(6, wVec(globals))...)
	}
	out = append(out, wSection(7, wVec(exports))...)
	out = append(out, wSection(10, wVec(codes))...)
	seg := append([]byte{0x00, opI32Const, 0, opEnd}, uleb(uint64(len(m.data)))...)
	seg = append(seg, m.data...)
	out = append(out, wSection(11, wVec([][]byte{seg}))...)
	for _, cs := range m.custom {
		out = append(out, wSection(0, append(wName(cs[0]), cs[1]...))...)
	}
	return out
}
