package evaluation

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/violations"
)

// chain returns n spans, each the child of the one before, starting one
// nanosecond apart, and with attrs attributes of valueLen bytes each.
func chain(n, attrs, valueLen int) []traces.Span {
	spans := make([]traces.Span, n)
	for i := range spans {
		s := &spans[i]
		s.SpanID = [8]byte{byte(i >> 8), byte(i), 1}
		if i > 0 {
			s.ParentSpanID = spans[i-1].SpanID
		}
		s.Name, s.StartUnixNano, s.EndUnixNano = "op", uint64(1000+i), uint64(2000+i)
		for a := range attrs {
			s.Attrs = append(s.Attrs, traces.Attr{Key: "k" + string(rune('a'+a%26)) + strings.Repeat("x", a/26), Str: strings.Repeat("é", valueLen/2)})
		}
	}
	return spans
}

func TestEvidence(t *testing.T) {
	tests := []struct {
		name      string
		spans     []traces.Span
		offending []int
		wantSpans int
		truncated bool
	}{
		{"small trace whole", chain(20, 3, 10), []int{7}, 20, false},
		{"span cap keeps the offender and its ancestors", chain(1000, 0, 0), []int{999}, violations.MaxEvidenceSpans, true},
		{"byte cap", chain(150, 30, 200), []int{149}, -1, true},
		{"attribute cap", chain(2, violations.MaxEvidenceAttrs+5, 4), []int{1}, 2, true},
		{"long values are cut", chain(2, 1, 2*violations.MaxEvidenceValueBytes), []int{0}, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := evidence(tt.spans, tt.offending, violations.MaxEvidenceSpans)
			if ev.SpanCount != len(tt.spans) || ev.Truncated != tt.truncated {
				t.Fatalf("spanCount %d truncated %v, want %d %v", ev.SpanCount, ev.Truncated, len(tt.spans), tt.truncated)
			}
			if tt.wantSpans >= 0 && len(ev.Spans) != tt.wantSpans {
				t.Fatalf("%d spans kept, want %d", len(ev.Spans), tt.wantSpans)
			}
			b, _ := json.Marshal(ev)
			if len(b) > violations.MaxEvidenceBytes {
				t.Fatalf("evidence is %d bytes of JSON, cap %d", len(b), violations.MaxEvidenceBytes)
			}
			kept := map[string]bool{}
			for i, s := range ev.Spans {
				kept[s.SpanID] = true
				if i > 0 && s.StartUnixNano < ev.Spans[i-1].StartUnixNano {
					t.Fatal("spans not in start order")
				}
				if len(s.Attributes) > violations.MaxEvidenceAttrs {
					t.Fatalf("%d attributes on a span", len(s.Attributes))
				}
				for k, v := range s.Attributes {
					if !utf8.ValidString(v) || len(v) > violations.MaxEvidenceValueBytes+len("…") || len(k) > violations.MaxEvidenceValueBytes+len("…") {
						t.Fatalf("attribute %q=%q not cut on a UTF-8 boundary within the cap", k, v)
					}
				}
			}
			// The offending span and its nearest ancestors come first: as
			// many as were kept, the chain is unbroken up from it.
			for _, i := range tt.offending {
				for j := i; j >= 0 && i-j < len(ev.Spans); j-- {
					if id := tt.spans[j].SpanID; !kept[hex.EncodeToString(id[:])] {
						t.Fatalf("span %d (ancestor of offending %d) left out while %d spans were kept", j, i, len(ev.Spans))
					}
				}
			}
		})
	}
}

func TestEvidenceSurvivesCycles(t *testing.T) {
	spans := chain(3, 0, 0)
	spans[0].ParentSpanID = spans[2].SpanID // 0 → 2 → 1 → 0
	if ev := evidence(spans, []int{1}, violations.MaxEvidenceSpans); len(ev.Spans) != 3 {
		t.Fatalf("%d spans kept of a 3-span cycle", len(ev.Spans))
	}
}
