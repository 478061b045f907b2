package redisstore

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

const (
	traceA = "0af7651916cd43dd8448eb211c80319c"
	traceB = "4bf92f3577b34da6a3ce929d0e0e4736"
)

func TestDedup(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	now := time.Now().UTC()
	at := func(i int) time.Time { return now.Add(time.Duration(i) * time.Millisecond) }

	// One evaluation of trace A: two rules, rule-a fires three times.
	first := []violations.Violation{
		viol("e1-1", at(1), "rule-a", traceA),
		viol("e1-2", at(1), "rule-a", traceA),
		viol("e1-3", at(2), "rule-a", traceA),
		viol("e1-4", at(2), "rule-b", traceA),
	}
	if err := s.AppendViolations(bg, first); err != nil {
		t.Fatal(err)
	}
	want := []string{"e1-4", "e1-3", "e1-2", "e1-1"}
	if got := allIDs(t, s, violations.Query{}); !slices.Equal(got, want) {
		t.Fatalf("several violations of one pair in one batch: %v, want %v", got, want)
	}

	// The same batch again, as a retry after a timeout would send it, and
	// in another order: stored once.
	retry := slices.Clone(first)
	slices.Reverse(retry)
	for i := 0; i < 2; i++ {
		if err := s.AppendViolations(bg, retry); err != nil {
			t.Fatal(err)
		}
	}
	if got := allIDs(t, s, violations.Query{}); !slices.Equal(got, want) {
		t.Fatalf("after retries: %v, want %v", got, want)
	}
	checkConsistent(t, srv, s, 4)
	if s.Duplicates() != 0 {
		t.Fatalf("retries counted as duplicates: %d", s.Duplicates())
	}

	// A second evaluation of trace A (say on another instance after a
	// membership change): rule-a and rule-b again, and rule-c for the
	// first time; trace B's rule-a is another pair.
	second := []violations.Violation{
		viol("e2-1", at(10), "rule-a", traceA),
		viol("e2-2", at(10), "rule-b", traceA),
		viol("e2-3", at(10), "rule-c", traceA),
		viol("e2-4", at(11), "rule-a", traceB),
	}
	other, err := Open(bg, Config{URL: srv.URL(), Prefix: s.cfg.Prefix}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.AppendViolations(bg, second); err != nil {
		t.Fatal(err)
	}
	want = []string{"e2-4", "e2-3", "e1-4", "e1-3", "e1-2", "e1-1"}
	if got := allIDs(t, s, violations.Query{}); !slices.Equal(got, want) {
		t.Fatalf("second evaluation: %v, want %v", got, want)
	}
	if other.Duplicates() != 2 {
		t.Fatalf("duplicates %d, want 2", other.Duplicates())
	}
	// Its retry changes nothing either: the new pairs are its own, the
	// old ones still belong to the first evaluation.
	if err := other.AppendViolations(bg, second); err != nil {
		t.Fatal(err)
	}
	if got := allIDs(t, s, violations.Query{}); !slices.Equal(got, want) {
		t.Fatalf("retry of the second evaluation: %v, want %v", got, want)
	}
	checkConsistent(t, srv, s, 6)

	// The pair is remembered for DedupTTL, under the documented key.
	ttl, err := srv.Client().PTTL(bg, s.k.dedup("rule-a", traceA)).Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("dedup key TTL %v, %v; want within (0, 1h]", ttl, err)
	}
	// Once it is forgotten, the pair records again.
	if err := srv.Client().Del(bg, s.k.dedup("rule-a", traceA)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendViolations(bg, []violations.Violation{viol("e3-1", at(20), "rule-a", traceA)}); err != nil {
		t.Fatal(err)
	}
	if got := allIDs(t, s, violations.Query{RuleID: "rule-a", TraceID: traceA}); !slices.Equal(got, []string{"e3-1", "e1-3", "e1-2", "e1-1"}) {
		t.Fatalf("after the pair expired: %v", got)
	}
}

// TestDedupConcurrent: evaluations of the same pairs racing from several
// stores record each pair exactly once, from exactly one evaluation.
func TestDedupConcurrent(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	const writers, pairs = 4, 50
	stores := make([]*Store, writers)
	for i := range stores {
		stores[i] = openT(t, srv, Config{Prefix: prefix}, nil)
	}
	now := time.Now().UTC()
	errs := make(chan error, writers)
	for w, s := range stores {
		go func() {
			var err error
			for p := 0; p < pairs && err == nil; p++ {
				trace := fmt.Sprintf("%032x", p)
				err = s.AppendViolations(bg, []violations.Violation{
					viol(fmt.Sprintf("w%d-p%02d-x", w, p), now, "rule-a", trace),
					viol(fmt.Sprintf("w%d-p%02d-y", w, p), now, "rule-a", trace),
				})
			}
			errs <- err
		}()
	}
	for range stores {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := allIDs(t, stores[0], violations.Query{})
	if len(got) != 2*pairs {
		t.Fatalf("%d stored, want %d", len(got), 2*pairs)
	}
	owner := map[string]string{}
	for _, id := range got {
		w, p, _ := strings.Cut(id, "-")
		p = p[:3]
		if o, ok := owner[p]; ok && o != w {
			t.Fatalf("pair %s recorded by %s and %s", p, o, w)
		}
		owner[p] = w
	}
	var dups uint64
	for _, s := range stores {
		dups += s.Duplicates()
	}
	if dups != 2*pairs*(writers-1) {
		t.Fatalf("duplicates %d, want %d", dups, 2*pairs*(writers-1))
	}
}

func TestRetentionByCount(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{MaxViolations: 10, DedupTTL: -1}, nil)
	now := time.Now().UTC()
	var all []violations.Violation
	for i := 0; i < 25; i++ {
		// One rule: across rules the one holding the most gives way
		// (storetest.RunRetention).
		all = append(all, viol(fmt.Sprintf("a%02d", i), now.Add(time.Duration(i)*time.Second), "rule-0", traceA))
	}
	// Out of order, in batches of 3; never more than 10 stored.
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(all))
	for i := 0; i < len(order); i += 3 {
		var batch []violations.Violation
		for _, j := range order[i:min(i+3, len(order))] {
			batch = append(batch, all[j])
		}
		if err := s.AppendViolations(bg, batch); err != nil {
			t.Fatal(err)
		}
		if n, _, _ := counts(t, srv, s); n > 10 {
			t.Fatalf("%d stored, max 10", n)
		}
	}
	want := []string{"a24", "a23", "a22", "a21", "a20", "a19", "a18", "a17", "a16", "a15"}
	if got := allIDs(t, s, violations.Query{}); !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
	if s.Trimmed() != 15 {
		t.Fatalf("trimmed %d, want 15", s.Trimmed())
	}
	checkConsistent(t, srv, s, 10)
	// The index lost the trimmed ones too.
	p, err := s.QueryViolations(bg, violations.Query{RuleID: "rule-0"})
	if err != nil || p.TotalCount != 10 {
		t.Fatalf("rule-0 after trim: %d, %v; want 10", p.TotalCount, err)
	}
}

