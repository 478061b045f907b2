package meter

import (
	"context"
	"fmt"
	"math"
	"math/bits"
)

// Config holds the fuel prices. A zero field means its default, so the zero
// Config and DefaultConfig() meter identically.
type Config struct {
	// InstructionCost is the fuel each instruction costs (default 1). The
	// structural markers block, loop, else and end are free: they compile to
	// nothing, and Go opens every function with a block per resume point,
	// which would otherwise make each jump cost as much as the function has
	// calls.
	InstructionCost uint32
	// BytesPerFuel is how many bytes memory.fill, memory.copy and memory.init
	// may touch per extra fuel, on top of their instruction cost (default 32:
	// a cache line's worth of work is about one simple instruction's).
	BytesPerFuel uint32
	// FuelPerPage is the extra fuel memory.grow costs per 64 KiB page asked
	// for, granted or not (default 2048, the price of filling the page at
	// the default BytesPerFuel, which is what the host does to zero it).
	FuelPerPage uint32
	// ElementsPerFuel is how many table slots table.grow, table.fill,
	// table.copy and table.init may touch per extra fuel (default 4: a slot is
	// a pointer, so four are 32 bytes, the default memory rate).
	ElementsPerFuel uint32
}

// Upper bounds that keep every charge far from int64 overflow, so the fuel
// can only fall: a function body is under 2^32 bytes, so a segment costs
// under 2^52, and an i32 page count times FuelPerPage stays under 2^56.
const (
	maxInstructionCost = 1 << 20
	maxFuelPerPage     = 1 << 24
)

// DefaultConfig returns the documented default prices.
func DefaultConfig() Config {
	return Config{InstructionCost: 1, BytesPerFuel: 32, FuelPerPage: 2048, ElementsPerFuel: 4}
}

func (c Config) resolve() (Config, error) {
	d := DefaultConfig()
	if c.InstructionCost == 0 {
		c.InstructionCost = d.InstructionCost
	}
	if c.BytesPerFuel == 0 {
		c.BytesPerFuel = d.BytesPerFuel
	}
	if c.FuelPerPage == 0 {
		c.FuelPerPage = d.FuelPerPage
	}
	if c.ElementsPerFuel == 0 {
		c.ElementsPerFuel = d.ElementsPerFuel
	}
	if c.InstructionCost > maxInstructionCost {
		return c, fmt.Errorf("meter: config: InstructionCost %d exceeds %d", c.InstructionCost, maxInstructionCost)
	}
	if c.FuelPerPage > maxFuelPerPage {
		return c, fmt.Errorf("meter: config: FuelPerPage %d exceeds %d", c.FuelPerPage, maxFuelPerPage)
	}
	return c, nil
}

// Instrument is InstrumentContext without a deadline, for modules that do
// not come from a rule author (tests, tools).
func Instrument(module []byte, cfg Config) ([]byte, error) {
	return InstrumentContext(context.Background(), module, cfg)
}

// InstrumentContext returns a metered copy of the wasm binary module, or an
// error naming why it cannot be metered: an *UnsupportedError, an error
// wrapping ErrMalformed (which includes a module beyond one of the limits in
// bounds.go) or ErrAlreadyMetered, or a config error. If ctx ends first it
// stops with an error wrapping context.Cause(ctx). The input is not
// modified.
//
// The pass takes time linear in the size of the module; its limits exist
// for the compiler that runs after it. A host admitting uploads gives ctx a
// deadline that covers compilation too.
func InstrumentContext(ctx context.Context, module []byte, cfg Config) (out []byte, err error) {
	defer func() {
		// The decoder is fuzzed to never panic; this only keeps a host that
		// meters untrusted uploads alive if a bug slips through, with an
		// error the fuzz test still flags.
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("meter: internal error: %v", p)
		}
	}()
	cfg, err = cfg.resolve()
	if err != nil {
		return nil, err
	}
	m, err := parseModule(module)
	if err != nil {
		return nil, err
	}
	var code []byte
	usesData := false
	if m.code != nil {
		code, usesData, err = m.instrumentCode(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if uint64(len(code)) > math.MaxUint32 {
			return nil, malformed("code section", m.code.off, "metered code section exceeds 4 GiB")
		}
	}
	if m.data != nil && m.memKnown && !usesData {
		if data, count, ok := mergeData(m.data.body, m.memMin); ok && uint64(len(data)) <= math.MaxUint32 {
			m.newData, m.newDataCount = data, count
		}
	}
	return m.assemble(module, code), nil
}

