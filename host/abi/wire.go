package abi

import (
	"errors"
	"fmt"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// ErrMalformedSpans reports a span buffer that Decode cannot read.
var ErrMalformedSpans = errors.New("malformed encoded spans")

// Decode reads spans back from the ABI layout. Instances use the layout as
// their wire format when they forward spans to the owner of a trace: it is
// compact, already written and already tested, and the receiver needs no
// pdata. Spans of one resource share one ResourceAttrs slice again. The
// input is untrusted; every offset is checked.
func Decode(b []byte) ([]traces.Span, error) {
	if len(b) < abiv1.HeaderSize || le.Uint32(b[abiv1.HeaderMagic:]) != abiv1.Magic || le.Uint32(b[abiv1.HeaderVersion:]) != abiv1.Version {
		return nil, fmt.Errorf("%w: not an ABI v1 buffer", ErrMalformedSpans)
	}
	n := int(le.Uint32(b[abiv1.HeaderSpanCount:]))
	spanTable := int(le.Uint32(b[abiv1.HeaderSpanTable:]))
	attrCount := int(le.Uint32(b[abiv1.HeaderAttrCount:]))
	attrTable := int(le.Uint32(b[abiv1.HeaderAttrTable:]))
	strTable := int(le.Uint32(b[abiv1.HeaderStringTable:]))
	strSize := int(le.Uint32(b[abiv1.HeaderStringSize:]))
	if !within(len(b), spanTable, n, abiv1.SpanSize) || !within(len(b), attrTable, attrCount, abiv1.AttrSize) || !within(len(b), strTable, strSize, 1) {
		return nil, fmt.Errorf("%w: a table runs past the end of the buffer", ErrMalformedSpans)
	}
	strs := b[strTable : strTable+strSize]
	str := func(ref []byte) (string, error) {
		off, l := int(le.Uint32(ref)), int(le.Uint32(ref[4:]))
		if off < 0 || l < 0 || off+l > len(strs) {
			return "", fmt.Errorf("%w: string reference past the string table", ErrMalformedSpans)
		}
		return string(strs[off : off+l]), nil
	}
	attrs := func(start, count uint32) ([]traces.Attr, error) {
		if uint64(start)+uint64(count) > uint64(attrCount) {
			return nil, fmt.Errorf("%w: attribute range past the attribute table", ErrMalformedSpans)
		}
		if count == 0 {
			return nil, nil
		}
		out := make([]traces.Attr, count)
		for i := range out {
			r := b[attrTable+int(start+uint32(i))*abiv1.AttrSize:]
			key, err := str(r[abiv1.AttrKey:])
			if err != nil {
				return nil, err
			}
			a := traces.Attr{Key: key, Type: r[abiv1.AttrType]}
			switch a.Type {
			case abiv1.ValueString, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap:
				if a.Str, err = str(r[abiv1.AttrValue:]); err != nil {
					return nil, err
				}
			default:
				a.Num = le.Uint64(r[abiv1.AttrValue:])
			}
			out[i] = a
		}
		return out, nil
	}
	spans := make([]traces.Span, n)
	resources := map[uint64][]traces.Attr{}
	for i := range spans {
		r := b[spanTable+i*abiv1.SpanSize:]
		s := &spans[i]
		copy(s.TraceID[:], r[abiv1.SpanTraceID:])
		copy(s.SpanID[:], r[abiv1.SpanSpanID:])
		copy(s.ParentSpanID[:], r[abiv1.SpanParentSpanID:])
		s.StartUnixNano = le.Uint64(r[abiv1.SpanStart:])
		s.EndUnixNano = le.Uint64(r[abiv1.SpanEnd:])
		s.Kind, s.StatusCode = r[abiv1.SpanKind], r[abiv1.SpanStatusCode]
		var err error
		if s.Name, err = str(r[abiv1.SpanName:]); err != nil {
			return nil, err
		}
		if s.Service, err = str(r[abiv1.SpanService:]); err != nil {
			return nil, err
		}
		if s.StatusMessage, err = str(r[abiv1.SpanStatusMessage:]); err != nil {
			return nil, err
		}
		if s.Attrs, err = attrs(le.Uint32(r[abiv1.SpanAttrStart:]), le.Uint32(r[abiv1.SpanAttrCount:])); err != nil {
			return nil, err
		}
		rs, rc := le.Uint32(r[abiv1.SpanResAttrStart:]), le.Uint32(r[abiv1.SpanResAttrCount:])
		key := uint64(rs)<<32 | uint64(rc)
		res, ok := resources[key]
		if !ok {
			if res, err = attrs(rs, rc); err != nil {
				return nil, err
			}
			resources[key] = res
		}
		s.ResourceAttrs = res
	}
	return spans, nil
}

func within(total, off, count, size int) bool {
	return off >= 0 && count >= 0 && off <= total && count <= (total-off)/size
}
