package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/violations"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func members(ids ...string) []Member {
	out := make([]Member, len(ids))
	for i, id := range ids {
		out[i] = Member{ID: id, Addr: id + ":12011"}
	}
	return out
}

func owners(v *View) map[int]string {
	out := map[int]string{}
	for p := range Partitions {
		out[p] = v.Members[v.owners[p]].ID
	}
	return out
}

func TestRendezvous(t *testing.T) {
	three := NewView(members("a", "b", "c"), "a")
	// Every member owns a fair share.
	share := map[string]int{}
	for _, id := range owners(three) {
		share[id]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if share[id] < Partitions/6 {
			t.Fatalf("member %s owns %d of %d partitions: %v", id, share[id], Partitions, share)
		}
	}
	// Views agree whichever member computes them.
	if fmt.Sprint(owners(three)) != fmt.Sprint(owners(NewView(members("a", "b", "c"), "c"))) {
		t.Fatal("two members disagree on ownership")
	}
	// When c leaves, only c's partitions move.
	two := NewView(members("a", "b"), "a")
	before, after := owners(three), owners(two)
	for p := range Partitions {
		if before[p] != "c" && before[p] != after[p] {
			t.Fatalf("partition %d moved from %s to %s although its owner stayed", p, before[p], after[p])
		}
	}
}

func TestMembership(t *testing.T) {
	srv := redistest.Start(t)
	clock := time.Now
	join := func(id string) *Membership {
		cfg := DefaultConfig()
		cfg.InstanceID, cfg.AdvertiseAddr, cfg.Prefix = id, id+":1", "t:"
		m, err := NewMembership(cfg, srv.Client(), quiet, prometheus.NewRegistry(), clock)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Leave(context.Background()) })
		return m
	}
	a := join("a")
	b := join("b")
	if err := a.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.View().Members); n != 2 || len(b.View().Members) != 2 {
		t.Fatalf("a sees %d members, b sees %d", n, len(b.View().Members))
	}
	var tid [16]byte
	rand.Read(tid[:])
	ownerA, selfA := a.View().Owner(tid)
	ownerB, selfB := b.View().Owner(tid)
	if ownerA != ownerB || selfA == selfB {
		t.Fatalf("a says %v (self %v), b says %v (self %v)", ownerA, selfA, ownerB, selfB)
	}
	// Leaving takes effect at once, not after the TTL.
	if err := b.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(a.View().Members); n != 1 {
		t.Fatalf("a still sees %d members after b left", n)
	}
	// Ownership of some partitions changed just now: traces open across
	// that moment are fragments; traces long finished are not.
	now := time.Now()
	moved := 0
	for p := range Partitions {
		var id [16]byte
		id[15] = byte(p)
		if a.Fragment(id, now.Add(-time.Minute), now.Add(time.Second)) {
			moved++
		}
		if a.Fragment(id, now.Add(-2*time.Hour), now.Add(-time.Hour)) {
			t.Fatal("a trace completed before the change is marked a fragment")
		}
	}
	if moved == 0 {
		t.Fatal("no partition is marked as having changed owner")
	}
	// Redis down: the last view is kept and readiness reports it.
	srv.Stop()
	if err := a.beat(context.Background()); err == nil {
		t.Fatal("heartbeat succeeded with Redis stopped")
	}
	if a.RedisUp(context.Background()) == nil || len(a.View().Members) != 1 {
		t.Fatal("Redis outage not reported, or the view was dropped")
	}
}

