package rule

import (
	"iter"
	"math"
	"strconv"
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
)

// ValueType is the type of an attribute value.
type ValueType uint8

// Attribute value types.
const (
	ValueEmpty  = ValueType(abiv1.ValueEmpty)
	ValueString = ValueType(abiv1.ValueString)
	ValueBool   = ValueType(abiv1.ValueBool)
	ValueInt    = ValueType(abiv1.ValueInt)
	ValueDouble = ValueType(abiv1.ValueDouble)
	ValueBytes  = ValueType(abiv1.ValueBytes)
	ValueArray  = ValueType(abiv1.ValueArray) // carried as JSON text
	ValueMap    = ValueType(abiv1.ValueMap)   // carried as JSON text
)

func (v ValueType) String() string {
	switch v {
	case ValueEmpty:
		return "empty"
	case ValueString:
		return "string"
	case ValueBool:
		return "bool"
	case ValueInt:
		return "int"
	case ValueDouble:
		return "double"
	case ValueBytes:
		return "bytes"
	case ValueArray:
		return "array"
	case ValueMap:
		return "map"
	}
	return "type(" + strconv.Itoa(int(v)) + ")"
}

// Value is an attribute value. Like every string read from the trace, the
// text of a string, bytes, array or map value points into the input and is
// only valid until the Check returns.
type Value struct {
	typ ValueType
	num uint64 // bool, int and double
	str string // string, bytes, array and map
}

// Type returns the value's type.
func (v Value) Type() ValueType { return v.typ }

// Str returns the value of a string attribute.
func (v Value) Str() (string, bool) { return v.str, v.typ == ValueString }

// Int returns the value of an int attribute.
func (v Value) Int() (int64, bool) { return int64(v.num), v.typ == ValueInt }

// Float returns the value of a double attribute, or of an int attribute
// converted to float64: numbers are often sent as either.
func (v Value) Float() (float64, bool) {
	switch v.typ {
	case ValueDouble:
		return math.Float64frombits(v.num), true
	case ValueInt:
		return float64(int64(v.num)), true
	}
	return 0, false
}

// Bool returns the value of a bool attribute.
func (v Value) Bool() (bool, bool) { return v.num != 0, v.typ == ValueBool }

// Bytes returns the value of a bytes attribute. The slice points into the
// input: do not modify it.
func (v Value) Bytes() ([]byte, bool) {
	if v.typ != ValueBytes {
		return nil, false
	}
	if v.str == "" {
		return []byte{}, true
	}
	return unsafe.Slice(unsafe.StringData(v.str), len(v.str)), true
}

// JSON returns the JSON text of an array or map attribute.
func (v Value) JSON() (string, bool) {
	return v.str, v.typ == ValueArray || v.typ == ValueMap
}

// String formats the value as text: strings as they are, numbers and bools
// as Go formats them, bytes as lower-case hex, arrays and maps as JSON, an
// empty value as "". Except for strings, arrays and maps it allocates.
func (v Value) String() string {
	switch v.typ {
	case ValueString, ValueArray, ValueMap:
		return v.str
	case ValueBool:
		return strconv.FormatBool(v.num != 0)
	case ValueInt:
		return strconv.FormatInt(int64(v.num), 10)
	case ValueDouble:
		return strconv.FormatFloat(math.Float64frombits(v.num), 'g', -1, 64)
	case ValueBytes:
		return hexString(v.str)
	}
	return ""
}

// attrRange reads and checks an attribute range field pair of the span.
func (s Span) attrRange(startField, countField int) (start, end uint32) {
	o := s.off()
	start, n := le32(s.t.in, o+startField), le32(s.t.in, o+countField)
	if uint64(start)+uint64(n) > uint64(s.t.nattr) {
		corrupt("attribute range end", uint32(min(uint64(start)+uint64(n), math.MaxUint32)), s.t.nattr)
	}
	return start, start + n
}

