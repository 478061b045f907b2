package rule

import (
	"iter"
	"strconv"

	"github.com/betracehq/betrace/api/abiv1"
)

// Trace is one encoded trace being evaluated. The rule's Check receives it;
// it and everything read from it (spans, strings, attribute values) are only
// valid until the Check returns.
type Trace struct {
	in    []byte // the whole encoded trace
	strs  []byte // the string table
	spans int    // offset of the span table
	n     uint32 // span count
	attrs int    // offset of the attribute table
	nattr uint32 // attribute count
	root  uint32
	flags uint32

	res      []byte // result record being built; reused across calls
	reported int    // violations in res
	dropped  int    // violations Report could not fit within the ABI limits

	// Answers of Span.Root and Span.HasAncestorNamed for this evaluation
	// (memoGen), so asking them of every span of a deep chain costs O(n)
	// in all rather than O(n²): a rule cannot tell a 3,000-span chain
	// from a wide tree by its fuel. Reused across evaluations.
	memoGen uint32
	rootOf  []uint32   // span → its Root's index + 1; 0 unknown
	named   []nameMemo // one per name asked, at most maxNameMemos
	path    []uint32   // scratch for the walks

	// gen counts evaluations; a Span carries the generation it was made in,
	// so one kept from an earlier evaluation is caught instead of silently
	// reading the current trace.
	gen uint32
}

// load points t at a new input, validating the header.
func (t *Trace) load(in []byte) {
	t.clear()
	t.gen++
	if len(in) < abiv1.HeaderSize {
		panic("rule: corrupt trace: " + strconv.Itoa(len(in)) + " bytes is shorter than the header")
	}
	if m := le32(in, abiv1.HeaderMagic); m != abiv1.Magic {
		panic("rule: corrupt trace: bad magic 0x" + strconv.FormatUint(uint64(m), 16))
	}
	if v := le32(in, abiv1.HeaderVersion); v != abiv1.Version {
		panic("rule: trace has ABI version " + strconv.FormatUint(uint64(v), 10) +
			", this SDK speaks version " + strconv.Itoa(abiv1.Version))
	}
	n, spans := le32(in, abiv1.HeaderSpanCount), le32(in, abiv1.HeaderSpanTable)
	na, attrs := le32(in, abiv1.HeaderAttrCount), le32(in, abiv1.HeaderAttrTable)
	so, ss := le32(in, abiv1.HeaderStringTable), le32(in, abiv1.HeaderStringSize)
	size := uint64(len(in))
	if uint64(spans)+uint64(n)*abiv1.SpanSize > size {
		panic("rule: corrupt trace: span table (" + strconv.FormatUint(uint64(n), 10) +
			" spans at offset " + strconv.FormatUint(uint64(spans), 10) + ") runs past the end of the input")
	}
	if uint64(attrs)+uint64(na)*abiv1.AttrSize > size {
		panic("rule: corrupt trace: attribute table (" + strconv.FormatUint(uint64(na), 10) +
			" records at offset " + strconv.FormatUint(uint64(attrs), 10) + ") runs past the end of the input")
	}
	if uint64(so)+uint64(ss) > size {
		panic("rule: corrupt trace: string table (" + strconv.FormatUint(uint64(ss), 10) +
			" bytes at offset " + strconv.FormatUint(uint64(so), 10) + ") runs past the end of the input")
	}
	root := le32(in, abiv1.HeaderRootIndex)
	if root != abiv1.None && root >= n {
		corrupt("header root index", root, n)
	}
	t.in, t.strs = in, in[so:so+ss:so+ss]
	t.spans, t.n, t.attrs, t.nattr = int(spans), n, int(attrs), na
	t.root, t.flags = root, le32(in, abiv1.HeaderFlags)
}

// nameMemo holds HasAncestorNamed(name) per span: 0 unknown, 1 no, 2 yes.
type nameMemo struct {
	name string
	has  []uint8
}

// maxNameMemos bounds the names remembered per evaluation; a rule asking
// about more names than this walks ancestors for the rest.
const maxNameMemos = 8

// memos makes the memo tables belong to this evaluation, emptied lazily
// when a rule first needs them.
func (t *Trace) memos() {
	if t.memoGen == t.gen {
		return
	}
	t.memoGen = t.gen
	t.rootOf = t.rootOf[:0]
	t.named = t.named[:0]
}

// rootMemo returns the Root memo, sized to the trace.
func (t *Trace) rootMemo() []uint32 {
	t.memos()
	if len(t.rootOf) == 0 && t.n > 0 {
		t.rootOf = growClear(t.rootOf, t.n)
	}
	return t.rootOf
}

// nameMemo returns the HasAncestorNamed memo of name, or nil when
// maxNameMemos others are taken.
func (t *Trace) nameMemo(name string) []uint8 {
	t.memos()
	for i := range t.named {
		if t.named[i].name == name {
			return t.named[i].has
		}
	}
	if len(t.named) == maxNameMemos {
		return nil
	}
	if len(t.named) < cap(t.named) {
		t.named = t.named[:len(t.named)+1] // reuses an earlier evaluation's table
	} else {
		t.named = append(t.named, nameMemo{})
	}
	m := &t.named[len(t.named)-1]
	m.name, m.has = name, growClear(m.has, t.n)
	return m.has
}

