package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

// TestUpdateRuleRace: two stores (two clients, as two instances would be)
// update the same rule from the same revision; exactly one wins each
// round and the other gets ErrConflict.
func TestUpdateRuleRace(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix}, nil)
	b := openT(t, srv, Config{Prefix: prefix}, nil)
	if err := a.CreateRule(bg, storetest.Rule("r", 1)); err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	for rev := int64(2); rev < 2+rounds; rev++ {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := storetest.Rule("r", rev)
				r.Name = fmt.Sprintf("by %d at %d", i, rev)
				errs[i] = s.UpdateRule(bg, r)
			}()
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("revision %d: both updates succeeded", rev)
				}
				won = i
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("revision %d: %v, want ErrConflict", rev, err)
			}
		}
		if won < 0 {
			t.Fatalf("revision %d: no update succeeded: %v", rev, errs)
		}
		got, err := b.Rule(bg, "r")
		if err != nil || got.Revision != rev || got.Name != fmt.Sprintf("by %d at %d", won, rev) {
			t.Fatalf("revision %d: stored %+v, %v", rev, got, err)
		}
	}
}

func TestRulesVersionAndHints(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix}, nil)
	b := openT(t, srv, Config{Prefix: prefix}, nil)
	version := func() int64 {
		t.Helper()
		v, err := b.RulesVersion(bg)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := version(); v != 0 {
		t.Fatalf("version of an empty prefix: %d", v)
	}
	hints, stop := b.Subscribe(bg)
	defer stop()
	// The first hint says the subscription is up, with the version then.
	if v := nextHint(t, hints); v != 0 {
		t.Fatalf("first hint %d, want 0", v)
	}

	// The first change starts the version at the time in milliseconds.
	before := time.Now().UnixMilli()
	if err := a.CreateRule(bg, storetest.Rule("r1", 1)); err != nil {
		t.Fatal(err)
	}
	want := version()
	if want <= before || want > time.Now().UnixMilli()+1 {
		t.Fatalf("first version %d, want the time in ms (%d) + 1", want, before)
	}
	if v := nextHint(t, hints); v != want {
		t.Fatalf("hint %d, want %d", v, want)
	}
	steps := []struct {
		name   string
		do     func() error
		bumped bool
	}{
		{"create again (identical: a retry)", func() error { return a.CreateRule(bg, storetest.Rule("r1", 1)) }, false},
		{"update", func() error { return a.UpdateRule(bg, storetest.Rule("r1", 2)) }, true},
		{"update again (identical: a retry)", func() error { return a.UpdateRule(bg, storetest.Rule("r1", 2)) }, false},
		{"create r2", func() error { return a.CreateRule(bg, storetest.Rule("r2", 1)) }, true},
		{"delete", func() error { return a.DeleteRule(bg, "r2") }, true},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.bumped {
			want++
			if v := nextHint(t, hints); v != want {
				t.Fatalf("%s: hint %d, want %d", st.name, v, want)
			}
		}
		if v := version(); v != want {
			t.Fatalf("%s: version %d, want %d", st.name, v, want)
		}
	}
	// Refused changes bump nothing.
	stale := storetest.Rule("r1", 2)
	stale.Name = "stale"
	for _, err := range []error{
		a.CreateRule(bg, stale),
		a.UpdateRule(bg, stale),
		a.UpdateRule(bg, storetest.Rule("ghost", 2)),
		a.DeleteRule(bg, "ghost"),
	} {
		if err == nil {
			t.Fatal("a refused change succeeded")
		}
	}
	if v := version(); v != want {
		t.Fatalf("refused changes moved the version to %d", v)
	}
	select {
	case v := <-hints:
		t.Fatalf("hint %d after refused changes", v)
	default:
	}

	// The snapshot agrees with the version.
	v, rs, err := b.RulesSnapshot(bg)
	if err != nil || v != want || len(rs) != 1 || rs[0].ID != "r1" || rs[0].Revision != 2 {
		t.Fatalf("snapshot: %d, %+v, %v", v, rs, err)
	}

	// Stopping closes the channel; stopping twice is fine.
	stop()
	stop()
	if _, ok := <-hints; ok {
		t.Fatal("hints still open after stop")
	}
}

