package violations

// Evidence is a bounded snapshot of the trace a violation was found in, so
// that the violation can explain itself after the trace itself is gone. It
// is stored once per trace: on the first kept violation of each evaluated
// trace, and trimmed with it.
type Evidence struct {
	// Spans are those kept, in start order: the offending spans and their
	// ancestors first, then the others while the caps allow.
	Spans []EvidenceSpan `json:"spans"`
	// SpanCount is every span of the trace; Truncated says some spans,
	// attributes or values were left out or cut.
	SpanCount int  `json:"spanCount"`
	Truncated bool `json:"truncated"`
}

// EvidenceSpan is one span of an Evidence.
type EvidenceSpan struct {
	SpanID        string            `json:"spanId"`
	ParentSpanID  string            `json:"parentSpanId,omitempty"`
	Name          string            `json:"name"`
	Service       string            `json:"service,omitempty"`
	StartUnixNano uint64            `json:"startUnixNano"`
	DurationNanos uint64            `json:"durationNanos"`
	Status        string            `json:"status,omitempty"` // "error" or "ok"; absent when unset
	Attributes    map[string]string `json:"attributes,omitempty"`
}

// Evidence caps: a violating trace costs at most about MaxEvidenceBytes in
// the store whatever the trace's size.
const (
	MaxEvidenceSpans      = 200
	MaxEvidenceAttrs      = 32  // per span
	MaxEvidenceValueBytes = 256 // per attribute value and name
	MaxEvidenceBytes      = 64 << 10
)

// Bytes estimates the stored size of e (its JSON), for the caps and for
// the recorder's buffer accounting.
func (e *Evidence) Bytes() int {
	if e == nil {
		return 0
	}
	n := 40
	for i := range e.Spans {
		n += e.Spans[i].Bytes()
	}
	return n
}

// Bytes estimates the stored size of s, as Evidence.Bytes counts it.
func (s *EvidenceSpan) Bytes() int {
	n := 120 + len(s.Name) + len(s.Service)
	for k, v := range s.Attributes {
		n += 6 + len(k) + len(v)
	}
	return n
}
