package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/store/embedded"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

// TestSummary serves GET /v1/violations/summary from a real embedded
// store holding kept violations and tallies of sampled ones.
func TestSummary(t *testing.T) {
	st, err := embedded.Open(embedded.Config{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	trace := "0af7651916cd43dd8448eb211c80319c"
	if err := st.AppendViolations(ctx, []violations.Violation{
		storetest.Violation("a1", hour.Add(10*time.Second), "storm", "HIGH", trace),
		storetest.Violation("a2", hour.Add(70*time.Second), "storm", "HIGH", trace),
		storetest.Violation("b1", hour.Add(30*time.Minute), "quiet", "LOW", trace),
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.CountViolations(ctx, "tok", []violations.Tally{{RuleID: "storm", Severity: "HIGH", Minute: hour, Count: 500}}); err != nil {
		t.Fatal(err)
	}
	h := New(Config{}, Deps{Violations: st, Gatherer: prometheus.NewRegistry(), Now: time.Now}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	get := func(query url.Values) (int, map[string]any) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/violations/summary?"+query.Encode(), nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
		return rec.Code, body
	}
	start := url.Values{"start_time": {hour.Format(time.RFC3339)}}
	for _, tt := range []struct {
		name           string
		query          url.Values
		rows           int
		kept, counted  float64
		firstRowCounts [2]float64 // kept, counted
	}{
		{"by minute", start, 3, 3, 503, [2]float64{1, 501}},
		{"by hour", url.Values{"start_time": start["start_time"], "bucket": {"1h"}}, 2, 3, 503, [2]float64{1, 1}},
		{"one rule, epoch seconds", url.Values{"start_time": {strconv.FormatInt(hour.Unix(), 10)}, "bucket": {"1h"}, "rule_id": {"storm"}}, 1, 2, 502, [2]float64{2, 502}},
		{"severity in any case", url.Values{"start_time": start["start_time"], "severity": {"low"}}, 1, 1, 1, [2]float64{1, 1}},
		{"window ends before the tally's minute is over", url.Values{"start_time": {hour.Add(time.Minute).Format(time.RFC3339)}, "end_time": {hour.Add(2 * time.Minute).Format(time.RFC3339)}}, 1, 1, 1, [2]float64{1, 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.query)
			rows, _ := body["rows"].([]any)
			if code != http.StatusOK || len(rows) != tt.rows || body["kept"] != tt.kept || body["counted"] != tt.counted {
				t.Fatalf("status %d, body %v; want %d rows, kept %v, counted %v", code, body, tt.rows, tt.kept, tt.counted)
			}
			row := rows[0].(map[string]any)
			if row["kept"] != tt.firstRowCounts[0] || row["counted"] != tt.firstRowCounts[1] {
				t.Errorf("first row %v, want kept %v counted %v", row, tt.firstRowCounts[0], tt.firstRowCounts[1])
			}
		})
	}
	for _, bad := range []url.Values{
		{"bucket": {"90s"}},
		{"bucket": {"soon"}},
		{"bucket": {"-1h"}},
		{"start_time": {"yesterday"}},
		{"severity": {"loud"}},
	} {
		if code, body := get(bad); code != http.StatusBadRequest {
			t.Errorf("%v: status %d, body %v; want 400", bad, code, body)
		}
	}
}