func (m *moduleInfo) instrumentCode(ctx context.Context, cfg Config) (_ []byte, usesData bool, _ error) {
	s := m.code
	r := &reader{buf: s.body, base: s.off}
	n := r.u32()
	out := make([]byte, 0, len(s.body)+len(s.body)/2+16)
	out = appendU32(out, n)
	fr := newFuncRewriter(ctx, cfg, m.globals)
	for i := uint32(0); i < n; i++ {
		fn := int(m.importedFuncs) + int(i)
		if err := ctx.Err(); err != nil {
			return nil, false, stopped(fn, context.Cause(ctx))
		}
		at := r.pos
		size := r.u32()
		bodyOff := r.pos
		if !r.failed() && size > MaxFunctionBodyBytes {
			return nil, false, malformed(fmt.Sprintf("function[%d]", fn), s.off+at,
				fmt.Sprintf("body of %d bytes, more than the %d allowed (meter.MaxFunctionBodyBytes); split the function", size, MaxFunctionBodyBytes))
		}
		body := r.bytes(size)
		if r.failed() {
			return nil, false, malformed(fmt.Sprintf("function[%d]", fn), r.failOff, r.failMsg)
		}
		if err := fr.rewrite(body, s.off+bodyOff, fn, m.paramCounts[m.funcTypes[i]]); err != nil {
			return nil, false, err
		}
		if uint64(len(fr.out)) > math.MaxUint32 {
			return nil, false, malformed(fmt.Sprintf("function[%d]", fn), s.off+bodyOff, "metered body exceeds 4 GiB")
		}
		out = appendU32(out, uint32(len(fr.out)))
		out = append(out, fr.out...)
	}
	if !r.done() {
		return nil, false, malformed("code section", r.offset(), "trailing bytes after the last function body")
	}
	return out, fr.usesData, nil
}

// Kinds of insertion into a function body.
const (
	insCharge      = iota // charge the segment's static cost
	insChargeCheck        // charge, then trap if the fuel went negative
	insMemBytes           // charge the i32 byte count on top of the stack
	insMemPages           // charge the i32 page count on top of the stack
	insTableElems         // charge the i32 element count on top of the stack
)

type insertion struct {
	pos  int   // body offset the code goes before
	seg  int32 // segment charged, for insCharge and insChargeCheck
	kind uint8
}

// Control frame kinds.
const (
	frameFunc = iota
	frameBlock
	frameLoop
	frameIf
	frameElse
)

type frame struct {
	outer    int32 // segment current when the frame opened
	kind     uint8
	targeted bool // some branch goes to this frame's end
}

// funcRewriter meters one body at a time; its slices are reused across
// bodies so a module with thousands of functions allocates a handful of
// times.
type funcRewriter struct {
	ctx     context.Context
	cfg     Config
	getFuel []byte // global.get $fuel
	setFuel []byte // global.set $fuel
	check   []byte // trap if $fuel < 0
	segs    []int64
	ins     []insertion
	frames  []frame
	out     []byte
	// usesData records memory.init or data.drop, which name data
	// segments by index, so the segments must stay as they are.
	usesData bool
	// stats is the largest structure seen so far, for tests and
	// benchmarks that check how close real modules come to the limits.
	stats shape
}

// shape is the size of a function's control structure, as the limits in
// bounds.go measure it.
type shape struct {
	depth  int // deepest nesting of block, loop and if
	blocks int // see MaxFunctionBlocks
}

