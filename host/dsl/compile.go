package dsl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/betracehq/betrace/api/abiv1"
)

// Meta is the self-description a compiled rule reports from
// betrace_describe. Empty fields are left out of the record.
type Meta struct {
	ID, Name, Severity, Description string
}

// ErrNotSupported reports a syntax tree the compiler cannot translate. Every
// rule Parse accepts compiles; only a tree built by hand (an unknown span
// intrinsic, a list without `in`) can fail this way.
var ErrNotSupported = errors.New("not supported by the compiler")

func unsupported(format string, args ...any) error {
	return fmt.Errorf("dsl: %w: %s", ErrNotSupported, fmt.Sprintf(format, args...))
}

// Defined functions of the generated module, numbered after its imports (see
// compiler.fn). parse_num is present only when a comparison needs it; then
// come the patterns, pattern k with its matcher first and its counter next.
const (
	fnABIVersion = iota
	fnInput
	fnEvaluate
	fnDescribe
	fnStrEq
	fnFindAttr
	fnParseNum
)

// Globals of the generated module.
const (
	gSpanTable = iota // absolute address of the span table
	gSpanCount
	gAttrTable // absolute address of the attribute table
	gStrTable  // absolute address of the string table
	gNumInt    // parse_num result when it returns 1
	gNumFloat  // parse_num result when it returns 2
)

// dataStart leaves the first bytes of memory unused so that address 0 is
// never a valid attribute record ("not found").
const dataStart = 16

type compiler struct {
	data     []byte
	lits     map[string]uint32
	pats     []*Pattern
	patIdx   map[*Pattern]int
	pow10Ptr uint32
	// strSrc pushes the (address, length) of the value being compared
	// when it is text; set by lookup.
	strSrc func(b *code)
	// enumTables holds the kind and status name tables.
	enumTables map[string]uint32
	// imports are the betrace host functions the rule calls, in import
	// order; hasParse says whether parse_num is defined. Both are decided
	// before any code is emitted, because they number the functions.
	imports  []string
	hasParse bool
}

// fn returns the index of defined function f.
func (c *compiler) fn(f uint32) uint32 { return uint32(len(c.imports)) + f }

// host returns the index of an imported host function.
func (c *compiler) host(name string) uint32 {
	for i, n := range c.imports {
		if n == name {
			return uint32(i)
		}
	}
	panic("dsl: host function " + name + " was not imported")
}

// use records that the rule calls host function name.
func (c *compiler) use(name string) {
	if !slices.Contains(c.imports, name) {
		c.imports = append(c.imports, name)
	}
}

// Compile translates r into a standalone ABI v1 rule module: one exported
// memory, no runtime, the rule's source in the betrace.source custom section.
// Its verdict on any trace equals Evaluate's. The module imports the betrace
// host functions it uses (api/abi-v1.md §2) and nothing else.
func Compile(r *Rule, meta Meta) ([]byte, error) {
	if r == nil || r.When == nil || (r.Always == nil && r.Never == nil) {
		return nil, errors.New("dsl: rule needs a when clause and an always or never clause")
	}
	c := &compiler{data: make([]byte, dataStart), lits: map[string]uint32{}, patIdx: map[*Pattern]int{}}
	for _, e := range []Expr{r.When, r.Always, r.Never} {
		if e != nil {
			if err := c.collect(e); err != nil {
				return nil, err
			}
		}
	}
	if c.hasParse {
		c.use(abiv1.HostParseNumber)
	}
	switch meta.Severity {
	case "", "CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO":
	default:
		return nil, fmt.Errorf("dsl: severity %q is not CRITICAL, HIGH, MEDIUM, LOW or INFO", meta.Severity)
	}
	if c.hasParse { // parse_num's table of exact powers of ten
		c.align(8)
		c.pow10Ptr = uint32(len(c.data))
		for i := 0; i <= 22; i++ {
			c.data = binary.LittleEndian.AppendUint64(c.data, math.Float64bits(math.Pow10(i)))
		}
	}
	// Pattern functions first: they place their literals in the data.
	var patFuncs []*wFunc
	for _, p := range c.pats {
		match, err := c.matchFunc(p)
		if err != nil {
			return nil, err
		}
		patFuncs = append(patFuncs, match, countFunc(c.matchFn(p)))
	}

	// Self-description record.
	var kv [][2]string
	for _, p := range [][2]string{{abiv1.DescribeKeyID, meta.ID}, {abiv1.DescribeKeyName, meta.Name},
		{abiv1.DescribeKeySeverity, meta.Severity}, {abiv1.DescribeKeyDescription, meta.Description}} {
		if len(p[1]) > abiv1.MaxValueBytes {
			return nil, fmt.Errorf("dsl: meta %s is %d bytes, more than the %d allowed", p[0], len(p[1]), abiv1.MaxValueBytes)
		}
		if p[1] != "" {
			kv = append(kv, p)
		}
	}
	c.align(4)
	descPtr := uint32(len(c.data))
	c.u32(uint32(len(kv)))
	for _, p := range kv {
		c.str(p[0])
		c.str(p[1])
	}
	descLen := uint32(len(c.data)) - descPtr
	if descLen > abiv1.MaxDescribeBytes {
		return nil, fmt.Errorf("dsl: description record is %d bytes, more than the %d allowed", descLen, abiv1.MaxDescribeBytes)
	}

	// Result records, one per possible message; the span index is patched
	// at run time.
	var recs [3]uint64 // always failed, never held, both
	msgs := [3]string{}
	if r.Always != nil {
		msgs[0] = message(r, true, false)
	}
	if r.Never != nil {
		msgs[1] = message(r, false, true)
	}
	if r.Always != nil && r.Never != nil {
		msgs[2] = message(r, true, true)
	}
	for i, m := range msgs {
		if m == "" {
			continue
		}
		c.align(4)
		p := uint32(len(c.data))
		c.u32(1)
		c.u32(0)
		c.str(m)
		c.u32(0)
		recs[i] = abiv1.Pack(p, uint32(len(c.data))-p)
	}

	var parseNum *wFunc
	if c.hasParse {
		parseNum = c.parseNumFunc()
	}
	c.align(16)
	base := uint32(len(c.data))
	m := &wModule{
		imports:  c.imports,
		globals:  []byte{wI32, wI32, wI32, wI32, wI64, wF64},
		memPages: base/65536 + 1,
		custom:   [][2]string{{abiv1.CustomSectionSource, r.String()}},
	}

	version := &wFunc{results: []byte{wI32}, export: abiv1.ExportABIVersion}
	version.body.i32(abiv1.Version)

	input := &wFunc{params: []byte{wI32}, results: []byte{wI32}, locals: []byte{wI64}, export: abiv1.ExportInput}
	// pages needed = (base + size + 65535) >> 16; grow by the difference.
	input.body.i64(int64(base)+65535).get(0).op(opI64ExtendU, opI64Add).i64(16).op(opI64ShrU).
		op(opMemorySize, 0).op(opI64ExtendU, opI64Sub).tee(1).
		i64(0).op(opI64GtS, opIf, blockVoid).
		get(1).op(opI32WrapI64).op(opMemoryGrow, 0).i32(-1).op(opI32Eq, opIf, blockVoid, opUnreachable, opEnd).
		op(opEnd).i32(int64(base))

	describe := &wFunc{results: []byte{wI64}, export: abiv1.ExportDescribe}
	describe.body.i64(int64(abiv1.Pack(descPtr, descLen)))

	eval, err := c.evaluate(r, base, recs)
	if len(c.data) != int(base) {
		panic("dsl: data segment changed after layout")
	}
	if err != nil {
		return nil, err
	}
	m.funcs = []*wFunc{version, input, eval, describe, strEqFunc(), c.findAttrFunc()}
	if parseNum != nil {
		m.funcs = append(m.funcs, parseNum)
	}
	m.funcs = append(m.funcs, patFuncs...)
	m.data = c.data
	return m.bytes(), nil
}