// nextHint waits for a hint; pub/sub on loopback takes milliseconds, so 10
// seconds means it is lost.
func nextHint(t *testing.T, hints <-chan int64) int64 {
	t.Helper()
	select {
	case v, ok := <-hints:
		if !ok {
			t.Fatal("hints closed")
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no hint within 10s")
	}
	return 0
}

func TestSubscribeEnds(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	ctx, cancel := context.WithCancel(bg)
	byCtx, _ := s.Subscribe(ctx)
	byClose, stop := s.Subscribe(bg)
	defer stop()
	nextHint(t, byCtx)
	nextHint(t, byClose)
	cancel()
	for range byCtx {
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range byClose {
	}
	stop() // after Close
	if len(s.subs) != 0 {
		t.Fatalf("%d subscriptions left", len(s.subs))
	}
	// Subscribing to a closed store gives a closed channel.
	if _, ok := <-func() <-chan int64 { h, _ := s.Subscribe(bg); return h }(); ok {
		t.Fatal("subscription on a closed store")
	}
}

func TestCorruptModule(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	mod := []byte("\x00asm good module")
	sha := storetest.Digest(mod)
	if err := s.PutModule(bg, sha, mod); err != nil {
		t.Fatal(err)
	}
	key := s.cfg.Prefix + "module:" + sha
	if got, err := srv.Client().Get(bg, key).Result(); err != nil || got != string(mod) {
		t.Fatalf("module key %s: %q, %v", key, got, err)
	}
	if err := srv.Client().Set(bg, key, "\x00asm evil module", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Module(bg, sha)
	if !errors.Is(err, store.ErrCorrupt) || !strings.HasPrefix(err.Error(), "redisstore: get module "+sha+": ") {
		t.Fatalf("corrupt module: %v", err)
	}
	// Upper case finds the same module.
	if _, err := s.Module(bg, strings.ToUpper(sha)); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("upper-case digest: %v", err)
	}
	// Putting the right bytes again repairs it.
	if err := s.PutModule(bg, strings.ToUpper(sha), mod); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Module(bg, sha); err != nil || string(got) != string(mod) {
		t.Fatalf("after repair: %q, %v", got, err)
	}
}

func TestErrors(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	if err := s.CreateRule(bg, storetest.Rule("x", 1)); err != nil {
		t.Fatal(err)
	}
	stale := storetest.Rule("x", 1)
	stale.Name = "stale"
	err := s.UpdateRule(bg, stale)
	if !errors.Is(err, store.ErrConflict) || err.Error() != `redisstore: update rule "x": concurrent update: stored revision is 1, this update is revision 1` {
		t.Errorf("conflict: %v", err)
	}
	r := storetest.Rule("x", 1)
	r.Name = "other"
	err = s.CreateRule(bg, r)
	if !errors.Is(err, store.ErrExists) || err.Error() != `redisstore: create rule "x": already exists` {
		t.Errorf("exists: %v", err)
	}
	err = s.DeleteRule(bg, "y")
	if !errors.Is(err, store.ErrNotFound) || err.Error() != `redisstore: delete rule "y": not found` {
		t.Errorf("not found: %v", err)
	}
	if err := s.CreateRule(bg, storetest.Rule("bad id/", 1)); err == nil {
		t.Errorf("invalid rule id accepted")
	}
	mod := []byte("m")
	err = s.PutModule(bg, storetest.Digest([]byte("n")), mod)
	if err == nil || !strings.Contains(err.Error(), "digest mismatch: the bytes hash to "+storetest.Digest(mod)) {
		t.Errorf("mismatch: %v", err)
	}
	if _, err := s.Module(bg, "xyz"); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("malformed digest: %v", err)
	}
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	if err := s.CreateRule(cancelled, storetest.Rule("z", 1)); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("cancelled context: %v", err)
	}

	// Records that are not JSON.
	c := srv.Client()
	if err := c.HSet(bg, s.k.rules, "bad", "{").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rule(bg, "bad"); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("get corrupt rule: %v", err)
	}
	if _, err := s.ListRules(bg); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `rule "bad"`) {
		t.Errorf("list with a corrupt rule: %v", err)
	}
	if err := s.UpdateRule(bg, storetest.Rule("bad", 2)); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("update corrupt rule: %v", err)
	}

	// A key of the wrong type: another application under the prefix.
	if err := c.Set(bg, s.k.violations, "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = s.QueryViolations(bg, violationsQuery())
	if err == nil || errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGTYPE") || !strings.Contains(err.Error(), "BETRACE_REDIS_PREFIX") {
		t.Errorf("wrong type: %v", err)
	}
}