func TestSharedStrikes(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rules.Config{Strikes: 3, Window: time.Minute}
	a := NewStrikes(srv.Client(), "t:", "rule", cfg, time.Second, time.Now)
	b := NewStrikes(srv.Client(), "t:", "rule", cfg, time.Second, time.Now)
	if _, tripped := a.Record(rules.Strike{Reason: "fuel"}); tripped {
		t.Fatal("tripped on the first strike")
	}
	if _, tripped := b.Record(rules.Strike{Reason: "fuel"}); tripped {
		t.Fatal("tripped on the second strike")
	}
	q, tripped := a.Record(rules.Strike{Reason: "fuel", TraceID: "abc"})
	if !tripped || q.TraceID != "abc" || q.Strikes != 3 {
		t.Fatalf("third strike across two instances: tripped %v, %+v", tripped, q)
	}
	a.Clear()
	if _, q := a.Quarantined(); q {
		t.Fatal("Clear kept the quarantine")
	}
	// Without Redis, strikes count locally so a bad rule is still stopped.
	srv.Stop()
	c := NewStrikes(srv.Client(), "t:", "other", cfg, 100*time.Millisecond, time.Now)
	tripped = false
	for range 3 {
		_, tripped = c.Record(rules.Strike{Reason: "trap"})
	}
	if !tripped {
		t.Fatal("local fallback did not quarantine after 3 strikes")
	}
}

// Faults on a small share of a rule's evaluations never quarantine it,
// however many instances add theirs; the same faults on most of them do.
func TestSharedStrikesFaultRate(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rules.Config{Strikes: 3, FaultRate: 0.5, Window: time.Minute}
	a := NewStrikes(srv.Client(), "t:", "healthy", cfg, time.Second, time.Now)
	b := NewStrikes(srv.Client(), "t:", "healthy", cfg, time.Second, time.Now)
	for i := range 100 {
		for _, s := range []*Strikes{a, b} {
			if i%10 == 0 {
				if _, tripped := s.Record(rules.Strike{Reason: "fuel"}); tripped {
					t.Fatalf("quarantined at evaluation %d with faults on 10%% of evaluations", i)
				}
			} else {
				s.Evaluated(time.Now())
			}
		}
	}
	broken := NewStrikes(srv.Client(), "t:", "broken", cfg, time.Second, time.Now)
	broken.Evaluated(time.Now())
	var q rules.Quarantine
	tripped := false
	for n := 1; !tripped; n++ {
		if n > 3 {
			t.Fatal("a rule faulting on 3 of 4 evaluations was not quarantined at its third fault")
		}
		q, tripped = broken.Record(rules.Strike{Reason: "trap"})
	}
	if q.Strikes != 3 || q.Evaluations != 4 {
		t.Fatalf("quarantine record %+v, want 3 strikes among 4 evaluations", q)
	}
}

func TestSpool(t *testing.T) {
	var mu sync.Mutex
	down := true
	var stored []violations.Violation
	write := func(_ context.Context, vs []violations.Violation) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return fmt.Errorf("redis gone: %w", store.ErrUnavailable)
		}
		stored = append(stored, vs...)
		return nil
	}
	s := NewSpool(write, 5, quiet, prometheus.NewRegistry())
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := s.Record(context.Background(), []violations.Violation{{ID: fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n != 5 {
		t.Fatalf("spool holds %d, want its limit 5", n)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for s.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The newest 5 arrive in order. The oldest batch may arrive too: a
	// replay can have been writing it when the limit dropped it.
	var ids []string
	for _, v := range stored {
		ids = append(ids, v.ID)
	}
	got := strings.Join(ids, ",")
	if got != "2,3,4,5,6" && got != "0,2,3,4,5,6" {
		t.Fatalf("stored %s, want the newest 5 in order", got)
	}
	// Other errors are returned, not spooled.
	bad := NewSpool(func(context.Context, []violations.Violation) error { return errors.New("invalid") }, 5, quiet, prometheus.NewRegistry())
	if err := bad.Record(context.Background(), []violations.Violation{{ID: "x"}}); err == nil || bad.Len() != 0 {
		t.Fatal("a permanent error was spooled")
	}
}

func TestRouterSingleMember(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InstanceID, cfg.AdvertiseAddr = "solo", "solo:1"
	m, err := NewMembership(cfg, nil, quiet, prometheus.NewRegistry(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var got int
	r := NewRouter(ForwardConfig{}, m, func(_ context.Context, spans []traces.Span) error { got += len(spans); return nil }, quiet, prometheus.NewRegistry())
	if err := r.Route(context.Background(), make([]traces.Span, 7)); err != nil || got != 7 {
		t.Fatalf("route: %v, %d spans delivered locally", err, got)
	}
}
