package meter

// A byte-level assembler for the test modules: just enough of the binary
// format to write small functions by hand, with no external tools.

import "fmt"

// Value types and block types.
const (
	tI32      = 0x7f
	tI64      = 0x7e
	tF32      = 0x7d
	tF64      = 0x7c
	tFuncref  = 0x70
	tExtern   = 0x6f
	blockVoid = 0x40
)

// Opcodes used by the tests.
const (
	oUnreachable  = 0x00
	oNop          = 0x01
	oBlock        = 0x02
	oLoop         = 0x03
	oIf           = 0x04
	oElse         = 0x05
	oEnd          = 0x0b
	oBr           = 0x0c
	oBrIf         = 0x0d
	oBrTable      = 0x0e
	oReturn       = 0x0f
	oCall         = 0x10
	oCallIndirect = 0x11
	oDrop         = 0x1a
	oSelect       = 0x1b
	oSelectT      = 0x1c
	oLocalGet     = 0x20
	oLocalSet     = 0x21
	oLocalTee     = 0x22
	oGlobalGet    = 0x23
	oGlobalSet    = 0x24
	oI32Load      = 0x28
	oI64Load      = 0x29
	oI32Store     = 0x36
	oI64Store     = 0x37
	oI32Load8U    = 0x2d
	oMemorySize   = 0x3f
	oMemoryGrow   = 0x40
	oI32Const     = 0x41
	oI64Const     = 0x42
	oF64Const     = 0x44
	oI32Eqz       = 0x45
	oI32Eq        = 0x46
	oI32LtS       = 0x48
	oI32GtS       = 0x4a
	oI32LeS       = 0x4c
	oI64Eqz       = 0x50
	oI32Add       = 0x6a
	oI32Sub       = 0x6b
	oI32Mul       = 0x6c
	oI32RemU      = 0x70
	oI32And       = 0x71
	oI64Add       = 0x7c
	oI64Sub       = 0x7d
	oI64Mul       = 0x7e
	oI64ExtendU   = 0xad
	oI64ExtendS   = 0xac
	oI32Extend8S  = 0xc0
	oF64ConvertI  = 0xb7
	oI32TruncSatF = 0xfc // prefix; sub-op 2 is i32.trunc_sat_f64_s
	oRefNull      = 0xd0
	oRefIsNull    = 0xd1
	oRefFunc      = 0xd2
	oTableGet     = 0x25
	oTableSet     = 0x26
	oPrefixFC     = 0xfc
)

// asm concatenates instruction pieces: ints and bytes are single bytes,
// byte slices are copied.
func asm(parts ...any) []byte {
	var out []byte
	for _, p := range parts {
		switch v := p.(type) {
		case int:
			if v < 0 || v > 255 {
				panic(fmt.Sprintf("asm: %d is not a byte", v))
			}
			out = append(out, byte(v))
		case byte:
			out = append(out, v)
		case rune:
			out = append(out, byte(v))
		case []byte:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("asm: unsupported part %T", p))
		}
	}
	return out
}

func leb(v uint32) []byte   { return appendU32(nil, v) }
func sleb64(v int64) []byte { return appendS64(nil, v) }
func i32c(v int32) []byte   { return asm(oI32Const, sleb64(int64(v))) }
func i64c(v int64) []byte   { return asm(oI64Const, sleb64(v)) }
func lget(i uint32) []byte  { return asm(oLocalGet, leb(i)) }
func lset(i uint32) []byte  { return asm(oLocalSet, leb(i)) }
func ltee(i uint32) []byte  { return asm(oLocalTee, leb(i)) }
func gget(i uint32) []byte  { return asm(oGlobalGet, leb(i)) }
func gset(i uint32) []byte  { return asm(oGlobalSet, leb(i)) }
func call(f uint32) []byte  { return asm(oCall, leb(f)) }
func br(l uint32) []byte    { return asm(oBr, leb(l)) }
func brIf(l uint32) []byte  { return asm(oBrIf, leb(l)) }
func fc(sub uint32) []byte  { return asm(oPrefixFC, leb(sub)) }
func memarg(align, off uint32) []byte {
	return asm(leb(align), leb(off))
}