func (c *compiler) align(n int) {
	for len(c.data)%n != 0 {
		c.data = append(c.data, 0)
	}
}

func (c *compiler) u32(v uint32) { c.data = binary.LittleEndian.AppendUint32(c.data, v) }
func (c *compiler) str(s string) { c.u32(uint32(len(s))); c.data = append(c.data, s...) }

// lit places s in the data segment once and returns its address.
func (c *compiler) lit(s string) uint32 {
	if p, ok := c.lits[s]; ok {
		return p
	}
	p := uint32(len(c.data))
	c.data = append(c.data, s...)
	c.lits[s] = p
	return p
}

// collect numbers the patterns of a condition and checks that every
// construct in it is compiled.
func (c *compiler) collect(e Expr) error {
	switch n := e.(type) {
	case *And:
		for _, t := range n.Terms {
			if err := c.collect(t); err != nil {
				return err
			}
		}
	case *Or:
		for _, t := range n.Terms {
			if err := c.collect(t); err != nil {
				return err
			}
		}
	case *Not:
		return c.collect(n.X)
	case *Exists:
		c.addPattern(n.Pattern)
	case *Count:
		c.addPattern(n.Left)
		if n.Right != nil {
			c.addPattern(n.Right)
		}
	default:
		return fmt.Errorf("dsl: unexpected condition node %T", e)
	}
	return nil
}

func (c *compiler) addPattern(p *Pattern) {
	if _, ok := c.patIdx[p]; !ok {
		c.patIdx[p] = len(c.pats)
		c.pats = append(c.pats, p)
		c.lit(p.Name)
		for _, f := range p.Filters {
			c.scan(f)
		}
	}
}

// scan notes what the predicates of a pattern need from the host and
// whether they parse numbers; emission asserts it guessed right.
func (c *compiler) scan(e Expr) {
	switch n := e.(type) {
	case *And:
		for _, t := range n.Terms {
			c.scan(t)
		}
	case *Or:
		for _, t := range n.Terms {
			c.scan(t)
		}
	case *Not:
		c.scan(n.X)
	case *Compare:
		switch {
		case n.Op == OpMatches:
			c.use(abiv1.HostRegexMatch)
		case n.Op == OpContains:
			c.use(abiv1.HostTextContains)
		default:
			c.hasParse = c.hasParse || parses(n)
		}
	}
}

// parses reports whether compare emits parsedCmp for n: equality with a
// number literal, or ordering against a number, on anything but
// span.duration.
func parses(n *Compare) bool {
	if n.Attr.Kind == AttrIntrinsic && n.Attr.Key == IntrinsicDuration {
		return false
	}
	switch n.Op {
	case OpEq, OpNe:
		return n.Value.Kind == ValNumber
	case OpIn:
		return slices.ContainsFunc(n.Value.List, func(v Value) bool { return v.Kind == ValNumber })
	case OpLt, OpLe, OpGt, OpGe:
		_, ok := literalNumber(n.Value)
		return ok && n.Value.Kind != ValDuration
	}
	return false
}

func (c *compiler) matchFn(p *Pattern) uint32 {
	f := uint32(fnParseNum + 2*c.patIdx[p])
	if c.hasParse {
		f++
	}
	return c.fn(f)
}
func (c *compiler) countFn(p *Pattern) uint32      { return c.matchFn(p) + 1 }
func (c *compiler) litLen(s string) (int64, int64) { return int64(c.lit(s)), int64(len(s)) }

