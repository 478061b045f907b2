package meter

import (
	"fmt"
	"strconv"
)

// Limits on the structure of one module. Instrument is the first code to
// read an uploaded rule, and the compiler that runs after it spends time
// out of proportion to the input on some shapes, so the pass refuses
// modules beyond these with an error wrapping ErrMalformed that names the
// limit. Each default is several times what the largest Go program
// measured needs: a 13 MB wasip1 build linking net/http, go/types,
// html/template, encoding/json and encoding/xml (7,442 functions, nesting
// 1,076 deep, 4,597 blocks and 62 KB in its largest functions, 20
// locals); the example rules, 2 MB each, stay under 1,300 functions,
// nesting 296, 1,226 blocks, 13 KB bodies and 17 locals.
//
// No limit bounds the whole module's compile time: a module can be made of
// many functions each just under the limits. The caller's deadline does
// that (see InstrumentContext); these keep each function, the unit a
// compiler cannot be interrupted in, short.
const (
	// MaxNestingDepth is how deeply block, loop and if may nest in one
	// function (default 4,096). Go nests a block per call site of a
	// function around its body, so depth follows the calls in the largest
	// function: 296 in the example rules, 1,076 in the 13 MB program.
	// Deeper nesting costs wazero no more than MaxFunctionBlocks allows;
	// the limit keeps the control stack of every later reader small.
	MaxNestingDepth = 4096

	// MaxFunctionBlocks caps the basic blocks one function compiles to
	// (default 16,384). wazero v1.12's optimizing compiler takes time
	// proportional to the blocks times the depth of their dominator tree
	// (loop detection and its loop nesting forest walk the tree from every
	// block), quadratic in the blocks when code runs straight through
	// them: a function of 25,000 nested blocks took 2.3 s, 100,000 took
	// 56 s. At this limit the costliest shape measured, a run of 3,276
	// loops, compiles in about 2 s on one core. The count is what the
	// compiler creates, fuel checks included: one per block, br_if and
	// br_table target, three per if, five per loop (its header and exit
	// and the fuel check), three per metered bulk memory or table
	// instruction and memory.grow, six for memory.fill and table.fill
	// (which compile to loops), and three for the check at the function's
	// entry.
	MaxFunctionBlocks = 16384

	// MaxFunctionBodyBytes caps the size of one function body (default 256
	// KiB). Compilation is linear in the body but costs up to about 50 µs
	// per call_indirect, so a 1 MiB body of them took 17 s.
	MaxFunctionBodyBytes = 256 << 10

	// MaxFunctions caps the functions a module defines (default 100,000).
	// wazero spends about 7 µs on even an empty function, which a 16 MiB
	// module could otherwise declare four million times.
	MaxFunctions = 100_000

	// MaxLocals is the most locals a function may declare (default 50,000),
	// the limit the WebAssembly JavaScript API sets for browsers. Without
	// it a 20-byte body can declare 2^32 locals.
	MaxLocals = 50_000
)

// Basic blocks of the compiled code per instruction, for MaxFunctionBlocks.
const (
	blocksBlock = 1 // the join after it
	blocksBrIf  = 1 // the fall-through
	blocksIf    = 3 // then, else and join
	blocksCheck = blocksIf
	blocksLoop  = 2 + blocksCheck // header and exit, and the fuel check
	blocksFill  = 3               // memory.fill and table.fill compile to a loop
)

// MaxTableElements caps a table's initial size. Tables are allocated in the
// host when an instance is created and no memory cap covers them, so a
// module declaring 2^27 slots would cost the host a gigabyte per instance.
// Go guests use a few thousand.
const MaxTableElements = 1 << 20