func vec(items ...[]byte) []byte {
	out := leb(uint32(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func name(s string) []byte { return append(leb(uint32(len(s))), s...) }

func sectionBytes(id byte, payload []byte) []byte {
	return append(append([]byte{id}, leb(uint32(len(payload)))...), payload...)
}

func funcType(params, results []byte) []byte {
	return asm(0x60, leb(uint32(len(params))), params, leb(uint32(len(results))), results)
}

// locals encodes local groups as (count, type) pairs.
func locals(groups ...[2]uint32) []byte {
	out := leb(uint32(len(groups)))
	for _, g := range groups {
		out = append(out, leb(g[0])...)
		out = append(out, byte(g[1]))
	}
	return out
}

type testFunc struct {
	typ    uint32
	locals []byte // encoded local groups; nil means none
	body   []byte // instructions including the final end
}

// testModule lists sections' entries; encode lays them out in order.
// Custom sections go where custom says: after the section with that id
// (0 meaning right after the header).
type testModule struct {
	types     [][]byte
	imports   [][]byte
	funcs     []testFunc
	tables    [][]byte
	memory    []byte // one memory's limits, or nil
	globals   [][]byte
	exports   [][]byte
	start     *uint32
	elems     [][]byte
	dataCount bool
	data      [][]byte
	customs   []customSection
}

type customSection struct {
	after   byte
	payload []byte // name and content
}

func (m testModule) encode() []byte {
	out := append([]byte{}, wasmHeader...)
	custom := func(after byte) {
		for _, c := range m.customs {
			if c.after == after {
				out = append(out, sectionBytes(secCustom, c.payload)...)
			}
		}
	}
	custom(0)
	add := func(id byte, payload []byte) {
		out = append(out, sectionBytes(id, payload)...)
		custom(id)
	}
	if m.types != nil {
		add(secType, vec(m.types...))
	}
	if m.imports != nil {
		add(secImport, vec(m.imports...))
	}
	if m.funcs != nil {
		var idx [][]byte
		for _, f := range m.funcs {
			idx = append(idx, leb(f.typ))
		}
		add(secFunction, vec(idx...))
	}
	if m.tables != nil {
		add(secTable, vec(m.tables...))
	}
	if m.memory != nil {
		add(secMemory, vec(m.memory))
	}
	if m.globals != nil {
		add(secGlobal, vec(m.globals...))
	}
	if m.exports != nil {
		add(secExport, vec(m.exports...))
	}
	if m.start != nil {
		add(secStart, leb(*m.start))
	}
	if m.elems != nil {
		add(secElement, vec(m.elems...))
	}
	if m.dataCount {
		add(secDataCount, leb(uint32(len(m.data))))
	}
	if m.funcs != nil {
		var bodies [][]byte
		for _, f := range m.funcs {
			l := f.locals
			if l == nil {
				l = locals()
			}
			b := append(append([]byte{}, l...), f.body...)
			bodies = append(bodies, append(leb(uint32(len(b))), b...))
		}
		add(secCode, vec(bodies...))
	}
	if m.data != nil {
		add(secData, vec(m.data...))
	}
	return out
}

func exportFunc(n string, idx uint32) []byte   { return asm(name(n), externFunc, leb(idx)) }
func exportMemory(n string, idx uint32) []byte { return asm(name(n), externMemory, leb(idx)) }
func exportGlobal(n string, idx uint32) []byte { return asm(name(n), externGlobal, leb(idx)) }
func importFunc(mod, n string, typ uint32) []byte {
	return asm(name(mod), name(n), externFunc, leb(typ))
}
func importGlobal(mod, n string, vt byte, mutable bool) []byte {
	mut := 0
	if mutable {
		mut = 1
	}
	return asm(name(mod), name(n), externGlobal, vt, mut)
}

// limits encodes memory or table limits; max < 0 means none.
func limits(min uint32, max int64) []byte {
	if max < 0 {
		return asm(0x00, leb(min))
	}
	return asm(0x01, leb(min), leb(uint32(max)))
}