// reportPatterns mirrors reportSpan: patterns under an even number of nots,
// and both sides of every count.
func reportPatterns(e Expr, neg bool, out []*Pattern) []*Pattern {
	switch n := e.(type) {
	case *And:
		for _, t := range n.Terms {
			out = reportPatterns(t, neg, out)
		}
	case *Or:
		for _, t := range n.Terms {
			out = reportPatterns(t, neg, out)
		}
	case *Not:
		out = reportPatterns(n.X, !neg, out)
	case *Exists:
		if !neg {
			out = append(out, n.Pattern)
		}
	case *Count:
		out = append(out, n.Left)
		if n.Right != nil {
			out = append(out, n.Right)
		}
	}
	return out
}

// evaluate builds betrace_evaluate(size i32) -> i64.
// Locals: 0 size, 1 i, 2 idx, 3 alwaysFailed, 4 neverHeld, 5 fragment.
// On a fragment it gives EvaluateTrace's verdict: nothing unless the rule
// is fragment-safe, and then `always` is not judged.
func (c *compiler) evaluate(r *Rule, base uint32, recs [3]uint64) (*wFunc, error) {
	f := &wFunc{params: []byte{wI32}, results: []byte{wI64}, locals: []byte{wI32, wI32, wI32, wI32, wI32}, export: abiv1.ExportEvaluate}
	b := &f.body
	b.i32(int64(base)).mem(opI32Load, abiv1.HeaderSpanTable).i32(int64(base)).op(opI32Add).gset(gSpanTable)
	b.i32(int64(base)).mem(opI32Load, abiv1.HeaderSpanCount).gset(gSpanCount)
	b.i32(int64(base)).mem(opI32Load, abiv1.HeaderAttrTable).i32(int64(base)).op(opI32Add).gset(gAttrTable)
	b.i32(int64(base)).mem(opI32Load, abiv1.HeaderStringTable).i32(int64(base)).op(opI32Add).gset(gStrTable)
	b.i32(int64(base)).mem(opI32Load, abiv1.HeaderFlags).i32(int64(abiv1.TraceFlagFragment)).op(opI32And).set(5)
	safe := r.fragmentSafe()
	if !safe {
		b.get(5).op(opIf, blockVoid).i64(0).op(opReturn, opEnd)
	}
	b.gget(gSpanCount).op(opI32Eqz, opIf, blockVoid).i64(0).op(opReturn, opEnd)
	c.cond(b, r.When)
	b.op(opI32Eqz, opIf, blockVoid).i64(0).op(opReturn, opEnd)
	if r.Always != nil {
		if safe {
			b.get(5).op(opI32Eqz, opIf, blockVoid)
		}
		c.cond(b, r.Always)
		b.op(opI32Eqz).set(3)
		if safe {
			b.op(opEnd)
		}
	}
	if r.Never != nil {
		c.cond(b, r.Never)
		b.set(4)
	}
	b.get(3).get(4).op(opI32Or, opI32Eqz, opIf, blockVoid).i64(0).op(opReturn, opEnd)

	// The reported span: the first in start-time order (the encoded order)
	// matching a report pattern, else span 0.
	if pats := reportPatterns(r.When, false, nil); len(pats) > 0 {
		b.op(opBlock, blockVoid, opLoop, blockVoid)
		b.get(1).gget(gSpanCount).op(opI32GeU).brIf(1)
		for k, p := range pats {
			b.get(1).i32(abiv1.SpanSize).op(opI32Mul).gget(gSpanTable).op(opI32Add).call(c.matchFn(p))
			if k > 0 {
				b.op(opI32Or)
			}
		}
		b.op(opIf, blockVoid).get(1).set(2).br(2).op(opEnd)
		b.get(1).i32(1).op(opI32Add).set(1).br(0)
		b.op(opEnd, opEnd)
	}
	ret := func(rec uint64) {
		ptr, _ := abiv1.Unpack(rec)
		b.i32(int64(ptr)).get(2).mem(opI32Store, 4).i64(int64(rec)).op(opReturn)
	}
	if recs[2] != 0 {
		b.get(3).get(4).op(opI32And, opIf, blockVoid)
		ret(recs[2])
		b.op(opEnd)
	}
	if recs[0] != 0 {
		b.get(3).op(opIf, blockVoid)
		ret(recs[0])
		b.op(opEnd)
	}
	if recs[1] != 0 {
		ret(recs[1])
	} else {
		b.op(opUnreachable)
	}
	return f, nil
}

// cond emits a trace-level condition, leaving an i32 0 or 1.
func (c *compiler) cond(b *code, e Expr) {
	switch n := e.(type) {
	case *And:
		c.cond(b, n.Terms[0])
		for _, t := range n.Terms[1:] {
			b.op(opIf, wI32)
			c.cond(b, t)
			b.op(opElse).i32(0)
		}
		for range n.Terms[1:] {
			b.op(opEnd)
		}
	case *Or:
		c.cond(b, n.Terms[0])
		for _, t := range n.Terms[1:] {
			b.op(opIf, wI32).i32(1).op(opElse)
			c.cond(b, t)
		}
		for range n.Terms[1:] {
			b.op(opEnd)
		}
	case *Not:
		c.cond(b, n.X)
		b.op(opI32Eqz)
	case *Exists:
		b.i32(1).call(c.countFn(n.Pattern))
	case *Count:
		b.i32(0).call(c.countFn(n.Left)).op(opI64ExtendU)
		if n.Right != nil {
			b.i32(0).call(c.countFn(n.Right)).op(opI64ExtendU)
		} else {
			b.i64(n.N)
		}
		b.op(i64Cmp[n.Op])
	}
}

