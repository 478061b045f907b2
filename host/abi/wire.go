package abi

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// ErrMalformedSpans reports a span buffer that Decode cannot read.
var ErrMalformedSpans = errors.New("malformed encoded spans")

// Decode reads spans back from the ABI layout. Instances use the layout as
// their wire format when they forward spans to the owner of a trace: it is
// compact, already written and already tested, and the receiver needs no
// pdata.
//
// The input is untrusted; every offset is checked, and nothing it says can
// make the result larger than a small multiple of the input (DecodedBytes):
// the string table becomes one string that every name, key and value is a
// substring of, and the attribute table is decoded once, each span's
// attributes a sub-slice of it. A buffer whose spans all reference the whole
// string table or all of the attributes costs no more than one that does
// not. Spans of one resource share one ResourceAttrs slice again.
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
	strs := string(b[strTable : strTable+strSize])
	str := func(ref []byte) (string, error) {
		off, l := uint64(le.Uint32(ref)), uint64(le.Uint32(ref[4:]))
		if off+l > uint64(len(strs)) {
			return "", fmt.Errorf("%w: string reference past the string table", ErrMalformedSpans)
		}
		return strs[off : off+l], nil
	}
	var table []traces.Attr
	if attrCount > 0 {
		table = make([]traces.Attr, attrCount)
	}
	for i := range table {
		r := b[attrTable+i*abiv1.AttrSize:]
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
		table[i] = a
	}
	attrs := func(start, count uint32) ([]traces.Attr, error) {
		if uint64(start)+uint64(count) > uint64(attrCount) {
			return nil, fmt.Errorf("%w: attribute range past the attribute table", ErrMalformedSpans)
		}
		if count == 0 {
			return nil, nil
		}
		end := start + count
		return table[start:end:end], nil // full slice: an append never writes into a neighbour
	}
	spans := make([]traces.Span, n)
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
		if s.ResourceAttrs, err = attrs(le.Uint32(r[abiv1.SpanResAttrStart:]), le.Uint32(r[abiv1.SpanResAttrCount:])); err != nil {
			return nil, err
		}
	}
	return spans, nil
}

// DecodedBytes is the most memory Decode's result can hold for an input of
// inputBytes: each span and attribute record grows by less than its Go form
// over its wire form, and the string table is copied once.
func DecodedBytes(inputBytes int) int {
	const spanGrowth = (int(unsafe.Sizeof(traces.Span{})) + abiv1.SpanSize - 1) / abiv1.SpanSize
	const attrGrowth = (int(unsafe.Sizeof(traces.Attr{})) + abiv1.AttrSize - 1) / abiv1.AttrSize
	return (max(spanGrowth, attrGrowth) + 1) * inputBytes
}

func within(total, off, count, size int) bool {
	return off >= 0 && count >= 0 && off <= total && count <= (total-off)/size
}
