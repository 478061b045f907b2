package abi

import (
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

// graph builds spans 1..len(parents), span i+1 starting at i and having
// parent span ID parents[i] (0: a root).
func graph(parents ...byte) []traces.Span {
	out := make([]traces.Span, len(parents))
	for i, p := range parents {
		out[i] = traces.Span{SpanID: id8(byte(i + 1)), StartUnixNano: uint64(i)}
		if p != 0 {
			out[i].ParentSpanID = id8(p)
		}
	}
	return out
}

func TestEncodeBreaksCycles(t *testing.T) {
	none := abiv1.None
	for _, tc := range []struct {
		name    string
		spans   []traces.Span
		parents []uint32 // parent index per position after encoding
		broken  int
	}{
		{"tree", graph(0, 1, 1, 2), []uint32{none, 0, 0, 1}, 0},
		{"self-parent is not linked", graph(1), []uint32{none}, 0},
		{"two-span cycle", graph(2, 1), []uint32{none, 0}, 1},
		{"cycle of three with a tail", graph(3, 1, 2, 3), []uint32{none, 0, 1, 2}, 1},
		{"cycle below a root", graph(0, 3, 2), []uint32{none, none, 1}, 1},
		{"two cycles", graph(2, 1, 4, 3, 0), []uint32{none, 0, none, 2, none}, 2},
		{"missing parent", graph(9, 1), []uint32{none, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEncoder()
			v := view(e.Encode(tc.spans, 0))
			for pos, want := range tc.parents {
				if got := le.Uint32(v.span(pos)[abiv1.SpanParentIndex:]); got != want {
					t.Errorf("span %d: parent index %d, want %d", pos, got, want)
				}
			}
			if e.BrokenLinks() != tc.broken {
				t.Errorf("BrokenLinks %d, want %d", e.BrokenLinks(), tc.broken)
			}
			// Every span's children list holds exactly the spans naming it
			// as parent, so walks down agree with walks up.
			for pos := range tc.parents {
				for c := le.Uint32(v.span(pos)[abiv1.SpanFirstChild:]); c != none; c = le.Uint32(v.span(int(c))[abiv1.SpanNextSibling:]) {
					if tc.parents[c] != uint32(pos) {
						t.Errorf("span %d lists child %d whose parent is %d", pos, c, tc.parents[c])
					}
				}
			}
		})
	}
}

// Breaking cycles is one pass: a warm encoder allocates nothing for a
// trace made of cycles either.
func TestEncodeCyclesAllocatesNothing(t *testing.T) {
	spans := graph(2, 1, 4, 3, 6, 5, 0, 7)
	e := NewEncoder()
	e.Encode(spans, 0)
	if n := testing.AllocsPerRun(100, func() { e.Encode(spans, 0) }); n != 0 {
		t.Fatalf("Encode of a trace with cycles allocates %v times", n)
	}
}

func BenchmarkEncodeDeepChain(b *testing.B) {
	spans := make([]traces.Span, 3000)
	for i := range spans {
		spans[i] = traces.Span{SpanID: [8]byte{byte(i >> 8), byte(i), 1}, StartUnixNano: uint64(i)}
		if i > 0 {
			spans[i].ParentSpanID = spans[i-1].SpanID
		}
	}
	spans[0].ParentSpanID = spans[len(spans)-1].SpanID // and one cycle through all of it
	e := NewEncoder()
	b.ReportAllocs()
	for b.Loop() {
		e.Encode(spans, 0)
	}
}
