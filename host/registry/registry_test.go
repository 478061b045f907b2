package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/dsl"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/store/embedded"
)

type fixture struct {
	reg   *Registry
	store *embedded.Store
	host  *sandbox.Host
	dir   string
}

func open(t *testing.T, dir string) *fixture {
	t.Helper()
	st, err := embedded.Open(embedded.Config{Dir: dir}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	h, err := sandbox.NewHost(sandbox.HostConfig{CacheDir: testrules.CacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Config{Quarantine: rules.DefaultQuarantinePolicy()}, st, h, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), time.Now)
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: r, store: st, host: h, dir: dir}
	t.Cleanup(f.close)
	return f
}

func (f *fixture) close() {
	f.reg.Close(context.Background())
	f.host.Close(context.Background())
	f.store.Close()
}

func ptr[T any](v T) *T { return &v }

func activeIDs(r *Registry) []string {
	var ids []string
	for _, rule := range r.Active() {
		ids = append(ids, rule.ID)
	}
	return ids
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	f := open(t, t.TempDir())
	pay := testrules.Module(t, "payment-fraud-check")

	// Metadata comes from the module when the request gives none.
	v, err := f.reg.Create(ctx, Spec{Module: pay})
	if err != nil {
		t.Fatal(err)
	}
	if v.Record.ID != "payment-fraud-check" || v.Record.Severity != rules.SeverityCritical || v.State != rules.StateActive || v.Record.Module.Version != 1 {
		t.Fatalf("created %+v", v)
	}
	if _, err := f.reg.Create(ctx, Spec{Module: pay}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	// Request metadata wins; bad input changes nothing.
	if _, err := f.reg.Create(ctx, Spec{ID: "pay-2", Module: pay, Severity: ptr("urgent")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad severity: %v", err)
	}
	if _, err := f.reg.Create(ctx, Spec{ID: "bad id!", Module: pay}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := f.reg.Create(ctx, Spec{ID: "garbage", Module: []byte("not wasm")}); !errors.Is(err, ErrRefused) {
		t.Fatalf("garbage module: %v", err)
	}
	if got := len(f.reg.List()); got != 1 {
		t.Fatalf("%d rules after refused creates", got)
	}

	v, err = f.reg.Create(ctx, Spec{ID: "pay-low", Module: pay, Severity: ptr("low"), Name: ptr("Low copy"), Tags: ptr([]string{"a"}), Enabled: ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	if v.Record.Severity != rules.SeverityLow || v.State != rules.StateDisabled || v.Record.Name != "Low copy" {
		t.Fatalf("created %+v", v)
	}
	if ids := activeIDs(f.reg); len(ids) != 1 || ids[0] != "payment-fraud-check" {
		t.Fatalf("active %v", ids)
	}

	// A partial update changes only what it names.
	v, err = f.reg.Update(ctx, Spec{ID: "payment-fraud-check", Severity: ptr("medium")})
	if err != nil {
		t.Fatal(err)
	}
	if v.Record.Severity != rules.SeverityMedium || v.Record.Name == "" || v.Record.Module.Version != 1 {
		t.Fatalf("after patch %+v", v.Record)
	}
	if f.reg.Active()[0].Severity != "MEDIUM" {
		t.Fatal("the active snapshot kept the old severity")
	}

	// New module versions, then rollback.
	pii := testrules.Module(t, "pii-access-audit")
	if v, err = f.reg.Update(ctx, Spec{ID: "payment-fraud-check", Module: pii}); err != nil || v.Record.Module.Version != 2 {
		t.Fatalf("install v2: %v %+v", err, v.Record.Module)
	}
	if v, err = f.reg.Rollback(ctx, "payment-fraud-check", 0); err != nil || v.Record.Module.Version != 3 || v.Record.Module.SHA256 != v.Record.Versions[0].SHA256 {
		t.Fatalf("rollback: %v %+v", err, v.Record.Versions)
	}
	if _, err := f.reg.Rollback(ctx, "payment-fraud-check", 99); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rollback to a missing version: %v", err)
	}
	if _, err := f.reg.Update(ctx, Spec{ID: "payment-fraud-check", Module: []byte("\x00asm\x01\x00\x00\x00junk")}); !errors.Is(err, ErrRefused) {
		t.Fatalf("bad module update: %v", err)
	}
	if v, _ := f.reg.Get("payment-fraud-check"); v.Record.Module.Version != 3 {
		t.Fatal("a refused module changed the rule")
	}

	// Enable and disable are idempotent.
	for range 2 {
		if v, err = f.reg.SetEnabled(ctx, "payment-fraud-check", false); err != nil || v.State != rules.StateDisabled {
			t.Fatalf("disable: %v %v", err, v.State)
		}
	}
	if len(f.reg.Active()) != 0 {
		t.Fatal("a disabled rule is still active")
	}
	if v, err = f.reg.SetEnabled(ctx, "payment-fraud-check", true); err != nil || v.State != rules.StateActive {
		t.Fatalf("enable: %v %v", err, v.State)
	}

	// Quarantine stops a rule; enable clears it.
	q := rules.Quarantine{Reason: "fuel", LastError: "fuel budget exhausted", FuelUsed: 9, TraceID: "ab", Strikes: 3, At: time.Now()}
	if err := f.reg.Quarantine(ctx, "payment-fraud-check", q); err != nil {
		t.Fatal(err)
	}
	if v, _ = f.reg.Get("payment-fraud-check"); v.State != rules.StateQuarantined || v.StateReason == "" || len(f.reg.Active()) != 0 {
		t.Fatalf("quarantined: %+v", v)
	}

	// Everything acknowledged survives a restart.
	f.close()
	g := open(t, f.dir)
	v, err = g.reg.Get("payment-fraud-check")
	if err != nil || v.State != rules.StateQuarantined || v.Record.Module.Version != 3 || v.Record.Severity != rules.SeverityMedium {
		t.Fatalf("after restart: %v %+v", err, v)
	}
	if v, err = g.reg.SetEnabled(ctx, "payment-fraud-check", true); err != nil || v.State != rules.StateActive || v.Record.Quarantine != nil {
		t.Fatalf("enable after restart: %v %+v", err, v)
	}
	if err := g.reg.Delete(ctx, "pay-low"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.reg.Get("pay-low"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted rule: %v", err)
	}
	if err := g.reg.Delete(ctx, "pay-low"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if b, err := g.reg.Module(ctx, "payment-fraud-check"); err != nil || len(b) != len(pay) {
		t.Fatalf("module bytes: %v", err)
	}
}

func TestUnknownRule(t *testing.T) {
	f := open(t, t.TempDir())
	ctx := context.Background()
	for name, err := range map[string]error{
		"get":      func() error { _, err := f.reg.Get("nope"); return err }(),
		"update":   func() error { _, err := f.reg.Update(ctx, Spec{ID: "nope", Name: ptr("x")}); return err }(),
		"enable":   func() error { _, err := f.reg.SetEnabled(ctx, "nope", true); return err }(),
		"rollback": func() error { _, err := f.reg.Rollback(ctx, "nope", 0); return err }(),
		"delete":   f.reg.Delete(ctx, "nope"),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A module that carries its source (a compiled DSL rule) shows it as the
// rule's expression however it arrived, and installing a module without
// one clears the expression of the module it replaced.
func TestExpressionFollowsModule(t *testing.T) {
	ctx := context.Background()
	f := open(t, t.TempDir())
	const src = `when { payment.charge.where(currency matches "^EU") } always { fraud.check }`
	parsed, err := dsl.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	compiled, err := dsl.Compile(parsed, dsl.Meta{ID: "eu-charges"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.reg.Create(ctx, Spec{Module: compiled})
	if err != nil {
		t.Fatal(err)
	}
	if v.Record.ID != "eu-charges" || v.Record.Expression != parsed.String() || v.Record.Module.Source != "wasm" {
		t.Fatalf("uploaded compiled rule: %+v", v.Record)
	}
	if v, err = f.reg.Update(ctx, Spec{ID: "eu-charges", Module: testrules.Module(t, "payment-fraud-check")}); err != nil || v.Record.Expression != "" {
		t.Fatalf("after installing a Go rule: %v, expression %q", err, v.Record.Expression)
	}
	if v, err = f.reg.Rollback(ctx, "eu-charges", 0); err != nil || v.Record.Expression != parsed.String() {
		t.Fatalf("after rollback: %v, expression %q", err, v.Record.Expression)
	}
	v, err = f.reg.Update(ctx, Spec{ID: "eu-charges", Severity: ptr("high")})
	if err != nil || v.Record.Expression != parsed.String() {
		t.Fatalf("a metadata change must keep the expression: %v, %q", err, v.Record.Expression)
	}
}