// checkCounts refuses vector counts larger than the bytes that are meant to
// hold them. The runtime that compiles the metered module sizes its slices
// by the declared count before reading the entries, so a module of a few
// dozen bytes declaring 2^28 globals, or a name section claiming 2^32
// function names, would make it allocate gigabytes before finding the input
// short. Instrument is the first code to read an uploaded rule, so it
// refuses these as malformed, for the sections it otherwise copies through
// unread. The sections the pass decodes fail on their own as soon as an
// entry is missing; the limits on functions are checked in rewrite.
func checkCounts(s *section) error {
	r := &reader{buf: s.body, base: s.off}
	var what string
	switch s.id {
	case secCustom:
		what = "custom section"
		name := r.name()
		if !r.failed() && string(name) == "name" {
			checkNameSection(r)
		}
	case secTable:
		what = "table section"
		n := r.count()
		for i := uint32(0); i < n && !r.failed(); i++ {
			r.byte() // element type
			at := r.pos
			r.pos++ // limits flag: min comes first in every form
			if min := r.u32(); !r.failed() && min > MaxTableElements {
				return &UnsupportedError{Func: -1, Offset: s.off + at,
					Instruction: fmt.Sprintf("table[%d] of %d elements (a rule may have at most %d)", i, min, MaxTableElements)}
			}
			r.pos = at
			r.limits()
		}
	case secMemory, secGlobal:
		what = "section " + strconv.Itoa(int(s.id))
		r.count()
	case secElement:
		what = "element section"
		n := r.count()
		for i := uint32(0); i < n && !r.failed(); i++ {
			r.elementSegment()
		}
	case secData:
		what = "data section"
		n := r.count()
		for i := uint32(0); i < n && !r.failed(); i++ {
			r.dataSegment()
		}
	default:
		return nil
	}
	if r.failed() {
		return malformed(what, r.failOff, r.failMsg)
	}
	return nil
}

// count reads a vector length and fails if the rest of the buffer cannot
// hold that many entries of at least one byte each.
func (r *reader) count() uint32 {
	at := r.pos
	n := r.u32()
	if !r.failed() && uint64(n) > uint64(len(r.buf)-r.pos) {
		r.fail(at, fmt.Sprintf("declares %d entries in %d bytes", n, len(r.buf)-r.pos))
		return 0
	}
	return n
}

func (r *reader) dataSegment() {
	at := r.pos
	switch flags := r.u32(); flags {
	case 0:
		r.constExpr()
	case 1:
	case 2:
		r.u32()
		r.constExpr()
	default:
		if !r.failed() {
			r.fail(at, "invalid data segment flags "+strconv.FormatUint(uint64(flags), 10))
		}
	}
	r.name() // the bytes: length-prefixed, bounds-checked like a name
}

func (r *reader) elementSegment() {
	at := r.pos
	flags := r.u32()
	if r.failed() {
		return
	}
	if flags > 7 {
		r.fail(at, "invalid element segment flags "+strconv.FormatUint(uint64(flags), 10))
		return
	}
	if flags&1 == 0 { // active
		if flags&2 != 0 {
			r.u32() // table index
		}
		r.constExpr()
	}
	exprs := flags&4 != 0
	if flags&3 != 0 { // an element kind or reference type follows
		if exprs {
			r.valType()
		} else {
			r.byte()
		}
	}
	n := r.count()
	for i := uint32(0); i < n && !r.failed(); i++ {
		if exprs {
			r.constExpr()
		} else {
			r.u32()
		}
	}
}

// constExpr skips a constant expression: the instructions a global, an
// element or a data offset may use, up to their end.
func (r *reader) constExpr() {
	for !r.failed() {
		at := r.pos
		switch op := r.byte(); op {
		case opEnd:
			return
		case 0x41:
			r.sleb(32)
		case 0x42:
			r.sleb(64)
		case 0x43:
			r.bytes(4)
		case 0x44:
			r.bytes(8)
		case 0x23, 0xd2: // global.get, ref.func
			r.u32()
		case 0xd0: // ref.null
			r.sleb(33)
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		case 0xfd: // v128.const
			if sub := r.u32(); sub != 12 && !r.failed() {
				r.fail(at, "unexpected instruction in a constant expression")
			}
			r.bytes(16)
		default:
			if !r.failed() {
				r.fail(at, "unexpected instruction "+hexByte(op)+" in a constant expression")
			}
		}
	}
}

// checkNameSection bounds the counts of the name section's module, function
// and local names, which the runtime decodes even when it keeps no other
// custom section.
func checkNameSection(r *reader) {
	for !r.done() && !r.failed() {
		id := r.byte()
		size := r.u32()
		sub := &reader{base: r.offset()}
		sub.buf = r.bytes(size)
		if r.failed() {
			return
		}
		switch id {
		case 0:
			sub.name()
		case 1:
			n := sub.count()
			for i := uint32(0); i < n && !sub.failed(); i++ {
				sub.u32()
				sub.name()
			}
		case 2:
			n := sub.count()
			for i := uint32(0); i < n && !sub.failed(); i++ {
				sub.u32()
				k := sub.count()
				for j := uint32(0); j < k && !sub.failed(); j++ {
					sub.u32()
					sub.name()
				}
			}
		}
		if sub.failed() {
			r.fail(sub.failOff-r.base, sub.failMsg)
			return
		}
	}
}
