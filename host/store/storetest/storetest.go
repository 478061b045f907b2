// Package storetest is the conformance suite every store.Store
// implementation runs, so that the embedded and the shared store behave
// the same to their callers.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openEmpty(t) })
//	}
//
// Violations in the suite are stamped within the last few hours of the
// real clock, well inside any sensible retention.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// Run runs the suite. open must return a new, empty store each time it is
// called; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	fresh := func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	}
	t.Run("Ping", func(t *testing.T) {
		if err := fresh(t).Ping(context.Background()); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})
	t.Run("Rules", func(t *testing.T) {
		t.Run("CreateGetList", func(t *testing.T) { testCreateGetList(t, fresh(t)) })
		t.Run("Duplicate", func(t *testing.T) { testDuplicate(t, fresh(t)) })
		t.Run("Update", func(t *testing.T) { testUpdate(t, fresh(t)) })
		t.Run("UpdateMissing", func(t *testing.T) { testUpdateMissing(t, fresh(t)) })
		t.Run("Delete", func(t *testing.T) { testDelete(t, fresh(t)) })
	})
	t.Run("Modules", func(t *testing.T) {
		t.Run("RoundTrip", func(t *testing.T) { testModuleRoundTrip(t, fresh(t)) })
		t.Run("Dedupe", func(t *testing.T) { testModuleDedupe(t, fresh(t)) })
		t.Run("DigestMismatch", func(t *testing.T) { testModuleMismatch(t, fresh(t)) })
	})
	t.Run("Violations", func(t *testing.T) {
		t.Run("RoundTrip", func(t *testing.T) { testViolationRoundTrip(t, fresh(t)) })
		t.Run("Filters", func(t *testing.T) { testFilters(t, fresh(t)) })
		t.Run("NewestFirst", func(t *testing.T) { testNewestFirst(t, fresh(t)) })
		t.Run("TotalCountAndLimit", func(t *testing.T) { testTotalCount(t, fresh(t)) })
		t.Run("DefaultLimit", func(t *testing.T) { testDefaultLimit(t, fresh(t)) })
		t.Run("PagingWithAppends", func(t *testing.T) { testPagingWithAppends(t, fresh(t)) })
		t.Run("BadCursor", func(t *testing.T) { testBadCursor(t, fresh(t)) })
		t.Run("EmptyStore", func(t *testing.T) { testEmpty(t, fresh(t)) })
	})
}

var ctx = context.Background()

// --- rules ---

// Rule returns a fully populated record for tests.
func Rule(id string, revision int64) rules.Record {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8000, time.UTC)
	m := rules.Module{Version: 1, SHA256: Digest([]byte(id)), SizeBytes: 42, ABIVersion: 1, Source: "wasm", CreatedAt: at}
	return rules.Record{
		ID:          id,
		Name:        "rule " + id,
		Description: "checks " + id,
		Severity:    rules.SeverityHigh,
		Tags:        []string{"a", "b"},
		Enabled:     true,
		Quarantine:  &rules.Quarantine{Reason: "fuel", LastError: "out of fuel", FuelUsed: 7, TraceID: "0af7651916cd43dd8448eb211c80319c", Strikes: 3, At: at},
		Limits:      rules.Limits{Fuel: 1000, MemoryPages: 16},
		Expression:  "span.duration > 1s",
		Module:      m,
		Versions:    []rules.Module{m},
		CreatedAt:   at,
		UpdatedAt:   at.Add(time.Minute),
		Revision:    revision,
	}
}

// sameJSON reports whether a and b encode to the same JSON: stores keep
// records as JSON, so that is the equality that matters.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}

