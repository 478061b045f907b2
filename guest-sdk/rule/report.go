package rule

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/betracehq/betrace/api/abiv1"
)

// Attribute is a key/value pair attached to a violation. Build one with
// Attr, AttrInt, AttrFloat or AttrBool; numbers are formatted only when the
// violation is written, straight into the result buffer.
type Attribute struct {
	key  string
	kind uint8
	str  string
	num  uint64
}

const (
	attrString uint8 = iota
	attrInt
	attrFloat
	attrBool
)

// Attr returns a violation attribute with a string value.
func Attr(key, value string) Attribute { return Attribute{key: key, kind: attrString, str: value} }

// AttrInt returns a violation attribute with an integer value.
func AttrInt(key string, value int64) Attribute {
	return Attribute{key: key, kind: attrInt, num: uint64(value)}
}

// AttrFloat returns a violation attribute with a floating-point value.
func AttrFloat(key string, value float64) Attribute {
	return Attribute{key: key, kind: attrFloat, num: math.Float64bits(value)}
}

// AttrBool returns a violation attribute with a boolean value.
func AttrBool(key string, value bool) Attribute {
	a := Attribute{key: key, kind: attrBool}
	if value {
		a.num = 1
	}
	return a
}

// Key returns the attribute's key.
func (a Attribute) Key() string { return a.key }

// Value returns the attribute's value as the text the host receives.
func (a Attribute) Value() string { return string(a.appendValue(nil)) }

func (a Attribute) appendValue(b []byte) []byte {
	switch a.kind {
	case attrInt:
		return strconv.AppendInt(b, int64(a.num), 10)
	case attrFloat:
		return strconv.AppendFloat(b, math.Float64frombits(a.num), 'g', -1, 64)
	case attrBool:
		return strconv.AppendBool(b, a.num != 0)
	}
	return append(b, a.str...)
}

// String returns "key=value".
func (a Attribute) String() string { return a.key + "=" + a.Value() }

// Report records a violation on span s with a message for the person on
// call and optional attributes. The message and attributes are copied, so
// they may be built from strings read from the trace.
//
// Report keeps the result within the ABI limits: a message, key or value
// that is too long is cut (at a UTF-8 boundary), attributes past
// abiv1.MaxViolationAttrs are left out, and a violation that would exceed
// abiv1.MaxViolations or abiv1.MaxResultBytes is dropped and counted by
// Dropped. Invalid UTF-8 is replaced by U+FFFD.
func (t *Trace) Report(s Span, msg string, attrs ...Attribute) {
	s.off()
	if s.t != t {
		panic("rule: Report with a span of another trace")
	}
	if t.reported >= abiv1.MaxViolations {
		t.dropped++
		return
	}
	mark := len(t.res)
	if mark == 0 {
		t.res = append(t.res, 0, 0, 0, 0) // violation count, set by finish
	}
	t.res = appendU32(t.res, s.i)
	t.res = appendStr(t.res, msg, abiv1.MaxMessageBytes)
	n := min(len(attrs), abiv1.MaxViolationAttrs)
	t.res = appendU32(t.res, uint32(n))
	for _, a := range attrs[:n] {
		t.res = appendStr(t.res, a.key, abiv1.MaxKeyBytes)
		if a.kind == attrString {
			t.res = appendStr(t.res, a.str, abiv1.MaxValueBytes)
			continue
		}
		at := len(t.res)
		t.res = a.appendValue(append(t.res, 0, 0, 0, 0))
		putU32(t.res[at:], uint32(len(t.res)-at-4))
	}
	if len(t.res) > abiv1.MaxResultBytes {
		t.res = t.res[:mark]
		t.dropped++
		return
	}
	t.reported++
}

// finish completes the result record: empty when nothing was reported.
func (t *Trace) finish() []byte {
	if t.reported == 0 {
		return t.res[:0]
	}
	putU32(t.res, uint32(t.reported))
	return t.res
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

func putU32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// appendStr appends a u32 length and s, made valid UTF-8 and cut to at most
// limit bytes.
func appendStr(b []byte, s string, limit int) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return append(appendU32(b, uint32(len(s))), s...)
}

// Violation is one decoded violation record.
type Violation struct {
	Span    int // index of the span in the evaluated trace
	Message string
	Attrs   []Attribute
}

