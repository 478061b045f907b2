package embedded

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// The index holds one compact entry per stored violation, in key order
// (timestamp, then ID), so that a query can filter and count in memory
// and read from disk only the violations on its page.
//
// Entries live in chunks of at most chunkMax, kept as columns so a filter
// scan touches only the column it compares. Appends in timestamp order go
// to the end of the last chunk; an out-of-order append inserts into one
// small chunk (split when it grows past chunkMax) instead of moving the
// whole index. Retention removes whole chunks from the front.
//
// The index is not safe for concurrent use by itself: the writer goroutine
// is its only mutator and holds Store.idxMu for writing while it mutates;
// queries hold Store.idxMu for reading.

const chunkMax = 4096

// Trace flags say how an entry's trace column is to be read.
const (
	// traceInterned: the trace ID was not 32 lower-case hex digits, so
	// trace[0:4] holds its number in index.traces instead of its bytes.
	traceInterned uint8 = 1 << iota
)

// entry is one index entry in row form, used to move entries in and out.
type entry struct {
	ts    int64
	id    []byte
	rule  uint32
	sev   uint32
	flags uint8
	trace [16]byte
}

type chunk struct {
	ts    []int64
	rule  []uint32
	sev   []uint32
	flags []uint8
	trace [][16]byte
	idOff []uint32
	idLen []uint16
	arena []byte // ID bytes; rewritten whole when the chunk is split or cut
}

func (c *chunk) len() int { return len(c.ts) }

func (c *chunk) id(i int) []byte {
	off := c.idOff[i]
	return c.arena[off : off+uint32(c.idLen[i])]
}

func (c *chunk) entry(i int) entry {
	return entry{
		ts:    c.ts[i],
		id:    bytes.Clone(c.id(i)),
		rule:  c.rule[i],
		sev:   c.sev[i],
		flags: c.flags[i],
		trace: c.trace[i],
	}
}

// cmp orders entry i of c against (ts, id).
func (c *chunk) cmp(i int, ts int64, id []byte) int {
	switch {
	case c.ts[i] < ts:
		return -1
	case c.ts[i] > ts:
		return 1
	}
	return bytes.Compare(c.id(i), id)
}

func (c *chunk) push(e *entry) {
	c.ts = append(c.ts, e.ts)
	c.rule = append(c.rule, e.rule)
	c.sev = append(c.sev, e.sev)
	c.flags = append(c.flags, e.flags)
	c.trace = append(c.trace, e.trace)
	c.idOff = append(c.idOff, uint32(len(c.arena)))
	c.idLen = append(c.idLen, uint16(len(e.id)))
	c.arena = append(c.arena, e.id...)
}

func (c *chunk) insert(i int, e *entry) {
	c.ts = slices.Insert(c.ts, i, e.ts)
	c.rule = slices.Insert(c.rule, i, e.rule)
	c.sev = slices.Insert(c.sev, i, e.sev)
	c.flags = slices.Insert(c.flags, i, e.flags)
	c.trace = slices.Insert(c.trace, i, e.trace)
	c.idOff = slices.Insert(c.idOff, i, uint32(len(c.arena)))
	c.idLen = slices.Insert(c.idLen, i, uint16(len(e.id)))
	c.arena = append(c.arena, e.id...)
}

// copyRange returns a fresh chunk holding entries [lo, hi) of c.
func (c *chunk) copyRange(lo, hi int) *chunk {
	n := hi - lo
	d := &chunk{
		ts:    make([]int64, 0, n),
		rule:  make([]uint32, 0, n),
		sev:   make([]uint32, 0, n),
		flags: make([]uint8, 0, n),
		trace: make([][16]byte, 0, n),
		idOff: make([]uint32, 0, n),
		idLen: make([]uint16, 0, n),
	}
	size := 0
	for i := lo; i < hi; i++ {
		size += int(c.idLen[i])
	}
	d.arena = make([]byte, 0, size)
	for i := lo; i < hi; i++ {
		e := entry{ts: c.ts[i], id: c.id(i), rule: c.rule[i], sev: c.sev[i], flags: c.flags[i], trace: c.trace[i]}
		d.push(&e)
	}
	return d
}

// pos is a position in the index: entry i of chunk c. The end of the
// index is (last chunk, its length); an empty index has only (0, 0).
type pos struct{ c, i int }

// interner numbers strings. Numbers are never reused, so an entry's
// number stays valid for the life of the index.
type interner struct {
	ids map[string]uint32
}

func (n *interner) lookup(s string) (uint32, bool) {
	v, ok := n.ids[s]
	return v, ok
}

func (n *interner) intern(s string) uint32 {
	if v, ok := n.ids[s]; ok {
		return v
	}
	if n.ids == nil {
		n.ids = make(map[string]uint32)
	}
	v := uint32(len(n.ids))
	n.ids[s] = v
	return v
}

