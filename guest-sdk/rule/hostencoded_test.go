package rule_test

import (
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/guest-sdk/rule"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/traces"
)

// spanGraph turns fuzz bytes into spans with any parent links at all:
// cycles, self-parents, duplicate span IDs, missing parents, ties in
// start time. Each span takes three bytes: its ID, its parent's ID (0: a
// root) and its start time.
func spanGraph(data []byte) []traces.Span {
	names := []string{"auth.check", "db.query", "checkout", "payment.charge"}
	var spans []traces.Span
	for i := 0; i+3 <= len(data) && len(spans) < 256; i += 3 {
		s := traces.Span{TraceID: [16]byte{1}, SpanID: [8]byte{7: data[i]}, StartUnixNano: uint64(data[i+2]),
			Name: names[int(data[i+2])%len(names)]}
		if data[i+1] != 0 {
			s.ParentSpanID = [8]byte{7: data[i+1]}
		}
		spans = append(spans, s)
	}
	return spans
}

// FuzzHostEncodedTrace: whatever span graph a sender makes up, the host's
// encoder hands rules a forest, and no SDK walk panics on it or disagrees
// with a plain walk up the parent links.
func FuzzHostEncodedTrace(f *testing.F) {
	f.Add([]byte{1, 2, 0, 2, 1, 1})                   // A→B→A
	f.Add([]byte{1, 1, 0})                            // a self-parent
	f.Add([]byte{1, 0, 0, 2, 1, 1, 3, 2, 2, 2, 3, 3}) // a cycle below a root
	f.Add([]byte{1, 0, 5, 1, 0, 5, 2, 1, 5})          // duplicate IDs, equal starts
	enc := abi.NewEncoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		spans := spanGraph(data)
		in := enc.Encode(spans, uint32(len(data)&1)*abiv1.TraceFlagFragment)
		rule.EvaluateWith(func(tr *rule.Trace) {
			walkAll(tr)
			for s := range tr.Spans() {
				// A plain walk up, bounded by the span count: it must end.
				naiveRoot, naiveAuth := s, false
				steps := 0
				for p, ok := s.Parent(); ok; p, ok = p.Parent() {
					if steps++; steps > tr.Len() {
						t.Fatalf("span %d: parent links form a cycle after encoding", s.Index())
					}
					naiveRoot, naiveAuth = p, naiveAuth || p.Name() == "auth.check"
				}
				if r := s.Root(); r.Index() != naiveRoot.Index() {
					t.Fatalf("span %d: Root %d, walking up gives %d", s.Index(), r.Index(), naiveRoot.Index())
				}
				if got := s.HasAncestorNamed("auth.check"); got != naiveAuth {
					t.Fatalf("span %d: HasAncestorNamed %v, walking up gives %v", s.Index(), got, naiveAuth)
				}
			}
		}, in)
	})
}