func TestRetentionByAge(t *testing.T) {
	srv := redistest.Start(t)
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	s := openT(t, srv, Config{MaxViolationAge: time.Hour, DedupTTL: -1}, now)
	var vs []violations.Violation
	for i := 0; i < 30; i++ { // one every 5 minutes: 00:00 .. 02:25
		vs = append(vs, viol(fmt.Sprintf("a%02d", i), start.Add(time.Duration(i)*5*time.Minute), "rule-a", traceA))
	}
	if err := s.AppendViolations(bg, vs); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, s, 30)

	// At 02:00, violations before 01:00 are out of queries at once...
	clock.Store(start.Add(2 * time.Hour).UnixNano())
	for _, q := range []violations.Query{{}, {RuleID: "rule-a"}, {RuleID: "rule-a", TraceID: traceA}} {
		got := allIDs(t, s, q)
		if len(got) != 18 || got[len(got)-1] != "a12" {
			t.Fatalf("%+v at 02:00 before trimming: %v", q, got)
		}
	}
	checkConsistent(t, srv, s, 30)
	// ...and out of Redis at the next trim or append.
	if err := s.Trim(bg); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, s, 18)
	clock.Store(start.Add(3 * time.Hour).UnixNano())
	if err := s.AppendViolations(bg, []violations.Violation{viol("new", now(), "rule-b", traceB)}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, s, 7)
	if got := allIDs(t, s, violations.Query{}); len(got) != 7 || got[0] != "new" || got[6] != "a24" {
		t.Fatalf("at 03:00: %v", got)
	}
	if s.Trimmed() != 24 {
		t.Fatalf("trimmed %d, want 24", s.Trimmed())
	}
	// A violation already too old when appended is not kept.
	if err := s.AppendViolations(bg, []violations.Violation{viol("ancient", start, "rule-b", traceB)}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, s, 7)
}