var i64Cmp = map[Op]byte{OpEq: opI64Eq, OpNe: opI64Ne, OpLt: opI64LtS, OpLe: opI64LeS, OpGt: opI64GtS, OpGe: opI64GeS}
var f64Cmp = map[Op]byte{OpEq: opF64Eq, OpNe: opF64Ne, OpLt: opF64Lt, OpLe: opF64Le, OpGt: opF64Gt, OpGe: opF64Ge}

// countFunc builds count_k(stopAtFirst i32) -> i32 over all spans, calling
// match_k (function match). Locals: 0 stop, 1 i, 2 n.
func countFunc(match uint32) *wFunc {
	f := &wFunc{params: []byte{wI32}, results: []byte{wI32}, locals: []byte{wI32, wI32}}
	b := &f.body
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	b.get(1).gget(gSpanCount).op(opI32GeU).brIf(1)
	b.get(1).i32(abiv1.SpanSize).op(opI32Mul).gget(gSpanTable).op(opI32Add).call(match)
	b.op(opIf, blockVoid).get(2).i32(1).op(opI32Add).set(2).get(0).brIf(2).op(opEnd)
	b.get(1).i32(1).op(opI32Add).set(1).br(0)
	b.op(opEnd, opEnd).get(2)
	return f
}

// strEqFunc builds streq(a, alen, b, blen i32) -> i32. Local 4: i.
func strEqFunc() *wFunc {
	f := &wFunc{params: []byte{wI32, wI32, wI32, wI32}, results: []byte{wI32}, locals: []byte{wI32}}
	b := &f.body
	b.get(1).get(3).op(opI32Ne, opIf, blockVoid).i32(0).op(opReturn, opEnd)
	b.op(opLoop, blockVoid)
	b.get(4).get(1).op(opI32GeU, opIf, blockVoid).i32(1).op(opReturn, opEnd)
	b.get(0).get(4).op(opI32Add).mem(opI32Load8U, 0).get(2).get(4).op(opI32Add).mem(opI32Load8U, 0).
		op(opI32Ne, opIf, blockVoid).i32(0).op(opReturn, opEnd)
	b.get(4).i32(1).op(opI32Add).set(4).br(0)
	b.op(opEnd).i32(0)
	return f
}

// findAttrFunc builds find_attr(span, key, keylen, resource i32) -> i32: the
// address of the span's (or its resource's) attribute record with that key,
// or 0 when there is none or its value is empty or of an unknown type.
// Locals: 4 first record index, 5 count, 6 i, 7 record address.
func (c *compiler) findAttrFunc() *wFunc {
	f := &wFunc{params: []byte{wI32, wI32, wI32, wI32}, results: []byte{wI32}, locals: []byte{wI32, wI32, wI32, wI32}}
	b := &f.body
	b.get(3).op(opIf, blockVoid).
		get(0).mem(opI32Load, abiv1.SpanResAttrStart).set(4).get(0).mem(opI32Load, abiv1.SpanResAttrCount).set(5).
		op(opElse).
		get(0).mem(opI32Load, abiv1.SpanAttrStart).set(4).get(0).mem(opI32Load, abiv1.SpanAttrCount).set(5).
		op(opEnd)
	b.op(opLoop, blockVoid)
	b.get(6).get(5).op(opI32GeU, opIf, blockVoid).i32(0).op(opReturn, opEnd)
	b.get(4).get(6).op(opI32Add).i32(abiv1.AttrSize).op(opI32Mul).gget(gAttrTable).op(opI32Add).set(7)
	b.gget(gStrTable).get(7).mem(opI32Load, abiv1.AttrKey).op(opI32Add).get(7).mem(opI32Load, abiv1.AttrKey+4).
		get(1).get(2).call(c.fn(fnStrEq))
	b.op(opIf, blockVoid)
	// type in 1..7, else missing
	b.get(7).i32(0).get(7).mem(opI32Load8U, abiv1.AttrType).i32(1).op(opI32Sub).i32(7).op(opI32LtU, opSelect, opReturn)
	b.op(opEnd)
	b.get(6).i32(1).op(opI32Add).set(6).br(0)
	b.op(opEnd).i32(0)
	return f
}

// matchFunc builds match_k(span i32) -> i32. Locals: 1 attribute record,
// 2 its value type.
func (c *compiler) matchFunc(p *Pattern) (*wFunc, error) {
	f := &wFunc{params: []byte{wI32}, results: []byte{wI32}, locals: []byte{wI32, wI32, wI64, wI32, wI32}}
	b := &f.body
	name, n := c.litLen(p.Name)
	b.gget(gStrTable).get(0).mem(opI32Load, abiv1.SpanName).op(opI32Add).get(0).mem(opI32Load, abiv1.SpanName+4).
		i32(name).i32(n).call(c.fn(fnStrEq)).op(opI32Eqz, opIf, blockVoid).i32(0).op(opReturn, opEnd)
	for _, flt := range p.Filters {
		if err := c.pred(b, flt); err != nil {
			return nil, err
		}
		b.op(opI32Eqz, opIf, blockVoid).i32(0).op(opReturn, opEnd)
	}
	b.i32(1)
	return f, nil
}

const (
	lSpan = 0
	lAttr = 1 // attribute record, or kind/status code
	lType = 2 // value type; typeText for intrinsic text
	lDur  = 3 // span.duration in nanoseconds
	lKind = 4 // what parse_num returned
	lTmp  = 5 // scratch
)

// typeText marks an intrinsic text value in lType.
const typeText = abiv1.ValueString

