package redisstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
)

const outageTimeout = 300 * time.Millisecond

// checkUnavailable calls everything and expects store.ErrUnavailable from
// each call, each returned well within a generous multiple of the timeout.
func checkUnavailable(t *testing.T, s *Store, what string) {
	t.Helper()
	var total time.Duration
	for _, c := range everyCall(s) {
		if !errors.Is(c.err, store.ErrUnavailable) || !strings.HasPrefix(c.err.Error(), "redisstore: "+c.op) {
			t.Errorf("%s: %s: %v, want ErrUnavailable", what, c.op, c.err)
		}
		if c.took > 5*outageTimeout {
			t.Errorf("%s: %s took %v", what, c.op, c.took)
		}
		if c.op == "append violations" {
			t.Logf("%s: %v", what, c.err)
		}
		total += c.took
	}
	t.Logf("%s: 13 calls failed in %v", what, total.Round(time.Millisecond))
}

// waitUp polls until the store answers again.
func waitUp(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.Ping(bg)
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("the store did not recover: %v", err)
		case <-tick.C:
		}
	}
}

func checkWorks(t *testing.T, s *Store, what string) {
	t.Helper()
	for _, c := range everyCall(s) {
		if c.err != nil && !errors.Is(c.err, store.ErrNotFound) {
			t.Errorf("%s: %s: %v", what, c.op, c.err)
		}
	}
}

// TestOutage: Redis killed, then started again on the same port (empty,
// as after a crash without persistence). Every call fails with
// ErrUnavailable, promptly, while it is down, and the same Store works
// again once it is back; so does a subscription.
func TestOutage(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{Timeout: outageTimeout}, nil)
	hints, stop := s.Subscribe(bg)
	defer stop()
	nextHint(t, hints)
	checkWorks(t, s, "before")
	v0, err := s.RulesVersion(bg)
	if err != nil || v0 == 0 {
		t.Fatalf("version before: %d, %v", v0, err)
	}

	srv.Stop()
	checkUnavailable(t, s, "down")
	// Twice: the second time go-redis's dial circuit breaker is open.
	checkUnavailable(t, s, "still down")

	srv.Start()
	waitUp(t, s)
	// Empty: the store knows, and writes nothing until told to go on.
	if err := s.CreateRule(bg, storetest.Rule("early", 1)); !errors.Is(err, store.ErrReset) {
		t.Fatalf("create rule after an empty restart: %v, want ErrReset", err)
	}
	if _, err := s.RepublishRules(bg, nil); err != nil {
		t.Fatal(err)
	}
	checkWorks(t, s, "after restart")
	// The subscription comes back by itself: the hint of a change made
	// now arrives, maybe after the re-subscription's hint.
	if err := s.CreateRule(bg, storetest.Rule("after", 1)); err != nil {
		t.Fatal(err)
	}
	// The restarted Redis lost everything, the version included; the
	// version still grew, so a cache holding v0 knows it is stale.
	want, err := s.RulesVersion(bg)
	if err != nil || want <= v0 {
		t.Fatalf("version after the restart: %d, %v; want above %d", want, err, v0)
	}
	for v := nextHint(t, hints); v != want; v = nextHint(t, hints) {
		if v > want {
			t.Fatalf("hint %d after the restart, want up to %d", v, want)
		}
	}
}

// TestHang: Redis stops answering without closing connections (a hung
// server or a partition). Calls time out with ErrUnavailable instead of
// hanging, and recover when it answers again.
func TestHang(t *testing.T) {
	srv := redistest.Start(t)
	s := openT(t, srv, Config{Timeout: outageTimeout}, nil)
	checkWorks(t, s, "before")
	srv.Pause()
	checkUnavailable(t, s, "hung")
	srv.Resume()
	waitUp(t, s)
	checkWorks(t, s, "after resume")
}
