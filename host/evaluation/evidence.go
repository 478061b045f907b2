package evaluation

import (
	"cmp"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/violations"
)

// evidence snapshots spans for the violations found on them, within the
// caps of violations.Evidence: the offending spans and their ancestors
// are kept first, so a truncated snapshot still shows why the rule fired.
// It runs only for traces with a violation, never on the clean path.
func evidence(spans []traces.Span, offending []int, maxSpans int) *violations.Evidence {
	ev := &violations.Evidence{SpanCount: len(spans)}
	byID := make(map[[8]byte]int, len(spans))
	for i := range spans {
		byID[spans[i].SpanID] = i
	}
	chosen := make([]bool, len(spans))
	var order []int
	take := func(i int) {
		if !chosen[i] {
			chosen[i] = true
			order = append(order, i)
		}
	}
	for _, i := range offending {
		// Ancestors, stopping at a cycle (the encoder cuts them too).
		for j, hops := i, 0; hops < len(spans); hops++ {
			take(j)
			p, ok := byID[spans[j].ParentSpanID]
			if !ok || spans[j].IsRoot() || chosen[p] {
				break
			}
			j = p
		}
	}
	rest := make([]int, 0, len(spans))
	for i := range spans {
		if !chosen[i] {
			rest = append(rest, i)
		}
	}
	slices.SortStableFunc(rest, func(a, b int) int { return cmp.Compare(spans[a].StartUnixNano, spans[b].StartUnixNano) })
	order = append(order, rest...)

	bytes := ev.Bytes()
	for _, i := range order {
		s, cut := evidenceSpan(&spans[i])
		if len(ev.Spans) == maxSpans || bytes+s.Bytes() > violations.MaxEvidenceBytes {
			ev.Truncated = true
			break
		}
		bytes += s.Bytes()
		ev.Truncated = ev.Truncated || cut
		ev.Spans = append(ev.Spans, s)
	}
	slices.SortStableFunc(ev.Spans, func(a, b violations.EvidenceSpan) int { return cmp.Compare(a.StartUnixNano, b.StartUnixNano) })
	return ev
}

func evidenceSpan(s *traces.Span) (violations.EvidenceSpan, bool) {
	out := violations.EvidenceSpan{
		SpanID: hex.EncodeToString(s.SpanID[:]), Name: s.Name, Service: strings.Clone(s.Service),
		StartUnixNano: s.StartUnixNano,
	}
	cut := false
	out.Name, cut = clip(out.Name)
	out.Name = strings.Clone(out.Name) // the trace's buffer must not outlive it
	if !s.IsRoot() {
		out.ParentSpanID = hex.EncodeToString(s.ParentSpanID[:])
	}
	if s.EndUnixNano > s.StartUnixNano {
		out.DurationNanos = s.EndUnixNano - s.StartUnixNano
	}
	switch s.StatusCode {
	case abiv1.StatusError:
		out.Status = "error"
	case abiv1.StatusOK:
		out.Status = "ok"
	}
	if len(s.Attrs) > 0 {
		out.Attributes = make(map[string]string, min(len(s.Attrs), violations.MaxEvidenceAttrs))
		for i := range s.Attrs {
			if i == violations.MaxEvidenceAttrs {
				cut = true
				break
			}
			k, c1 := clip(s.Attrs[i].Key)
			v, c2 := clip(attrText(&s.Attrs[i]))
			out.Attributes[strings.Clone(k)] = strings.Clone(v)
			cut = cut || c1 || c2
		}
	}
	return out, cut
}

// attrText is an attribute's value as text: numbers and bools as the
// host functions write them (abi.AppendValueText), raw bytes in hex.
func attrText(a *traces.Attr) string {
	if b, ok := abi.AppendValueText(nil, a.Type, a.Num); ok {
		return string(b)
	}
	if a.Type == abiv1.ValueBytes {
		return hex.EncodeToString([]byte(a.Str))
	}
	return a.Str
}

// clip cuts s to MaxEvidenceValueBytes on a UTF-8 boundary.
func clip(s string) (string, bool) {
	if len(s) <= violations.MaxEvidenceValueBytes {
		return s, false
	}
	n := violations.MaxEvidenceValueBytes
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n] + "…", true
}