// pred emits a span-level predicate, leaving an i32.
func (c *compiler) pred(b *code, e Expr) error {
	switch n := e.(type) {
	case *And:
		if err := c.pred(b, n.Terms[0]); err != nil {
			return err
		}
		for _, t := range n.Terms[1:] {
			b.op(opIf, wI32)
			if err := c.pred(b, t); err != nil {
				return err
			}
			b.op(opElse).i32(0)
		}
		for range n.Terms[1:] {
			b.op(opEnd)
		}
	case *Or:
		if err := c.pred(b, n.Terms[0]); err != nil {
			return err
		}
		for _, t := range n.Terms[1:] {
			b.op(opIf, wI32).i32(1).op(opElse)
			if err := c.pred(b, t); err != nil {
				return err
			}
		}
		for range n.Terms[1:] {
			b.op(opEnd)
		}
	case *Not:
		if err := c.pred(b, n.X); err != nil {
			return err
		}
		b.op(opI32Eqz)
	case *Truthy:
		if n.Attr.Kind == AttrIntrinsic && n.Attr.Key == IntrinsicDuration {
			b.i32(0) // a duration is never true
			break
		}
		if err := c.lookup(b, n.Attr); err != nil {
			return err
		}
		c.typeSwitch(b, nil, nil,
			func() { b.get(lAttr).mem(opI64Load, abiv1.AttrValue).op(opI64Eqz, opI32Eqz) },
			func() { c.strEqLit(b, "true") })
		b.op(opEnd)
	case *Compare:
		return c.compare(b, n)
	default:
		return fmt.Errorf("dsl: unexpected predicate node %T", e)
	}
	return nil
}

// lookup opens `if (result i32)` on a present attribute, with lAttr and
// lType set; a missing attribute yields 0. The caller closes the if.
func (c *compiler) lookup(b *code, a Attr) error {
	var res int64
	switch a.Kind {
	case AttrSpan:
	case AttrResource:
		res = 1
	default:
		return c.lookupIntrinsic(b, a.Key)
	}
	c.strSrc = func(b *code) {
		b.gget(gStrTable).get(lAttr).mem(opI32Load, abiv1.AttrValue).op(opI32Add).get(lAttr).mem(opI32Load, abiv1.AttrValue+4)
	}
	key, n := c.litLen(a.Key)
	b.get(lSpan).i32(key).i32(n).i32(res).call(c.fn(fnFindAttr)).tee(lAttr).op(opI32Eqz, opIf, wI32).i32(0).op(opElse)
	b.get(lAttr).mem(opI32Load8U, abiv1.AttrType).set(lType)
	return nil
}

// typeSwitch emits a branch on the attribute's value type; a nil case
// yields 0.
func (c *compiler) typeSwitch(b *code, onInt, onFloat, onBool, onStr func()) {
	arm := func(cond func(), body func(), rest func()) {
		cond()
		b.op(opIf, wI32)
		if body != nil {
			body()
		} else {
			b.i32(0)
		}
		b.op(opElse)
		rest()
		b.op(opEnd)
	}
	isType := func(t uint8) func() { return func() { b.get(lType).i32(int64(t)).op(opI32Eq) } }
	arm(isType(abiv1.ValueInt), onInt, func() {
		arm(isType(abiv1.ValueDouble), onFloat, func() {
			arm(isType(abiv1.ValueBool), onBool, func() {
				// string, bytes, array and map all read as text
				if onStr != nil {
					onStr()
				} else {
					b.i32(0)
				}
			})
		})
	})
}

func (c *compiler) strEqLit(b *code, s string) {
	p, n := c.litLen(s)
	c.strSrc(b)
	b.i32(p).i32(n).call(c.fn(fnStrEq))
}

// lookupIntrinsic is lookup for span.<key>.
func (c *compiler) lookupIntrinsic(b *code, key string) error {
	text := func(off uint32) {
		c.strSrc = func(b *code) {
			b.gget(gStrTable).get(lSpan).mem(opI32Load, off).op(opI32Add).get(lSpan).mem(opI32Load, off+4)
		}
		b.op(opBlock, wI32).i32(int64(typeText)).set(lType)
	}
	enum := func(off uint32, names map[uint8]string) {
		table := c.enumTable(key, names)
		c.strSrc = func(b *code) {
			b.get(lAttr).i32(8).op(opI32Mul).mem(opI32Load, table).get(lAttr).i32(8).op(opI32Mul).mem(opI32Load, table+4)
		}
		b.get(lSpan).mem(opI32Load8U, off).tee(lAttr).i32(int64(len(names))).op(opI32GeU, opIf, wI32).i32(0).op(opElse).
			i32(int64(typeText)).set(lType)
	}
	switch key {
	case IntrinsicName:
		text(abiv1.SpanName)
	case IntrinsicService:
		text(abiv1.SpanService)
	case IntrinsicKind:
		enum(abiv1.SpanKind, kindNames)
	case IntrinsicStatus:
		enum(abiv1.SpanStatusCode, statusNames)
	case IntrinsicDuration:
		// missing when end < start or the difference overflows an int64
		b.get(lSpan).mem(opI64Load, abiv1.SpanEnd).get(lSpan).mem(opI64Load, abiv1.SpanStart).op(opI64LtU).
			get(lSpan).mem(opI64Load, abiv1.SpanEnd).get(lSpan).mem(opI64Load, abiv1.SpanStart).op(opI64Sub).tee(lDur).
			i64(0).op(opI64LtS, opI32Or, opIf, wI32).i32(0).op(opElse)
	default:
		return unsupported("span.%s", key)
	}
	return nil
}

