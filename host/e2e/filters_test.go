package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testViolationFilters(t *testing.T) {
	// The storm below (1001 violations of one rule in a trace) tests
	// paging, not sampling: keep every violation.
	s := startServer(t, serverOptions{Env: map[string]string{"BETRACE_VIOLATION_SAMPLE_RATE": "-1"}})
	s.loadRule(t, "payment-fraud-check") // CRITICAL, 2 per trace
	s.loadRule(t, "checkout-slow-db")    // MEDIUM, 2 per trace

	t0 := time.Now()
	var payTraces, dbTraces []string
	for i := range 5 {
		name := "payment-fraud-check.violating"
		if i%2 == 1 {
			name = "checkout-slow-db.violating"
		}
		td, id := sample(t, name)
		s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
		if i%2 == 1 {
			dbTraces = append(dbTraces, id)
		} else {
			payTraces = append(payTraces, id)
		}
	}
	s.waitQuiet(t, 5)
	t1 := time.Now()
	const total = 10

	list := func(query string) map[string]any {
		t.Helper()
		return s.get(t, "/v1/violations"+query)
	}
	count := func(query string) int {
		t.Helper()
		page := list(query)
		n := num(page, "totalCount")
		if got := len(objects(t, page["violations"])); int64(got) != n && n <= 100 {
			t.Errorf("GET /v1/violations%s: %d violations but totalCount %d", query, got, n)
		}
		return int(n)
	}

	// Newest first, over everything.
	everything := objects(t, list("?limit=1000")["violations"])
	if len(everything) != total {
		t.Fatalf("%d violations, want %d", len(everything), total)
	}
	var prev time.Time
	for i, v := range everything {
		at, err := time.Parse(time.RFC3339Nano, str(v, "timestamp"))
		if err != nil {
			t.Fatalf("timestamp %v: %v", v["timestamp"], err)
		}
		if i > 0 && at.After(prev) {
			t.Errorf("violation %d (%s) is newer than violation %d (%s): want newest first", i, at, i-1, prev)
		}
		prev = at
	}

	// Time windows in every accepted form.
	secs := func(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }
	for _, f := range []struct {
		name       string
		start, end string // a window around the violations
		past       string // an end_time before them
		future     string // a start_time after them
	}{
		{"epoch seconds", secs(t0.Add(-time.Second)), secs(t1.Add(2 * time.Second)), secs(t0.Add(-10 * time.Second)), secs(t1.Add(10 * time.Second))},
		{"epoch milliseconds", fmt.Sprint(t0.Add(-time.Second).UnixMilli()), fmt.Sprint(t1.Add(time.Second).UnixMilli()), fmt.Sprint(t0.Add(-10 * time.Second).UnixMilli()), fmt.Sprint(t1.Add(10 * time.Second).UnixMilli())},
		{"epoch nanoseconds", fmt.Sprint(t0.Add(-time.Second).UnixNano()), fmt.Sprint(t1.Add(time.Second).UnixNano()), fmt.Sprint(t0.Add(-10 * time.Second).UnixNano()), fmt.Sprint(t1.Add(10 * time.Second).UnixNano())},
		{"RFC 3339", t0.Add(-time.Second).UTC().Format(time.RFC3339), t1.Add(2 * time.Second).UTC().Format(time.RFC3339), t0.Add(-10 * time.Second).UTC().Format(time.RFC3339), t1.Add(10 * time.Second).UTC().Format(time.RFC3339)},
		{"RFC 3339 with an offset and fractions", t0.Add(-time.Second).In(time.FixedZone("", 5*3600+1800)).Format(time.RFC3339Nano), t1.Add(time.Second).In(time.FixedZone("", -7*3600)).Format(time.RFC3339Nano), t0.Add(-10 * time.Second).Format(time.RFC3339Nano), t1.Add(10 * time.Second).Format(time.RFC3339Nano)},
	} {
		q := func(kv ...string) string {
			v := url.Values{}
			for i := 0; i < len(kv); i += 2 {
				v.Set(kv[i], kv[i+1])
			}
			return "?" + v.Encode()
		}
		for _, c := range []struct {
			query string
			want  int
		}{
			{q("start_time", f.start), total},
			{q("start_time", f.start, "end_time", f.end), total},
			{q("end_time", f.end), total},
			{q("start_time", f.future), 0},
			{q("end_time", f.past), 0},
			{q("start_time", f.future, "end_time", f.future), 0},
			{q("startTime", f.start, "endTime", f.end), total},
		} {
			if got := count(c.query); got != c.want {
				t.Errorf("%s: GET /v1/violations%s: totalCount %d, want %d", f.name, c.query, got, c.want)
			}
		}
	}

	// Severity in any case, rule id, trace id.
	for _, c := range []struct {
		query string
		want  int
	}{
		{"?severity=CRITICAL", 6}, {"?severity=critical", 6}, {"?severity=Critical", 6},
		{"?severity=medium", 4}, {"?severity=HIGH", 0},
		{"?rule_id=payment-fraud-check", 6}, {"?rule_id=checkout-slow-db", 4}, {"?rule_id=no-such-rule", 0},
		{"?ruleId=checkout-slow-db", 4},
		{"?trace_id=" + payTraces[0], 2}, {"?trace_id=" + strings.ToUpper(dbTraces[1]), 2},
		{"?trace_id=" + strings.Repeat("0", 32), 0},
		{"?severity=critical&rule_id=checkout-slow-db", 0},
		{"?severity=medium&rule_id=checkout-slow-db&trace_id=" + dbTraces[0], 2},
	} {
		page := list(c.query)
		if got := num(page, "totalCount"); got != int64(c.want) {
			t.Errorf("GET /v1/violations%s: totalCount %d, want %d", c.query, got, c.want)
		}
		for _, v := range objects(t, page["violations"]) {
			q, _ := url.ParseQuery(strings.TrimPrefix(c.query, "?"))
			if sev := q.Get("severity"); sev != "" && str(v, "severity") != strings.ToUpper(sev) {
				t.Errorf("GET /v1/violations%s: a violation of severity %v", c.query, v["severity"])
			}
			if rid := q.Get("rule_id"); rid != "" && str(v, "ruleId") != rid {
				t.Errorf("GET /v1/violations%s: a violation of rule %v", c.query, v["ruleId"])
			}
			if tid := q.Get("trace_id"); tid != "" && str(v, "traceId") != strings.ToLower(tid) {
				t.Errorf("GET /v1/violations%s: a violation of trace %v", c.query, v["traceId"])
			}
		}
	}

	// Paging visits every match once, newest first, with the full count on
	// every page.
	for _, c := range []struct {
		query string
		limit int
		want  int
	}{
		{"", 3, total}, {"", 1, total}, {"", 10, total}, {"", 11, total},
		{"&severity=critical", 4, 6}, {"&rule_id=checkout-slow-db", 3, 4},
	} {
		var ids []string
		var sizes []int
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > total+1 {
				t.Fatalf("limit=%d%s: paging does not end", c.limit, c.query)
			}
			path := fmt.Sprintf("/v1/violations?limit=%d%s", c.limit, c.query)
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			page := list(strings.Replace(path, "/v1/violations", "", 1))
			if got := num(page, "totalCount"); got != int64(c.want) {
				t.Errorf("%s: totalCount %d on a page, want %d (all matches)", path, got, c.want)
			}
			vs := objects(t, page["violations"])
			sizes = append(sizes, len(vs))
			for _, v := range vs {
				ids = append(ids, str(v, "id"))
			}
			cursor = str(page, "nextCursor")
			if cursor == "" {
				break
			}
		}
		var want []string
		for _, v := range objects(t, list("?limit=1000" + c.query)["violations"]) {
			want = append(want, str(v, "id"))
		}
		if !slices.Equal(ids, want) {
			t.Errorf("limit=%d%s: pages (sizes %v) visited %v, want every match once in order %v", c.limit, c.query, sizes, ids, want)
		}
	}
	wantError(t, s.call(t, http.MethodGet, "/v1/violations?cursor=not-a-cursor", nil), http.StatusBadRequest)

	// Bad parameters.
	for _, c := range []struct {
		query, mention string
	}{
		{"?start_time=yesterday", "start_time"},
		{"?start_time=2026-13-45T00:00:00Z", "start_time"},
		{"?start_time=-5", "start_time"},
		{"?end_time=soon", "end_time"},
		{fmt.Sprintf("?start_time=%d&end_time=%d", t1.Unix(), t0.Unix()-5), "end_time"},
		{"?severity=urgent", "severity"},
		{"?trace_id=xyz", "trace_id"},
		{"?limit=0", "limit"},
		{"?limit=ten", "limit"},
	} {
		wantError(t, s.call(t, http.MethodGet, "/v1/violations"+c.query, nil), http.StatusBadRequest, c.mention)
	}

	// limit above 1000 is capped, not refused: one trace with 1001
	// payment.charge spans makes 1001 violations.
	storm, stormID := paymentStorm(1001)
	s.mustExport(t, otlpProto(t, storm), "application/x-protobuf", "")
	s.waitQuiet(t, 6)
	// Evaluated is not yet stored: the recorder writes a moment later.
	eventually(t, 15*time.Second, "1001 violations of the storm stored", func() (bool, string) {
		n := num(list("?limit=1&trace_id="+stormID), "totalCount")
		return n == 1001, fmt.Sprintf("totalCount %d", n)
	})
	page := list("?limit=5000&trace_id=" + stormID)
	if got := len(objects(t, page["violations"])); got != 1000 || num(page, "totalCount") != 1001 || str(page, "nextCursor") == "" {
		t.Errorf("limit=5000 over 1001 matches: %d violations, totalCount %v, nextCursor %q; want 1000, 1001 and a cursor", got, page["totalCount"], page["nextCursor"])
	}
	if rest := list("?limit=5000&trace_id=" + stormID + "&cursor=" + url.QueryEscape(str(page, "nextCursor"))); len(objects(t, rest["violations"])) != 1 || str(rest, "nextCursor") != "" {
		t.Errorf("the page after 1000: %d violations, nextCursor %q; want 1 and none", len(objects(t, rest["violations"])), rest["nextCursor"])
	}
	if got := len(objects(t, list("?trace_id=" + stormID)["violations"])); got != 100 {
		t.Errorf("without limit: %d violations, want the default page of 100", got)
	}
}
