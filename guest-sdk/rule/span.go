package rule

import (
	"iter"
	"strconv"

	"github.com/betracehq/betrace/api/abiv1"
)

// Span is one span of the trace being evaluated: a small value (the trace
// and an index) that decodes fields from the input on demand. Strings it
// returns point into the input and are only valid until the Check returns;
// copy one (strings.Clone) to keep it longer.
//
// The zero Span is not a span of any trace; calling its methods panics.
type Span struct {
	t   *Trace
	i   uint32
	gen uint32
}

// Kind is a span kind, numbered as in OTLP.
type Kind uint8

// Span kinds.
const (
	KindUnspecified = Kind(abiv1.KindUnspecified)
	KindInternal    = Kind(abiv1.KindInternal)
	KindServer      = Kind(abiv1.KindServer)
	KindClient      = Kind(abiv1.KindClient)
	KindProducer    = Kind(abiv1.KindProducer)
	KindConsumer    = Kind(abiv1.KindConsumer)
)

func (k Kind) String() string {
	switch k {
	case KindUnspecified:
		return "unspecified"
	case KindInternal:
		return "internal"
	case KindServer:
		return "server"
	case KindClient:
		return "client"
	case KindProducer:
		return "producer"
	case KindConsumer:
		return "consumer"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// StatusCode is a span status code, numbered as in OTLP.
type StatusCode uint8

// Span status codes.
const (
	StatusUnset = StatusCode(abiv1.StatusUnset)
	StatusOK    = StatusCode(abiv1.StatusOK)
	StatusError = StatusCode(abiv1.StatusError)
)

func (c StatusCode) String() string {
	switch c {
	case StatusUnset:
		return "unset"
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	}
	return "status(" + strconv.Itoa(int(c)) + ")"
}

// off returns the offset of the span's record, checking that the span
// belongs to the trace being evaluated.
func (s Span) off() int {
	if s.t == nil {
		panic("rule: method called on the zero Span")
	}
	if s.gen != s.t.gen || s.i >= s.t.n {
		panic("rule: span " + strconv.FormatUint(uint64(s.i), 10) +
			" used outside the evaluation it came from")
	}
	return s.t.rec(s.i)
}

// Index returns the span's position in the trace (see Trace.Span).
func (s Span) Index() int { s.off(); return int(s.i) }

// Name returns the span name.
func (s Span) Name() string { o := s.off(); return s.t.str(o + abiv1.SpanName) }

// Service returns the service.name resource attribute of the span.
func (s Span) Service() string { o := s.off(); return s.t.str(o + abiv1.SpanService) }

// Kind returns the span kind.
func (s Span) Kind() Kind { o := s.off(); return Kind(s.t.in[o+abiv1.SpanKind]) }

// Status returns the span status code.
func (s Span) Status() StatusCode {
	o := s.off()
	return StatusCode(s.t.in[o+abiv1.SpanStatusCode])
}

// StatusMessage returns the span status message.
func (s Span) StatusMessage() string { o := s.off(); return s.t.str(o + abiv1.SpanStatusMessage) }

// IsError reports whether the span status is StatusError.
func (s Span) IsError() bool { return s.Status() == StatusError }

// Start returns the start time in nanoseconds since the Unix epoch.
func (s Span) Start() int64 { o := s.off(); return int64(le64(s.t.in, o+abiv1.SpanStart)) }

// End returns the end time in nanoseconds since the Unix epoch.
func (s Span) End() int64 { o := s.off(); return int64(le64(s.t.in, o+abiv1.SpanEnd)) }

// Duration returns End() - Start(), or 0 if the span ends before it starts.
func (s Span) Duration() Duration {
	if d := s.End() - s.Start(); d > 0 {
		return Duration(d)
	}
	return 0
}

// TraceID returns the trace ID as 32 lower-case hex digits. It allocates.
func (s Span) TraceID() string {
	o := s.off() + abiv1.SpanTraceID
	return hexString(s.t.in[o : o+16])
}

// SpanID returns the span ID as 16 lower-case hex digits. It allocates.
func (s Span) SpanID() string {
	o := s.off() + abiv1.SpanSpanID
	return hexString(s.t.in[o : o+8])
}

// ParentSpanID returns the parent span ID as 16 lower-case hex digits, or ""
// for a root span. The parent need not be in the trace (see Parent). It
// allocates.
func (s Span) ParentSpanID() string {
	if s.IsRoot() {
		return ""
	}
	o := s.off() + abiv1.SpanParentSpanID
	return hexString(s.t.in[o : o+8])
}

// IsRoot reports whether the span has no parent span ID: it started its
// trace. A span whose parent is merely missing from the trace is not a root;
// Parent returns false for both.
func (s Span) IsRoot() bool {
	o := s.off() + abiv1.SpanParentSpanID
	return le64(s.t.in, o) == 0
}

// Parent returns the span's parent, if the parent is in the trace.
func (s Span) Parent() (Span, bool) {
	s.off()
	p := s.t.link(s.i, abiv1.SpanParentIndex, "parent index")
	if p == abiv1.None {
		return Span{}, false
	}
	return Span{s.t, p, s.gen}, true
}

// Children iterates over the span's direct children in start-time order.
func (s Span) Children() iter.Seq[Span] {
	return func(yield func(Span) bool) {
		s.off()
		c := s.t.link(s.i, abiv1.SpanFirstChild, "first child index")
		for steps := uint32(0); c != abiv1.None; steps++ {
			if steps >= s.t.n {
				panic("rule: corrupt trace: sibling links form a cycle")
			}
			if !yield(Span{s.t, c, s.gen}) {
				return
			}
			c = s.t.link(c, abiv1.SpanNextSibling, "next sibling index")
		}
	}
}

// NumChildren returns the number of direct children of the span.
func (s Span) NumChildren() int {
	n := 0
	for range s.Children() {
		n++
	}
	return n
}

// Ancestors iterates over the span's ancestors, nearest (the parent) first,
// stopping at the first one whose parent is not in the trace.
func (s Span) Ancestors() iter.Seq[Span] {
	return func(yield func(Span) bool) {
		s.off()
		p := s.t.link(s.i, abiv1.SpanParentIndex, "parent index")
		for steps := uint32(0); p != abiv1.None; steps++ {
			if steps >= s.t.n {
				panic("rule: corrupt trace: parent links form a cycle")
			}
			if !yield(Span{s.t, p, s.gen}) {
				return
			}
			p = s.t.link(p, abiv1.SpanParentIndex, "parent index")
		}
	}
}

// Root returns the farthest ancestor of the span that is in the trace, or
// the span itself if its parent is not. Use IsRoot on the result to tell a
// complete chain from one cut short by a missing span. Asking it of every
// span costs O(spans) in all: answers are remembered for the evaluation.
func (s Span) Root() Span {
	s.off()
	t := s.t
	memo := t.rootMemo()
	path := t.path[:0]
	x, root := s.i, s.i
	for steps := uint32(0); ; steps++ {
		if steps > t.n {
			panic("rule: corrupt trace: parent links form a cycle")
		}
		if r := memo[x]; r != 0 {
			root = r - 1
			break
		}
		path = append(path, x)
		p := t.link(x, abiv1.SpanParentIndex, "parent index")
		if p == abiv1.None {
			root = x
			break
		}
		x = p
	}
	for _, y := range path {
		memo[y] = root + 1
	}
	t.path = path[:0]
	return Span{t, root, s.gen}
}

// HasAncestorNamed reports whether any ancestor of the span has the name.
// Like Root, it costs O(spans) for all the spans of an evaluation together,
// for up to eight different names.
func (s Span) HasAncestorNamed(name string) bool {
	s.off()
	t := s.t
	memo := t.nameMemo(name)
	if memo == nil {
		for a := range s.Ancestors() {
			if t.spanStrEq(a.i, abiv1.SpanName, name) {
				return true
			}
		}
		return false
	}
	// Walk up until an answer is known; every span on the way has the same
	// answer, since each one's ancestors are the next one's plus its parent,
	// whose name did not match.
	path := t.path[:0]
	x, has := s.i, false
	for steps := uint32(0); ; steps++ {
		if steps > t.n {
			panic("rule: corrupt trace: parent links form a cycle")
		}
		if v := memo[x]; v != 0 {
			has = v == 2
			break
		}
		path = append(path, x)
		p := t.link(x, abiv1.SpanParentIndex, "parent index")
		if p == abiv1.None {
			break
		}
		if t.spanStrEq(p, abiv1.SpanName, name) {
			has = true
			break
		}
		x = p
	}
	v := uint8(1)
	if has {
		v = 2
	}
	for _, y := range path {
		memo[y] = v
	}
	t.path = path[:0]
	return has
}

// Descendants iterates over the span's subtree, depth first, children in
// start-time order, not including the span itself.
func (s Span) Descendants() iter.Seq[Span] {
	return func(yield func(Span) bool) {
		s.off()
		t := s.t
		c := t.link(s.i, abiv1.SpanFirstChild, "first child index")
		for steps := uint32(0); c != abiv1.None; steps++ {
			if steps >= t.n {
				panic("rule: corrupt trace: span links form a cycle")
			}
			if !yield(Span{t, c, s.gen}) {
				return
			}
			// Next in pre-order: first child, else the next sibling of the
			// nearest span (c or an ancestor below s) that has one.
			next := t.link(c, abiv1.SpanFirstChild, "first child index")
			for climb := uint32(0); next == abiv1.None && c != s.i; climb++ {
				if climb >= t.n {
					panic("rule: corrupt trace: parent links form a cycle")
				}
				next = t.link(c, abiv1.SpanNextSibling, "next sibling index")
				if next != abiv1.None {
					break
				}
				c = t.link(c, abiv1.SpanParentIndex, "parent index")
				if c == abiv1.None {
					panic("rule: corrupt trace: child and parent links disagree")
				}
			}
			c = next
		}
	}
}

const hexDigits = "0123456789abcdef"

func hexString[T string | []byte](b T) string {
	out := make([]byte, 2*len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		out[2*i], out[2*i+1] = hexDigits[c>>4], hexDigits[c&15]
	}
	return view(out) // out is not used again
}