// enumTable places the names of codes 0..len(names)-1 in the data as
// (address u32, length u32) pairs and returns the table's address.
func (c *compiler) enumTable(key string, names map[uint8]string) uint32 {
	if c.enumTables == nil {
		c.enumTables = map[string]uint32{}
	}
	if p, ok := c.enumTables[key]; ok {
		return p
	}
	ptrs := make([]uint32, len(names))
	for i := range ptrs {
		ptrs[i] = c.lit(names[uint8(i)])
	}
	c.align(4)
	p := uint32(len(c.data))
	for i, q := range ptrs {
		c.u32(q)
		c.u32(uint32(len(names[uint8(i)])))
	}
	c.enumTables[key] = p
	return p
}

// durEqual is `==` for span.duration (in lDur): a duration literal compares
// nanoseconds, a string the duration's decimal text; nothing else is equal.
func durEqual(b *code, l Value) {
	switch l.Kind {
	case ValDuration:
		b.get(lDur).i64(l.Int).op(opI64Eq)
	case ValString:
		if i, err := strconv.ParseInt(l.Str, 10, 64); err == nil && strconv.FormatInt(i, 10) == l.Str {
			b.get(lDur).i64(i).op(opI64Eq)
		} else {
			b.i32(0)
		}
	default:
		b.i32(0)
	}
}

// numCmp compares the i64 or f64 on the stack (isInt says which) with lit.
func numCmp(b *code, op Op, isInt bool, lit number) {
	switch {
	case isInt && lit.isInt:
		b.i64(lit.i).op(i64Cmp[op])
	case isInt:
		b.op(opF64FromI64S).f64(lit.f).op(f64Cmp[op])
	default:
		b.f64(lit.f).op(f64Cmp[op])
	}
}

// parsedCmp parses the string attribute at run time and compares it.
func (c *compiler) parsedCmp(b *code, op Op, lit number) {
	c.strSrc(b)
	if !c.hasParse {
		panic("dsl: parse_num used but not defined; parses() is out of step with compare")
	}
	b.call(c.fn(fnParseNum)).tee(lKind)
	b.i32(1).op(opI32Eq, opIf, wI32).gget(gNumInt)
	numCmp(b, op, true, lit)
	b.op(opElse).get(lKind).i32(2).op(opI32Eq, opIf, wI32).gget(gNumFloat)
	numCmp(b, op, false, lit)
	b.op(opElse).i32(0).op(opEnd, opEnd)
}

func (c *compiler) compare(b *code, n *Compare) error {
	if (n.Value.Kind == ValList) != (n.Op == OpIn) {
		return unsupported("%s with this value", n.Op)
	}
	if err := c.lookup(b, n.Attr); err != nil {
		return err
	}
	if n.Op == OpMatches || n.Op == OpContains {
		if n.Value.Kind != ValString {
			return unsupported("%s with this value", n.Op)
		}
		fn := abiv1.HostRegexMatch
		if n.Op == OpContains {
			fn = abiv1.HostTextContains
		}
		p, l := c.litLen(n.Value.Str)
		b.i32(p).i32(l)
		c.valueArg(b, n.Attr)
		b.call(c.host(fn)).op(opEnd)
		return nil
	}
	loadInt := func() { b.get(lAttr).mem(opI64Load, abiv1.AttrValue) }
	loadFloat := func() { b.get(lAttr).mem(opF64Load, abiv1.AttrValue) }
	eq := func(l Value) {
		if n.Attr.Kind == AttrIntrinsic && n.Attr.Key == IntrinsicDuration {
			durEqual(b, l)
		} else {
			c.equal(b, l, loadInt, loadFloat)
		}
	}
	dur := n.Attr.Kind == AttrIntrinsic && n.Attr.Key == IntrinsicDuration
	switch {
	case n.Op == OpIn:
		if len(n.Value.List) == 0 {
			b.i32(0)
			break
		}
		eq(n.Value.List[0])
		for _, it := range n.Value.List[1:] {
			b.op(opIf, wI32).i32(1).op(opElse)
			eq(it)
		}
		for range n.Value.List[1:] {
			b.op(opEnd)
		}
	case n.Op == OpEq || n.Op == OpNe:
		eq(n.Value)
		if n.Op == OpNe {
			b.op(opI32Eqz)
		}
	case dur:
		if n.Value.Kind == ValDuration {
			b.get(lDur).i64(n.Value.Int).op(i64Cmp[n.Op])
		} else {
			b.i32(0)
		}
	default:
		lit, ok := literalNumber(n.Value)
		if n.Value.Kind == ValDuration || !ok {
			b.i32(0) // no span attribute is a duration; a non-number never orders
			break
		}
		c.typeSwitch(b,
			func() { loadInt(); numCmp(b, n.Op, true, lit) },
			func() { loadFloat(); numCmp(b, n.Op, false, lit) },
			nil,
			func() { c.parsedCmp(b, n.Op, lit) })
	}
	b.op(opEnd)
	return nil
}

// valueArg pushes the looked-up value as the (type i32, value i64) argument
// of a host function: text as Pack(address, length), a bool, int or double
// as its eight bytes.
func (c *compiler) valueArg(b *code, a Attr) {
	pack := func() {
		c.strSrc(b)
		b.set(lTmp).op(opI64ExtendU).i64(32).op(opI64Shl).get(lTmp).op(opI64ExtendU, opI64Or)
	}
	switch {
	case a.Kind == AttrIntrinsic: // span.name or span.service; the parser refuses the others
		b.i32(int64(abiv1.ValueString))
		pack()
	default:
		// bool, int and double (types 2 to 4) pass their bits
		b.get(lType).get(lType).i32(int64(abiv1.ValueBool)).op(opI32Sub).i32(3).op(opI32LtU, opIf, wI64)
		b.get(lAttr).mem(opI64Load, abiv1.AttrValue)
		b.op(opElse)
		pack()
		b.op(opEnd)
	}
}

