package meter

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// withBody wraps one function body in a module that imports a function
// first, so the reported index (1) differs from the code section index (0).
func withBody(body []byte) []byte {
	return testModule{
		types:   [][]byte{funcType(nil, nil)},
		imports: [][]byte{importFunc("env", "f", 0)},
		funcs:   []testFunc{{typ: 0, body: body}},
		memory:  limits(1, -1),
	}.encode()
}

func TestUnsupportedRefused(t *testing.T) {
	cases := []struct {
		label string
		body  []byte // the refused instruction is at the first 0xee marker's position
		want  string // in Instruction
	}{
		{"simd v128.const", asm(0xfd, leb(0x0c), make([]byte, 16), oDrop, oEnd), "0xfd 0x0c (SIMD)"},
		{"simd i32x4.add", asm(i32c(0), 0xfd, leb(0xae), oEnd), "0xfd 0xae (SIMD)"},
		{"atomic notify", asm(i32c(0), i32c(0), 0xfe, leb(0x00), memarg(2, 0), oDrop, oEnd), "0xfe 0x00 (threads)"},
		{"atomic fence", asm(0xfe, leb(0x03), 0x00, oEnd), "0xfe 0x03 (threads)"},
		{"try", asm(0x06, blockVoid, oEnd, oEnd), "try, exception handling"},
		{"catch", asm(0x07, leb(0), oEnd), "catch, exception handling"},
		{"throw", asm(0x08, leb(0), oEnd), "throw, exception handling"},
		{"rethrow", asm(0x09, leb(0), oEnd), "rethrow, exception handling"},
		{"throw_ref", asm(0x0a, oEnd), "throw_ref, exception handling"},
		{"delegate", asm(0x18, leb(0), oEnd), "delegate, exception handling"},
		{"catch_all", asm(0x19, oEnd), "catch_all, exception handling"},
		{"try_table", asm(0x1f, blockVoid, leb(0), oEnd, oEnd), "try_table, exception handling"},
		{"return_call", asm(0x12, leb(0), oEnd), "return_call, tail calls"},
		{"return_call_indirect", asm(i32c(0), 0x13, leb(0), leb(0), oEnd), "return_call_indirect, tail calls"},
		{"call_ref", asm(0x14, leb(0), oEnd), "call_ref, typed function references"},
		{"return_call_ref", asm(0x15, leb(0), oEnd), "return_call_ref, tail calls"},
		{"ref.eq", asm(0xd3, oEnd), "ref.eq, GC"},
		{"ref.as_non_null", asm(0xd4, oEnd), "ref.as_non_null"},
		{"br_on_null", asm(0xd5, leb(0), oEnd), "br_on_null"},
		{"br_on_non_null", asm(0xd6, leb(0), oEnd), "br_on_non_null"},
		{"gc struct.new", asm(0xfb, leb(0), leb(0), oEnd), "0xfb 0x00 (GC)"},
		{"unknown 0x27", asm(oNop, 0x27, oEnd), "0x27 (unknown)"},
		{"unknown 0xff", asm(oBlock, blockVoid, 0xff, oEnd, oEnd), "0xff (unknown)"},
		{"unknown 0xfc 18", asm(fc(18), oEnd), "0xfc 0x12 (unknown)"},
		{"simd truncated sub-opcode", asm(0xfd), "0xfd (SIMD)"},
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			bin := withBody(c.body)
			_, err := Instrument(bin, Config{})
			var ue *UnsupportedError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want *UnsupportedError", err)
			}
			if ue.Func != 1 {
				t.Errorf("Func = %d, want 1", ue.Func)
			}
			if !strings.Contains(ue.Instruction, c.want) {
				t.Errorf("Instruction = %q, want it to contain %q", ue.Instruction, c.want)
			}
			// The offset points at the refused opcode in the module.
			bodyAt := bytes.Index(bin, c.body)
			if ue.Offset < bodyAt || ue.Offset >= bodyAt+len(c.body) {
				t.Fatalf("Offset %#x outside the body at %#x..%#x", ue.Offset, bodyAt, bodyAt+len(c.body))
			}
			if op := bin[ue.Offset]; !strings.Contains(ue.Instruction, hexByte(op)) {
				t.Errorf("byte at Offset is %s, not the refused opcode (%s)", hexByte(op), ue.Instruction)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "meter: function[1] at offset 0x") || !strings.Contains(msg, "unsupported instruction "+ue.Instruction) {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func TestMalformedRefused(t *testing.T) {
	good := sumLoop()
	truncate := func(n int) []byte { return good[:len(good)-n] }
	cases := []struct {
		label string
		bin   []byte
		want  string
	}{
		{"empty", nil, "bad magic"},
		{"bad magic", asm(0x00, 'a', 's', 'n', 1, 0, 0, 0), "bad magic"},
		{"bad version", asm(0x00, 'a', 's', 'm', 2, 0, 0, 0), "version"},
		{"truncated section", truncate(1), "past the end"},
		{"truncated section size", asm(wasmHeader, secType, 0x80), "truncated"},
		{"section size overflows", asm(wasmHeader, secType, 0xff, 0xff, 0xff, 0xff, 0x7f), "overflows"},
		{"unknown section", asm(wasmHeader, sectionBytes(14, nil)), "unknown section id 14"},
		{"sections out of order", asm(wasmHeader, sectionBytes(secFunction, vec()), sectionBytes(secType, vec())), "out of order"},
		{"repeated section", asm(wasmHeader, sectionBytes(secType, vec()), sectionBytes(secType, vec())), "out of order or repeated"},
		{"bad type form", asm(wasmHeader, sectionBytes(secType, vec(asm(0x61, 0, 0)))), "type form"},
		{"bad value type", asm(wasmHeader, sectionBytes(secType, vec(asm(0x60, 1, 0x55, 0)))), "invalid value type"},
		{"type index out of range", asm(wasmHeader, sectionBytes(secType, vec()), sectionBytes(secFunction, vec(leb(0)))), "out of range"},
		{"bodies missing", asm(wasmHeader, sectionBytes(secType, vec(funcType(nil, nil))), sectionBytes(secFunction, vec(leb(0)))), "1 function declarations but 0 bodies"},
		{"import kind", asm(wasmHeader, sectionBytes(secImport, vec(asm(name("a"), name("b"), 0x07)))), "import kind"},
		{"export trailing", asm(wasmHeader, sectionBytes(secExport, asm(vec(), 0x00))), "trailing"},
		{"missing end", withBody(asm(oNop)), "before its final end"},
		{"bytes after end", withBody(asm(oEnd, oNop)), "after the function's final end"},
		{"unbalanced end", withBody(asm(oBlock, blockVoid, oEnd)), "before its final end"},
		{"else without if", withBody(asm(oBlock, blockVoid, oElse, oEnd, oEnd)), "else without if"},
		{"branch too deep", withBody(asm(oBlock, blockVoid, br(2), oEnd, oEnd)), "branch depth 2"},
		{"br_table too deep", withBody(asm(i32c(0), oBrTable, leb(1), leb(0), leb(5), oEnd)), "branch depth 5"},
		{"br_table huge count", withBody(asm(i32c(0), oBrTable, leb(0xffffffff), leb(0), leb(0))), "truncated"},
		{"truncated i64.const", withBody(asm(oI64Const, 0x80, 0x80)), "truncated"},
		{"i32.const too long", withBody(asm(oI32Const, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, oDrop, oEnd)), "overflows"},
		{"i32.const bad sign bits", withBody(asm(oI32Const, 0xff, 0xff, 0xff, 0xff, 0x4f, oDrop, oEnd)), "overflows"},
		{"truncated f64.const", withBody(asm(oF64Const, 0, 0, 0)), "past the end"},
		{"local index overflow", withBody(asm(oLocalGet, 0xff, 0xff, 0xff, 0xff, 0x1f, oDrop, oEnd)), "overflows 32 bits"},
		{"too many locals", testModule{
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{{typ: 0, locals: locals([2]uint32{0xffffffff, tI32}, [2]uint32{2, tI32}), body: asm(oEnd)}},
		}.encode(), "declares 4294967297 locals"},
		{"locals over the limit", testModule{
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{{typ: 0, locals: locals([2]uint32{MaxLocals, tI32}, [2]uint32{1, tI64}), body: asm(oEnd)}},
		}.encode(), "more than the 50000 allowed (meter.MaxLocals)"},
		// Counts the runtime would allocate for before finding the input short.
		{"global count", asm(wasmHeader, sectionBytes(secGlobal, asm(0xff, 0xff, 0xff, 0x7f, tI32, 0, i32c(0), oEnd))), "declares 268435455 entries"},
		{"table count", asm(wasmHeader, sectionBytes(secTable, asm(leb(1000), tFuncref, limits(0, -1)))), "declares 1000 entries"},
		{"data bytes", asm(wasmHeader, sectionBytes(secData, vec(asm(0x01, leb(0xffffffff), 1, 2, 3)))), "past the end"},
		{"data offset", asm(wasmHeader, sectionBytes(secData, vec(asm(0x00, oNop, oEnd, leb(0))))), "constant expression"},
		{"element vector", asm(wasmHeader, sectionBytes(secElement, vec(asm(0x01, 0x00, leb(0x7fffffff), leb(0))))), "declares 2147483647 entries"},
		{"element expressions", asm(wasmHeader, sectionBytes(secElement, vec(asm(0x05, tFuncref, leb(2), oRefNull, tFuncref, oEnd)))), "end of data"},
		{"element flags", asm(wasmHeader, sectionBytes(secElement, vec(asm(0x08)))), "element segment flags 8"},
		{"custom name length", asm(wasmHeader, sectionBytes(secCustom, asm(leb(200), 'x'))), "past the end"},
		{"function names", asm(wasmHeader, sectionBytes(secCustom, asm(name("name"), 0x01, leb(5), leb(0xffffffff), leb(0)))), "declares 4294967295 entries"},
		{"local names", asm(wasmHeader, sectionBytes(secCustom, asm(name("name"), 0x02, leb(4), leb(1), leb(0), leb(100), leb(0)))), "declares 100 entries"},
		{"name subsection size", asm(wasmHeader, sectionBytes(secCustom, asm(name("name"), 0x00, leb(50), name("m")))), "past the end"},
		{"bad local type", testModule{
			types: [][]byte{funcType(nil, nil)},
			funcs: []testFunc{{typ: 0, locals: locals([2]uint32{1, 0x40}), body: asm(oEnd)}},
		}.encode(), "invalid value type"},
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			out, err := Instrument(c.bin, Config{})
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if out != nil {
				t.Error("output returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "meter: malformed module: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("message %q, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestModuleLevelUnsupported(t *testing.T) {
	cases := []struct {
		label string
		bin   []byte
		want  string
	}{
		{"tag section", asm(wasmHeader, sectionBytes(secTag, vec())), "tag section"},
		{"tag import", asm(wasmHeader, sectionBytes(secImport, vec(asm(name("a"), name("b"), externTag, 0x00, leb(0))))), "tag import"},
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			_, err := Instrument(c.bin, Config{})
			var ue *UnsupportedError
			if !errors.As(err, &ue) || ue.Func != -1 || !strings.Contains(ue.Instruction, c.want) {
				t.Fatalf("err = %v, want a module-level *UnsupportedError about %s", err, c.want)
			}
		})
	}
}

func TestInputNotModified(t *testing.T) {
	in := kitchenSink()
	keep := append([]byte{}, in...)
	mustInstrument(t, in)
	if !bytes.Equal(in, keep) {
		t.Fatal("Instrument modified its input")
	}
}