func newFuncRewriter(ctx context.Context, cfg Config, fuel uint32) *funcRewriter {
	fr := &funcRewriter{ctx: ctx, cfg: cfg}
	fr.getFuel = appendU32([]byte{opGlobalGet}, fuel)
	fr.setFuel = appendU32([]byte{opGlobalSet}, fuel)
	fr.check = append(append([]byte{}, fr.getFuel...),
		opI64Const, 0x00, opI64LtS, opIf, blockEmpty, opUnreachable, opEnd)
	return fr
}

func (fr *funcRewriter) newSeg(pos int, kind uint8) int32 {
	id := int32(len(fr.segs))
	fr.segs = append(fr.segs, 0)
	fr.ins = append(fr.ins, insertion{pos: pos, seg: id, kind: kind})
	return id
}

// checkEvery is how many instructions of one body the pass decodes between
// looks at its context: about 100 µs of work, while a look costs a lock.
const checkEvery = 1 << 16

// stopped is the error of a pass whose context ended at function fn.
func stopped(fn int, cause error) error {
	return fmt.Errorf("meter: stopped at function[%d]: %w", fn, cause)
}

// maxFoldedArm is the most instructions an if arm may have and still be
// charged with the code before the if. Go branches by setting a local and
// jumping from a three-instruction arm, and a separate charge for so little
// work costs about as much as the work; charging it whether or not it runs
// overstates the cost by at most this much.
const maxFoldedArm = 4

// foldArm moves the cost of an if arm's current segment into the segment
// before the if, leaving its own charge empty so nothing is emitted for it,
// when that segment is short and the last one opened. Being the last one
// means no loop follows it inside the arm, so it runs at most once per run of
// the segment before the if, which may therefore pay for it.
func (fr *funcRewriter) foldArm(seg, outer int32) {
	if seg == int32(len(fr.segs)-1) && fr.segs[seg] <= maxFoldedArm*int64(fr.cfg.InstructionCost) {
		fr.segs[outer] += fr.segs[seg]
		fr.segs[seg] = 0
	}
}

