package meter

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/betracehq/betrace/api/abiv1"
)

// Section ids of the binary format.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// sectionRank orders the non-custom sections as the spec requires; the data
// count section sits between element and code although its id is larger.
var sectionRank = [...]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5,
	secGlobal: 6, secExport: 7, secStart: 8, secElement: 9,
	secDataCount: 10, secCode: 11, secData: 12,
}

const (
	externFunc   = 0x00
	externTable  = 0x01
	externMemory = 0x02
	externGlobal = 0x03
	externTag    = 0x04
)

var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

type section struct {
	id   byte
	raw  []byte // id, size and payload exactly as in the input
	body []byte // payload
	off  int    // module offset of the payload
}

// moduleInfo is what the pass needs to know about its input; everything
// else is copied through untouched.
type moduleInfo struct {
	sections      []section
	paramCounts   []uint32 // per type index
	funcTypes     []uint32 // per defined function
	importedFuncs uint32
	globals       uint32 // imported plus defined: the index the fuel global gets
	global        *section
	export        *section
	code          *section
	data          *section
	dataCount     *section
	// memMin is the initial size in bytes of the module's own memory;
	// memKnown is false when the memory is imported or absent.
	memMin   uint64
	memKnown bool
	// newData replaces the data section (and its count the data count
	// section) when mergeData could lay it out again.
	newData      []byte
	newDataCount uint32
}