func TestClosed(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for _, c := range everyCall(s) {
		if !errors.Is(c.err, ErrClosed) || !errors.Is(c.err, store.ErrUnavailable) || !strings.HasPrefix(c.err.Error(), "redisstore: "+c.op) {
			t.Errorf("%s after close: %v", c.op, c.err)
		}
	}
}

// TestKeyLayout: everything lives under the prefix, with the documented
// names and types.
func TestKeyLayout(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{Prefix: "layout:"}, nil)
	for _, c := range everyCall(s) {
		if c.err != nil && !errors.Is(c.err, store.ErrNotFound) {
			t.Fatalf("%s: %v", c.op, c.err)
		}
	}
	mod := []byte("m")
	if err := s.PutModule(bg, storetest.Digest(mod), mod); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRule(bg, storetest.Rule("y", 1)); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	ks, err := c.Keys(bg, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ks)
	want := map[string]string{
		"{layout:violations}:dedup:x:" + traceA:  "string",
		"layout:module:" + storetest.Digest(mod): "string",
		"layout:module:" + storetest.Digest(nil): "string",
		"{layout:rules}":                         "hash",
		"{layout:rules}:version":                 "string",
		"{layout:rules}:generation":              "string",
		"{layout:rules}:deleted":                 "set",
		"{layout:violations}":                    "zset",
		"{layout:violations}:data":               "hash",
		"{layout:violations}:index":              "zset",
		"{layout:violations}:rules":              "zset",
		"{layout:violations}:minutes":            "zset",
		"{layout:violations}:tally:t1":           "string",
	}
	minute := time.Now().Truncate(time.Minute).Unix()
	for _, m := range []int64{minute - 60, minute} { // the call may straddle a minute
		want["{layout:violations}:counts:"+strconv.FormatInt(m, 10)] = "hash"
	}
	var got []string
	for _, k := range ks {
		typ, err := c.Type(bg, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k+" "+typ)
		if want[k] != typ {
			t.Errorf("key %s (%s) is not in the documented layout", k, typ)
		}
	}
	if len(got) != len(want) && len(got) != len(want)-1 {
		t.Errorf("keys %v, want %v", got, want)
	}
}

func violationsQuery() violations.Query { return violations.Query{Limit: 10} }

// call is the outcome of one call of everyCall.
type call struct {
	op   string // as its error messages start
	err  error
	took time.Duration
}

// everyCall calls every method of the store that talks to Redis once.
func everyCall(s *Store) []call {
	var out []call
	do := func(op string, f func() error) {
		began := time.Now()
		err := f()
		out = append(out, call{op, err, time.Since(began)})
	}
	do("ping", func() error { return s.Ping(bg) })
	do("list rules", func() error { _, err := s.ListRules(bg); return err })
	do("get rule", func() error { _, err := s.Rule(bg, "x"); return err })
	do("create rule", func() error { return s.CreateRule(bg, storetest.Rule("x", 1)) })
	do("update rule", func() error { return s.UpdateRule(bg, storetest.Rule("x", 2)) })
	do("delete rule", func() error { return s.DeleteRule(bg, "x") })
	do("put module", func() error { return s.PutModule(bg, storetest.Digest(nil), nil) })
	do("get module", func() error { _, err := s.Module(bg, storetest.Digest(nil)); return err })
	at := time.Now()
	do("append violations", func() error {
		return s.AppendViolations(bg, []violations.Violation{viol("a", at, "x", traceA)})
	})
	do("query violations", func() error {
		_, err := s.QueryViolations(bg, violations.Query{RuleID: "x", Severity: "HIGH"})
		return err
	})
	do("trim violations", func() error { return s.Trim(bg) })
	do("count violations", func() error {
		return s.CountViolations(bg, "t1", []violations.Tally{{RuleID: "x", Severity: "HIGH", Minute: at.Truncate(time.Minute), Count: 2}})
	})
	do("summarize violations", func() error {
		_, err := s.SummarizeViolations(bg, violations.SummaryQuery{Bucket: time.Hour})
		return err
	})
	do("get rules version", func() error { _, err := s.RulesVersion(bg); return err })
	do("snapshot rules", func() error { _, _, err := s.RulesSnapshot(bg); return err })
	return out
}
