package ingest

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// Reasons a span is rejected. Each maps to one reason label of
// betrace_spans_rejected_total (see Rejected.Reason).
var (
	ErrEmptyTraceID      = errors.New("span has an empty trace ID")
	ErrEmptySpanID       = errors.New("span has an empty span ID")
	ErrEmptyName         = errors.New("span has an empty name")
	ErrBadTraceID        = errors.New("span has a malformed trace ID")
	ErrBadSpanID         = errors.New("span has a malformed span ID")
	ErrBadParentSpanID   = errors.New("span has a malformed parent span ID")
	ErrTooManyAttributes = errors.New("span has too many attributes")
	ErrMalformedSpan     = errors.New("span is malformed")
	// ErrTooManyResourceAttributes refuses every span of a resource that
	// carries more than Limits.ResourceAttributes attributes.
	ErrTooManyResourceAttributes = errors.New("span's resource has too many attributes")
)

// reasons maps each rejection error to its metric label. The list is the
// complete, bounded set of labels.
var reasons = [...]struct {
	err   error
	label string
}{
	{ErrEmptyTraceID, "empty_trace_id"},
	{ErrEmptySpanID, "empty_span_id"},
	{ErrEmptyName, "empty_name"},
	{ErrBadTraceID, "bad_trace_id"},
	{ErrBadSpanID, "bad_span_id"},
	{ErrBadParentSpanID, "bad_parent_span_id"},
	{ErrTooManyAttributes, "too_many_attributes"},
	{ErrTooManyResourceAttributes, "too_many_resource_attributes"},
	{ErrMalformedSpan, "malformed"},
}

// Rejected describes one span that was refused while the rest of its
// request was accepted.
type Rejected struct {
	Index int // position of the span in the request, counting from 0
	Err   error
}

// Reason returns the bounded label for the rejection, as used by
// betrace_spans_rejected_total.
func (r Rejected) Reason() string {
	for _, x := range reasons {
		if errors.Is(r.Err, x.err) {
			return x.label
		}
	}
	return "other"
}

func (r Rejected) String() string { return fmt.Sprintf("span %d: %v", r.Index, r.Err) }

// Limits are the bounds Convert applies to each span.
type Limits struct {
	// SpanAttributes is the most attributes one span may carry.
	SpanAttributes int
	// ResourceAttributes is the most attributes one resource may carry.
	ResourceAttributes int
}

// defaultLimits are DefaultConfig's, for DecodeJSON and DecodeProto.
var defaultLimits = Limits{SpanAttributes: defaultMaxAttrs, ResourceAttributes: defaultMaxAttrs}

// Convert appends the valid spans of td to dst and returns the refused ones.
// A span with more than lim.SpanAttributes attributes is refused, and so is
// every span of a resource with more than lim.ResourceAttributes. Spans of
// one resource share a single ResourceAttrs slice.
func Convert(dst []traces.Span, td ptrace.Traces, lim Limits) ([]traces.Span, []Rejected) {
	var rejected []Rejected
	dst = slices.Grow(dst, td.SpanCount())
	index := 0
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := rs.Resource().Attributes()
		if res.Len() > lim.ResourceAttributes {
			// Every span is refused on its own, as the other reasons are, so
			// counts and partial_success stay per span; the attributes are
			// never converted.
			err := fmt.Errorf("%w (resourceSpans[%d]): %d, at most %d", ErrTooManyResourceAttributes, i, res.Len(), lim.ResourceAttributes)
			sss := rs.ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				for range sss.At(j).Spans().Len() {
					rejected = append(rejected, Rejected{Index: index, Err: err})
					index++
				}
			}
			continue
		}
		service := ""
		if v, ok := res.Get("service.name"); ok {
			service = v.AsString()
		}
		resAttrs := appendAttrs(nil, res)
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				if err := check(sp, lim.SpanAttributes); err != nil {
					rejected = append(rejected, Rejected{Index: index, Err: err})
					index++
					continue
				}
				index++
				st := sp.Status()
				dst = append(dst, traces.Span{
					TraceID:       sp.TraceID(),
					SpanID:        sp.SpanID(),
					ParentSpanID:  sp.ParentSpanID(),
					Name:          sp.Name(),
					Service:       service,
					Kind:          uint8(sp.Kind()),
					StatusCode:    uint8(st.Code()),
					StatusMessage: st.Message(),
					StartUnixNano: uint64(sp.StartTimestamp()),
					EndUnixNano:   uint64(sp.EndTimestamp()),
					Attrs:         appendAttrs(nil, sp.Attributes()),
					ResourceAttrs: resAttrs,
				})
			}
		}
	}
	return dst, rejected
}

func check(sp ptrace.Span, maxAttrs int) error {
	switch {
	case sp.TraceID().IsEmpty():
		return fmt.Errorf("%w (span %s)", ErrEmptyTraceID, sp.SpanID())
	case sp.SpanID().IsEmpty():
		return fmt.Errorf("%w (trace %s)", ErrEmptySpanID, sp.TraceID())
	case sp.Name() == "":
		return fmt.Errorf("%w (span %s)", ErrEmptyName, sp.SpanID())
	case sp.Attributes().Len() > maxAttrs:
		return fmt.Errorf("%w (span %s): %d, at most %d", ErrTooManyAttributes, sp.SpanID(), sp.Attributes().Len(), maxAttrs)
	}
	return nil
}

func appendAttrs(dst []traces.Attr, m pcommon.Map) []traces.Attr {
	if m.Len() == 0 {
		return dst
	}
	if dst == nil {
		dst = make([]traces.Attr, 0, m.Len())
	}
	for k, v := range m.All() {
		a := traces.Attr{Key: k}
		switch v.Type() {
		case pcommon.ValueTypeStr:
			a.Type, a.Str = abiv1.ValueString, v.Str()
		case pcommon.ValueTypeBool:
			a.Type = abiv1.ValueBool
			if v.Bool() {
				a.Num = 1
			}
		case pcommon.ValueTypeInt:
			a.Type, a.Num = abiv1.ValueInt, uint64(v.Int())
		case pcommon.ValueTypeDouble:
			a.Type, a.Num = abiv1.ValueDouble, math.Float64bits(v.Double())
		case pcommon.ValueTypeBytes:
			a.Type, a.Str = abiv1.ValueBytes, string(v.Bytes().AsRaw())
		case pcommon.ValueTypeSlice:
			a.Type, a.Str = abiv1.ValueArray, v.AsString()
		case pcommon.ValueTypeMap:
			a.Type, a.Str = abiv1.ValueMap, v.AsString()
		default:
			a.Type = abiv1.ValueEmpty
		}
		dst = append(dst, a)
	}
	return dst
}

// maxPooledSpans keeps the span pool from pinning the largest requests.
const maxPooledSpans = 1 << 14

// convert turns td into spans in a pooled slice; call done once the sink
// has returned, after which the spans must not be used.
func (p *pools) convert(td ptrace.Traces, lim Limits) (spans []traces.Span, rejected []Rejected, done func()) {
	buf, _ := p.spans.Get().(*[]traces.Span)
	if buf == nil {
		buf = new([]traces.Span)
	}
	spans, rejected = Convert((*buf)[:0], td, lim)
	return spans, rejected, func() {
		if cap(spans) > maxPooledSpans {
			return
		}
		clear(spans) // drop the strings and attributes they point at
		*buf = spans[:0]
		p.spans.Put(buf)
	}
}