// equal emits the `==` of the typing table (see equal in eval.go).
func (c *compiler) equal(b *code, l Value, loadInt, loadFloat func()) {
	boolIs := func(want bool) func() {
		return func() {
			b.get(lAttr).mem(opI64Load, abiv1.AttrValue).op(opI64Eqz)
			if want {
				b.op(opI32Eqz)
			}
		}
	}
	switch l.Kind {
	case ValBool:
		c.typeSwitch(b, nil, nil, boolIs(l.Bool), func() { c.strEqLit(b, fmt.Sprint(l.Bool)) })
	case ValDuration:
		b.i32(0)
	case ValNumber:
		lit := number{l.IsInt, l.Int, l.Float}
		c.typeSwitch(b,
			func() { loadInt(); numCmp(b, OpEq, true, lit) },
			func() { loadFloat(); numCmp(b, OpEq, false, lit) },
			nil,
			func() { c.parsedCmp(b, OpEq, lit) })
	case ValString:
		lit, isNum := parseNumber(l.Str)
		var onInt, onFloat, onBool func()
		if isNum {
			onInt = func() { loadInt(); numCmp(b, OpEq, true, lit) }
			// compareFloat(a, b) == 0 also holds for a NaN attribute
			onFloat = func() {
				loadFloat()
				b.f64(lit.f).op(opF64Lt)
				loadFloat()
				b.f64(lit.f).op(opF64Gt, opI32Or, opI32Eqz)
			}
		} else {
			switch l.Str { // the only texts of a double that are not numbers
			case "NaN":
				onFloat = func() { loadFloat(); loadFloat(); b.op(opF64Ne) }
			case "+Inf":
				onFloat = func() { loadFloat(); b.f64(math.Inf(1)).op(opF64Eq) }
			case "-Inf":
				onFloat = func() { loadFloat(); b.f64(math.Inf(-1)).op(opF64Eq) }
			}
		}
		switch l.Str {
		case "true":
			onBool = boolIs(true)
		case "false":
			onBool = boolIs(false)
		}
		c.typeSwitch(b, onInt, onFloat, onBool, func() { c.strEqLit(b, l.Str) })
	}
}