func growClear[T uint8 | uint32](s []T, n uint32) []T {
	if uint32(cap(s)) < n {
		s = make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// clear empties t, keeping its result buffer for reuse. Spans of the last
// evaluation stay invalid until the next load changes the generation.
func (t *Trace) clear() {
	t.in, t.strs, t.spans, t.n, t.attrs, t.nattr, t.root, t.flags = nil, nil, 0, 0, 0, 0, abiv1.None, 0
	t.res, t.reported, t.dropped = t.res[:0], 0, 0
	for i := range t.named {
		t.named[i].name = "" // may point into the input
	}
}

// corrupt panics about an index field that is out of range.
func corrupt(what string, v, limit uint32) {
	panic("rule: corrupt trace: " + what + " " + strconv.FormatUint(uint64(v), 10) +
		" is out of range (limit " + strconv.FormatUint(uint64(limit), 10) + ")")
}

// Len returns the number of spans in the trace.
func (t *Trace) Len() int { return int(t.n) }

// Span returns the i'th span, 0 <= i < Len(). Spans are ordered by start
// time (ties in arrival order), so a lower index never started later.
func (t *Trace) Span(i int) Span {
	if i < 0 || uint64(i) >= uint64(t.n) {
		panic("rule: Trace.Span(" + strconv.Itoa(i) + ") out of range: the trace has " +
			strconv.FormatUint(uint64(t.n), 10) + " spans")
	}
	return Span{t, uint32(i), t.gen}
}

// Spans iterates over every span in start-time order.
func (t *Trace) Spans() iter.Seq[Span] {
	return func(yield func(Span) bool) {
		for i := uint32(0); i < t.n; i++ {
			if !yield(Span{t, i, t.gen}) {
				return
			}
		}
	}
}

// Root returns the trace's root: the earliest span with no parent span ID
// (see Span.IsRoot). ok is false when the trace has none, as in a fragment
// that lacks its root, or in an empty trace.
func (t *Trace) Root() (s Span, ok bool) {
	if t.root == abiv1.None {
		return Span{}, false
	}
	return Span{t, t.root, t.gen}, true
}

// FindByName returns the earliest span with the given name.
func (t *Trace) FindByName(name string) (s Span, ok bool) {
	for i := uint32(0); i < t.n; i++ {
		if t.spanStrEq(i, abiv1.SpanName, name) {
			return Span{t, i, t.gen}, true
		}
	}
	return Span{}, false
}

// SpansNamed iterates, in start-time order, over the spans with the given
// name.
func (t *Trace) SpansNamed(name string) iter.Seq[Span] {
	return func(yield func(Span) bool) {
		for i := uint32(0); i < t.n; i++ {
			if t.spanStrEq(i, abiv1.SpanName, name) && !yield(Span{t, i, t.gen}) {
				return
			}
		}
	}
}

// Fragment reports whether the host knows the trace is incomplete (some of
// its spans are evaluated elsewhere). A rule should not report the absence of
// a span in a fragment.
func (t *Trace) Fragment() bool { return t.flags&abiv1.TraceFlagFragment != 0 }

// Reported returns how many violations this evaluation has reported so far.
func (t *Trace) Reported() int { return t.reported }

// Dropped returns how many reported violations were left out of the result
// because it had reached abiv1.MaxViolations or abiv1.MaxResultBytes.
func (t *Trace) Dropped() int { return t.dropped }

// Little-endian field access. Offsets are checked by the slice expressions,
// so a bad offset panics instead of reading out of bounds.

func le32(b []byte, off int) uint32 {
	b = b[off : off+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func le64(b []byte, off int) uint64 {
	b = b[off : off+8]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// rec returns the offset of span i's record; i must be < t.n.
func (t *Trace) rec(i uint32) int { return t.spans + int(i)*abiv1.SpanSize }

// str resolves the StrRef at offset off of the input.
func (t *Trace) str(off int) string { return view(t.strBytes(off)) }

func (t *Trace) strBytes(off int) []byte {
	o, n := le32(t.in, off), le32(t.in, off+4)
	if uint64(o)+uint64(n) > uint64(len(t.strs)) {
		panic("rule: corrupt trace: string reference (offset " + strconv.FormatUint(uint64(o), 10) +
			", length " + strconv.FormatUint(uint64(n), 10) + ") runs past the string table (" +
			strconv.Itoa(len(t.strs)) + " bytes)")
	}
	return t.strs[o : o+n : o+n]
}

// strEq reports whether the StrRef at offset off equals s, without building
// a string unless the lengths match.
func (t *Trace) strEq(off int, s string) bool {
	if int(le32(t.in, off+4)) != len(s) {
		return false
	}
	return string(t.strBytes(off)) == s
}

func (t *Trace) spanStrEq(i uint32, field int, s string) bool {
	return t.strEq(t.rec(i)+field, s)
}

// link reads a span index field of span i, checking it.
func (t *Trace) link(i uint32, field int, what string) uint32 {
	v := le32(t.in, t.rec(i)+field)
	if v != abiv1.None && v >= t.n {
		corrupt(what, v, t.n)
	}
	return v
}