// String returns "span N: message [k=v ...]".
func (v Violation) String() string {
	var b strings.Builder
	b.WriteString("span ")
	b.WriteString(strconv.Itoa(v.Span))
	b.WriteString(": ")
	b.WriteString(v.Message)
	if len(v.Attrs) > 0 {
		b.WriteString(" [")
		for i, a := range v.Attrs {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(a.String())
		}
		b.WriteByte(']')
	}
	return b.String()
}

// Attr returns the value of the violation attribute with the given key.
func (v Violation) Attr(key string) (string, bool) {
	for _, a := range v.Attrs {
		if a.key == key {
			return a.Value(), true
		}
	}
	return "", false
}

var errShort = errors.New("rule: result record is truncated")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = errShort
		return 0
	}
	v := le32(d.b, 0)
	d.b = d.b[4:]
	return v
}

func (d *decoder) str(limit int, what string) string {
	n := d.u32()
	if d.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(d.b)) {
		d.err = errShort
		return ""
	}
	if int64(n) > int64(limit) {
		d.err = errors.New("rule: " + what + " of " + strconv.FormatUint(uint64(n), 10) +
			" bytes exceeds the ABI limit of " + strconv.Itoa(limit))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) attrs(limit int) []Attribute {
	n := d.u32()
	if d.err == nil && int64(n) > int64(limit) {
		d.err = errors.New("rule: " + strconv.FormatUint(uint64(n), 10) +
			" attributes exceed the ABI limit of " + strconv.Itoa(limit))
	}
	if d.err != nil {
		return nil
	}
	var out []Attribute
	for range n {
		k := d.str(abiv1.MaxKeyBytes, "attribute key")
		v := d.str(abiv1.MaxValueBytes, "attribute value")
		if d.err != nil {
			return nil
		}
		out = append(out, Attr(k, v))
	}
	return out
}

// DecodeResult parses a result record as the host would, checking the ABI
// limits (but not the span indexes, which need the trace). An empty record
// decodes to no violations. The result copies what it needs from b.
func DecodeResult(b []byte) ([]Violation, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) > abiv1.MaxResultBytes {
		return nil, errors.New("rule: result record of " + strconv.Itoa(len(b)) +
			" bytes exceeds the ABI limit of " + strconv.Itoa(abiv1.MaxResultBytes))
	}
	d := decoder{b: b}
	n := d.u32()
	if d.err == nil && n > abiv1.MaxViolations {
		return nil, errors.New("rule: " + strconv.FormatUint(uint64(n), 10) +
			" violations exceed the ABI limit of " + strconv.Itoa(abiv1.MaxViolations))
	}
	var out []Violation
	for i := uint32(0); i < n && d.err == nil; i++ {
		var v Violation
		v.Span = int(d.u32())
		v.Message = d.str(abiv1.MaxMessageBytes, "message")
		v.Attrs = d.attrs(abiv1.MaxViolationAttrs)
		out = append(out, v)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errors.New("rule: " + strconv.Itoa(len(d.b)) + " bytes after the last violation")
	}
	return out, nil
}

// DecodeDescription parses a self-description record (see Describe) back
// into an Info. Keys it does not know are ignored.
func DecodeDescription(b []byte) (Info, error) {
	if len(b) > abiv1.MaxDescribeBytes {
		return Info{}, errors.New("rule: description record exceeds the ABI limit")
	}
	d := decoder{b: b}
	kvs := d.attrs(math.MaxInt32)
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("rule: " + strconv.Itoa(len(d.b)) + " bytes after the description")
	}
	if d.err != nil {
		return Info{}, d.err
	}
	var info Info
	for _, kv := range kvs {
		switch kv.key {
		case abiv1.DescribeKeyID:
			info.ID = kv.str
		case abiv1.DescribeKeyName:
			info.Name = kv.str
		case abiv1.DescribeKeySeverity:
			info.Severity = Severity(kv.str)
		case abiv1.DescribeKeyDescription:
			info.Description = kv.str
		case abiv1.DescribeKeyTags:
			if kv.str != "" {
				info.Tags = strings.Split(kv.str, ",")
			}
		}
	}
	return info, nil
}

// appendKVCount and appendKV build the key/value layout of the description.
func appendKVCount(b []byte, n int) []byte { return appendU32(b, uint32(n)) }

func appendKV(b []byte, k, v string) []byte {
	b = append(appendU32(b, uint32(len(k))), k...)
	return append(appendU32(b, uint32(len(v))), v...)
}