func parseModule(b []byte) (*moduleInfo, error) {
	if len(b) < len(wasmHeader) || !bytes.Equal(b[:4], wasmHeader[:4]) {
		return nil, malformed("header", 0, "bad magic number")
	}
	if !bytes.Equal(b[4:8], wasmHeader[4:8]) {
		return nil, malformed("header", 4, "unsupported binary version")
	}
	m := &moduleInfo{}
	r := &reader{buf: b, pos: 8}
	lastRank := 0
	for !r.done() {
		start := r.pos
		id := r.byte()
		size := r.u32()
		bodyOff := r.pos
		body := r.bytes(size)
		if r.failed() {
			return nil, malformed("section", r.failOff, r.failMsg)
		}
		s := section{id: id, raw: b[start:r.pos], body: body, off: bodyOff}
		switch {
		case id == secTag:
			return nil, &UnsupportedError{Func: -1, Offset: start, Instruction: "tag section (exception handling)"}
		case id >= byte(len(sectionRank)):
			return nil, malformed("section", start, "unknown section id "+strconv.Itoa(int(id)))
		case id != secCustom:
			if sectionRank[id] <= lastRank {
				return nil, malformed("section", start, "section "+strconv.Itoa(int(id))+" out of order or repeated")
			}
			lastRank = sectionRank[id]
		}
		m.sections = append(m.sections, s)
	}
	var definedFuncs, codeCount uint32
	for i := range m.sections {
		s := &m.sections[i]
		if err := checkCounts(s); err != nil {
			return nil, err
		}
		var err error
		switch s.id {
		case secType:
			err = m.parseTypes(s)
		case secImport:
			err = m.parseImports(s)
		case secFunction:
			err = m.parseFunctions(s)
			definedFuncs = uint32(len(m.funcTypes))
		case secGlobal:
			m.global = s
			sr := &reader{buf: s.body, base: s.off}
			n := sr.u32()
			if sr.failed() {
				return nil, malformed("global section", sr.failOff, sr.failMsg)
			}
			m.globals += n
			if m.globals < n {
				return nil, malformed("global section", s.off, "too many globals")
			}
		case secExport:
			m.export = s
			err = checkExports(s)
		case secMemory:
			sr := &reader{buf: s.body, base: s.off}
			if sr.u32() >= 1 {
				switch sr.byte() {
				case 0x00, 0x01: // min, or min and max, in pages
					if min := sr.u32(); !sr.failed() {
						m.memMin, m.memKnown = uint64(min)*65536, true
					}
				}
			}
		case secData:
			m.data = s
		case secDataCount:
			m.dataCount = s
		case secCode:
			m.code = s
			sr := &reader{buf: s.body, base: s.off}
			codeCount = sr.u32()
			if sr.failed() {
				return nil, malformed("code section", sr.failOff, sr.failMsg)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if m.globals == ^uint32(0) {
		return nil, malformed("global section", len(b), "no global index left for the fuel global")
	}
	if definedFuncs != codeCount {
		at := len(b)
		if m.code != nil {
			at = m.code.off
		}
		return nil, malformed("code section", at, fmt.Sprintf("%d function declarations but %d bodies", definedFuncs, codeCount))
	}
	return m, nil
}

func (m *moduleInfo) parseTypes(s *section) error {
	r := &reader{buf: s.body, base: s.off}
	n := r.u32()
	for i := uint32(0); i < n && !r.failed(); i++ {
		at := r.pos
		switch form := r.byte(); form {
		case 0x60:
			m.paramCounts = append(m.paramCounts, r.funcType())
		case 0x4e: // a recursive group; wazero accepts groups of plain function types
			k := r.u32()
			for j := uint32(0); j < k && !r.failed(); j++ {
				if r.byte() != 0x60 {
					r.fail(r.pos-1, "expected function type in recursive group")
					break
				}
				m.paramCounts = append(m.paramCounts, r.funcType())
			}
		default:
			r.fail(at, "unsupported type form "+hexByte(form))
		}
	}
	if !r.failed() && !r.done() {
		r.fail(r.pos, "trailing bytes")
	}
	if r.failed() {
		return malformed("type section", r.failOff, r.failMsg)
	}
	return nil
}

// funcType reads params and results after the 0x60 and returns the number of
// params, which is where a function's own locals start.
func (r *reader) funcType() uint32 {
	params := r.u32()
	for i := uint32(0); i < params && !r.failed(); i++ {
		r.valType()
	}
	results := r.u32()
	for i := uint32(0); i < results && !r.failed(); i++ {
		r.valType()
	}
	return params
}

func (m *moduleInfo) parseImports(s *section) error {
	r := &reader{buf: s.body, base: s.off}
	n := r.u32()
	for i := uint32(0); i < n && !r.failed(); i++ {
		r.name()
		r.name()
		at := r.pos
		switch kind := r.byte(); kind {
		case externFunc:
			r.u32()
			m.importedFuncs++
		case externTable:
			if r.pos < len(r.buf) && r.buf[r.pos] == 0x40 {
				return &UnsupportedError{Func: -1, Offset: r.offset(), Instruction: "table with an initializer expression (GC)"}
			}
			r.valType()
			r.limits()
		case externMemory:
			r.limits()
			m.memKnown = false // merged data could not be checked against its size
		case externGlobal:
			r.valType()
			r.byte()
			m.globals++
		case externTag:
			return &UnsupportedError{Func: -1, Offset: s.off + at, Instruction: "tag import (exception handling)"}
		default:
			if !r.failed() {
				r.fail(at, "invalid import kind "+hexByte(kind))
			}
		}
	}
	if !r.failed() && !r.done() {
		r.fail(r.pos, "trailing bytes")
	}
	if r.failed() {
		return malformed("import section", r.failOff, r.failMsg)
	}
	return nil
}

func (m *moduleInfo) parseFunctions(s *section) error {
	r := &reader{buf: s.body, base: s.off}
	n := r.u32()
	if !r.failed() && n > MaxFunctions {
		return malformed("function section", s.off,
			fmt.Sprintf("declares %d functions, more than the %d allowed (meter.MaxFunctions)", n, MaxFunctions))
	}
	for i := uint32(0); i < n && !r.failed(); i++ {
		at := r.pos
		t := r.u32()
		if !r.failed() && t >= uint32(len(m.paramCounts)) {
			r.fail(at, "function type index "+strconv.FormatUint(uint64(t), 10)+" out of range")
		}
		m.funcTypes = append(m.funcTypes, t)
	}
	if !r.failed() && !r.done() {
		r.fail(r.pos, "trailing bytes")
	}
	if r.failed() {
		return malformed("function section", r.failOff, r.failMsg)
	}
	return nil
}

// checkExports refuses a module that already exports the fuel global name
// (whatever its kind): the host would otherwise read a value the guest owns.
func checkExports(s *section) error {
	r := &reader{buf: s.body, base: s.off}
	n := r.u32()
	for i := uint32(0); i < n && !r.failed(); i++ {
		at := r.offset()
		name := r.name()
		r.byte()
		r.u32()
		if !r.failed() && string(name) == abiv1.ExportFuel {
			return fmt.Errorf("%w: export %q at offset %#x", ErrAlreadyMetered, abiv1.ExportFuel, at)
		}
	}
	if !r.failed() && !r.done() {
		r.fail(r.pos, "trailing bytes")
	}
	if r.failed() {
		return malformed("export section", r.failOff, r.failMsg)
	}
	return nil
}

// assemble writes the output: sections in input order, with the global,
// export and code sections replaced and the first two created when missing
// at the position the section order demands.
func (m *moduleInfo) assemble(in []byte, code []byte) []byte {
	fuelIndex := m.globals
	// The fuel global: mutable i64 initialised to 0; the host sets the budget.
	globalEntry := []byte{0x7e, 0x01, 0x42, 0x00, 0x0b}
	exportEntry := appendU32(nil, uint32(len(abiv1.ExportFuel)))
	exportEntry = append(exportEntry, abiv1.ExportFuel...)
	exportEntry = append(exportEntry, externGlobal)
	exportEntry = appendU32(exportEntry, fuelIndex)

	out := make([]byte, 0, len(in)+len(code)-sectionLen(m.code)+64)
	out = append(out, wasmHeader...)

	emitAppended := func(id byte, s *section, entry []byte) {
		var payload []byte
		if s == nil {
			payload = append(appendU32(nil, 1), entry...)
		} else {
			r := &reader{buf: s.body}
			n := r.u32() // already validated by parseModule
			payload = appendU32(make([]byte, 0, len(s.body)+len(entry)+5), n+1)
			payload = append(payload, s.body[r.pos:]...)
			payload = append(payload, entry...)
		}
		out = append(out, id)
		out = appendU32(out, uint32(len(payload)))
		out = append(out, payload...)
	}

	placedGlobal, placedExport := m.global != nil, m.export != nil
	for i := range m.sections {
		s := &m.sections[i]
		if s.id != secCustom {
			rank := sectionRank[s.id]
			if !placedGlobal && rank > sectionRank[secGlobal] {
				emitAppended(secGlobal, nil, globalEntry)
				placedGlobal = true
			}
			if !placedExport && rank > sectionRank[secExport] {
				emitAppended(secExport, nil, exportEntry)
				placedExport = true
			}
		}
		switch {
		case s == m.global:
			emitAppended(secGlobal, s, globalEntry)
		case s == m.export:
			emitAppended(secExport, s, exportEntry)
		case s == m.code:
			out = append(out, secCode)
			out = appendU32(out, uint32(len(code)))
			out = append(out, code...)
		case s == m.data && m.newData != nil:
			out = append(out, secData)
			out = appendU32(out, uint32(len(m.newData)))
			out = append(out, m.newData...)
		case s == m.dataCount && m.newData != nil:
			count := appendU32(nil, m.newDataCount)
			out = append(out, secDataCount)
			out = appendU32(out, uint32(len(count)))
			out = append(out, count...)
		default:
			out = append(out, s.raw...)
		}
	}
	if !placedGlobal {
		emitAppended(secGlobal, nil, globalEntry)
	}
	if !placedExport {
		emitAppended(secExport, nil, exportEntry)
	}
	return out
}

func sectionLen(s *section) int {
	if s == nil {
		return 0
	}
	return len(s.raw)
}