// TestTrimBudget: a trim larger than one script's budget finishes over
// several calls of Trim.
func TestTrimBudget(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	big := openT(t, srv, Config{Prefix: prefix, DedupTTL: -1}, nil)
	now := time.Now().UTC()
	const n = trimBudget + 2345
	batch := make([]violations.Violation, 0, 1000)
	for i := 0; i < n; i++ {
		batch = append(batch, viol(fmt.Sprintf("v%05d", i), now.Add(time.Duration(i)*time.Microsecond), "r", traceA))
		if len(batch) == cap(batch) || i == n-1 {
			if err := big.AppendViolations(bg, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	small := openT(t, srv, Config{Prefix: prefix, MaxViolations: 5}, nil)
	if err := small.Trim(bg); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, small, 5)
	if small.Trimmed() != n-5 {
		t.Fatalf("trimmed %d, want %d", small.Trimmed(), n-5)
	}
}

// TestReplace: a violation stored again under the same timestamp and ID
// replaces the first, index included.
func TestReplace(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{DedupTTL: -1}, nil)
	at := time.Now().UTC()
	if err := s.AppendViolations(bg, []violations.Violation{viol("x", at, "rule-a", traceA)}); err != nil {
		t.Fatal(err)
	}
	v := viol("x", at, "rule-b", traceB)
	v.Severity = "LOW"
	if err := s.AppendViolations(bg, []violations.Violation{v}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, srv, s, 1)
	for q, want := range map[violations.Query]int{
		{RuleID: "rule-a"}: 0, {TraceID: traceA}: 0, {Severity: "HIGH"}: 0, {RuleID: "rule-a", Severity: "HIGH"}: 0,
		{RuleID: "rule-b"}: 1, {TraceID: traceB}: 1, {Severity: "LOW"}: 1, {RuleID: "rule-b", Severity: "LOW"}: 1,
	} {
		p, err := s.QueryViolations(bg, q)
		if err != nil || p.TotalCount != want {
			t.Errorf("%+v: %d, %v; want %d", q, p.TotalCount, err, want)
		}
	}
}

// TestOddFields: filter values holding the index's separators and
// lengths stay apart.
func TestOddFields(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{DedupTTL: -1}, nil)
	at := time.Now().UTC()
	rulesIDs := []string{"a", "a:", "a:1:", "1:a", "", "a~", "ab", "a\x00", "ä"}
	var vs []violations.Violation
	for i, r := range rulesIDs {
		vs = append(vs, viol(fmt.Sprintf("v:%d", i), at.Add(time.Duration(i)), r, r+"t"))
	}
	if err := s.AppendViolations(bg, vs); err != nil {
		t.Fatal(err)
	}
	for i, r := range rulesIDs {
		if r == "" {
			continue // an empty filter does not filter
		}
		for _, q := range []violations.Query{{RuleID: r}, {TraceID: r + "t"}, {RuleID: r, TraceID: r + "t"}, {RuleID: r, Severity: "HIGH"}} {
			got := allIDs(t, s, q)
			if !slices.Equal(got, []string{fmt.Sprintf("v:%d", i)}) {
				t.Errorf("%#v: %v", q, got)
			}
		}
	}
}

