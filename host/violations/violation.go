package violations

import (
	"errors"
	"fmt"
	"math"
	"time"
)

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
	// Evidence is the trace as it was, on the first kept violation of each
	// trace; nil on the others (they share it) and on older records.
	Evidence *Evidence `json:"evidence,omitempty"`
	// Shadow marks a violation found by a rule version installed in
	// shadow: stored and listed, never exported or alerted on.
	Shadow bool `json:"shadow,omitempty"`
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

// MaxIDBytes bounds a violation ID; stores use it in keys and cursors.
const MaxIDBytes = 512

// CheckStorable reports why a store cannot keep v: every store keys
// violations by timestamp (Unix nanoseconds) and ID, so both must be set
// and fit.
func (v *Violation) CheckStorable() error {
	switch {
	case v.ID == "":
		return errors.New("id is empty")
	case len(v.ID) > MaxIDBytes:
		return fmt.Errorf("id is %d bytes, more than %d", len(v.ID), MaxIDBytes)
	case v.Timestamp.IsZero():
		return errors.New("timestamp is not set")
	case v.Timestamp.Before(minTime) || v.Timestamp.After(maxTime):
		return fmt.Errorf("timestamp %s is out of range", v.Timestamp)
	}
	return nil
}

// The instants Unix nanoseconds can express.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UnixNano is t in Unix nanoseconds, clamped to the int64 range (a cutoff
// or query bound far in the past or future stays ordered).
func UnixNano(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}
