package redistest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartStopStart(t *testing.T) {
	s := Start(t)
	if s.URL() != "redis://"+s.Addr()+"/0" {
		t.Fatalf("URL %q for %q", s.URL(), s.Addr())
	}
	opt, err := redis.ParseURL(s.URL())
	if err != nil || opt.Addr != s.Addr() || opt.DB != 0 {
		t.Fatalf("URL does not parse back: %+v, %v", opt, err)
	}
	ctx := context.Background()
	c := s.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Nothing is saved: the config says so.
	if got, err := c.ConfigGet(ctx, "save").Result(); err != nil || got["save"] != "" {
		t.Fatalf("save: %v, %v", got, err)
	}
	if got, err := c.ConfigGet(ctx, "appendonly").Result(); err != nil || got["appendonly"] != "no" {
		t.Fatalf("appendonly: %v, %v", got, err)
	}

	s.Stop()
	s.Stop() // idempotent
	if err := ping(s.Addr()); err == nil {
		t.Fatal("the server answers after Stop")
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Ping(short).Err(); err == nil {
		t.Fatal("the client reaches a stopped server")
	}

	s.Start()
	s.Start() // idempotent
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	// Same port, empty again, and the same client reconnects.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := c.Exists(ctx, "k").Result()
		if err == nil {
			if n != 0 {
				t.Fatal("a restarted server kept data")
			}
			break
		}
		select {
		case <-deadline.C:
			t.Fatalf("client did not reconnect: %v", err)
		case <-tick.C:
		}
	}
}

// TestNotInstalled runs Start in a child test process whose PATH has no
// redis-server: the child must fail, not skip, and say what to install.
func TestNotInstalled(t *testing.T) {
	if os.Getenv("REDISTEST_CHILD") == "1" {
		Start(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNotInstalled$", "-test.v")
	cmd.Env = append(os.Environ(), "REDISTEST_CHILD=1", "PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the child passed without redis-server:\n%s", out)
	}
	if !strings.Contains(string(out), NotInstalled) || !strings.Contains(string(out), "--- FAIL") || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("the child did not fail with the install hint:\n%s", out)
	}
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers on %s", a.Addr())
	}
	ctx := context.Background()
	if err := a.Client().Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client().Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("servers share data: %d, %v", n, err)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	s.Pause()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("a paused server answered")
	}
	s.Resume()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("after Resume: %v", err)
	}
	// Stop works on a paused server.
	s.Pause()
	s.Stop()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("the server answers after Stop")
	}
}

// TestAppendOnly: a server with an append-only file keeps every
// acknowledged write across a SIGKILL and a restart.
func TestAppendOnly(t *testing.T) {
	s := StartWith(t, Options{AppendOnly: true})
	ctx := context.Background()
	c := s.Client()
	if got, err := c.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != "always" {
		t.Fatalf("appendfsync: %v, %v", got, err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(ctx, "k").Result()
		if err == nil {
			if v != "v" {
				t.Fatalf("after restart k = %q, want v", v)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("k after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