// value decodes attribute record a.
func (t *Trace) value(a uint32) Value {
	o := t.attrs + int(a)*abiv1.AttrSize
	v := Value{typ: ValueType(t.in[o+abiv1.AttrType])}
	switch v.typ {
	case ValueString, ValueBytes, ValueArray, ValueMap:
		v.str = t.str(o + abiv1.AttrValue)
	default:
		v.num = le64(t.in, o+abiv1.AttrValue)
	}
	return v
}

// lookup finds key among attribute records [start, end); the first match wins.
func (t *Trace) lookup(start, end uint32, key string) (Value, bool) {
	for a := start; a < end; a++ {
		if t.strEq(t.attrs+int(a)*abiv1.AttrSize+abiv1.AttrKey, key) {
			return t.value(a), true
		}
	}
	return Value{}, false
}

// each yields the attribute records [start, end). Iterators call it from a
// small closure, so the closure and the loop body stay on the stack.
func (t *Trace) each(start, end uint32, yield func(string, Value) bool) {
	for a := start; a < end; a++ {
		if !yield(t.str(t.attrs+int(a)*abiv1.AttrSize+abiv1.AttrKey), t.value(a)) {
			return
		}
	}
}

// Attr returns the span attribute with the given key.
func (s Span) Attr(key string) (Value, bool) {
	a, b := s.attrRange(abiv1.SpanAttrStart, abiv1.SpanAttrCount)
	return s.t.lookup(a, b, key)
}

// HasAttr reports whether the span has an attribute with the given key, of
// any type.
func (s Span) HasAttr(key string) bool { _, ok := s.Attr(key); return ok }

// Str returns a string span attribute; ok is false if the key is missing or
// the attribute is not a string.
func (s Span) Str(key string) (v string, ok bool) { a, _ := s.Attr(key); return a.Str() }

// Int returns an int span attribute; ok is false if the key is missing or the
// attribute is not an int.
func (s Span) Int(key string) (v int64, ok bool) { a, _ := s.Attr(key); return a.Int() }

// Float returns a double (or int) span attribute as float64; ok is false if
// the key is missing or the attribute is not a number.
func (s Span) Float(key string) (v float64, ok bool) { a, _ := s.Attr(key); return a.Float() }

// Bool returns a bool span attribute; ok is false if the key is missing or
// the attribute is not a bool.
func (s Span) Bool(key string) (v bool, ok bool) { a, _ := s.Attr(key); return a.Bool() }

// Attrs iterates over the span's attributes in their recorded order.
func (s Span) Attrs() iter.Seq2[string, Value] {
	return func(yield func(string, Value) bool) {
		a, b := s.attrRange(abiv1.SpanAttrStart, abiv1.SpanAttrCount)
		s.t.each(a, b, yield)
	}
}

// ResourceAttr returns the attribute with the given key of the resource
// (service, host, ...) that emitted the span.
func (s Span) ResourceAttr(key string) (Value, bool) {
	a, b := s.attrRange(abiv1.SpanResAttrStart, abiv1.SpanResAttrCount)
	return s.t.lookup(a, b, key)
}

// ResourceStr returns a string resource attribute (see Str).
func (s Span) ResourceStr(key string) (v string, ok bool) {
	a, _ := s.ResourceAttr(key)
	return a.Str()
}

// ResourceInt returns an int resource attribute (see Int).
func (s Span) ResourceInt(key string) (v int64, ok bool) {
	a, _ := s.ResourceAttr(key)
	return a.Int()
}

// ResourceFloat returns a numeric resource attribute as float64 (see Float).
func (s Span) ResourceFloat(key string) (v float64, ok bool) {
	a, _ := s.ResourceAttr(key)
	return a.Float()
}

// ResourceBool returns a bool resource attribute (see Bool).
func (s Span) ResourceBool(key string) (v bool, ok bool) {
	a, _ := s.ResourceAttr(key)
	return a.Bool()
}

// ResourceAttrs iterates over the attributes of the span's resource.
func (s Span) ResourceAttrs() iter.Seq2[string, Value] {
	return func(yield func(string, Value) bool) {
		a, b := s.attrRange(abiv1.SpanResAttrStart, abiv1.SpanResAttrCount)
		s.t.each(a, b, yield)
	}
}