// rewrite meters one function body. Fuel is charged per segment: each
// instruction belongs to one segment, whose charge is emitted ahead of it and
// which it cannot outrun, as it executes at most once per execution of the
// charge. Fuel is thus an upper bound on the instructions run, tight on the
// paths that do not leave a segment early.
//
// Segments start at the function entry and loop headers (where the fuel is
// also checked), at the start of then and else arms, and after the end of a
// block or if that some branch targets. Code after an untargeted block
// continues the current segment; code after an untargeted if, or after any
// loop, belongs to the segment that opened the construct, since it runs at
// most once per run of that segment. Short if arms are folded into the
// segment before the if for the same reason. No segment spans a loop header,
// so every iteration pays for what it runs.
func (fr *funcRewriter) rewrite(body []byte, base, fn int, params uint32) error {
	where := func() string { return fmt.Sprintf("function[%d]", fn) }
	r := &reader{buf: body, base: base}
	groups := r.u32()
	groupsEnd := r.pos
	var locals uint64
	for g := uint32(0); g < groups && !r.failed(); g++ {
		locals += uint64(r.u32())
		r.valType()
	}
	if r.failed() {
		return malformed(where(), r.failOff, r.failMsg)
	}
	if locals > MaxLocals {
		return malformed(where(), base, fmt.Sprintf("declares %d locals, more than the %d allowed (meter.MaxLocals)", locals, MaxLocals))
	}
	localsEnd := r.pos

	fr.segs, fr.ins, fr.frames = fr.segs[:0], fr.ins[:0], fr.frames[:0]
	cost := int64(fr.cfg.InstructionCost)
	cur := fr.newSeg(localsEnd, insChargeCheck)
	fr.frames = append(fr.frames, frame{kind: frameFunc, outer: -1})
	scratch := false
	blocks := 0 // see MaxFunctionBlocks

	// target marks the frame a branch of depth l goes to.
	target := func(l uint32, at int) {
		if uint64(l) >= uint64(len(fr.frames)) {
			r.fail(at, fmt.Sprintf("branch depth %d out of range", l))
			return
		}
		fr.frames[len(fr.frames)-1-int(l)].targeted = true
	}
	// open pushes a block, loop or if, refusing to nest deeper than
	// MaxNestingDepth: the frame of the function itself is not a level.
	open := func(kind uint8, outer int32, at int) {
		if len(fr.frames) > MaxNestingDepth {
			r.fail(at, fmt.Sprintf("blocks, loops and ifs nest more than %d deep, the limit for one function (meter.MaxNestingDepth); split the function", MaxNestingDepth))
			return
		}
		fr.frames = append(fr.frames, frame{kind: kind, outer: outer})
		fr.stats.depth = max(fr.stats.depth, len(fr.frames)-1)
	}
	// split counts n more basic blocks of the compiled function.
	split := func(n uint64, at int) {
		if uint64(blocks)+n > MaxFunctionBlocks {
			r.fail(at, fmt.Sprintf("control flow of more than %d basic blocks, the limit for one function (meter.MaxFunctionBlocks); split the function", MaxFunctionBlocks))
			return
		}
		blocks += int(n)
		fr.stats.blocks = max(fr.stats.blocks, blocks)
	}
	split(blocksCheck, 0)

	for ops := 1; len(fr.frames) > 0; ops++ {
		if r.done() {
			if !r.failed() {
				r.fail(r.pos, "body ends before its final end")
			}
			return malformed(where(), r.failOff, r.failMsg)
		}
		// One body can be the whole module, so the deadline is checked
		// inside it too, often enough to stop within a millisecond.
		if ops%checkEvery == 0 {
			if err := fr.ctx.Err(); err != nil {
				return stopped(fn, context.Cause(fr.ctx))
			}
		}
		start := r.pos
		op := r.byte()
		fr.segs[cur] += cost
		switch {
		case op >= 0x45 && op <= 0xc4: // numeric, including sign extension
		case op >= 0x28 && op <= 0x3e: // loads and stores: memarg
			r.u32()
			r.u32()
		case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
			r.u32()
		default:
			switch op {
			case 0x00, 0x01, 0x0f, 0x1a, 0x1b, 0xd1:
				// unreachable, nop, return, drop, select, ref.is_null
			case 0x02: // block
				fr.segs[cur] -= cost
				r.blockType()
				split(blocksBlock, start)
				open(frameBlock, cur, start)
			case 0x03: // loop
				fr.segs[cur] -= cost
				r.blockType()
				split(blocksLoop, start)
				open(frameLoop, cur, start)
				cur = fr.newSeg(r.pos, insChargeCheck)
			case 0x04: // if
				r.blockType()
				split(blocksIf, start)
				open(frameIf, cur, start)
				cur = fr.newSeg(r.pos, insCharge)
			case 0x05: // else
				fr.segs[cur] -= cost
				top := &fr.frames[len(fr.frames)-1]
				if top.kind != frameIf {
					r.fail(start, "else without if")
					break
				}
				fr.foldArm(cur, top.outer)
				top.kind = frameElse
				cur = fr.newSeg(r.pos, insCharge)
			case 0x0b: // end
				fr.segs[cur] -= cost
				top := fr.frames[len(fr.frames)-1]
				fr.frames = fr.frames[:len(fr.frames)-1]
				if top.kind == frameIf || top.kind == frameElse {
					fr.foldArm(cur, top.outer)
				}
				switch {
				case top.kind == frameFunc:
				case top.kind == frameLoop:
					cur = top.outer
				case top.targeted:
					cur = fr.newSeg(r.pos, insCharge)
				case top.kind == frameIf || top.kind == frameElse:
					cur = top.outer
				}
			case 0x0c: // br
				at := r.pos
				target(r.u32(), at)
			case 0x0d: // br_if
				at := r.pos
				target(r.u32(), at)
				split(blocksBrIf, start)
			case 0x0e: // br_table: a compiler gives each target an edge of its own
				n := r.u32()
				for i := uint64(0); i <= uint64(n) && !r.failed(); i++ {
					at := r.pos
					target(r.u32(), at)
					split(1, start)
				}
			case 0x10: // call
				r.u32()
			case 0x11: // call_indirect
				r.u32()
				r.u32()
			case 0x1c: // select with types
				n := r.u32()
				for i := uint32(0); i < n && !r.failed(); i++ {
					r.valType()
				}
			case 0x3f: // memory.size
				r.u32()
			case 0x40: // memory.grow
				r.u32()
				fr.ins = append(fr.ins, insertion{pos: start, seg: -1, kind: insMemPages})
				scratch = true
				split(blocksCheck, start)
			case 0x41:
				r.sleb(32)
			case 0x42:
				r.sleb(64)
			case 0x43:
				r.bytes(4)
			case 0x44:
				r.bytes(8)
			case 0xd0: // ref.null: a heap type, one byte for funcref/externref
				r.sleb(33)
			case 0xd2: // ref.func
				r.u32()
			case 0xfc:
				sub := r.u32()
				if r.failed() {
					break
				}
				kind := -1
				switch sub {
				case 0, 1, 2, 3, 4, 5, 6, 7: // saturating truncation
				case 8: // memory.init
					r.u32()
					r.u32()
					kind = insMemBytes
					fr.usesData = true
				case 9: // data.drop
					r.u32()
					fr.usesData = true
				case 13: // elem.drop
					r.u32()
				case 10: // memory.copy
					r.u32()
					r.u32()
					kind = insMemBytes
				case 11: // memory.fill
					r.u32()
					kind = insMemBytes
				case 12, 14: // table.init, table.copy
					r.u32()
					r.u32()
					kind = insTableElems
				case 15, 17: // table.grow, table.fill
					r.u32()
					kind = insTableElems
				case 16: // table.size
					r.u32()
				default:
					return &UnsupportedError{Func: fn, Offset: base + start,
						Instruction: fmt.Sprintf("0x%02x 0x%02x (unknown)", op, sub)}
				}
				if kind >= 0 {
					fr.ins = append(fr.ins, insertion{pos: start, seg: -1, kind: uint8(kind)})
					scratch = true
					split(blocksCheck, start)
				}
				if sub == 11 || sub == 17 { // memory.fill, table.fill
					split(blocksFill, start)
				}
			default:
				return unsupported(fn, base+start, op, r)
			}
		}
		if r.failed() {
			return malformed(where(), r.failOff, r.failMsg)
		}
	}
	if !r.done() {
		return malformed(where(), r.offset(), "bytes after the function's final end")
	}

	var scratchIdx uint32
	if scratch {
		if uint64(params)+locals >= math.MaxUint32 {
			return malformed(where(), base, "no local index left for the scratch local")
		}
		scratchIdx = params + uint32(locals)
	}
	fr.emit(body, groups, groupsEnd, localsEnd, scratch, scratchIdx)
	return nil
}

