package httpapi

import (
	"fmt"
	"math"
	"net/http"
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
	// Evidence is listed only when asked for (evidence=true): a page of
	// violations stays small, a violation's page shows its trace.
	Evidence *violations.Evidence `json:"evidence,omitempty"`
	Shadow   bool                 `json:"shadow,omitempty"`
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

type summaryRowJSON struct {
	Start    time.Time `json:"start"`
	RuleID   string    `json:"ruleId"`
	Severity string    `json:"severity"`
	Kept     int64     `json:"kept"`
	Counted  int64     `json:"counted"`
}

// parseSummaryQuery reads the filters of GET /v1/violations/summary: the
// time bounds, rule and severity as GET /v1/violations reads them, and
// bucket, a whole number of minutes (1m, 1h).
func parseSummaryQuery(q url.Values) (violations.SummaryQuery, error) {
	vq, err := parseViolationQuery(url.Values{
		"start_time": {first(q, "start_time", "startTime")}, "end_time": {first(q, "end_time", "endTime")},
		"severity": {q.Get("severity")}, "rule_id": {first(q, "rule_id", "ruleId")},
	})
	out := violations.SummaryQuery{Start: vq.Start, End: vq.End, RuleID: vq.RuleID, Severity: vq.Severity, Bucket: time.Minute}
	if err != nil {
		return out, err
	}
	if s := q.Get("bucket"); s != "" {
		d, err := time.ParseDuration(s)
		out.Bucket = d
		if err != nil || d <= 0 || out.Validate() != nil {
			return out, badRequest(fmt.Sprintf("bucket %q must be a whole number of minutes, such as 1m or 1h", s))
		}
	}
	return out, nil
}

// summarizeViolations answers GET /v1/violations/summary: rows oldest
// first, and totals, each with kept and counted.
func (a *api) summarizeViolations(w http.ResponseWriter, r *http.Request) {
	q, err := parseSummaryQuery(r.URL.Query())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	rows, err := a.deps.Violations.SummarizeViolations(r.Context(), q)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]summaryRowJSON, len(rows))
	var kept, counted int64
	for i, row := range rows {
		out[i] = summaryRowJSON{Start: row.Start, RuleID: row.RuleID, Severity: row.Severity, Kept: row.Kept, Counted: row.Counted}
		kept += row.Kept
		counted += row.Counted
	}
	writeJSON(w, http.StatusOK, map[string]any{"bucket": q.Bucket.String(), "rows": out, "kept": kept, "counted": counted})
}
