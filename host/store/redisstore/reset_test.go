package redisstore

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
)

func held(rs ...rules.Record) []store.HeldRule {
	out := make([]store.HeldRule, len(rs))
	for i, r := range rs {
		out[i] = store.HeldRule{Record: r, Module: []byte(r.ID)} // storetest.Rule names the digest of its ID
	}
	return out
}

func ids(t *testing.T, s *Store) []string {
	t.Helper()
	rs, err := s.ListRules(bg)
	if err != nil {
		t.Fatalf("list rules: %v", err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// TestWriteAfterFlushIsRefused: Redis emptied, then a rule created at once,
// before anyone polled. The create is refused with ErrReset and writes
// nothing, so the emptied Redis never holds a set that a peer would take
// for the whole; every read of a store that saw the old generation reports
// the loss too, until that store republishes what it holds.
func TestWriteAfterFlushIsRefused(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix}, nil)
	b := openT(t, srv, Config{Prefix: prefix}, nil)
	r1, r2, r3 := storetest.Rule("r1", 1), storetest.Rule("r2", 1), storetest.Rule("r3", 1)
	for _, r := range []rules.Record{r1, r2} {
		if err := a.CreateRule(bg, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(t, b); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Fatalf("b lists %v", got)
	}
	if err := srv.Client().FlushAll(bg).Err(); err != nil {
		t.Fatal(err)
	}

	err := a.CreateRule(bg, r3)
	if !errors.Is(err, store.ErrReset) {
		t.Fatalf("create after FLUSHALL: %v, want ErrReset", err)
	}
	if n := srv.Client().HLen(bg, "{"+prefix+"rules}").Val(); n != 0 {
		t.Fatalf("a refused create left %d rules in Redis", n)
	}
	for _, w := range []func() error{
		func() error { return a.UpdateRule(bg, storetest.Rule("r1", 2)) },
		func() error { return a.DeleteRule(bg, "r1") },
		func() error { _, err := b.RulesVersion(bg); return err },
		func() error { _, _, err := b.RulesSnapshot(bg); return err },
		func() error { _, err := b.ListRules(bg); return err },
	} {
		if err := w(); !errors.Is(err, store.ErrReset) {
			t.Fatalf("after FLUSHALL: %v, want ErrReset", err)
		}
	}

	if n, err := a.RepublishRules(bg, held(r1, r2)); err != nil || n != 2 {
		t.Fatalf("a republishes: %d, %v; want 2", n, err)
	}
	if err := a.CreateRule(bg, r3); err != nil {
		t.Fatalf("create after republishing: %v", err)
	}
	// b still reads the loss: it has not put back what it holds.
	if _, err := b.ListRules(bg); !errors.Is(err, store.ErrReset) {
		t.Fatalf("b after a republished: %v, want ErrReset", err)
	}
	if n, err := b.RepublishRules(bg, held(r1, r2)); err != nil || n != 0 {
		t.Fatalf("b republishes what a already put back: %d, %v; want 0", n, err)
	}
	if got := ids(t, b); !slices.Equal(got, []string{"r1", "r2", "r3"}) {
		t.Fatalf("b lists %v after republishing", got)
	}
	for _, m := range []string{"r1", "r2"} {
		if got, err := b.Module(bg, storetest.Digest([]byte(m))); err != nil || string(got) != m {
			t.Fatalf("module of %s: %q, %v", m, got, err)
		}
	}
}

// TestEmptyRestartIsRefused: the same, through a redis-server restarted
// without persistence rather than FLUSHALL.
func TestEmptyRestartIsRefused(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	if err := s.CreateRule(bg, storetest.Rule("r1", 1)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Start()
	waitUp(t, s)
	if err := s.CreateRule(bg, storetest.Rule("r2", 1)); !errors.Is(err, store.ErrReset) {
		t.Fatalf("create after an empty restart: %v, want ErrReset", err)
	}
	if _, err := s.RepublishRules(bg, held(storetest.Rule("r1", 1))); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRule(bg, storetest.Rule("r2", 1)); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, s); !slices.Equal(got, []string{"r1", "r2"}) {
		t.Fatalf("lists %v", got)
	}
}

// TestRepublishMerges: a republish writes what is missing or older, never
// a rule deleted since the loss, and bumps the version once or not at all.
func TestRepublishMerges(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix}, nil)
	b := openT(t, srv, Config{Prefix: prefix}, nil)
	for _, id := range []string{"r1", "r2", "r3"} {
		if err := a.CreateRule(bg, storetest.Rule(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	ids(t, b)
	srv.Client().FlushAll(bg)
	if _, err := a.RepublishRules(bg, held(storetest.Rule("r1", 1), storetest.Rule("r2", 1))); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteRule(bg, "r1"); err != nil {
		t.Fatal(err)
	}
	v0, err := a.RulesVersion(bg)
	if err != nil {
		t.Fatal(err)
	}
	// b held r1 (deleted since), r2 at a later revision, r3 (a missed it).
	newer := storetest.Rule("r2", 4)
	newer.Name = "renamed on b"
	n, err := b.RepublishRules(bg, held(storetest.Rule("r1", 1), newer, storetest.Rule("r3", 1)))
	if err != nil || n != 2 {
		t.Fatalf("b republishes: %d, %v; want 2 (r2, r3)", n, err)
	}
	if got := ids(t, b); !slices.Equal(got, []string{"r2", "r3"}) {
		t.Fatalf("lists %v, want r2 r3 (r1 was deleted after the loss)", got)
	}
	if r, _ := b.Rule(bg, "r2"); r.Revision != 4 || r.Name != "renamed on b" {
		t.Fatalf("r2 is revision %d %q, want the later revision 4", r.Revision, r.Name)
	}
	if v, _ := b.RulesVersion(bg); v != v0+1 {
		t.Fatalf("version %d after a republish of 2 rules from %d, want one bump", v, v0)
	}
	if n, err := b.RepublishRules(bg, held(storetest.Rule("r2", 2))); err != nil || n != 0 {
		t.Fatalf("republishing an older revision: %d, %v; want 0", n, err)
	}
	if v, _ := b.RulesVersion(bg); v != v0+1 {
		t.Fatalf("version %d after a republish that wrote nothing, want %d", v, v0+1)
	}
}

// TestRepublishIsAtomic: a reader polling while 300 rules are put back
// sees none or all of them, never part.
func TestRepublishIsAtomic(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix}, nil)
	var all []rules.Record
	for i := range 300 {
		all = append(all, storetest.Rule(fmt.Sprintf("r%03d", i), 1))
	}
	if _, err := a.RulesVersion(bg); err != nil {
		t.Fatal(err)
	}
	srv.Client().FlushAll(bg)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := openT(t, srv, Config{Prefix: prefix}, nil)
		for !stop.Load() {
			rs, err := r.ListRules(bg)
			if err != nil {
				t.Errorf("reader: %v", err)
				return
			}
			mu.Lock()
			seen[len(rs)]++
			mu.Unlock()
		}
	}()
	if _, err := a.RepublishRules(bg, held(all...)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		mu.Lock()
		done := seen[300] > 0
		mu.Unlock()
		if done {
			break
		}
		ids(t, a) // let the reader catch up with a few round trips of ours
	}
	stop.Store(true)
	wg.Wait()
	for n, c := range seen {
		if n != 0 && n != 300 {
			t.Errorf("a reader saw %d of 300 rules (%d times): the republish was not atomic", n, c)
		}
	}
	t.Logf("reads: %v", seen)
}