func TestQueryLimits(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{DedupTTL: -1}, nil)
	now := time.Now().UTC()
	var vs []violations.Violation
	for i := 0; i < MaxLimit+10; i++ {
		vs = append(vs, viol(fmt.Sprintf("v%04d", i), now.Add(-time.Duration(i)*time.Millisecond), "r", traceA))
	}
	if err := s.AppendViolations(bg, vs); err != nil {
		t.Fatal(err)
	}
	for _, q := range []violations.Query{{Limit: 5000}, {Limit: 5000, RuleID: "r", TraceID: traceA}} {
		p, err := s.QueryViolations(bg, q)
		if err != nil || len(p.Violations) != MaxLimit || p.TotalCount != MaxLimit+10 || p.NextCursor == "" {
			t.Fatalf("%+v: %d of %d, cursor %q, %v", q, len(p.Violations), p.TotalCount, p.NextCursor, err)
		}
	}
}

func TestBadCursor(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{DedupTTL: -1}, nil)
	now := time.Now()
	for i := 0; i < 5; i++ {
		if err := s.AppendViolations(bg, []violations.Violation{viol(fmt.Sprintf("a%d", i), now.Add(time.Duration(i)), "r", traceA)}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.QueryViolations(bg, violations.Query{Limit: 2})
	if err != nil || p.NextCursor == "" {
		t.Fatal(p, err)
	}
	for name, c := range map[string]string{
		"not base64":     "not a cursor!",
		"padded":         p.NextCursor + "==",
		"too short":      "AQID",
		"unknown format": base64.RawURLEncoding.EncodeToString([]byte("2" + tsKey(1) + ":a")),
		"no separator":   base64.RawURLEncoding.EncodeToString([]byte("1" + tsKey(1) + "-a")),
		"not digits":     base64.RawURLEncoding.EncodeToString([]byte("1" + strings.Repeat("x", 20) + ":a")),
		"too long":       base64.RawURLEncoding.EncodeToString([]byte("1" + tsKey(1) + ":" + strings.Repeat("a", violations.MaxIDBytes+1))),
		"embedded store": base64.RawURLEncoding.EncodeToString([]byte("\x01\x80\x00\x00\x00\x00\x00\x00\x01a")),
	} {
		_, err := s.QueryViolations(bg, violations.Query{Limit: 2, Cursor: c})
		if !errors.Is(err, store.ErrBadCursor) || !strings.HasPrefix(err.Error(), "redisstore: query violations: bad cursor: ") {
			t.Errorf("%s (%q): %v", name, c, err)
		}
	}
	// A cursor past everything is a valid, empty page.
	p, err = s.QueryViolations(bg, violations.Query{Limit: 2, Cursor: encodeCursor(violationKey(0, "a"))})
	if err != nil || len(p.Violations) != 0 || p.TotalCount != 5 || p.NextCursor != "" {
		t.Fatalf("cursor older than everything: %+v, %v", p, err)
	}
}

func TestBadViolations(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	now := time.Now()
	for name, v := range map[string]violations.Violation{
		"no id":        viol("", now, "r", traceA),
		"long id":      viol(strings.Repeat("x", violations.MaxIDBytes+1), now, "r", traceA),
		"no timestamp": viol("a", time.Time{}, "r", traceA),
		"far future":   viol("a", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), "r", traceA),
	} {
		err := s.AppendViolations(bg, []violations.Violation{viol("ok", now, "r", traceB), v})
		if err == nil || !strings.HasPrefix(err.Error(), "redisstore: append violations: violation 1 ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Nothing of a refused batch is stored.
	checkConsistent(t, srv, s, 0)
}

// TestCorruptValue: a value that is not what this store wrote is reported
// as corrupt, naming the violation.
func TestCorruptValue(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	v := viol("victim", time.Now(), "r", traceA)
	if err := s.AppendViolations(bg, []violations.Violation{v}); err != nil {
		t.Fatal(err)
	}
	key := violationKey(v.Timestamp.UnixNano(), v.ID)
	good, err := srv.Client().HGet(bg, s.k.data, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	json := good[strings.IndexByte(good, '{'):]
	header := good[:len(good)-len(json)]
	for _, bad := range []string{"garbage", header[:len(header)-3], header + "{not json"} {
		if err := srv.Client().HSet(bg, s.k.data, key, bad).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := s.QueryViolations(bg, violations.Query{})
		if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `violation "victim"`) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := srv.Client().HDel(bg, s.k.data, key).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.QueryViolations(bg, violations.Query{}); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "indexed but not stored") {
		t.Errorf("missing value: %v", err)
	}
}

func TestValueCodec(t *testing.T) {
	for _, f := range [][2]string{{"HIGH", "rule-a"}, {"", ""}, {"a:b", "1:"}, {"::", "9:"}} {
		v := viol("x", time.Now(), f[1], f[0]+f[1])
		v.Severity = f[0]
		p, err := encodeViolation(&v)
		if err != nil {
			t.Fatal(err)
		}
		body, err := valueJSON(p.val)
		if err != nil || !strings.HasPrefix(body, `{"id":"x",`) {
			t.Errorf("%q: %q, %v", f, body, err)
		}
	}
	if p := indexPrefix(tagRuleSeverity, "rule:1", "HIGH"); p != "rs:6:rule:1:4:HIGH:" {
		t.Errorf("prefix %q", p)
	}
	for _, bad := range []string{"", "2", "1", "1x:", "13:s:", "13:s:1:a:", "1-1:a", "19:s:1:a:"} {
		if _, err := valueJSON(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	// Keys sort as time, then ID.
	ts := []int64{math.MinInt64, -1, 0, 1, 1_700_000_000_000_000_000, math.MaxInt64}
	for i := 1; i < len(ts); i++ {
		if a, b := violationKey(ts[i-1], "z"), violationKey(ts[i], "a"); a >= b || len(tsKey(ts[i])) != tsDigits {
			t.Errorf("%d, %d: %q >= %q", ts[i-1], ts[i], a, b)
		}
	}
}

// TestAgeTrimWithoutAppends: violations past MaxViolationAge leave Redis on
// the store's own timer, with nothing appended after them.
func TestAgeTrimWithoutAppends(t *testing.T) {
	srv := redistest.Start(t)
	var clock atomic.Int64
	start := time.Now()
	clock.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	s := openT(t, srv, Config{MaxViolationAge: time.Hour, TrimInterval: 20 * time.Millisecond}, now)
	if err := s.AppendViolations(bg, []violations.Violation{viol("a", start, "x", traceA), viol("b", start, "y", traceA)}); err != nil {
		t.Fatal(err)
	}
	stored := func() int64 { return srv.Client().ZCard(bg, s.k.violations).Val() }
	time.Sleep(100 * time.Millisecond) // several ticks: nothing is due yet
	if n := stored(); n != 2 {
		t.Fatalf("%d violations stored before they are due, want 2", n)
	}
	clock.Store(start.Add(2 * time.Hour).UnixNano())
	for deadline := time.Now().Add(10 * time.Second); stored() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d violations past MaxViolationAge still in Redis with no append since", stored())
		}
	}
	if s.Trimmed() != 2 {
		t.Errorf("Trimmed %d, want 2", s.Trimmed())
	}
}
