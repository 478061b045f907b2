package abi

import (
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

func TestDecodeRoundTrip(t *testing.T) {
	in := sampleTrace()
	out, err := Decode(NewEncoder().Encode(in, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Decode returns spans in start order, as encoded.
	want := slices.Clone(in)
	slices.SortStableFunc(want, func(a, b traces.Span) int { return int(a.StartUnixNano) - int(b.StartUnixNano) })
	if len(out) != len(want) {
		t.Fatalf("%d spans back, want %d", len(out), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(out[i], want[i]) {
			t.Fatalf("span %d:\n got %+v\nwant %+v", i, out[i], want[i])
		}
	}
	if &out[0].ResourceAttrs[0] != &out[1].ResourceAttrs[0] {
		t.Fatal("spans of one resource do not share their attributes")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(NewEncoder().Encode(sampleTrace(), 0))
	f.Add([]byte{})
	f.Add(amplifying(3, 2, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAllocs(t, b)
		if err != nil && !errors.Is(err, ErrMalformedSpans) {
			t.Fatalf("error %v does not wrap ErrMalformedSpans", err)
		}
		if limit := uint64(DecodedBytes(len(b)) + 64<<10); got > limit {
			t.Fatalf("a %d-byte input decoded into %d bytes, more than the %d bound", len(b), got, limit)
		}
	})
}

// amplifying builds the batch a hostile sender would: every span's strings
// and every attribute reference the whole string table, and every span
// references every attribute, as its own and as its resource's.
func amplifying(spans, attrs, strBytes int) []byte {
	spanTable := abiv1.HeaderSize
	attrTable := spanTable + spans*abiv1.SpanSize
	strTable := attrTable + attrs*abiv1.AttrSize
	b := make([]byte, strTable+strBytes)
	put := binary.LittleEndian.PutUint32
	put(b[abiv1.HeaderMagic:], abiv1.Magic)
	put(b[abiv1.HeaderVersion:], abiv1.Version)
	put(b[abiv1.HeaderSpanCount:], uint32(spans))
	put(b[abiv1.HeaderSpanTable:], uint32(spanTable))
	put(b[abiv1.HeaderAttrCount:], uint32(attrs))
	put(b[abiv1.HeaderAttrTable:], uint32(attrTable))
	put(b[abiv1.HeaderStringTable:], uint32(strTable))
	put(b[abiv1.HeaderStringSize:], uint32(strBytes))
	whole := func(ref []byte) { put(ref, 0); put(ref[4:], uint32(strBytes)) }
	for i := range spans {
		r := b[spanTable+i*abiv1.SpanSize:]
		r[abiv1.SpanTraceID] = 1
		whole(r[abiv1.SpanName:])
		whole(r[abiv1.SpanService:])
		whole(r[abiv1.SpanStatusMessage:])
		put(r[abiv1.SpanAttrCount:], uint32(attrs))
		put(r[abiv1.SpanResAttrStart:], 0)
		put(r[abiv1.SpanResAttrCount:], uint32(attrs))
	}
	for i := range attrs {
		r := b[attrTable+i*abiv1.AttrSize:]
		whole(r[abiv1.AttrKey:])
		r[abiv1.AttrType] = abiv1.ValueString
		whole(r[abiv1.AttrValue:])
	}
	for i := strTable; i < len(b); i++ {
		b[i] = 'x'
	}
	return b
}

// decodeAllocs is the heap Decode allocates for b.
func decodeAllocs(t testing.TB, b []byte) (uint64, error) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Decode(b)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// A crafted batch once decoded to thousands of times its size (every
// reference copied its string): a 4 MiB body took the process to 2.4 GiB.
func TestDecodeBoundedByInput(t *testing.T) {
	for _, tc := range []struct{ spans, attrs, strBytes int }{
		{2000, 0, 1 << 20},
		{1000, 200, 64 << 10},
		{1, 5000, 1 << 20},
		{30000, 100, 0},
		{100000, 128, 16 << 20}, // about the 32 MiB a peer may send
	} {
		b := amplifying(tc.spans, tc.attrs, tc.strBytes)
		got, err := decodeAllocs(t, b)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		t.Logf("%+v: %.1f MiB decoded into %.1f MiB (%.2fx)", tc, float64(len(b))/(1<<20), float64(got)/(1<<20), float64(got)/float64(len(b)))
		if limit := uint64(DecodedBytes(len(b)) + 64<<10); got > limit {
			t.Errorf("%+v: a %d-byte batch decoded into %d bytes, more than the %d bound", tc, len(b), got, limit)
		}
	}
}

// Spans that share attribute records must not see each other's appends.
func TestDecodeSharedAttrsAreIsolated(t *testing.T) {
	spans, err := Decode(amplifying(2, 3, 8))
	if err != nil {
		t.Fatal(err)
	}
	spans[0].Attrs = append(spans[0].Attrs, traces.Attr{Key: "added"})
	if len(spans[1].Attrs) != 3 || spans[1].Attrs[2].Key == "added" || cap(spans[1].Attrs) != 3 {
		t.Fatalf("an append to one span's attributes reached another's: %+v", spans[1].Attrs)
	}
}
