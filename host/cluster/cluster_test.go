package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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

// fakeClock is a clock the test moves; views are stamped with it, so a view
// takes effect exactly when the test says.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// changes records the views a member adopted, as the change callback sees them.
type changes struct {
	mu   sync.Mutex
	seen [][2]*View
}

func (c *changes) record(old, next *View) {
	c.mu.Lock()
	c.seen = append(c.seen, [2]*View{old, next})
	c.mu.Unlock()
}

func (c *changes) last() (int, *View, *View) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		return 0, nil, nil
	}
	l := c.seen[len(c.seen)-1]
	return len(c.seen), l[0], l[1]
}

// idInPartition returns a trace ID of partition p.
func idInPartition(p int) [16]byte {
	var id [16]byte
	id[15] = byte(p)
	return id
}

func TestMembership(t *testing.T) {
	srv := redistest.Start(t)
	clock := &fakeClock{t: time.Now()}
	cfg := DefaultConfig()
	// The heartbeat loop never fires on its own here: the test beats and
	// moves the clock, so every step is exact.
	cfg.Heartbeat, cfg.MemberTTL, cfg.Timeout, cfg.Prefix = time.Hour, 3*time.Hour, time.Second, "t:"
	delay := cfg.SwitchDelay()
	ctx := context.Background()
	join := func(id string) (*Membership, *changes) {
		c := cfg
		c.InstanceID, c.AdvertiseAddr = id, id+":1"
		m, err := NewMembership(c, srv.Client(), quiet, prometheus.NewRegistry(), clock.now)
		if err != nil {
			t.Fatal(err)
		}
		seen := &changes{}
		m.OnChange(seen.record)
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			m.Leave(ctx)
		})
		return m, seen
	}
	beat := func(ms ...*Membership) {
		t.Helper()
		for _, m := range ms {
			if err := m.beat(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// switchOver moves the clock to the latest view's start and has every
	// member adopt it, as their timers would.
	switchOver := func(ms ...*Membership) {
		views := *ms[0].views.Load()
		clock.mu.Lock()
		clock.t = views[len(views)-1].Start
		clock.mu.Unlock()
		for _, m := range ms {
			m.adopt()
		}
	}
	sameOwners := func(ms ...*Membership) {
		t.Helper()
		for _, m := range ms[1:] {
			if fmt.Sprint(owners(m.View())) != fmt.Sprint(owners(ms[0].View())) || m.View().Epoch != ms[0].View().Epoch {
				t.Fatalf("%s (epoch %d) and %s (epoch %d) disagree on ownership", m.cfg.InstanceID, m.View().Epoch, ms[0].cfg.InstanceID, ms[0].View().Epoch)
			}
		}
	}

	// The first member of a fresh cluster owns everything at once.
	a, seenA := join("a")
	if v := a.View(); len(v.Members) != 1 || v.Self != 0 || v.Epoch != 1 {
		t.Fatalf("a alone: %d members, self %d, epoch %d", len(v.Members), v.Self, v.Epoch)
	}

	// A joiner routes by the view in effect, which it is not part of, until
	// its own takes effect: on both members at the same instant.
	b, seenB := join("b")
	if v := b.View(); len(v.Members) != 1 || v.Self != -1 || v.Members[0].ID != "a" {
		t.Fatalf("b before its view starts: members %v, self %d; want a alone", v.Members, v.Self)
	}
	beat(a)
	if n := len(a.View().Members); n != 1 {
		t.Fatalf("a adopted the view with b before it started: %d members", n)
	}
	clock.add(delay - time.Millisecond)
	if len(a.View().Members) != 1 || len(b.View().Members) != 1 {
		t.Fatal("a view took effect before its start")
	}
	switchOver(a, b)
	joined := clock.now()
	if len(a.View().Members) != 2 || len(b.View().Members) != 2 {
		t.Fatalf("at the start a sees %d members, b %d", len(a.View().Members), len(b.View().Members))
	}
	sameOwners(a, b)
	n, old, next := seenA.last()
	if n != 2 || len(old.Members) != 1 || len(next.Members) != 2 {
		t.Fatalf("a's change callback: %d calls, last from %v to %v", n, old, next)
	}
	// b adopted the view in effect at its first contact, then its own.
	if n, old, _ := seenB.last(); n != 2 || len(old.Members) != 1 || old.Self != -1 {
		t.Fatalf("b's change callback ran %d times, last from %v; want twice, from the view without b", n, old)
	}
	// b took partitions over from a, which handed them over: b's traces
	// there are whole. a no longer owns them: what it still completes there
	// is a fragment.
	took := -1
	for p := range Partitions {
		if _, self := b.View().Owner(idInPartition(p)); self {
			took = p
			break
		}
	}
	if took < 0 {
		t.Fatal("b owns no partition")
	}
	if b.Fragment(idInPartition(took), joined, joined.Add(time.Second), time.Second) {
		t.Fatal("a trace of a partition handed over at a join is a fragment")
	}
	if !a.Fragment(idInPartition(took), joined.Add(-time.Second), joined.Add(time.Second), time.Second) {
		t.Fatal("a trace completed by a member that no longer owns its partition is not a fragment")
	}

	// A member that dies is dropped by the first survivor whose heartbeat
	// finds its entry expired; the view says it was lost, and traces of its
	// partitions open around the change are fragments at the new owner.
	c, _ := join("c")
	beat(a, b)
	switchOver(a, b, c)
	sameOwners(a, b, c)
	cPart := -1
	for p := range Partitions {
		if _, self := c.View().Owner(idInPartition(p)); self {
			cPart = p
			break
		}
	}
	// c stops beating; a and b go on.
	clock.add(cfg.MemberTTL / 2)
	beat(a, b)
	clock.add(cfg.MemberTTL/2 + time.Millisecond)
	beat(a, b)
	switchOver(a, b)
	died := clock.now()
	if v := a.View(); len(v.Members) != 2 || !slices.Equal(v.Lost, []string{"c"}) {
		t.Fatalf("after c's entry expired: members %v, lost %v", v.Members, v.Lost)
	}
	sameOwners(a, b)
	heir := a
	if _, self := b.View().Owner(idInPartition(cPart)); self {
		heir = b
	}
	id := idInPartition(cPart)
	// Nobody found c gone before its entry expired: traces open on a
	// survivor from c's possible death are fragments, in any partition.
	// Traces first seen at the change are whole: spans queued for c that
	// may share a trace with what c held arrive marked (Router).
	if !heir.Fragment(id, died.Add(-delay), died.Add(time.Second), time.Second) {
		t.Fatal("a trace open on the heir while c may have died is not a fragment")
	}
	if !heir.Fragment(idInPartition(took), died.Add(-delay), died.Add(time.Second), time.Second) {
		t.Fatal("a trace of another partition open while c may have died is not a fragment")
	}
	if heir.Fragment(id, died, died.Add(time.Second), time.Second) {
		t.Fatal("a trace first seen at the change is a fragment")
	}
	if heir.Fragment(id, died.Add(-2*cfg.lostWindow()), died.Add(-cfg.lostWindow()-time.Second), time.Second) {
		t.Fatal("a trace completed before c could have died is a fragment")
	}

	// A restarted instance is a new incarnation: it replaces its own stale
	// entry at once, and its predecessor counts as lost.
	c2, _ := join("c")
	beat(a, b)
	switchOver(a, b, c2)
	back := clock.now()
	if v := c2.View(); len(v.Members) != 3 || !slices.Equal(v.Lost, nil) {
		t.Fatalf("c back: members %v, lost %v", v.Members, v.Lost)
	}
	c3, _ := join("c") // restarted again before anyone noticed c2 died
	beat(a, b)
	switchOver(a, b, c3)
	if v := c3.View(); len(v.Members) != 3 || !slices.Equal(v.Lost, []string{"c"}) || v.Members[2].Incarnation != c3.incarnation {
		t.Fatalf("c restarted: members %v, lost %v", v.Members, v.Lost)
	}
	if !c3.Fragment(id, back, clock.now().Add(time.Second), time.Second) {
		t.Fatal("a trace the restarted instance assembled over its predecessor's death is not a fragment")
	}

	// Leaving takes effect at once, not after the TTL, and on every member
	// at the same start.
	left := make(chan error, 1)
	go func() { left <- c3.Leave(ctx) }()
	for {
		views := *c3.views.Load()
		if len(views[len(views)-1].Members) == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	beat(a, b)
	switchOver(a, b, c3)
	if err := <-left; err != nil {
		t.Fatal(err)
	}
	if v := c3.View(); v.Self != -1 || len(v.Members) != 2 || len(v.Lost) != 0 {
		t.Fatalf("c after leaving: self %d, members %v, lost %v", v.Self, v.Members, v.Lost)
	}
	sameOwners(a, b, c3)

	// Redis down: the last view is kept and readiness reports it.
	srv.Stop()
	if err := a.beat(ctx); err == nil {
		t.Fatal("heartbeat succeeded with Redis stopped")
	}
	if a.RedisUp(ctx) == nil || len(a.View().Members) != 2 {
		t.Fatal("Redis outage not reported, or the view was dropped")
	}
}

func TestSharedStrikes(t *testing.T) {
	srv := redistest.Start(t)
	cfg := rules.QuarantinePolicy{Strikes: 3, Window: time.Minute}
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
	cfg := rules.QuarantinePolicy{Strikes: 3, FaultRate: 0.5, Window: time.Minute}
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
