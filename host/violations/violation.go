package violations

import "time"

// Violation is one recorded breach of a rule by a trace, as stored,
// listed and exported.
type Violation struct {
	ID          string            `json:"id"`
	RuleID      string            `json:"ruleId"`
	RuleName    string            `json:"ruleName"`
	RuleVersion int               `json:"ruleVersion"`
	Severity    string            `json:"severity"`
	TraceID     string            `json:"traceId"` // 32 hex digits
	SpanID      string            `json:"spanId"`  // 16 hex digits
	Message     string            `json:"message"`
	Attributes  map[string]string `json:"attributes"`
	// Metadata describes the offending span: service_name, span_name.
	Metadata map[string]string `json:"metadata"`
	// Trigger says what completed the trace: root, idle, max_age, span_cap, shutdown.
	Trigger   string    `json:"trigger"`
	Timestamp time.Time `json:"timestamp"`
}

// Query selects violations. Zero fields do not filter.
type Query struct {
	Start, End time.Time // inclusive bounds on Timestamp
	Severity   string    // upper case
	RuleID     string
	TraceID    string // lower-case hex
	Limit      int    // page size; the caller applies defaults and caps
	Cursor     string // opaque, from a previous Page
}

// Page is one page of a query, newest first.
type Page struct {
	Violations []Violation
	TotalCount int    // every match, not just this page
	NextCursor string // empty on the last page
}