func (fr *funcRewriter) emit(body []byte, groups uint32, groupsEnd, localsEnd int, scratch bool, scratchIdx uint32) {
	out := fr.out[:0]
	if cap(out) < len(body)*2 {
		out = make([]byte, 0, len(body)*2)
	}
	if scratch {
		out = appendU32(out, groups+1)
		out = append(out, body[groupsEnd:localsEnd]...)
		out = append(out, 0x01, valI32)
	} else {
		out = append(out, body[:localsEnd]...)
	}
	last := localsEnd
	for _, in := range fr.ins {
		out = append(out, body[last:in.pos]...)
		last = in.pos
		switch in.kind {
		case insCharge, insChargeCheck:
			if c := fr.segs[in.seg]; c > 0 {
				out = append(out, fr.getFuel...)
				out = append(out, opI64Const)
				out = appendS64(out, c)
				out = append(out, opI64Sub)
				out = append(out, fr.setFuel...)
			}
			if in.kind == insChargeCheck {
				out = append(out, fr.check...)
			}
		default:
			out = append(out, opLocalSet)
			out = appendU32(out, scratchIdx)
			out = append(out, fr.getFuel...)
			out = append(out, opLocalGet)
			out = appendU32(out, scratchIdx)
			out = append(out, opI64ExtendI32U)
			switch in.kind {
			case insMemBytes:
				out = appendDiv(out, fr.cfg.BytesPerFuel)
			case insTableElems:
				out = appendDiv(out, fr.cfg.ElementsPerFuel)
			case insMemPages:
				if p := fr.cfg.FuelPerPage; p != 1 {
					out = append(out, opI64Const)
					out = appendS64(out, int64(p))
					out = append(out, opI64Mul)
				}
			}
			out = append(out, opI64Sub)
			out = append(out, fr.setFuel...)
			// Checking here stops a huge fill or grow before it runs
			// rather than at the next loop header.
			out = append(out, fr.check...)
			out = append(out, opLocalGet)
			out = appendU32(out, scratchIdx)
		}
	}
	fr.out = append(out, body[last:]...)
}

