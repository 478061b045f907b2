package abi

import (
	"errors"
	"reflect"
	"slices"
	"testing"

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
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Decode(b); err != nil && !errors.Is(err, ErrMalformedSpans) {
			t.Fatalf("error %v does not wrap ErrMalformedSpans", err)
		}
	})
}
