package registry

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
)

func ruleIDs(r *Registry) []string {
	var out []string
	for _, v := range r.List() {
		out = append(out, v.Record.ID)
	}
	return out
}

// TestRulesSurviveFlushAndCreate: Redis emptied, then a rule created at
// once on one instance, before any poll. Neither instance loses a rule: the
// create puts back what its instance holds first, and the other instance's
// sync puts back its own rather than deleting them.
func TestRulesSurviveFlushAndCreate(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	a := openOnRedis(t, srv, 2*time.Second)
	b := openOnRedis(t, srv, 2*time.Second)
	pay := testrules.Module(t, "payment-fraud-check")
	for _, id := range []string{"r1", "r2"} {
		if _, err := a.reg.Create(ctx, Spec{ID: id, Module: pay}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// b alone holds r3: a has not synced since it was made.
	if _, err := b.reg.Create(ctx, Spec{ID: "r3", Module: pay}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client().FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reg.Create(ctx, Spec{ID: "r4", Module: pay}); err != nil {
		t.Fatalf("create right after FLUSHALL: %v", err)
	}
	if got := value(a.reg.metrics.republished); got != 2 {
		t.Errorf("a republished %v rules, want 2 (r1, r2)", got)
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"r1", "r2", "r3", "r4"}
	for name, f := range map[string]*onRedis{"a": a, "b": b} {
		if got := ruleIDs(f.reg); !slices.Equal(got, want) {
			t.Errorf("%s holds %v after FLUSHALL and a create, want %v", name, got, want)
		}
		stored, err := f.store.ListRules(ctx)
		if err != nil || len(stored) != len(want) {
			t.Errorf("%s: Redis holds %d rules (%v), want %d", name, len(stored), err, len(want))
		}
	}
	// A rule deleted after the loss stays deleted, however late a peer
	// republishes.
	srv.Client().FlushAll(ctx)
	if err := a.reg.Delete(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ruleIDs(b.reg); !slices.Equal(got, want[1:]) {
		t.Errorf("b holds %v after a deleted r1 in the new generation, want %v", got, want[1:])
	}
}

// TestQueuedQuarantine: a quarantine recorded while Redis is down stops
// the rule here, shows as pending, and reaches the other instance once
// Redis is back; an enable there then clears it on both.
func TestQueuedQuarantine(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	a := openOnRedis(t, srv, 2*time.Second)
	b := openOnRedis(t, srv, 2*time.Second)
	if _, err := a.reg.Create(ctx, Spec{ID: "r", Module: testrules.Module(t, "payment-fraud-check")}); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	q := rules.Quarantine{Reason: "fuel", LastError: "out of fuel", TraceID: "0af7651916cd43dd8448eb211c80319c", Strikes: 3, At: time.Now()}
	if err := a.reg.Quarantine(ctx, "r", q); err != nil {
		t.Fatalf("quarantine while Redis is down: %v, want it queued", err)
	}
	v, _ := a.reg.Get("r")
	if v.State != rules.StateQuarantined || !v.Pending || len(a.reg.Active()) != 0 {
		t.Fatalf("a during the outage: state %s pending %v active %d; want quarantined, pending, not running", v.State, v.Pending, len(a.reg.Active()))
	}
	if got := value(a.reg.metrics.pending); got != 1 {
		t.Errorf("pending changes %v, want 1", got)
	}
	if err := a.reg.Flush(ctx); err == nil {
		t.Fatal("flush while Redis is down succeeded")
	}

	srv.Start()
	waitUp(t, a)
	if err := a.reg.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.reg.Get("r"); v.State != rules.StateQuarantined || v.Pending {
		t.Fatalf("a after the flush: %s pending %v", v.State, v.Pending)
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.reg.Get("r"); v.State != rules.StateQuarantined || v.Record.Quarantine.Reason != "fuel" {
		t.Fatalf("b after Redis came back: %s %+v, want the quarantine a queued", v.State, v.Record.Quarantine)
	}

	if _, err := b.reg.SetEnabled(ctx, "r", true); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*onRedis{"a": a, "b": b} {
		if v, _ := f.reg.Get("r"); v.State != rules.StateActive || v.Pending || len(f.reg.Active()) != 1 {
			t.Errorf("%s after the enable: %s pending %v", name, v.State, v.Pending)
		}
	}
}

// TestStaleQueuedQuarantineLoses: a quarantine queued during an outage
// that another instance's enable, made after Redis came back, beats to the
// store is dropped, not written over the enable.
func TestStaleQueuedQuarantineLoses(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	a := openOnRedis(t, srv, 2*time.Second)
	b := openOnRedis(t, srv, 2*time.Second)
	if _, err := a.reg.Create(ctx, Spec{ID: "r", Module: testrules.Module(t, "payment-fraud-check")}); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := a.reg.Quarantine(ctx, "r", rules.Quarantine{Reason: "fuel", Strikes: 3, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	srv.Start()
	waitUp(t, b)
	time.Sleep(10 * time.Millisecond) // the enable is later than the quarantine by the clock, as it would be
	if _, err := b.reg.Update(ctx, Spec{ID: "r", Name: ptr("renamed after the outage"), Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*onRedis{"a": a, "b": b} {
		if err := f.reg.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _ := f.reg.Get("r"); v.State != rules.StateActive || v.Pending || v.Record.Name != "renamed after the outage" {
			t.Errorf("%s: %s pending %v name %q; want the later change to win", name, v.State, v.Pending, v.Record.Name)
		}
	}
}

func waitUp(t *testing.T, f *onRedis) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); f.store.Ping(context.Background()) != nil; {
		if time.Now().After(deadline) {
			t.Fatal("Redis did not come back")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
