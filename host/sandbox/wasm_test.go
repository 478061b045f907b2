package sandbox

// A tiny WebAssembly binary builder, enough to make the hand-built modules
// admission tests need (a wrong ABI version, a missing export, a forbidden
// import) and a trivial rule whose cost is pure host overhead.

import "github.com/betracehq/betrace/host/internal/leb128"

const (
	i32 = 0x7f
	i64 = 0x7e
)

type wasmFunc struct {
	params, results []byte
	locals          []byte // one entry per extra local
	body            []byte // instructions, without the final end
	export          string
}

type wasmImport struct {
	module, name    string
	params, results []byte
}

type wasmModule struct {
	imports   []wasmImport
	funcs     []wasmFunc
	memPages  uint32 // 0: no memory
	tableMin  uint32 // 0: no table
	exportMem bool
}

func uleb(v uint64) []byte { return leb128.AppendUint(nil, v) }
func sleb(v int64) []byte  { return leb128.AppendInt(nil, v) }

func vec(items ...[]byte) []byte {
	out := uleb(uint64(len(items)))
	for _, it := range items {
		out = append(out, it...)
	}
	return out
}

func name(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func section(id byte, content []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(content)))...), content...)
}

func functype(params, results []byte) []byte {
	b := append([]byte{0x60}, uleb(uint64(len(params)))...)
	b = append(b, params...)
	b = append(b, uleb(uint64(len(results)))...)
	return append(b, results...)
}

func (m wasmModule) bytes() []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	var types, imports, funcs, exports, codes [][]byte
	for _, im := range m.imports {
		imports = append(imports, append(append(name(im.module), name(im.name)...), append([]byte{0x00}, uleb(uint64(len(types)))...)...))
		types = append(types, functype(im.params, im.results))
	}
	for i, f := range m.funcs {
		funcs = append(funcs, uleb(uint64(len(types))))
		types = append(types, functype(f.params, f.results))
		body := uleb(uint64(len(f.locals)))
		for _, l := range f.locals {
			body = append(body, 1, l)
		}
		body = append(body, f.body...)
		body = append(body, 0x0b)
		codes = append(codes, append(uleb(uint64(len(body))), body...))
		if f.export != "" {
			exports = append(exports, append(name(f.export), append([]byte{0x00}, uleb(uint64(len(m.imports)+i))...)...))
		}
	}
	if m.exportMem {
		exports = append(exports, append(name("memory"), 0x02, 0x00))
	}
	out = append(out, section(1, vec(types...))...)
	if len(imports) > 0 {
		out = append(out, section(2, vec(imports...))...)
	}
	out = append(out, section(3, vec(funcs...))...)
	if m.tableMin > 0 {
		out = append(out, section(4, vec(append([]byte{0x70, 0x00}, uleb(uint64(m.tableMin))...)))...)
	}
	if m.memPages > 0 {
		out = append(out, section(5, vec(append([]byte{0x00}, uleb(uint64(m.memPages))...)))...)
	}
	out = append(out, section(7, vec(exports...))...)
	return append(out, section(10, vec(codes...))...)
}

// abiModule is the smallest ABI v1 rule: version v, a fixed input buffer at
// 1024, no violations ever.
func abiModule(v int64) wasmModule {
	return wasmModule{
		memPages:  16,
		exportMem: true,
		funcs: []wasmFunc{
			{results: []byte{i32}, body: append([]byte{0x41}, sleb(v)...), export: "betrace_abi_version"},
			{params: []byte{i32}, results: []byte{i32}, body: append([]byte{0x41}, sleb(1024)...), export: "betrace_input"},
			{params: []byte{i32}, results: []byte{i64}, body: []byte{0x42, 0x00}, export: "betrace_evaluate"},
		},
	}
}
