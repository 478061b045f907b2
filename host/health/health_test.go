package health

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestReady(t *testing.T) {
	r := New(50 * time.Millisecond)
	if res := r.Ready(context.Background()); !res.Ready || len(res.Checks) != 0 {
		t.Fatalf("no checks: %+v", res)
	}
	r.Register("rules", func(context.Context) error { return nil })
	if res := r.Ready(context.Background()); !res.Ready || res.Checks["rules"] != "ok" {
		t.Fatalf("one good check: %+v", res)
	}
	r.Register("storage", func(context.Context) error { return errors.New("disk gone") })
	block := make(chan struct{})
	defer close(block)
	r.Register("redis", func(ctx context.Context) error { <-block; return nil }) // ignores its context
	res := r.Ready(context.Background())
	if res.Ready || res.Checks["storage"] != "disk gone" || res.Checks["redis"] != context.DeadlineExceeded.Error() || res.Checks["rules"] != "ok" {
		t.Fatalf("failing checks: %+v", res)
	}
}

func TestDegraded(t *testing.T) {
	r := New(50 * time.Millisecond)
	r.Register("rules", func(context.Context) error { return nil })
	r.RegisterDegraded("redis", func(context.Context) error { return errors.New("connection refused") })
	res := r.Ready(context.Background())
	if !res.Ready || !res.Degraded || res.Checks["redis"] != "connection refused" {
		t.Fatalf("degraded check: %+v", res)
	}
}
