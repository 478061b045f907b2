package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxPage is the server's largest page of violations.
const maxPage = 1000

func violationsCommands() []command {
	return []command{
		{path: "violations list", about: "list violations, newest first", maxArgs: 0, setup: violationsList},
		{path: "violations summary", about: "count violations by rule, severity and time bucket: kept as records, and counted in all", maxArgs: 0, setup: violationsSummary},
	}
}

// summaryDoc is the answer of GET /v1/violations/summary.
type summaryDoc struct {
	Bucket string `json:"bucket"`
	Rows   []struct {
		Start    time.Time `json:"start"`
		RuleID   string    `json:"ruleId"`
		Severity string    `json:"severity"`
		Kept     int64     `json:"kept"`
		Counted  int64     `json:"counted"`
	} `json:"rows"`
	Kept    int64 `json:"kept"`
	Counted int64 `json:"counted"`
}

func violationsSummary(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	since := fs.String("since", "1h", "count violations since `WHEN`: a duration ago (90s, 1h, 7d), an RFC 3339 time or Unix epoch seconds")
	until := fs.String("until", "", "count violations until `WHEN` (same forms as --since)")
	bucket := fs.String("bucket", "1h", "width of a row's time `BUCKET`: a whole number of minutes (1m, 1h, 24h)")
	severity := fs.String("severity", "", "only `SEVERITY`: CRITICAL, HIGH, MEDIUM, LOW or INFO (any case)")
	rule := fs.String("rule", "", "only violations of this rule `ID`")
	return func(ctx context.Context, a *app, _ []string) error {
		set := setFlags(fs)
		q := url.Values{"bucket": {*bucket}}
		now := a.now()
		for _, f := range []struct{ flag, key, value string }{{"since", "start_time", *since}, {"until", "end_time", *until}} {
			if f.flag == "until" && !set[f.flag] {
				continue
			}
			v, err := parseWhen(f.value, now)
			if err != nil {
				return usageErrorf("--%s: %v", f.flag, err)
			}
			q.Set(f.key, v)
		}
		for _, f := range []struct{ key, value string }{{"severity", *severity}, {"rule_id", *rule}} {
			if f.value != "" {
				q.Set(f.key, f.value)
			}
		}
		var doc summaryDoc
		raw, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: "/v1/violations/summary", Query: q}, &doc)
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printValue(json.RawMessage(raw))
		}
		if len(doc.Rows) == 0 {
			fmt.Fprintln(a.stderr, "no violations counted")
			return nil
		}
		rows := make([][]string, len(doc.Rows))
		for i, r := range doc.Rows {
			rows[i] = []string{formatTime(r.Start), r.RuleID, r.Severity, strconv.FormatInt(r.Kept, 10), strconv.FormatInt(r.Counted, 10), strconv.FormatInt(r.Counted-r.Kept, 10)}
		}
		if err := writeTable(a.stdout, []string{"BUCKET", "RULE", "SEVERITY", "KEPT", "COUNTED", "ONLY COUNTED"}, rows); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "%d violations counted, %d kept as records, %d only counted (sampled past their rule's rate)\n", doc.Counted, doc.Kept, doc.Counted-doc.Kept)
		return nil
	}
}

