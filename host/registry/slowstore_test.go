package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/redisstore"
)

// onRedis is a registry on a real redis-server that the test can stall
// with DEBUG SLEEP.
type onRedis struct {
	reg   *Registry
	store *redisstore.Store
	srv   *redistest.Server
}

func openOnRedis(t *testing.T, srv *redistest.Server, timeout time.Duration) *onRedis {
	t.Helper()
	ctx := context.Background()
	st, err := redisstore.Open(ctx, redisstore.Config{URL: srv.URL(), Timeout: timeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := sandbox.NewHost(sandbox.HostConfig{CacheDir: testrules.CacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{Quarantine: rules.DefaultQuarantinePolicy()}, st, h, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), time.Now)
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close(ctx)
		h.Close(ctx)
		st.Close()
	})
	return &onRedis{reg: r, store: st, srv: srv}
}

// stall makes Redis sleep for d, like a server stuck on a slow disk or a
// long command: connections stay open and nothing answers. It returns once
// the sleep has begun; the channel is closed when it ends.
func stall(t *testing.T, srv *redistest.Server, d time.Duration) <-chan struct{} {
	t.Helper()
	sleeper := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: d + 10*time.Second})
	done := make(chan struct{})
	t.Cleanup(func() { <-done; sleeper.Close() })
	if err := sleeper.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		if err := sleeper.Do(context.Background(), "DEBUG", "SLEEP", d.Seconds()).Err(); err != nil {
			t.Errorf("DEBUG SLEEP: %v", err)
		}
	}()
	// The sleep has begun once a PING on another connection goes unanswered.
	probe := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	defer probe.Close()
	for deadline := time.Now().Add(2 * time.Second); probe.Ping(context.Background()).Err() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("Redis still answers PING after DEBUG SLEEP was sent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return done
}

// Reads are served from memory: writers stuck on a stalled Redis must not
// hold them up.
func TestCachedReadsDoNotWaitForAStalledStore(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartWith(t, redistest.Options{DebugCommand: true})
	f := openOnRedis(t, srv, time.Second)
	pay := testrules.Module(t, "payment-fraud-check")
	for _, id := range []string{"a", "b"} {
		if _, err := f.reg.Create(ctx, Spec{ID: id, Module: pay}); err != nil {
			t.Fatal(err)
		}
	}

	const sleep = 3 * time.Second
	awake := stall(t, srv, sleep)
	stalled := time.Now()

	// Four changes queue behind the stalled store.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	writes := []func() error{
		func() error { _, err := f.reg.Update(ctx, Spec{ID: "a", Name: ptr("renamed")}); return err },
		func() error { _, err := f.reg.SetEnabled(ctx, "b", false); return err },
		func() error { _, err := f.reg.Create(ctx, Spec{ID: "c", Module: pay}); return err },
		func() error { _, err := f.reg.Update(ctx, Spec{ID: "b", Description: ptr("changed")}); return err },
	}
	for i, w := range writes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = w() }()
	}
	time.Sleep(200 * time.Millisecond) // let the first change reach the store

	read := make(chan time.Duration)
	go func() {
		start := time.Now()
		for i := 0; i < 10; i++ {
			if n := len(f.reg.List()); n < 2 {
				t.Errorf("List: %d rules, want at least 2", n)
			}
			if _, err := f.reg.Get("a"); err != nil {
				t.Errorf("Get: %v", err)
			}
			f.reg.Active()
		}
		read <- time.Since(start)
	}()
	select {
	case d := <-read:
		t.Logf("10 × List+Get+Active while Redis slept: %v", d)
	case <-time.After(time.Second):
		t.Errorf("List/Get still waiting %v into a %v Redis stall: cached reads wait on store writes", time.Since(stalled).Round(time.Millisecond), sleep)
		t.Fatalf("10 × List+Get+Active took %v", (<-read).Round(time.Millisecond))
	}
	select {
	case <-awake:
		t.Fatal("Redis woke before the reads were checked; the check proves nothing")
	default:
	}

	wg.Wait()
	<-awake
	// Every failure during the stall either says the change may have been
	// applied, or it was not applied; none is a plain failure that landed.
	for i, err := range errs {
		if err != nil && !errors.Is(err, store.ErrMaybeApplied) && !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	// Once Redis answers, a sync brings the cache to what was stored.
	if err := f.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	stored, err := f.store.ListRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := f.reg.List()
	if len(got) != len(stored) {
		t.Fatalf("cache has %d rules, store %d", len(got), len(stored))
	}
	for i, rec := range stored {
		if got[i].Record.ID != rec.ID || got[i].Record.Revision != rec.Revision {
			t.Errorf("cache %s@%d, store %s@%d", got[i].Record.ID, got[i].Record.Revision, rec.ID, rec.Revision)
		}
	}
}

// A write that times out once sent is not reported as plainly refused: its
// error says it may have been applied, and here it was. A write that never
// reached Redis is refused and was not applied.
func TestWriteOutcomeOnAStalledOrDownStore(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartWith(t, redistest.Options{DebugCommand: true, AppendOnly: true})
	f := openOnRedis(t, srv, 500*time.Millisecond)
	if _, err := f.reg.Create(ctx, Spec{ID: "a", Module: testrules.Module(t, "payment-fraud-check")}); err != nil {
		t.Fatal(err)
	}
	// A first update loads the update script into Redis, as a running
	// service has: otherwise the stalled call would meet NOSCRIPT on waking.
	if _, err := f.reg.SetEnabled(ctx, "a", true); err != nil {
		t.Fatal(err)
	}

	awake := stall(t, srv, 2*time.Second)
	_, err := f.reg.SetEnabled(ctx, "a", false)
	if !errors.Is(err, store.ErrMaybeApplied) || !errors.Is(err, store.ErrUnavailable) ||
		!strings.Contains(err.Error(), "may have been applied") || !strings.Contains(err.Error(), "GET the rule") {
		t.Fatalf("disable during a stall: %v, want an error saying the change may have been applied", err)
	}
	<-awake
	if err := f.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.reg.Get("a"); v.State != rules.StateDisabled {
		t.Fatalf("after the stall the rule is %s: the disable did land, as the error warned", v.State)
	}
	// Repeating the change is safe: it applies to the stored revision.
	if v, err := f.reg.SetEnabled(ctx, "a", false); err != nil || v.State != rules.StateDisabled {
		t.Fatalf("repeat: %v %v", v.State, err)
	}

	srv.Stop()
	_, err = f.reg.SetEnabled(ctx, "a", true)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrMaybeApplied) {
		t.Fatalf("enable while Redis is down: %v, want unavailable and not applied", err)
	}
	srv.Start()
	rec, err := f.store.Rule(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Enabled {
		t.Fatal("a change refused as unavailable was applied")
	}
}
