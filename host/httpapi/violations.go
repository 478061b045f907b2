package httpapi

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/violations"
)

// Page sizes of GET /v1/violations.
const (
	DefaultViolationLimit = 100
	MaxViolationLimit     = 1000
)

type violationJSON struct {
	ID          string            `json:"id"`
	RuleID      string            `json:"ruleId"`
	RuleName    string            `json:"ruleName"`
	RuleVersion int               `json:"ruleVersion"`
	Severity    string            `json:"severity"`
	TraceID     string            `json:"traceId"`
	SpanID      string            `json:"spanId"`
	Message     string            `json:"message"`
	Attributes  map[string]string `json:"attributes"`
	Metadata    map[string]string `json:"metadata"`
	Trigger     string            `json:"trigger"`
	Timestamp   time.Time         `json:"timestamp"`
}

func toViolationJSON(v violations.Violation) violationJSON {
	out := violationJSON(v)
	if out.Attributes == nil {
		out.Attributes = map[string]string{}
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	return out
}

func parseViolationQuery(q url.Values) (violations.Query, error) {
	var (
		out violations.Query
		err error
	)
	if s := first(q, "start_time", "startTime"); s != "" {
		if out.Start, err = parseTime(s); err != nil {
			return out, badRequest("start_time: " + err.Error())
		}
	}
	if s := first(q, "end_time", "endTime"); s != "" {
		if out.End, err = parseTime(s); err != nil {
			return out, badRequest("end_time: " + err.Error())
		}
	}
	if !out.Start.IsZero() && !out.End.IsZero() && out.End.Before(out.Start) {
		return out, badRequest("end_time is before start_time")
	}
	if s := q.Get("severity"); s != "" {
		sev, err := rules.ParseSeverity(s)
		if err != nil {
			return out, badRequest(err.Error())
		}
		out.Severity = string(sev)
	}
	out.RuleID = first(q, "rule_id", "ruleId")
	if s := first(q, "trace_id", "traceId"); s != "" {
		s = strings.ToLower(s)
		if len(s) != 32 || strings.Trim(s, "0123456789abcdef") != "" {
			return out, badRequest(fmt.Sprintf("trace_id %q must be 32 hexadecimal digits", s))
		}
		out.TraceID = s
	}
	out.Limit = DefaultViolationLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return out, badRequest(fmt.Sprintf("limit %q must be a positive whole number (at most %d)", s, MaxViolationLimit))
		}
		out.Limit = min(n, MaxViolationLimit)
	}
	out.Cursor = q.Get("cursor")
	return out, nil
}

// parseTime accepts RFC 3339, or a Unix epoch in seconds (fractions
// allowed), milliseconds, microseconds or nanoseconds, told apart by size:
// the runbooks pass `date +%s`, browsers pass milliseconds.
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		switch {
		case n < 1e11:
			return time.Unix(n, 0).UTC(), nil
		case n < 1e14:
			return time.UnixMilli(n).UTC(), nil
		case n < 1e17:
			return time.UnixMicro(n).UTC(), nil
		}
		return time.Unix(0, n).UTC(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f < 1e11 && !math.IsInf(f, 0) {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-01-02T15:04:05Z) or Unix epoch seconds, milliseconds or nanoseconds", s)
}