func violationsList(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	since := fs.String("since", "", "only violations since `WHEN`: a duration ago (90s, 1h, 7d), an RFC 3339 time or Unix epoch seconds")
	until := fs.String("until", "", "only violations until `WHEN` (same forms as --since)")
	severity := fs.String("severity", "", "only `SEVERITY`: CRITICAL, HIGH, MEDIUM, LOW or INFO (any case)")
	rule := fs.String("rule", "", "only violations of this rule `ID`")
	trace := fs.String("trace", "", "only violations in this trace (`TRACE_ID`, 32 hex digits)")
	limit := fs.Int("limit", 100, "show at most `N` violations (default 100; more than 1000 takes several pages); with --all, the page size")
	cursor := fs.String("cursor", "", "continue from `CURSOR` (the nextCursor of an earlier --json answer)")
	all := fs.Bool("all", false, "follow the cursors to the last match")
	return func(ctx context.Context, a *app, _ []string) error {
		set := setFlags(fs)
		q := url.Values{}
		now := a.now()
		for _, f := range []struct{ flag, key, value string }{{"since", "start_time", *since}, {"until", "end_time", *until}} {
			if !set[f.flag] {
				continue
			}
			v, err := parseWhen(f.value, now)
			if err != nil {
				return usageErrorf("--%s: %v", f.flag, err)
			}
			q.Set(f.key, v)
		}
		for _, f := range []struct{ key, value string }{{"severity", *severity}, {"rule_id", *rule}, {"trace_id", *trace}} {
			if f.value != "" {
				q.Set(f.key, f.value)
			}
		}
		if *limit < 1 {
			return usageErrorf("--limit %d: give a positive number", *limit)
		}
		want, pageSize := *limit, min(*limit, maxPage)
		if *all {
			want = -1
			if !set["limit"] {
				pageSize = maxPage
			}
		}
		doc, err := a.fetchViolations(ctx, q, *cursor, want, pageSize)
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printValue(doc)
		}
		vs := make([]violationJSON, len(doc.Violations))
		for i, raw := range doc.Violations {
			if err := json.Unmarshal(raw, &vs[i]); err != nil {
				return fmt.Errorf("a violation in the answer is not the JSON expected: %v", err)
			}
		}
		if len(vs) == 0 {
			fmt.Fprintln(a.stderr, "no violations match")
			return nil
		}
		if err := writeViolationsTable(a.stdout, vs); err != nil {
			return err
		}
		if doc.NextCursor != "" {
			fmt.Fprintf(a.stderr, "%d of %d violations shown; --all shows every one, --limit N more of them\n", len(vs), doc.TotalCount)
		}
		return nil
	}
}

// fetchViolations reads pages until want violations (-1: all) are in or
// the last page is read, and joins them into one answer of the API's form.
func (a *app) fetchViolations(ctx context.Context, q url.Values, cursor string, want, pageSize int) (violationPage, error) {
	out := violationPage{Violations: []json.RawMessage{}}
	for first := true; ; first = false {
		size := pageSize
		if want >= 0 {
			size = min(pageSize, want-len(out.Violations))
		}
		pq := url.Values{}
		for k, v := range q {
			pq[k] = v
		}
		pq.Set("limit", strconv.Itoa(size))
		if cursor != "" {
			pq.Set("cursor", cursor)
		}
		var page violationPage
		if _, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: "/v1/violations", Query: pq}, &page); err != nil {
			return out, err
		}
		if first {
			out.TotalCount = page.TotalCount
		}
		out.Violations = append(out.Violations, page.Violations...)
		out.NextCursor = page.NextCursor
		if page.NextCursor == "" || page.NextCursor == cursor || len(page.Violations) == 0 ||
			(want >= 0 && len(out.Violations) >= want) {
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// parseWhen reads --since or --until as the API's start_time/end_time: a
// duration before now (90s, 1h30m, 7d, 1d12h) becomes Unix epoch seconds;
// an RFC 3339 time too; digits are passed on as an epoch (the server tells
// seconds, milliseconds and nanoseconds apart).
func parseWhen(s string, now time.Time) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty: give a duration such as 1h or 7d, an RFC 3339 time or Unix epoch seconds")
	}
	if strings.Trim(s, "0123456789") == "" {
		return s, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return strconv.FormatInt(t.Unix(), 10), nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a duration such as 1h or 7d, an RFC 3339 time or Unix epoch seconds", s)
	}
	if d < 0 {
		return "", fmt.Errorf("%q: give how long ago as a positive duration", s)
	}
	return strconv.FormatInt(now.Add(-d).Unix(), 10), nil
}

// parseAgo is time.ParseDuration that also takes whole days first: 7d, 1d12h.
func parseAgo(s string) (time.Duration, error) {
	neg := strings.HasPrefix(s, "-")
	body := strings.TrimPrefix(s, "-")
	var days time.Duration
	if i := strings.IndexByte(body, 'd'); i >= 0 {
		n, err := strconv.Atoi(body[:i])
		if err != nil || n < 0 || n > 365*100 {
			return 0, fmt.Errorf("bad number of days in %q", s)
		}
		days, body = time.Duration(n)*24*time.Hour, body[i+1:]
	}
	var rest time.Duration
	if body != "" || days == 0 {
		var err error
		if rest, err = time.ParseDuration(body); err != nil {
			return 0, err
		}
		if rest < 0 {
			return 0, fmt.Errorf("misplaced sign in %q", s)
		}
	}
	if neg {
		return -(days + rest), nil
	}
	return days + rest, nil
}