func testCreateGetList(t *testing.T, s store.Store) {
	ids := []string{"zeta", "alpha", "m.id_1", "Beta", "alpha-2"}
	for _, id := range ids {
		if err := s.CreateRule(ctx, Rule(id, 1)); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	got, err := s.Rule(ctx, "alpha")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !sameJSON(t, got, Rule("alpha", 1)) {
		t.Errorf("get returned %+v, want %+v", got, Rule("alpha", 1))
	}
	if _, err := s.Rule(ctx, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get missing: %v, want ErrNotFound", err)
	}
	list, err := s.ListRules(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	var gotIDs []string
	for _, r := range list {
		gotIDs = append(gotIDs, r.ID)
	}
	if !slices.Equal(gotIDs, want) {
		t.Errorf("list order %v, want %v", gotIDs, want)
	}
	for _, r := range list {
		if !sameJSON(t, r, Rule(r.ID, 1)) {
			t.Errorf("listed %s differs from what was stored", r.ID)
		}
	}
}

func testDuplicate(t *testing.T, s store.Store) {
	if err := s.CreateRule(ctx, Rule("r1", 1)); err != nil {
		t.Fatal(err)
	}
	r := Rule("r1", 1)
	r.Name = "other"
	if err := s.CreateRule(ctx, r); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	got, err := s.Rule(ctx, "r1")
	if err != nil || got.Name != "rule r1" {
		t.Fatalf("after duplicate create: %+v, %v; the first must stay", got, err)
	}
}

func testUpdate(t *testing.T, s store.Store) {
	if err := s.CreateRule(ctx, Rule("r1", 1)); err != nil {
		t.Fatal(err)
	}
	r := Rule("r1", 2)
	r.Enabled = false
	r.Name = "renamed"
	if err := s.UpdateRule(ctx, r); err != nil {
		t.Fatalf("update to revision 2: %v", err)
	}
	got, err := s.Rule(ctx, "r1")
	if err != nil || !sameJSON(t, got, r) {
		t.Fatalf("after update: %+v, %v; want %+v", got, err, r)
	}
	// A writer that read revision 1 as well and now writes revision 2.
	stale := Rule("r1", 2)
	stale.Name = "stale"
	if err := s.UpdateRule(ctx, stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	// Skipping a revision is a conflict too.
	skip := Rule("r1", 4)
	if err := s.UpdateRule(ctx, skip); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update skipping a revision: %v, want ErrConflict", err)
	}
	if got, _ := s.Rule(ctx, "r1"); got.Name != "renamed" {
		t.Fatalf("a rejected update changed the rule: %+v", got)
	}
	r.Revision = 3
	if err := s.UpdateRule(ctx, r); err != nil {
		t.Fatalf("update to revision 3: %v", err)
	}
}

func testUpdateMissing(t *testing.T, s store.Store) {
	if err := s.UpdateRule(ctx, Rule("ghost", 2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing: %v, want ErrNotFound", err)
	}
	if _, err := s.Rule(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing rule created it: %v", err)
	}
}

func testDelete(t *testing.T, s store.Store) {
	for _, id := range []string{"a", "b"} {
		if err := s.CreateRule(ctx, Rule(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRule(ctx, "a"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := s.Rule(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get deleted: %v, want ErrNotFound", err)
	}
	if err := s.DeleteRule(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete twice: %v, want ErrNotFound", err)
	}
	list, err := s.ListRules(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "b" {
		t.Errorf("list after delete: %+v, %v", list, err)
	}
	if err := s.CreateRule(ctx, Rule("a", 1)); err != nil {
		t.Errorf("create again after delete: %v", err)
	}
}

// --- modules ---

// Digest is the hex sha256 of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func testModuleRoundTrip(t *testing.T, s store.Store) {
	mod := []byte("\x00asm\x01\x00\x00\x00 module bytes")
	sha := Digest(mod)
	if err := s.PutModule(ctx, sha, mod); err != nil {
		t.Fatalf("put: %v", err)
	}
	got, err := s.Module(ctx, sha)
	if err != nil || string(got) != string(mod) {
		t.Fatalf("get: %q, %v", got, err)
	}
	got[0] = 'X' // the caller owns what it was given
	if again, _ := s.Module(ctx, sha); string(again) != string(mod) {
		t.Fatalf("changing returned bytes changed the stored module")
	}
	if _, err := s.Module(ctx, Digest([]byte("absent"))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get absent: %v, want ErrNotFound", err)
	}
	// Deleting a rule keeps its modules.
	r := Rule("r", 1)
	r.Module.SHA256 = sha
	if err := s.CreateRule(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Module(ctx, sha); err != nil {
		t.Fatalf("module gone with its rule: %v", err)
	}
}

func testModuleDedupe(t *testing.T, s store.Store) {
	mod := []byte("same bytes")
	sha := Digest(mod)
	for i := 0; i < 3; i++ {
		if err := s.PutModule(ctx, sha, mod); err != nil {
			t.Fatalf("put #%d: %v", i+1, err)
		}
	}
	got, err := s.Module(ctx, sha)
	if err != nil || string(got) != string(mod) {
		t.Fatalf("get: %q, %v", got, err)
	}
	empty := []byte{}
	if err := s.PutModule(ctx, Digest(empty), empty); err != nil {
		t.Fatalf("put empty module: %v", err)
	}
	if got, err := s.Module(ctx, Digest(empty)); err != nil || len(got) != 0 {
		t.Fatalf("get empty module: %q, %v", got, err)
	}
}

func testModuleMismatch(t *testing.T, s store.Store) {
	mod := []byte("real bytes")
	wrong := Digest([]byte("other bytes"))
	if err := s.PutModule(ctx, wrong, mod); err == nil {
		t.Fatal("put under the wrong digest succeeded")
	}
	if _, err := s.Module(ctx, wrong); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rejected module was stored: %v", err)
	}
	if err := s.PutModule(ctx, "not-hex", mod); err == nil {
		t.Fatal("put under a malformed digest succeeded")
	}
}

// --- violations ---

var (
	suiteRules  = []string{"rule-a", "rule-b", "rule-c"}
	suiteSevs   = []string{"CRITICAL", "HIGH", "LOW", "INFO"}
	suiteTraces = []string{
		"0af7651916cd43dd8448eb211c80319c",
		"4bf92f3577b34da6a3ce929d0e0e4736",
		"00000000000000000000000000000001",
		"ffffffffffffffffffffffffffffffff",
		"5b8efff798038103d269b633813fc60c",
	}
)

// base is the time the suite's violations start from.
func base() time.Time { return time.Now().UTC().Truncate(time.Second).Add(-3 * time.Hour) }

// Violation returns a populated violation for tests.
func Violation(id string, at time.Time, ruleID, severity, traceID string) violations.Violation {
	return violations.Violation{
		ID:          id,
		RuleID:      ruleID,
		RuleName:    "name of " + ruleID,
		RuleVersion: 2,
		Severity:    severity,
		TraceID:     traceID,
		SpanID:      "00f067aa0ba902b7",
		Message:     "violation " + id,
		Attributes:  map[string]string{"http.status_code": "500", "n": id},
		Metadata:    map[string]string{"service_name": "checkout", "span_name": "GET /cart"},
		Trigger:     "root",
		Timestamp:   at,
	}
}

// dataset is n violations one second apart with mixed rules, severities
// and traces, appended in shuffled batches.
func dataset(t *testing.T, s store.Store, n int, start time.Time) []violations.Violation {
	t.Helper()
	vs := make([]violations.Violation, n)
	for i := range vs {
		vs[i] = Violation(fmt.Sprintf("v%04d", i), start.Add(time.Duration(i)*time.Second),
			suiteRules[i%len(suiteRules)], suiteSevs[i%len(suiteSevs)], suiteTraces[i%len(suiteTraces)])
	}
	shuffled := slices.Clone(vs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	appendAll(t, s, shuffled, 7)
	return vs
}

func appendAll(t *testing.T, s store.Store, vs []violations.Violation, batch int) {
	t.Helper()
	for len(vs) > 0 {
		n := min(batch, len(vs))
		if err := s.AppendViolations(ctx, vs[:n]); err != nil {
			t.Fatalf("append: %v", err)
		}
		vs = vs[n:]
	}
}

// expect applies q's filters to vs and returns the IDs of the matches,
// newest first (ties by ID, descending).
func expect(vs []violations.Violation, q violations.Query) []string {
	var m []violations.Violation
	for _, v := range vs {
		if (q.Start.IsZero() || !v.Timestamp.Before(q.Start)) &&
			(q.End.IsZero() || !v.Timestamp.After(q.End)) &&
			(q.Severity == "" || v.Severity == q.Severity) &&
			(q.RuleID == "" || v.RuleID == q.RuleID) &&
			(q.TraceID == "" || v.TraceID == q.TraceID) {
			m = append(m, v)
		}
	}
	slices.SortFunc(m, func(a, b violations.Violation) int {
		if c := b.Timestamp.Compare(a.Timestamp); c != 0 {
			return c
		}
		switch {
		case a.ID > b.ID:
			return -1
		case a.ID < b.ID:
			return 1
		}
		return 0
	})
	ids := make([]string, len(m))
	for i, v := range m {
		ids[i] = v.ID
	}
	return ids
}

func ids(vs []violations.Violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.ID
	}
	return out
}

func query(t *testing.T, s store.Store, q violations.Query) violations.Page {
	t.Helper()
	p, err := s.QueryViolations(ctx, q)
	if err != nil {
		t.Fatalf("query %+v: %v", q, err)
	}
	return p
}

// pageAll follows NextCursor to the end and returns every page.
func pageAll(t *testing.T, s store.Store, q violations.Query, between func()) []violations.Page {
	t.Helper()
	var pages []violations.Page
	for {
		p := query(t, s, q)
		pages = append(pages, p)
		if p.NextCursor == "" {
			return pages
		}
		if len(pages) > 10_000 {
			t.Fatal("paging does not end")
		}
		if len(p.Violations) == 0 {
			t.Fatalf("empty page with a next cursor")
		}
		q.Cursor = p.NextCursor
		if between != nil {
			between()
		}
	}
}

func testViolationRoundTrip(t *testing.T, s store.Store) {
	at := base().Add(123456789 * time.Nanosecond)
	v := Violation("only", at, "r", "HIGH", suiteTraces[0])
	// With its trace's evidence, which both stores keep with it.
	v.Evidence = &violations.Evidence{SpanCount: 3, Truncated: true, Spans: []violations.EvidenceSpan{
		{SpanID: "00f067aa0ba902b7", Name: "checkout", Service: "shop", StartUnixNano: 1, DurationNanos: 5_000_000, Status: "ok"},
		{SpanID: "00f067aa0ba902b8", ParentSpanID: "00f067aa0ba902b7", Name: "payment.charge", StartUnixNano: 2, Attributes: map[string]string{"amount": "1200"}, Status: "error"},
	}}
	if err := s.AppendViolations(ctx, []violations.Violation{v}); err != nil {
		t.Fatal(err)
	}
	p := query(t, s, violations.Query{Limit: 10})
	if len(p.Violations) != 1 || p.TotalCount != 1 || p.NextCursor != "" {
		t.Fatalf("page %+v", p)
	}
	got := p.Violations[0]
	if !got.Timestamp.Equal(at) {
		t.Errorf("timestamp %v, want %v", got.Timestamp, at)
	}
	if !sameJSON(t, got, v) {
		t.Errorf("stored %+v\n got   %+v", v, got)
	}
}

func testFilters(t *testing.T, s store.Store) {
	start := base()
	vs := dataset(t, s, 120, start)
	at := func(i int) time.Time { return start.Add(time.Duration(i) * time.Second) }
	cases := []struct {
		name string
		q    violations.Query
	}{
		{"none", violations.Query{}},
		{"start", violations.Query{Start: at(50)}},
		{"start-between-seconds", violations.Query{Start: at(50).Add(time.Millisecond)}},
		{"end", violations.Query{End: at(30)}},
		{"start-end", violations.Query{Start: at(20), End: at(80)}},
		{"one-instant", violations.Query{Start: at(42), End: at(42)}},
		{"end-before-start", violations.Query{Start: at(80), End: at(20)}},
		{"before-everything", violations.Query{End: at(-1)}},
		{"after-everything", violations.Query{Start: at(500)}},
		{"severity", violations.Query{Severity: "CRITICAL"}},
		{"rule", violations.Query{RuleID: "rule-b"}},
		{"trace", violations.Query{TraceID: suiteTraces[3]}},
		{"unknown-rule", violations.Query{RuleID: "nope"}},
		{"unknown-severity", violations.Query{Severity: "MEDIUM"}},
		{"unknown-trace", violations.Query{TraceID: "abababababababababababababababab"}},
		{"rule-severity", violations.Query{RuleID: "rule-a", Severity: "LOW"}},
		{"rule-trace", violations.Query{RuleID: "rule-c", TraceID: suiteTraces[1]}},
		{"severity-trace-time", violations.Query{Severity: "HIGH", TraceID: suiteTraces[0], Start: at(10), End: at(100)}},
		{"all", violations.Query{RuleID: "rule-a", Severity: "CRITICAL", TraceID: suiteTraces[2], Start: at(1), End: at(119)}},
		{"rule-severity-2", violations.Query{RuleID: "rule-a", Severity: "HIGH"}},
		{"empty-combination", violations.Query{RuleID: "rule-a", TraceID: suiteTraces[1], Severity: "CRITICAL", End: at(10)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := expect(vs, c.q)
			q := c.q
			q.Limit = 1000
			p := query(t, s, q)
			if !slices.Equal(ids(p.Violations), want) {
				t.Fatalf("got %v\nwant %v", ids(p.Violations), want)
			}
			if p.TotalCount != len(want) {
				t.Fatalf("TotalCount %d, want %d", p.TotalCount, len(want))
			}
			if p.NextCursor != "" {
				t.Fatalf("NextCursor %q on the only page", p.NextCursor)
			}
			// The same through pages of 4.
			q.Limit = 4
			var got []string
			for _, pg := range pageAll(t, s, q, nil) {
				if pg.TotalCount != len(want) {
					t.Fatalf("page TotalCount %d, want %d", pg.TotalCount, len(want))
				}
				if len(pg.Violations) > 4 {
					t.Fatalf("page of %d, limit 4", len(pg.Violations))
				}
				got = append(got, ids(pg.Violations)...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paged %v\nwant %v", got, want)
			}
		})
	}
}

func testNewestFirst(t *testing.T, s store.Store) {
	start := base()
	// Appended oldest-last, with ties: equal timestamps order by ID.
	var vs []violations.Violation
	for i := 9; i >= 0; i-- {
		for _, suffix := range []string{"b", "a", "c"} {
			vs = append(vs, Violation(fmt.Sprintf("t%d-%s", i, suffix), start.Add(time.Duration(i)*time.Minute), "r", "LOW", suiteTraces[0]))
		}
	}
	appendAll(t, s, vs, 4)
	p := query(t, s, violations.Query{Limit: 100})
	want := expect(vs, violations.Query{})
	if !slices.Equal(ids(p.Violations), want) {
		t.Fatalf("order %v\nwant  %v", ids(p.Violations), want)
	}
	for i := 1; i < len(p.Violations); i++ {
		if p.Violations[i].Timestamp.After(p.Violations[i-1].Timestamp) {
			t.Fatalf("violation %d is newer than the one before it", i)
		}
	}
}

func testTotalCount(t *testing.T, s store.Store) {
	vs := dataset(t, s, 60, base())
	for _, q := range []violations.Query{{}, {RuleID: "rule-a"}, {Severity: "INFO", RuleID: "rule-c"}} {
		want := expect(vs, q)
		q.Limit = 5
		p := query(t, s, q)
		if p.TotalCount != len(want) {
			t.Errorf("%+v: TotalCount %d, want %d", q, p.TotalCount, len(want))
		}
		if n := min(5, len(want)); len(p.Violations) != n {
			t.Errorf("%+v: %d on the page, want %d", q, len(p.Violations), n)
		}
		if !slices.Equal(ids(p.Violations), want[:min(5, len(want))]) {
			t.Errorf("%+v: first page %v, want %v", q, ids(p.Violations), want[:min(5, len(want))])
		}
		if (p.NextCursor != "") != (len(want) > 5) {
			t.Errorf("%+v: NextCursor %q with %d matches", q, p.NextCursor, len(want))
		}
	}
	// Exactly a page's worth: no cursor to an empty page.
	q := violations.Query{RuleID: "rule-a", Limit: 20}
	if p := query(t, s, q); len(p.Violations) != 20 || p.NextCursor != "" {
		t.Errorf("exactly one full page: %d violations, cursor %q", len(p.Violations), p.NextCursor)
	}
}

func testDefaultLimit(t *testing.T, s store.Store) {
	dataset(t, s, 130, base())
	p := query(t, s, violations.Query{})
	if len(p.Violations) != 100 || p.TotalCount != 130 || p.NextCursor == "" {
		t.Fatalf("limit 0: %d violations, total %d, cursor %q; want 100 of 130 and a cursor", len(p.Violations), p.TotalCount, p.NextCursor)
	}
}

func testPagingWithAppends(t *testing.T, s store.Store) {
	start := base()
	// 25 timestamps with 4 violations each, so pages split ties.
	var vs []violations.Violation
	for i := 0; i < 100; i++ {
		vs = append(vs, Violation(fmt.Sprintf("p%03d", i), start.Add(time.Duration(i/4)*time.Second),
			suiteRules[i%2], suiteSevs[i%4], suiteTraces[i%5]))
	}
	appendAll(t, s, vs, 9)
	next := 0
	newer := func() {
		// Violations newer than everything, and some at the newest
		// timestamp already stored, matching every filter below.
		at := start.Add(time.Hour + time.Duration(next)*time.Second)
		if next%2 == 1 {
			at = start.Add(24 * time.Second)
		}
		batch := []violations.Violation{
			Violation(fmt.Sprintf("zz-new-%03d", next), at, "rule-a", "CRITICAL", suiteTraces[0]),
			Violation(fmt.Sprintf("zz-new-%03d-b", next), at, "rule-b", "HIGH", suiteTraces[1]),
		}
		next++
		if err := s.AppendViolations(ctx, batch); err != nil {
			t.Fatalf("append between pages: %v", err)
		}
	}
	for _, q := range []violations.Query{{Limit: 3}, {Limit: 7, RuleID: "rule-a"}, {Limit: 2, Severity: "HIGH", End: start.Add(20 * time.Second)}} {
		want := expect(vs, q)
		seen := map[string]int{}
		var got []string
		var last time.Time
		for i, p := range pageAll(t, s, q, newer) {
			for _, v := range p.Violations {
				seen[v.ID]++
				if seen[v.ID] > 1 {
					t.Fatalf("%+v: %s returned twice", q, v.ID)
				}
				if i > 0 && v.Timestamp.After(last) {
					t.Fatalf("%+v: %s at %v is newer than the page before (%v)", q, v.ID, v.Timestamp, last)
				}
				last = v.Timestamp
				got = append(got, v.ID)
			}
		}
		if len(seen) < len(want) {
			t.Fatalf("%+v: visited %d, want all %d", q, len(seen), len(want))
		}
		for _, id := range want {
			if seen[id] != 1 {
				t.Fatalf("%+v: %s visited %d times, want once", q, id, seen[id])
			}
		}
		// Matches appended after the first page are newer than its
		// cursor or tie with one already passed; the old ones come in
		// order.
		var old []string
		for _, id := range got {
			if id[0] == 'p' {
				old = append(old, id)
			}
		}
		if !slices.Equal(old, want) {
			t.Fatalf("%+v: order %v\nwant %v", q, old, want)
		}
	}
}

func testBadCursor(t *testing.T, s store.Store) {
	dataset(t, s, 10, base())
	for _, c := range []string{"not a cursor!", "%%%%", "\x00\xff"} {
		if _, err := s.QueryViolations(ctx, violations.Query{Limit: 5, Cursor: c}); err == nil {
			t.Errorf("cursor %q accepted", c)
		}
	}
}

func testEmpty(t *testing.T, s store.Store) {
	p := query(t, s, violations.Query{Limit: 10, RuleID: "x"})
	if len(p.Violations) != 0 || p.TotalCount != 0 || p.NextCursor != "" {
		t.Fatalf("empty store: %+v", p)
	}
	p = query(t, s, violations.Query{Limit: 10})
	if len(p.Violations) != 0 || p.TotalCount != 0 || p.NextCursor != "" {
		t.Fatalf("empty store: %+v", p)
	}
	if err := s.AppendViolations(ctx, nil); err != nil {
		t.Fatalf("append of nothing: %v", err)
	}
}
