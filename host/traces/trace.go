package traces

import (
	"context"
	"sync/atomic"
	"time"
)

// Sink takes spans on, one stage to the next: the receivers hand each
// request's spans to one, the cluster's router is one (it forwards what
// peers own) and hands the rest to another, and the assembler's Add is
// the last. It returns an error wrapping ErrFull when it cannot take them
// now, ErrUnavailable when it is shutting down or cannot reach where they
// belong, and ErrBatchTooLarge when the batch can never fit. The spans are
// the caller's again once it returns, whatever it returns: a Sink that
// keeps them copies them (the assembler packs them).
type Sink func(ctx context.Context, spans []Span) error

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

	bytes  atomic.Int64
	owner  *Assembler
	packed *pending // until delivered: the spans, packed
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

// sizer counts the packed bytes of consecutive spans of one batch: a
// resource block once per run of spans that share it (the assembler shares
// it at least that often, so the count is never under what it keeps).
type sizer struct{ lastRes *Attr }

func (z *sizer) size(s *Span) int64 {
	newRes := false
	if len(s.ResourceAttrs) > 0 && &s.ResourceAttrs[0] != z.lastRes {
		z.lastRes = &s.ResourceAttrs[0]
		newRes = true
	}
	return packedSize(s, newRes)
}

// SpanBytes returns the bytes Add counts for spans against
// Config.MaxBytes: their packed size (see packed.go).
func SpanBytes(spans []Span) int64 {
	var z sizer
	var n int64
	for i := range spans {
		n += z.size(&spans[i])
	}
	return n
}