type index struct {
	chunks []*chunk
	n      int
	// perRule counts the entries of each rule (by interned number), for
	// retention per rule and for finding the rule that holds the most.
	perRule map[uint32]int
	rules   interner
	sevs    interner
	traces  interner // trace IDs that are not 32 lower-case hex digits
}

// parseTrace turns a canonical trace ID (32 lower-case hex digits) into
// its 16 bytes.
func parseTrace(s string) (b [16]byte, ok bool) {
	if len(s) != 32 {
		return b, false
	}
	for i := 0; i < 16; i++ {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return b, false
		}
		b[i] = hi<<4 | lo
	}
	return b, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// makeEntry builds an index entry, numbering new strings. Writer only.
func (x *index) makeEntry(ts int64, id []byte, severity, ruleID, traceID string) entry {
	e := entry{ts: ts, id: id, rule: x.rules.intern(ruleID), sev: x.sevs.intern(severity)}
	if b, ok := parseTrace(traceID); ok {
		e.trace = b
	} else {
		e.flags |= traceInterned
		binary.BigEndian.PutUint32(e.trace[:4], x.traces.intern(traceID))
	}
	return e
}

func (x *index) end() pos {
	if len(x.chunks) == 0 {
		return pos{}
	}
	last := len(x.chunks) - 1
	return pos{last, x.chunks[last].len()}
}

// search returns the position of the first entry at or after (ts, id).
func (x *index) search(ts int64, id []byte) pos {
	// First chunk whose last entry is >= (ts, id).
	c, _ := slices.BinarySearchFunc(x.chunks, 0, func(ch *chunk, _ int) int {
		return ch.cmp(ch.len()-1, ts, id)
	})
	if c == len(x.chunks) {
		return x.end()
	}
	ch := x.chunks[c]
	lo, hi := 0, ch.len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ch.cmp(m, ts, id) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return pos{c, lo}
}

// ord is the number of entries before p.
func (x *index) ord(p pos) int {
	n := 0
	for c := 0; c < p.c && c < len(x.chunks); c++ {
		n += x.chunks[c].len()
	}
	return n + p.i
}

// has reports whether an entry with this key exists.
func (x *index) has(ts int64, id []byte) bool {
	p := x.search(ts, id)
	return p.c < len(x.chunks) && p.i < x.chunks[p.c].len() && x.chunks[p.c].cmp(p.i, ts, id) == 0
}

// upsert adds e, or replaces the entry with the same key.
func (x *index) upsert(e *entry) {
	if len(x.chunks) == 0 {
		x.chunks = append(x.chunks, &chunk{})
	}
	last := x.chunks[len(x.chunks)-1]
	if last.len() == 0 || last.cmp(last.len()-1, e.ts, e.id) < 0 {
		// The common case: newer than everything stored.
		if last.len() >= chunkMax {
			last = &chunk{}
			x.chunks = append(x.chunks, last)
		}
		last.push(e)
		x.counted(e.rule, 1)
		return
	}
	p := x.search(e.ts, e.id)
	ch := x.chunks[p.c]
	if p.i < ch.len() && ch.cmp(p.i, e.ts, e.id) == 0 {
		if was := ch.rule[p.i]; was != e.rule {
			x.counted(was, -1)
			x.counted(e.rule, 1)
		}
		ch.rule[p.i], ch.sev[p.i], ch.flags[p.i], ch.trace[p.i] = e.rule, e.sev, e.flags, e.trace
		return
	}
	ch.insert(p.i, e)
	x.counted(e.rule, 1)
	if ch.len() > chunkMax {
		half := ch.len() / 2
		a, b := ch.copyRange(0, half), ch.copyRange(half, ch.len())
		x.chunks[p.c] = a
		x.chunks = slices.Insert(x.chunks, p.c+1, b)
	}
}

// counted adds d entries of rule r to the counts.
func (x *index) counted(r uint32, d int) {
	if x.perRule == nil {
		x.perRule = make(map[uint32]int)
	}
	x.n += d
	if x.perRule[r] += d; x.perRule[r] <= 0 {
		delete(x.perRule, r)
	}
}

// countBefore is the number of entries older than ts.
func (x *index) countBefore(ts int64) int {
	return x.ord(x.search(ts, nil))
}

// removeFront removes the n oldest entries and returns them, oldest first.
func (x *index) removeFront(n int) []entry {
	n = min(n, x.n)
	out := make([]entry, 0, n)
	for len(out) < n {
		ch := x.chunks[0]
		take := min(ch.len(), n-len(out))
		for i := 0; i < take; i++ {
			out = append(out, ch.entry(i))
			x.counted(ch.rule[i], -1)
		}
		if take == ch.len() {
			x.chunks[0] = nil
			x.chunks = x.chunks[1:]
		} else {
			x.chunks[0] = ch.copyRange(take, ch.len())
		}
	}
	if len(x.chunks) == 0 {
		x.chunks = nil
	}
	return out
}

