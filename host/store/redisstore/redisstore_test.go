package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

var bg = context.Background()

// prefixes makes every store of a test binary use its own keys, so tests
// can share a server.
var prefixes atomic.Int64

func newPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// openT opens a store on srv under a fresh prefix unless cfg sets one.
func openT(t testing.TB, srv *redistest.Server, cfg Config, now func() time.Time) *Store {
	t.Helper()
	cfg.URL = srv.URL()
	if cfg.Prefix == "" {
		cfg.Prefix = newPrefix()
	}
	s, err := Open(bg, cfg, now)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the shared suite with de-duplication off: the suite
// stores several batches with the same (rule, trace) pair and expects to
// find them all, which is what de-duplication exists to prevent.
// TestDedup covers it.
func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(bg, Config{URL: srv.URL(), Prefix: newPrefix(), DedupTTL: -1}, nil)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

func TestRetentionConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.RunRetention(t, func(t *testing.T, c storetest.Caps) store.Store {
		s, err := Open(bg, Config{URL: srv.URL(), Prefix: newPrefix(), DedupTTL: -1,
			MaxViolations: c.MaxViolations, MaxViolationsPerRule: c.MaxViolationsPerRule}, nil)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

func viol(id string, at time.Time, rule, trace string) violations.Violation {
	return storetest.Violation(id, at, rule, "HIGH", trace)
}

// allIDs follows the cursor to the end and returns the IDs, newest first.
func allIDs(t testing.TB, s *Store, q violations.Query) []string {
	t.Helper()
	q.Limit = MaxLimit
	var out []string
	for {
		p, err := s.QueryViolations(bg, q)
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		for _, v := range p.Violations {
			out = append(out, v.ID)
		}
		if p.NextCursor == "" {
			return out
		}
		q.Cursor = p.NextCursor
	}
}

// counts returns the sizes of the violations set, the data hash and the
// index, which must stay n, n and indexesPer×n.
func counts(t testing.TB, srv *redistest.Server, s *Store) (int64, int64, int64) {
	t.Helper()
	c := srv.Client()
	a, err1 := c.ZCard(bg, s.k.violations).Result()
	b, err2 := c.HLen(bg, s.k.data).Result()
	x, err3 := c.ZCard(bg, s.k.index).Result()
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	return a, b, x
}

func checkConsistent(t testing.TB, srv *redistest.Server, s *Store, want int64) {
	t.Helper()
	a, b, x := counts(t, srv, s)
	if a != want || b != want || x != indexesPer*want {
		t.Fatalf("stored: %d keys, %d values, %d index members; want %d, %d, %d", a, b, x, want, want, indexesPer*want)
	}
}

func TestConfig(t *testing.T) {
	d := DefaultConfig()
	if d.Prefix != "betrace:" || d.MaxViolations != 250_000 || d.MaxViolationAge != 7*24*time.Hour ||
		d.Timeout != 2*time.Second || d.DedupTTL != time.Hour {
		t.Fatalf("defaults %+v", d)
	}
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "BETRACE_REDIS_URL") {
		t.Errorf("a config without URL: %v", err)
	}
	for _, c := range []Config{
		{URL: "redis://localhost:6379/0?bogus=1"},
		{URL: "http://localhost:6379"},
		{URL: "redis://x", MaxViolations: -1},
		{URL: "redis://x", MaxViolationAge: -time.Second},
		{URL: "redis://x", Timeout: -time.Second},
		{URL: "redis://x", DedupTTL: time.Microsecond},
	} {
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "redisstore: config: ") {
			t.Errorf("%+v: %v", c, err)
		}
	}
	// Every problem at once.
	err := Config{URL: "redis://x", MaxViolations: -1, Timeout: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "MaxViolations") || !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("joined errors: %v", err)
	}
	if err := (Config{URL: "redis://x", DedupTTL: -1}).Validate(); err != nil {
		t.Errorf("DedupTTL -1: %v", err)
	}
	if _, err := Open(bg, Config{URL: "redis://x/0?nope=1"}, nil); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("open with an unknown parameter: %v", err)
	}

	srv := redistest.Start(t)
	s := openT(t, srv, Config{}, nil)
	if s.cfg.MaxViolations != DefaultMaxViolations || s.cfg.Timeout != DefaultTimeout || !s.cfg.dedup() {
		t.Errorf("zero values did not take the defaults: %+v", s.cfg)
	}
	s2, err := Open(bg, Config{URL: srv.URL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.k.rules != "{betrace:rules}" {
		t.Errorf("default prefix: %q", s2.k.rules)
	}
}

func TestOpenUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	srv.Stop()
	began := time.Now()
	s, err := Open(bg, Config{URL: "redis://" + addr + "/0", Timeout: 300 * time.Millisecond}, nil)
	if err == nil {
		s.Close()
		t.Fatal("open succeeded without a server")
	}
	if !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "redisstore: open: cannot reach Redis at "+addr) ||
		!strings.Contains(err.Error(), "BETRACE_REDIS_URL") {
		t.Fatalf("open: %v", err)
	}
	if d := time.Since(began); d > 5*300*time.Millisecond {
		t.Fatalf("open took %v to fail", d)
	}
	// TLS asked of a Redis without it says so, rather than only timing out.
	plain := redistest.Start(t)
	_, err = Open(bg, Config{URL: "rediss://" + plain.Addr() + "/0", Timeout: 300 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "answers without TLS") || !strings.Contains(err.Error(), "redis://") {
		t.Fatalf("rediss:// to a plain Redis: %v, want an error saying it has no TLS", err)
	}
	// The URL's password never appears in an error.
	_, err = Open(bg, Config{URL: "redis://:s3cret@" + addr + "/0", Timeout: 300 * time.Millisecond}, nil)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("open with a password: %v", err)
	}
}