// appendDiv divides the i64 on the stack by d, shifting when d is a power of
// two because a shift is far cheaper than a division.
func appendDiv(out []byte, d uint32) []byte {
	switch {
	case d == 1:
		return out
	case d&(d-1) == 0:
		out = append(out, opI64Const)
		out = appendS64(out, int64(bits.TrailingZeros32(d)))
		return append(out, opI64ShrU)
	default:
		out = append(out, opI64Const)
		out = appendS64(out, int64(d))
		return append(out, opI64DivU)
	}
}

// Opcodes the pass emits.
const (
	opUnreachable   = 0x00
	opIf            = 0x04
	opEnd           = 0x0b
	opLocalGet      = 0x20
	opLocalSet      = 0x21
	opGlobalGet     = 0x23
	opGlobalSet     = 0x24
	opI64Const      = 0x42
	opI64LtS        = 0x53
	opI64Sub        = 0x7d
	opI64Mul        = 0x7e
	opI64DivU       = 0x80
	opI64ShrU       = 0x88
	opI64ExtendI32U = 0xad
	blockEmpty      = 0x40
	valI32          = 0x7f
)

// unsupported names a refused opcode and the proposal it comes from, reading
// the sub-opcode of prefixed instructions so the message pins it down.
func unsupported(fn, offset int, op byte, r *reader) error {
	var what string
	switch op {
	case 0x06:
		what = "try, exception handling"
	case 0x07:
		what = "catch, exception handling"
	case 0x08:
		what = "throw, exception handling"
	case 0x09:
		what = "rethrow, exception handling"
	case 0x0a:
		what = "throw_ref, exception handling"
	case 0x18:
		what = "delegate, exception handling"
	case 0x19:
		what = "catch_all, exception handling"
	case 0x1f:
		what = "try_table, exception handling"
	case 0x12:
		what = "return_call, tail calls"
	case 0x13:
		what = "return_call_indirect, tail calls"
	case 0x14:
		what = "call_ref, typed function references"
	case 0x15:
		what = "return_call_ref, tail calls"
	case 0xd3:
		what = "ref.eq, GC"
	case 0xd4:
		what = "ref.as_non_null, typed function references"
	case 0xd5:
		what = "br_on_null, typed function references"
	case 0xd6:
		what = "br_on_non_null, typed function references"
	case 0xfb, 0xfd, 0xfe:
		name := map[byte]string{0xfb: "GC", 0xfd: "SIMD", 0xfe: "threads"}[op]
		sub := r.u32()
		if r.failed() {
			return &UnsupportedError{Func: fn, Offset: offset, Instruction: fmt.Sprintf("0x%02x (%s)", op, name)}
		}
		return &UnsupportedError{Func: fn, Offset: offset, Instruction: fmt.Sprintf("0x%02x 0x%02x (%s)", op, sub, name)}
	default:
		what = "unknown"
	}
	return &UnsupportedError{Func: fn, Offset: offset, Instruction: fmt.Sprintf("0x%02x (%s)", op, what)}
}