// oldestOf walks rule r's entries oldest first, calling fn with each
// entry's chunk and offset until fn returns false.
func (x *index) oldestOf(r uint32, fn func(ch *chunk, i int) bool) {
	for _, ch := range x.chunks {
		for i, v := range ch.rule {
			if v == r && !fn(ch, i) {
				return
			}
		}
	}
}

// removeOldestOf removes the n oldest entries of rule r and returns them,
// oldest first. A chunk that loses entries is rebuilt without them, and
// one left empty is dropped (search needs every chunk non-empty).
func (x *index) removeOldestOf(r uint32, n int) []entry {
	n = min(n, x.perRule[r])
	out := make([]entry, 0, n)
	for c := 0; c < len(x.chunks) && len(out) < n; {
		ch := x.chunks[c]
		var keep []int
		for i, v := range ch.rule {
			if v == r && len(out) < n {
				out = append(out, ch.entry(i))
			} else {
				keep = append(keep, i)
			}
		}
		if len(keep) == ch.len() {
			c++
			continue
		}
		if len(keep) == 0 {
			x.chunks = slices.Delete(x.chunks, c, c+1)
			continue
		}
		d := &chunk{}
		for _, i := range keep {
			e := entry{ts: ch.ts[i], id: ch.id(i), rule: ch.rule[i], sev: ch.sev[i], flags: ch.flags[i], trace: ch.trace[i]}
			d.push(&e)
		}
		x.chunks[c] = d
		c++
	}
	x.counted(r, -len(out))
	if len(x.chunks) == 0 {
		x.chunks = nil
	}
	return out
}

// scanBack calls fn for each chunk's slice of [from, to), newest chunk
// first, until fn returns false. fn scans its slice [lo, hi) itself.
func (x *index) scanBack(from, to pos, fn func(ch *chunk, lo, hi int) bool) {
	if len(x.chunks) == 0 {
		return
	}
	for c := to.c; c >= from.c; c-- {
		ch := x.chunks[c]
		lo, hi := 0, ch.len()
		if c == from.c {
			lo = from.i
		}
		if c == to.c {
			hi = to.i
		}
		if lo < hi && !fn(ch, lo, hi) {
			return
		}
	}
}

// filter is a query's attribute filter in index terms.
type filter struct {
	rule, sev, trace bool // which columns to compare
	ruleV, sevV      uint32
	traceFlags       uint8
	traceV           [16]byte
	none             bool // a filter value was never stored: nothing matches
}

func (f *filter) any() bool { return f.rule || f.sev || f.trace }

func (x *index) makeFilter(severity, ruleID, traceID string) filter {
	var f filter
	var ok bool
	if ruleID != "" {
		f.rule = true
		if f.ruleV, ok = x.rules.lookup(ruleID); !ok {
			f.none = true
		}
	}
	if severity != "" {
		f.sev = true
		if f.sevV, ok = x.sevs.lookup(severity); !ok {
			f.none = true
		}
	}
	if traceID != "" {
		f.trace = true
		if b, canon := parseTrace(traceID); canon {
			f.traceV = b
		} else if v, ok := x.traces.lookup(traceID); ok {
			f.traceFlags = traceInterned
			binary.BigEndian.PutUint32(f.traceV[:4], v)
		} else {
			f.none = true
		}
	}
	return f
}

func (f *filter) match(ch *chunk, i int) bool {
	return (!f.rule || ch.rule[i] == f.ruleV) &&
		(!f.sev || ch.sev[i] == f.sevV) &&
		(!f.trace || (ch.trace[i] == f.traceV && ch.flags[i]&traceInterned == f.traceFlags))
}

// count is the number of matches in entries [a, b) of ch.
func (f *filter) count(ch *chunk, a, b int) int {
	n := 0
	switch {
	case f.rule && !f.sev && !f.trace:
		for _, v := range ch.rule[a:b] {
			if v == f.ruleV {
				n++
			}
		}
	case f.sev && !f.rule && !f.trace:
		for _, v := range ch.sev[a:b] {
			if v == f.sevV {
				n++
			}
		}
	case f.trace && !f.rule && !f.sev:
		flags := ch.flags[a:b]
		for i, v := range ch.trace[a:b] {
			if v == f.traceV && flags[i]&traceInterned == f.traceFlags {
				n++
			}
		}
	default:
		for i := a; i < b; i++ {
			if f.match(ch, i) {
				n++
			}
		}
	}
	return n
}