// parseNumFunc builds parse_num(ptr, len i32) -> i32, the run-time
// parseNumber of a string attribute: 0 not a number, 1 an int64 (in
// gNumInt), 2 a double (in gNumFloat). It decides in wasm where a correctly
// rounded result is cheap (at most 2^53 in the significand and a decimal
// exponent within ±22) and asks the host's parse_number about the rare
// rest: longer or more extreme decimals, and text that begins or ends with
// a non-ASCII byte that may start a Unicode space.
func (c *compiler) parseNumFunc() *wFunc {
	const (
		p, end, ch, neg, m, nd, e, digits, dot, trunc, ex, exneg, expd, fl, start, bits = 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
	)
	f := &wFunc{params: []byte{wI32, wI32}, results: []byte{wI32},
		locals: []byte{wI32, wI32, wI32, wI64, wI32, wI32, wI32, wI32, wI32, wI32, wI32, wI32, wF64, wI32, wI64}}
	b := &f.body
	// askHost returns the host's parse_number of the whole text: the
	// answer for what this function does not decide itself.
	askHost := func() {
		b.get(start).get(1).call(c.host(abiv1.HostParseNumber)).tee(bits).gset(gNumInt).
			get(bits).op(opF64ReinterpretI64).gset(gNumFloat).op(opReturn)
	}
	isSpace := func() { // ch on the stack consumed? no: uses local ch
		b.get(ch).i32(' ').op(opI32Eq).get(ch).i32(9).op(opI32Sub).i32(5).op(opI32LtU, opI32Or)
	}
	ret := func(v int64) { b.i32(v).op(opReturn) }
	uniLead := func() { // ch may start a Unicode space
		b.get(ch).i32(0xC2).op(opI32Eq).get(ch).i32(0xE1).op(opI32Sub).i32(3).op(opI32LtU, opI32Or).op(opIf, blockVoid)
		askHost()
		b.op(opEnd)
	}
	atEnd := func() { b.get(p).get(end).op(opI32GeU) }
	loadCh := func() { b.get(p).mem(opI32Load8U, 0).set(ch) }

	b.get(0).tee(start).get(1).op(opI32Add).set(end)
	// trim ASCII white space at both ends
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	atEnd()
	b.brIf(1)
	loadCh()
	isSpace()
	b.op(opI32Eqz).brIf(1).get(p).i32(1).op(opI32Add).set(p).br(0).op(opEnd, opEnd)
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	atEnd()
	b.brIf(1)
	b.get(end).i32(1).op(opI32Sub).mem(opI32Load8U, 0).set(ch)
	isSpace()
	b.op(opI32Eqz).brIf(1).get(end).i32(1).op(opI32Sub).set(end).br(0).op(opEnd, opEnd)
	atEnd()
	b.op(opIf, blockVoid)
	ret(0)
	b.op(opEnd)
	loadCh()
	uniLead()
	// sign
	b.get(ch).i32('-').op(opI32Eq).get(ch).i32('+').op(opI32Eq, opI32Or, opIf, blockVoid).
		get(ch).i32('-').op(opI32Eq).set(neg).get(p).i32(1).op(opI32Add).set(p).op(opEnd)
	// significand
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	atEnd()
	b.brIf(1)
	loadCh()
	b.get(ch).i32('.').op(opI32Eq, opIf, blockVoid)
	b.get(dot).op(opIf, blockVoid)
	ret(0)
	b.op(opEnd).i32(1).set(dot).get(p).i32(1).op(opI32Add).set(p).br(1).op(opEnd)
	b.get(ch).i32('0').op(opI32Sub).tee(ch).i32(10).op(opI32GeU).brIf(1) // ch now holds the digit
	b.get(digits).i32(1).op(opI32Add).set(digits)
	b.get(m).op(opI64Eqz).get(ch).op(opI32Eqz, opI32And, opIf, blockVoid) // leading zero
	b.get(e).get(dot).op(opI32Sub).set(e)
	b.op(opElse).get(nd).i32(19).op(opI32LtU, opIf, blockVoid)
	b.get(m).i64(10).op(opI64Mul).get(ch).op(opI64ExtendU, opI64Add).set(m).get(nd).i32(1).op(opI32Add).set(nd)
	b.get(e).get(dot).op(opI32Sub).set(e)
	b.op(opElse)
	b.get(trunc).get(ch).i32(0).op(opI32Ne, opI32Or).set(trunc)
	b.get(e).i32(1).get(dot).op(opI32Sub).op(opI32Add).set(e)
	b.op(opEnd, opEnd)
	b.get(p).i32(1).op(opI32Add).set(p).br(0)
	b.op(opEnd, opEnd)
	b.get(digits).op(opI32Eqz, opIf, blockVoid)
	ret(0)
	b.op(opEnd)
	// exponent
	atEnd()
	b.op(opI32Eqz, opIf, blockVoid)
	loadCh()
	b.get(ch).i32(0x20).op(opI32Or).i32('e').op(opI32Eq, opIf, blockVoid)
	b.i32(1).set(dot).get(p).i32(1).op(opI32Add).set(p)
	atEnd()
	b.op(opI32Eqz, opIf, blockVoid)
	loadCh()
	b.get(ch).i32('-').op(opI32Eq).get(ch).i32('+').op(opI32Eq, opI32Or, opIf, blockVoid).
		get(ch).i32('-').op(opI32Eq).set(exneg).get(p).i32(1).op(opI32Add).set(p).op(opEnd)
	b.op(opEnd)
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	atEnd()
	b.brIf(1)
	b.get(p).mem(opI32Load8U, 0).i32('0').op(opI32Sub).tee(ch).i32(10).op(opI32GeU).brIf(1)
	b.get(ex).i32(100000).op(opI32LtU, opIf, blockVoid).get(ex).i32(10).op(opI32Mul).get(ch).op(opI32Add).set(ex).op(opEnd)
	b.get(expd).i32(1).op(opI32Add).set(expd).get(p).i32(1).op(opI32Add).set(p).br(0)
	b.op(opEnd, opEnd)
	b.get(expd).op(opI32Eqz, opIf, blockVoid)
	ret(0)
	b.op(opEnd)
	b.get(e).i32(0).get(ex).op(opI32Sub).get(ex).get(exneg).op(opSelect, opI32Add).set(e)
	b.op(opEnd, opEnd)
	// Trailing text: all ASCII means a non-space is left (the trim took
	// ASCII white space), so not a number; non-ASCII may be Unicode white
	// space ("0 \u2009"), which the host trims.
	atEnd()
	b.op(opI32Eqz, opIf, blockVoid)
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	atEnd()
	b.brIf(1)
	b.get(p).mem(opI32Load8U, 0).i32(0x80).op(opI32GeU, opIf, blockVoid)
	askHost()
	b.op(opEnd)
	b.get(p).i32(1).op(opI32Add).set(p).br(0)
	b.op(opEnd, opEnd)
	ret(0)
	b.op(opEnd)
	// integer syntax that fits an int64
	b.get(dot).get(e).op(opI32Or, opI32Eqz, opIf, blockVoid)
	b.get(m).i64(math.MaxInt64).get(neg).op(opI64ExtendU, opI64Add, opI64LeU, opIf, blockVoid)
	b.i64(0).get(m).op(opI64Sub).get(m).get(neg).op(opSelect).gset(gNumInt)
	ret(1)
	b.op(opEnd, opEnd)
	// decimal
	b.get(m).op(opI64Eqz, opIf, blockVoid)
	b.f64(math.Copysign(0, -1)).f64(0).get(neg).op(opSelect).gset(gNumFloat)
	ret(2)
	b.op(opEnd)
	// drop trailing zeros of the significand
	b.op(opBlock, blockVoid, opLoop, blockVoid)
	b.get(m).i64(10).op(opI64RemU, opI64Eqz, opI32Eqz).brIf(1)
	b.get(m).i64(10).op(opI64DivU).set(m).get(e).i32(1).op(opI32Add).set(e).br(0)
	b.op(opEnd, opEnd)
	b.get(trunc).get(m).i64(1<<53).op(opI64GtU, opI32Or).get(e).i32(22).op(opI32GtS, opI32Or).
		get(e).i32(-22).op(opI32LtS, opI32Or, opIf, blockVoid)
	askHost()
	b.op(opEnd)
	b.get(m).op(opF64FromI64U).set(fl)
	b.get(e).i32(0).op(opI32GeS, opIf, wF64)
	b.get(fl).i32(int64(c.pow10Ptr)).get(e).i32(8).op(opI32Mul, opI32Add).mem(opF64Load, 0).op(opF64Mul)
	b.op(opElse)
	b.get(fl).i32(int64(c.pow10Ptr)).i32(0).get(e).op(opI32Sub).i32(8).op(opI32Mul, opI32Add).mem(opF64Load, 0).op(opF64Div)
	b.op(opEnd).set(fl)
	b.get(fl).op(opF64Neg).get(fl).get(neg).op(opSelect).gset(gNumFloat)
	ret(2)
	return f
}
