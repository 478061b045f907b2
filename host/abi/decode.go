package abi

import (
	"errors"
	"fmt"

	"github.com/betracehq/betrace/api/abiv1"
)

// ErrMalformedResult reports a result or description record that breaks the
// ABI v1 layout. The wrapping error says which field and why.
var ErrMalformedResult = errors.New("malformed rule output")

// Violation is one violation record returned by a rule.
type Violation struct {
	SpanIndex uint32 // record position in the encoded trace
	Message   string
	Attrs     []KeyValue
}

// KeyValue is a string attribute of a violation or a description.
type KeyValue struct{ Key, Value string }

// DecodeResult parses a result record of a trace with spanCount spans and
// appends its violations to dst. Strings are copied out of out, which may be
// guest memory.
func DecodeResult(dst []Violation, out []byte, spanCount uint32) ([]Violation, error) {
	if len(out) == 0 {
		return dst, nil
	}
	if len(out) > abiv1.MaxResultBytes {
		return dst, fmt.Errorf("%w: result is %d bytes, more than the %d allowed", ErrMalformedResult, len(out), abiv1.MaxResultBytes)
	}
	r := reader{b: out}
	count := r.u32("violation count")
	if r.err == nil && count > abiv1.MaxViolations {
		return dst, fmt.Errorf("%w: %d violations in one result, more than the %d allowed", ErrMalformedResult, count, abiv1.MaxViolations)
	}
	for i := uint32(0); i < count && r.err == nil; i++ {
		var v Violation
		v.SpanIndex = r.u32("span index")
		if r.err == nil && v.SpanIndex >= spanCount {
			return dst, fmt.Errorf("%w: violation[%d] names span index %d but the trace has %d spans", ErrMalformedResult, i, v.SpanIndex, spanCount)
		}
		v.Message = r.str("message", abiv1.MaxMessageBytes)
		v.Attrs = r.pairs(abiv1.MaxViolationAttrs)
		if r.err != nil {
			return dst, fmt.Errorf("%w: violation[%d]: %w", ErrMalformedResult, i, r.err)
		}
		dst = append(dst, v)
	}
	if r.err != nil {
		return dst, fmt.Errorf("%w: %w", ErrMalformedResult, r.err)
	}
	if r.off != len(out) {
		return dst, fmt.Errorf("%w: %d bytes left over after %d violations", ErrMalformedResult, len(out)-r.off, count)
	}
	return dst, nil
}

// Description is what a module says about itself.
type Description struct {
	ID, Name, Severity, Description string
	Tags                            []string
}

// DecodeDescription parses a self-description record. Unknown keys are
// ignored so later revisions can add some.
func DecodeDescription(b []byte) (Description, error) {
	var d Description
	if len(b) > abiv1.MaxDescribeBytes {
		return d, fmt.Errorf("%w: description is %d bytes, more than the %d allowed", ErrMalformedResult, len(b), abiv1.MaxDescribeBytes)
	}
	r := reader{b: b}
	kvs := r.pairs(64)
	if r.err == nil && r.off != len(b) {
		r.err = fmt.Errorf("%d bytes left over", len(b)-r.off)
	}
	if r.err != nil {
		return d, fmt.Errorf("%w: description: %w", ErrMalformedResult, r.err)
	}
	for _, kv := range kvs {
		switch kv.Key {
		case abiv1.DescribeKeyID:
			d.ID = kv.Value
		case abiv1.DescribeKeyName:
			d.Name = kv.Value
		case abiv1.DescribeKeySeverity:
			d.Severity = kv.Value
		case abiv1.DescribeKeyDescription:
			d.Description = kv.Value
		case abiv1.DescribeKeyTags:
			d.Tags = splitTags(kv.Value)
		}
	}
	return d, nil
}

func splitTags(s string) []string {
	var tags []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if t := trimSpace(s[start:i]); t != "" {
				tags = append(tags, t)
			}
			start = i + 1
		}
	}
	return tags
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// reader reads little-endian fields, remembering the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) u32(field string) uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 4 {
		r.err = fmt.Errorf("%s at offset %d runs past the end (%d bytes)", field, r.off, len(r.b))
		return 0
	}
	v := le.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) str(field string, max int) string {
	n := r.u32(field + " length")
	if r.err != nil {
		return ""
	}
	if int64(n) > int64(max) {
		r.err = fmt.Errorf("%s is %d bytes, more than the %d allowed", field, n, max)
		return ""
	}
	if len(r.b)-r.off < int(n) {
		r.err = fmt.Errorf("%s of %d bytes at offset %d runs past the end (%d bytes)", field, n, r.off, len(r.b))
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

func (r *reader) pairs(max uint32) []KeyValue {
	n := r.u32("attribute count")
	if r.err != nil || n == 0 {
		return nil
	}
	if n > max {
		r.err = fmt.Errorf("%d attributes, more than the %d allowed", n, max)
		return nil
	}
	kvs := make([]KeyValue, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		k := r.str("attribute key", abiv1.MaxKeyBytes)
		v := r.str("attribute value", abiv1.MaxValueBytes)
		kvs = append(kvs, KeyValue{k, v})
	}
	return kvs
}
