package traces

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// Trace is one completed trace, handed to the consumer given to New.
//
// Its spans stay counted against Config.MaxBytes until Release is called, so
// a consumer that falls behind makes ingest answer "retry later" instead of
// letting memory grow. After Release the consumer must not keep Spans.
type Trace struct {
	ID         [16]byte
	Spans      []Span // in arrival order
	Completion Completion
	FirstSeen  time.Time // arrival of the first span
	LastSeen   time.Time // arrival of the last span
	Completed  time.Time // when the assembler decided the trace was complete
	// Fragment is set when the trace is known to be incomplete (for example
	// because other spans of it were assembled on another instance); rules
	// must not report the absence of a span on a fragment.
	Fragment bool

	bytes atomic.Int64
	owner *Assembler
}

// Bytes returns the estimated size counted against Config.MaxBytes, or 0
// once the trace has been released.
func (t *Trace) Bytes() int64 { return t.bytes.Load() }

// Release returns the trace's bytes to the buffer. It is safe to call more
// than once and from any goroutine; only the first call counts.
func (t *Trace) Release() {
	if n := t.bytes.Swap(0); n != 0 && t.owner != nil {
		t.owner.used.Add(-n)
	}
}

// Estimated sizes: the struct itself plus the bytes of its strings. Resource
// attributes are shared by the spans of one resource and are charged once
// per run of spans that share them.
const (
	spanStructBytes = int64(unsafe.Sizeof(Span{}))
	attrStructBytes = int64(unsafe.Sizeof(Attr{}))
)

func attrsBytes(as []Attr) int64 {
	n := int64(len(as)) * attrStructBytes
	for i := range as {
		n += int64(len(as[i].Key) + len(as[i].Str))
	}
	return n
}

// sizer estimates the bytes of consecutive spans of one batch.
type sizer struct{ lastRes *Attr }

func (z *sizer) size(s *Span) int64 {
	n := spanStructBytes + int64(len(s.Name)+len(s.Service)+len(s.StatusMessage)) + attrsBytes(s.Attrs)
	if len(s.ResourceAttrs) > 0 && &s.ResourceAttrs[0] != z.lastRes {
		z.lastRes = &s.ResourceAttrs[0]
		n += attrsBytes(s.ResourceAttrs)
	}
	return n
}

// SpanBytes returns the estimated size of spans as Add counts it.
func SpanBytes(spans []Span) int64 {
	var z sizer
	var n int64
	for i := range spans {
		n += z.size(&spans[i])
	}
	return n
}
