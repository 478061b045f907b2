package registry

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
)

// versions lists the active rules as "id vN" and "id vN shadow".
func versions(r *Registry) []string {
	var out []string
	for _, rule := range r.Active() {
		s := rule.ID + " v" + strconv.Itoa(rule.Version)
		if rule.Shadow {
			s += " shadow"
		}
		out = append(out, s)
	}
	return out
}

func equal(a, b []string) bool { return slices.Equal(a, b) }

// TestShadowLifecycle: a shadow version runs beside the version in force,
// another registry on the same store loads it and follows its promotion,
// and removing it stops it; the rule in force never changes meanwhile.
func TestShadowLifecycle(t *testing.T) {
	f := open(t, t.TempDir())
	ctx := context.Background()
	if _, err := f.reg.Create(ctx, Spec{ID: "pay", Module: testrules.Module(t, "payment-fraud-check")}); err != nil {
		t.Fatal(err)
	}
	v, err := f.reg.InstallShadow(ctx, Spec{ID: "pay", Module: testrules.Module(t, "pii-access-audit")})
	if err != nil {
		t.Fatal(err)
	}
	if v.Shadow == nil || v.Shadow.Module.Version != 2 || !v.Shadow.Running || v.Record.Module.Version != 1 {
		t.Fatalf("after InstallShadow: shadow %+v, version %d", v.Shadow, v.Record.Module.Version)
	}
	if got := versions(f.reg); !equal(got, []string{"pay v1", "pay v2 shadow"}) {
		t.Errorf("active: %v", got)
	}

	other := New(Config{Quarantine: rules.DefaultQuarantinePolicy()}, f.store, f.host, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), time.Now)
	t.Cleanup(func() { other.Close(ctx) })
	if err := other.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := versions(other); !equal(got, []string{"pay v1", "pay v2 shadow"}) {
		t.Errorf("another instance after Load: %v", got)
	}

	if _, err := f.reg.SetEnabled(ctx, "pay", false); err != nil {
		t.Fatal(err)
	}
	if got := versions(f.reg); len(got) != 0 {
		t.Errorf("a disabled rule's shadow still runs: %v", got)
	}
	if _, err := f.reg.SetEnabled(ctx, "pay", true); err != nil {
		t.Fatal(err)
	}

	v, err = f.reg.Promote(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	if v.Shadow != nil || v.Record.Module.Version != 2 || len(v.Record.Versions) != 2 {
		t.Errorf("after Promote: shadow %+v, version %d, %d versions", v.Shadow, v.Record.Module.Version, len(v.Record.Versions))
	}
	if got := versions(f.reg); !equal(got, []string{"pay v2"}) {
		t.Errorf("active after Promote: %v", got)
	}
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := versions(other); !equal(got, []string{"pay v2"}) {
		t.Errorf("another instance after Sync: %v", got)
	}

	if _, err := f.reg.InstallShadow(ctx, Spec{ID: "pay", Module: testrules.Module(t, "payment-fraud-check")}); err != nil {
		t.Fatal(err)
	}
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := versions(other); !equal(got, []string{"pay v2", "pay v3 shadow"}) {
		t.Errorf("another instance after a second shadow: %v", got)
	}
	if _, err := f.reg.DropShadow(ctx, "pay"); err != nil {
		t.Fatal(err)
	}
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, gotOther := versions(f.reg), versions(other); !equal(got, []string{"pay v2"}) || !equal(gotOther, []string{"pay v2"}) {
		t.Errorf("after DropShadow: %v here, %v on the other", got, gotOther)
	}
	if _, err := f.reg.Promote(ctx, "pay"); err == nil {
		t.Error("Promote without a shadow version succeeded")
	}
	if _, err := f.reg.InstallShadow(ctx, Spec{ID: "pay", Module: []byte("not wasm")}); err == nil {
		t.Error("a module that is not wasm was installed in shadow")
	} else if v, _ := f.reg.Get("pay"); v.Shadow != nil {
		t.Errorf("a refused shadow module changed the rule: %+v", v.Shadow)
	}
}
