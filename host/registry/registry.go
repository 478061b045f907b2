// Package registry is the live set of rules: every stored rule record, each
// with its module admitted into a sandbox, and an atomic snapshot of the
// rules that should run.
//
// Changes go store-first: a new module is admitted (compiled, metered,
// initialized) before anything is written, the module bytes and then the
// record are stored, and only then does the in-memory snapshot swap. So an
// acknowledged change is durable, a refused one changes nothing, and
// evaluation workers never wait for a compile: they read the snapshot.
//
// Two locks, so that a slow store never holds up a read. Changes (Create,
// Update, SetEnabled, Rollback, Delete, Quarantine, Sync, Flush, Load)
// take turns on the writer lock and keep it across their store calls and
// compiles: one change at a time is what keeps the read-modify-write of a
// record and the revision it is made from consistent on this instance, and
// changes are rare. The cache lock mu guards the entries and is held only
// to copy a record out or install a result, never across a store call or a
// compile, so List, Get and Active answer from memory whatever the store
// does. A Sync holds the writer lock too, so it cannot install a listing
// read before a local change over that change; installs also keep the
// higher revision of a record, whoever made it.
//
// A store write that failed may still have landed when the store could not
// tell (store.ErrMaybeApplied: a timeout once the command was sent). The
// error then says so; the cache keeps the old record until the rule-sync
// loop or the next change (whose revision check fails and syncs) reads the
// stored one, and repeating the change is safe for the same reason.
//
// A quarantine the store cannot take (it is unreachable) is kept as
// pending on the entry instead: the rule stops here at once, the API shows
// it as pending, and Flush writes it when the store answers (see Flush for
// the order against changes made elsewhere meanwhile). A shared store that
// lost its rules (store.ErrReset) gets the rules this instance holds back
// before any read or write goes on, so a loss never reads as deletions.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/store"
)

// Errors callers branch on; the API maps them to statuses.
var (
	ErrNotFound = errors.New("rule not found")
	ErrExists   = errors.New("rule already exists")
	ErrInvalid  = errors.New("invalid rule")
	ErrRefused  = errors.New("module refused")
)

// Config holds what applies to every rule.
type Config struct {
	Quarantine rules.QuarantinePolicy
	// NewStrikes makes a rule's strike counter; nil counts on this
	// instance only (rules.NewStrikes).
	NewStrikes func(ruleID string) Striker
	// Instances is the sandbox pool size per rule; 0 means the sandbox default.
	Instances int
}

// Registry holds the rules. It is safe for concurrent use.
type Registry struct {
	cfg     Config
	store   store.Rules
	host    *sandbox.Host
	logger  *slog.Logger
	now     func() time.Time
	metrics *metrics

	writing chan struct{} // the writer lock: holds a token while a change runs
	mu      sync.Mutex    // guards entries; never held across a store call or a compile
	entries map[string]*entry
	active  atomic.Pointer[[]*Rule]
	loaded  atomic.Bool
}

type entry struct {
	rec     rules.Record
	module  []byte // bytes of the module in force
	rule    *Rule  // nil when the module could not be loaded
	loadErr string
	strikes Striker
	stats   *Stats
	// pending is a change made here that the store could not take yet
	// (Redis unreachable); until it is written it is what this instance
	// shows and runs, and rec stays the stored record.
	pending *pending
	shadow  *Rule // the version installed in shadow, when loaded (shadow.go)
}

// pending is a queued change: the record it makes, when it was made, and
// how to make it again on a record that changed before it.
type pending struct {
	rec   rules.Record
	at    time.Time
	event string
	apply func(*rules.Record)
}

// current is the record in force here: the queued change, if any, over the
// stored record.
func (e *entry) current() rules.Record {
	if e.pending != nil {
		return e.pending.rec
	}
	return e.rec
}

// New returns an empty registry; Load fills it from the store.
func New(cfg Config, st store.Rules, host *sandbox.Host, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) *Registry {
	if cfg.NewStrikes == nil {
		cfg.NewStrikes = func(string) Striker { return rules.NewStrikes(cfg.Quarantine, now) }
	}
	r := &Registry{cfg: cfg, store: st, host: host, logger: logger, now: now, metrics: newMetrics(reg),
		writing: make(chan struct{}, 1), entries: map[string]*entry{}}
	r.active.Store(&[]*Rule{})
	return r
}

// Load admits every stored rule. A rule whose module no longer loads is
// kept, not running, with the reason shown as its stateReason.
func (r *Registry) Load(ctx context.Context) error {
	if err := r.lockWrites(ctx); err != nil {
		return fmt.Errorf("registry: load rules: %w", err)
	}
	defer r.unlockWrites()
	recs, err := r.store.ListRules(ctx)
	if err != nil {
		return fmt.Errorf("registry: load rules: %w", err)
	}
	r.refresh(ctx, recs, "rule module failed to load; the rule will not run until a new module is installed")
	r.loaded.Store(true)
	r.logger.Info("rules loaded", "rules", len(recs), "active", len(r.Active()))
	return nil
}

// lockWrites takes the writer lock, or gives up when ctx ends first (the
// change then did not start).
func (r *Registry) lockWrites(ctx context.Context) error {
	select {
	case r.writing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting for an earlier rule change to finish; this change was not applied: %w", ctx.Err())
	}
}

func (r *Registry) unlockWrites() { <-r.writing }

// writeErr describes a failed store write of a rule: when the store cannot
// tell whether it landed, the caller is told to look before repeating it.
func writeErr(what string, err error) error {
	if errors.Is(err, store.ErrMaybeApplied) {
		return fmt.Errorf("%s: %w: GET the rule to see its state before repeating the change: %w", what, store.ErrMaybeApplied, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (r *Registry) newEntry(rec rules.Record) *entry {
	return &entry{rec: rec, stats: &Stats{}, strikes: r.cfg.NewStrikes(rec.ID)}
}

// Loaded reports whether Load has completed (for readiness).
func (r *Registry) Loaded() bool { return r.loaded.Load() }

// Active returns the rules to run now. The slice must not be modified.
func (r *Registry) Active() []*Rule { return *r.active.Load() }

// admit reads a record's module from the store and loads it into a
// sandbox. It takes no lock: call it without mu.
func (r *Registry) admit(ctx context.Context, rec rules.Record) (*installed, error) {
	module, err := r.store.Module(ctx, rec.Module.SHA256)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", rec.Module.SHA256, err)
	}
	sb, err := r.host.Load(ctx, module, r.limits(rec.Limits))
	if err != nil {
		return nil, err
	}
	return &installed{sb, module}, nil
}

// installed is a module a change admitted, with its bytes.
type installed struct {
	sb     *sandbox.Sandbox
	module []byte
}

// swapSandbox makes sb the rule's sandbox. The module bytes are kept so the
// rule can be published again should a shared store lose its data.
func (r *Registry) swapSandbox(ctx context.Context, e *entry, sb *sandbox.Sandbox, module []byte) {
	e.module = module
	old := e.rule
	e.rule = &Rule{ID: e.rec.ID, Name: e.rec.Name, Severity: string(e.rec.Severity), Version: e.rec.Module.Version,
		Sandbox: sb, Strikes: e.strikes, Stats: e.stats, Share: e.rec.Limits.Share}
	e.loadErr = ""
	if old != nil && old.Sandbox != sb {
		go old.Sandbox.Close(context.WithoutCancel(ctx)) // waits for calls in flight
	}
}

func (r *Registry) limits(l rules.Limits) sandbox.Limits {
	return sandbox.Limits{Fuel: l.Fuel, MemoryPages: l.MemoryPages, Instances: r.cfg.Instances}
}

// publish rebuilds the snapshot of active rules; call with mu held.
func (r *Registry) publish() {
	active := make([]*Rule, 0, len(r.entries))
	counts := map[rules.State]int{}
	for _, id := range r.sortedIDs() {
		e := r.entries[id]
		rec := e.current()
		counts[rec.State()]++
		if e.rule == nil || rec.State() != rules.StateActive {
			continue
		}
		// Metadata may have changed without a new sandbox: refresh the view.
		rule := *e.rule
		rule.Name, rule.Severity, rule.Version = rec.Name, string(rec.Severity), rec.Module.Version
		e.rule = &rule
		active = append(active, e.rule)
	}
	active = r.withShadows(active)
	r.active.Store(&active)
	for _, s := range []rules.State{rules.StateActive, rules.StateDisabled, rules.StateQuarantined} {
		r.metrics.rules.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

func (r *Registry) sortedIDs() []string {
	ids := make([]string, 0, len(r.entries))
	for id := range r.entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// View is a rule as the API shows it.
type View struct {
	Record      rules.Record
	State       rules.State
	StateReason string
	// Pending: the state shown was changed on this instance but is not in
	// the store yet (it was unreachable); it is written when the store is
	// back, and other instances do not know of it until then.
	Pending bool
	Stats   StatsSnapshot
	Shadow  *ShadowView // the version in shadow, if any
}

func (e *entry) view() View {
	rec := e.current()
	v := View{Record: rec, State: rec.State(), Pending: e.pending != nil, Stats: e.stats.Snapshot(time.Now()), Shadow: e.shadowView()}
	switch {
	case v.State == rules.StateDisabled:
		v.StateReason = "disabled by an operator"
	case v.State == rules.StateQuarantined:
		q := rec.Quarantine
		v.StateReason = fmt.Sprintf("quarantined after %d strikes: %s (trace %s, fuel used %d): %s", q.Strikes, q.Reason, q.TraceID, q.FuelUsed, q.LastError)
	case e.loadErr != "":
		v.StateReason = "module failed to load: " + e.loadErr
	}
	if v.Pending {
		v.StateReason = strings.TrimPrefix(v.StateReason+" (recorded on this instance only: the store is unreachable; it is written when the store is back)", " ")
	}
	v.Record.Tags = nonNil(v.Record.Tags)
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// List returns every rule ordered by ID.
func (r *Registry) List() []View {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]View, 0, len(r.entries))
	for _, id := range r.sortedIDs() {
		out = append(out, r.entries[id].view())
	}
	return out
}

// Get returns one rule.
func (r *Registry) Get(id string) (View, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return View{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return e.view(), nil
}

// Module returns the bytes of the rule's module in force.
func (r *Registry) Module(ctx context.Context, id string) ([]byte, error) {
	v, err := r.Get(id)
	if err != nil {
		return nil, err
	}
	return r.store.Module(ctx, v.Record.Module.SHA256)
}

// Spec is what a caller gives to create a rule or change one. Nil fields
// are left as they are (or, on create, taken from the module's own
// description, then defaults).
type Spec struct {
	ID          string
	Name        *string
	Description *string
	Severity    *string
	Tags        *[]string
	Enabled     *bool
	Fuel        *uint64
	MemoryPages *uint32
	Share       *float64
	Expression  *string
	// Module, when set, is installed as a new version.
	Module []byte
	Source string // "wasm" (default) or "dsl"
}

// Create admits spec.Module and stores a new rule.
func (r *Registry) Create(ctx context.Context, spec Spec) (View, error) {
	if len(spec.Module) == 0 {
		return View{}, fmt.Errorf("%w: a rule needs a module", ErrInvalid)
	}
	sb, err := r.host.Load(ctx, spec.Module, r.limitsOf(spec, rules.Limits{}))
	if err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	d := sb.Description()
	if spec.ID == "" {
		spec.ID = d.ID
	}
	now := r.now().UTC()
	rec := rules.Record{ID: spec.ID, Name: d.Name, Description: d.Description, Tags: d.Tags, Expression: sb.Source(),
		Enabled: true, CreatedAt: now, UpdatedAt: now, Revision: 1}
	if rec.Severity, err = rules.ParseSeverity(orDefault(d.Severity, "MEDIUM")); err != nil {
		rec.Severity = rules.SeverityMedium
	}
	if err := applySpec(&rec, spec); err != nil {
		sb.Close(ctx)
		return View{}, err
	}
	if rec.ID == "" {
		sb.Close(ctx)
		return View{}, fmt.Errorf("%w: no rule id: give one (the id query parameter or metadata field) or describe it in the module", ErrInvalid)
	}
	if err := rules.ValidateID(rec.ID); err != nil {
		sb.Close(ctx)
		return View{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if rec.Name == "" {
		rec.Name = rec.ID
	}
	rec.AddVersion(r.moduleRef(spec, now))

	if err := r.lockWrites(ctx); err != nil {
		sb.Close(ctx)
		return View{}, err
	}
	defer r.unlockWrites()
	if r.exists(rec.ID) {
		sb.Close(ctx)
		return View{}, fmt.Errorf("%w: %q", ErrExists, rec.ID)
	}
	// The module first: a rule record must never name bytes the store lacks.
	// Its bytes alone are invisible, so a module write whose outcome is
	// unknown still means the rule was not created. Both go again after a
	// republish: the loss may have come between them.
	err = r.afterReset(ctx, func() error {
		if err := r.store.PutModule(ctx, rec.Module.SHA256, spec.Module); err != nil {
			return fmt.Errorf("store module of %q: %w", rec.ID, err)
		}
		return r.store.CreateRule(ctx, rec)
	})
	if err != nil {
		sb.Close(ctx)
		if errors.Is(err, store.ErrExists) {
			return View{}, fmt.Errorf("%w: %q", ErrExists, rec.ID)
		}
		return View{}, writeErr(fmt.Sprintf("store rule %q", rec.ID), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.newEntry(rec)
	r.swapSandbox(ctx, e, sb, spec.Module)
	r.entries[rec.ID] = e
	r.publish()
	r.logger.Info("rule created", "rule_id", rec.ID, "version", rec.Module.Version, "sha256", rec.Module.SHA256, "enabled", rec.Enabled)
	return e.view(), nil
}

func (r *Registry) moduleRef(spec Spec, now time.Time) rules.Module {
	sum := sha256.Sum256(spec.Module)
	return rules.Module{SHA256: hex.EncodeToString(sum[:]), SizeBytes: len(spec.Module), ABIVersion: abiv1.Version, Source: orDefault(spec.Source, "wasm"), CreatedAt: now}
}

func (r *Registry) limitsOf(spec Spec, l rules.Limits) sandbox.Limits {
	if spec.Fuel != nil {
		l.Fuel = *spec.Fuel
	}
	if spec.MemoryPages != nil {
		l.MemoryPages = *spec.MemoryPages
	}
	return r.limits(l)
}

func applySpec(rec *rules.Record, spec Spec) error {
	if spec.Name != nil {
		rec.Name = *spec.Name
	}
	if spec.Description != nil {
		rec.Description = *spec.Description
	}
	if spec.Severity != nil {
		s, err := rules.ParseSeverity(*spec.Severity)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		rec.Severity = s
	}
	if spec.Tags != nil {
		rec.Tags = slices.Clone(*spec.Tags)
	}
	if spec.Enabled != nil {
		rec.Enabled = *spec.Enabled
		if rec.Enabled {
			rec.Quarantine = nil
		}
	}
	if spec.Fuel != nil {
		rec.Limits.Fuel = *spec.Fuel
	}
	if spec.MemoryPages != nil {
		rec.Limits.MemoryPages = *spec.MemoryPages
	}
	if spec.Share != nil {
		if *spec.Share < 0 || *spec.Share > 1 {
			return fmt.Errorf("%w: share %v must be between 0 (the service's share) and 1", ErrInvalid, *spec.Share)
		}
		rec.Limits.Share = *spec.Share
	}
	if spec.Expression != nil {
		rec.Expression = *spec.Expression
	}
	switch {
	case len(rec.Name) > 256:
		return fmt.Errorf("%w: name is %d bytes, at most 256", ErrInvalid, len(rec.Name))
	case len(rec.Description) > 4096:
		return fmt.Errorf("%w: description is %d bytes, at most 4096", ErrInvalid, len(rec.Description))
	case len(rec.Tags) > 32:
		return fmt.Errorf("%w: %d tags, at most 32", ErrInvalid, len(rec.Tags))
	}
	for _, t := range rec.Tags {
		if len(t) > 64 || t == "" {
			return fmt.Errorf("%w: tag %.64q is %d bytes; a tag has 1 to 64", ErrInvalid, t, len(t))
		}
	}
	if err := (sandbox.Limits{Fuel: rec.Limits.Fuel, MemoryPages: rec.Limits.MemoryPages}).Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Update changes a rule: metadata fields named in spec and, when
// spec.Module is set, a new module version.
func (r *Registry) Update(ctx context.Context, spec Spec) (View, error) {
	return r.change(ctx, spec.ID, "rule updated", func(e *entry, rec *rules.Record) (*installed, error) {
		wasEnabled := rec.Enabled
		if err := applySpec(rec, spec); err != nil {
			return nil, err
		}
		limitsChanged := spec.Fuel != nil || spec.MemoryPages != nil || spec.Share != nil
		if len(spec.Module) == 0 && !limitsChanged {
			if rec.Enabled && !wasEnabled {
				e.strikes.Clear()
			}
			return nil, nil
		}
		module := spec.Module
		if module == nil {
			var err error
			if module, err = r.store.Module(ctx, rec.Module.SHA256); err != nil {
				return nil, fmt.Errorf("read module of %q: %w", rec.ID, err)
			}
		}
		sb, err := r.host.Load(ctx, module, r.limits(rec.Limits))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if spec.Module != nil {
			if spec.Expression == nil {
				rec.Expression = sb.Source() // the expression of the old module no longer applies
			}
			rec.AddVersion(r.moduleRef(spec, r.now().UTC()))
			if err := r.store.PutModule(ctx, rec.Module.SHA256, module); err != nil {
				sb.Close(ctx)
				return nil, fmt.Errorf("store module of %q: %w", rec.ID, err)
			}
		}
		return &installed{sb, module}, nil
	})
}

// SetEnabled enables or disables a rule. Enabling clears a quarantine and
// the strikes behind it. Both are idempotent.
func (r *Registry) SetEnabled(ctx context.Context, id string, enabled bool) (View, error) {
	event := "rule disabled"
	if enabled {
		event = "rule enabled"
	}
	return r.change(ctx, id, event, func(e *entry, rec *rules.Record) (*installed, error) {
		rec.Enabled = enabled
		if enabled {
			rec.Quarantine = nil
			e.strikes.Clear()
		}
		return nil, nil
	})
}

// Rollback returns a rule to an earlier module version: version, or the
// one before the current when version is 0.
func (r *Registry) Rollback(ctx context.Context, id string, version int) (View, error) {
	return r.change(ctx, id, "rule rolled back", func(e *entry, rec *rules.Record) (*installed, error) {
		target := -1
		for i, m := range rec.Versions {
			if (version == 0 && m.Version < rec.Module.Version) || (version != 0 && m.Version == version) {
				target = i
			}
		}
		if target < 0 || (version != 0 && rec.Versions[target].Version == rec.Module.Version) {
			kept := make([]int, len(rec.Versions))
			for i, m := range rec.Versions {
				kept[i] = m.Version
			}
			return nil, fmt.Errorf("%w: no version to roll back to (current %d, kept %v)", ErrInvalid, rec.Module.Version, kept)
		}
		m := rec.Versions[target]
		module, err := r.store.Module(ctx, m.SHA256)
		if err != nil {
			return nil, fmt.Errorf("read module version %d of %q: %w", m.Version, rec.ID, err)
		}
		sb, err := r.host.Load(ctx, module, r.limits(rec.Limits))
		if err != nil {
			return nil, fmt.Errorf("%w: version %d: %w", ErrRefused, m.Version, err)
		}
		// The old module becomes the newest version, so history stays linear.
		m.CreatedAt = r.now().UTC()
		rec.Expression = sb.Source()
		rec.AddVersion(m)
		return &installed{sb, module}, nil
	})
}

// change applies fn to a copy of a rule's record, stores it and publishes.
// fn may return a new sandbox to install with the record; it runs without
// mu, so it may read the store and compile. When another instance changed
// the rule first, the registry syncs and tries once more.
func (r *Registry) change(ctx context.Context, id, event string, fn func(*entry, *rules.Record) (*installed, error)) (View, error) {
	if err := r.lockWrites(ctx); err != nil {
		return View{}, err
	}
	defer r.unlockWrites()
	r.flush(ctx) // queued changes were made before this one; a failure leaves them queued
	v, err := r.changeOnce(ctx, id, event, false, fn)
	if errors.Is(err, store.ErrConflict) {
		if err := r.sync(ctx); err != nil {
			return View{}, err
		}
		v, err = r.changeOnce(ctx, id, event, false, fn)
	}
	return v, err
}

// changeOnce makes one attempt; call it with the writer lock held. With
// queue, a change the store cannot take now (it is unreachable) is kept as
// pending instead of failing, when it needs no new module.
func (r *Registry) changeOnce(ctx context.Context, id, event string, queue bool, fn func(*entry, *rules.Record) (*installed, error)) (View, error) {
	r.mu.Lock()
	e, ok := r.entries[id]
	var rec rules.Record
	if ok {
		rec = e.rec
		rec.Tags = slices.Clone(rec.Tags)
		rec.Versions = slices.Clone(rec.Versions)
	}
	r.mu.Unlock()
	if !ok {
		return View{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	inst, err := fn(e, &rec)
	if err != nil {
		return View{}, err
	}
	rec.UpdatedAt = r.now().UTC()
	rec.Revision++
	// Conditional on the revision read above: a change made elsewhere in
	// the meantime fails with ErrConflict instead of being overwritten.
	if err := r.afterReset(ctx, func() error { return r.store.UpdateRule(ctx, rec) }); err != nil {
		if queue && inst == nil && errors.Is(err, store.ErrUnavailable) {
			return r.queue(e, rec, event, func(rec *rules.Record) { fn(e, rec) }, err), nil
		}
		if inst != nil {
			inst.sb.Close(ctx)
		}
		return View{}, writeErr(fmt.Sprintf("store rule %q", id), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.entries[id]; !ok || cur != e || e.rec.Revision >= rec.Revision {
		// Only Close gets here while changes hold the writer lock; the
		// stored record stands and the cache is not moved backwards.
		if inst != nil {
			inst.sb.Close(ctx)
		}
		return View{}, fmt.Errorf("registry: rule %q changed while being stored (the registry is closing?): GET the rule to see its state", id)
	}
	e.rec = rec
	e.pending = nil // this change came after any queued one, and wins
	if inst != nil {
		e.strikes.Clear()
		r.swapSandbox(ctx, e, inst.sb, inst.module)
	}
	r.publish()
	r.logger.Info(event, "rule_id", id, "state", string(rec.State()), "version", rec.Module.Version)
	return e.view(), nil
}

// queue keeps a change the store could not take as pending on e: this
// instance shows and runs it from now on, and flush writes it later.
func (r *Registry) queue(e *entry, rec rules.Record, event string, apply func(*rules.Record), cause error) View {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.pending = &pending{rec: rec, at: rec.UpdatedAt, event: event, apply: apply}
	r.publish()
	r.metrics.pending.Set(float64(r.pendingCount()))
	r.logger.Warn(event+" on this instance only: the store is unreachable, so the change is queued and written when it is back",
		"rule_id", rec.ID, "state", string(rec.State()), "err", cause)
	return e.view()
}

// pendingCount counts queued changes; call it with mu held.
func (r *Registry) pendingCount() int {
	n := 0
	for _, e := range r.entries {
		if e.pending != nil {
			n++
		}
	}
	return n
}

// Flush writes the changes queued while the store was unreachable, oldest
// rule ID first; it returns the first failure that leaves changes queued.
// A queued change is written on the record it was made from. If the rule
// changed elsewhere since, a change made after the queued one (by
// UpdatedAt) wins and the queued one is dropped, so an enable made anywhere
// after the store came back is never undone by a stale quarantine; a
// change made before it gets the queued change applied on top.
func (r *Registry) Flush(ctx context.Context) error {
	r.mu.Lock()
	n := r.pendingCount()
	r.mu.Unlock()
	if n == 0 {
		return nil
	}
	if err := r.lockWrites(ctx); err != nil {
		return fmt.Errorf("registry: write queued rule changes: %w", err)
	}
	defer r.unlockWrites()
	return r.flush(ctx)
}

// flush is Flush with the writer lock held.
func (r *Registry) flush(ctx context.Context) error {
	type queued struct {
		e *entry
		p *pending
	}
	var all []queued
	r.mu.Lock()
	for _, id := range r.sortedIDs() {
		if e := r.entries[id]; e.pending != nil {
			all = append(all, queued{e, e.pending})
		}
	}
	r.mu.Unlock()
	if len(all) == 0 {
		return nil
	}
	defer func() {
		r.mu.Lock()
		r.metrics.pending.Set(float64(r.pendingCount()))
		r.mu.Unlock()
	}()
	resync := false
	for _, q := range all {
		rec := q.p.rec
		err := r.afterReset(ctx, func() error { return r.store.UpdateRule(ctx, rec) })
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			var stored rules.Record
			stored, err = r.store.Rule(ctx, rec.ID)
			switch {
			case errors.Is(err, store.ErrNotFound) || (err == nil && stored.UpdatedAt.After(q.p.at)):
				r.drop(q.e, q.p, stored)
				resync = true
				continue
			case err == nil:
				rec = stored
				rec.Tags, rec.Versions = slices.Clone(rec.Tags), slices.Clone(rec.Versions)
				q.p.apply(&rec)
				rec.UpdatedAt, rec.Revision = r.now().UTC(), stored.Revision+1
				err = r.store.UpdateRule(ctx, rec)
			}
		}
		if err != nil {
			return fmt.Errorf("registry: write the queued change of rule %q: %w", rec.ID, err)
		}
		r.mu.Lock()
		if q.e.pending == q.p {
			q.e.pending = nil
		}
		if rec.Revision > q.e.rec.Revision {
			q.e.rec = rec
		}
		r.publish()
		r.mu.Unlock()
		r.logger.Info(q.p.event+": the change queued while the store was unreachable is written", "rule_id", rec.ID, "state", string(rec.State()))
	}
	if resync {
		return r.sync(ctx)
	}
	return nil
}

// drop forgets a queued change that a later change elsewhere overrides.
func (r *Registry) drop(e *entry, p *pending, stored rules.Record) {
	r.mu.Lock()
	if e.pending == p {
		e.pending = nil
	}
	r.publish()
	r.mu.Unlock()
	if stored.Quarantine == nil {
		e.strikes.Clear()
	}
	r.logger.Info("a change queued while the store was unreachable is dropped: the rule changed elsewhere after it",
		"rule_id", p.rec.ID, "queued", p.event, "queued_at", p.at, "changed_at", stored.UpdatedAt)
}

func (r *Registry) exists(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.entries[id]
	return ok
}

// Sync brings the registry in line with the store after another instance
// changed rules: new and changed records are admitted (a module only when
// its digest or limits changed), deleted ones closed. Changes this instance
// made itself are already in place and cost one comparison each.
func (r *Registry) Sync(ctx context.Context) error {
	if err := r.lockWrites(ctx); err != nil {
		return fmt.Errorf("registry: sync rules: %w", err)
	}
	defer r.unlockWrites()
	return r.sync(ctx)
}

// sync is Sync with the writer lock held. Holding it across the listing is
// what makes the listing authoritative for this instance: no local change
// can land between the read and the install, so a rule missing from the
// listing was deleted, not created after it was read.
func (r *Registry) sync(ctx context.Context) error {
	var recs []rules.Record
	err := r.afterReset(ctx, func() (err error) {
		recs, err = r.store.ListRules(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("registry: sync rules: %w", err)
	}
	if changed := r.refresh(ctx, recs, "rule changed elsewhere but its module failed to load here"); changed > 0 {
		r.logger.Info("rules synced", "changed", changed, "rules", len(r.List()), "active", len(r.Active()))
	}
	return nil
}

// refresh makes the entries match recs, the whole stored set: records newer
// than the cached ones replace them, modules are read and compiled without
// mu, and entries missing from recs are closed. Call it with the writer
// lock held. failed is the log message for a module that does not load.
func (r *Registry) refresh(ctx context.Context, recs []rules.Record, failed string) int {
	// What to do, decided from a copy of the cache.
	type step struct {
		rec    rules.Record
		load   bool
		inst   *installed
		err    error
		shadow shadowStep
	}
	var steps []step
	r.mu.Lock()
	for _, rec := range recs {
		e, ok := r.entries[rec.ID]
		if ok && e.rec.Revision >= rec.Revision {
			continue
		}
		load := !ok || e.rule == nil || e.rec.Module.SHA256 != rec.Module.SHA256 || e.rec.Limits != rec.Limits
		var cur *entry
		if ok {
			cur = e
		}
		steps = append(steps, step{rec: rec, load: load, shadow: shadowStepFor(cur, rec)})
	}
	r.mu.Unlock()

	for i := range steps {
		if steps[i].load {
			steps[i].inst, steps[i].err = r.admit(ctx, steps[i].rec)
		}
		r.admitShadowStep(ctx, steps[i].rec, &steps[i].shadow)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	changed := 0
	for _, st := range steps {
		e, ok := r.entries[st.rec.ID]
		if ok && e.rec.Revision >= st.rec.Revision {
			// Newer than the listing already (not while the writer lock is
			// held, but the higher revision is the one to keep regardless).
			if st.inst != nil {
				st.inst.sb.Close(ctx)
			}
			if st.shadow.inst != nil {
				st.shadow.inst.sb.Close(ctx)
			}
			continue
		}
		changed++
		if !ok {
			e = r.newEntry(st.rec)
			r.entries[st.rec.ID] = e
		}
		old := e.rec
		e.rec = st.rec
		if st.load {
			if st.err != nil {
				e.loadErr = st.err.Error()
				r.logger.Error(failed, "rule_id", st.rec.ID, "err", st.err)
			} else {
				r.swapSandbox(ctx, e, st.inst.sb, st.inst.module)
			}
			e.strikes.Clear()
		}
		if old.Quarantine != nil && st.rec.Quarantine == nil {
			e.strikes.Clear()
		}
		r.applyShadowStep(ctx, e, st.shadow)
	}
	seen := make(map[string]bool, len(recs))
	for _, rec := range recs {
		seen[rec.ID] = true
	}
	for id, e := range r.entries {
		if !seen[id] {
			changed++
			delete(r.entries, id)
			if e.rule != nil {
				go e.rule.Sandbox.Close(context.WithoutCancel(ctx))
			}
			closeShadow(ctx, e)
		}
	}
	if changed > 0 {
		r.publish()
	}
	return changed
}

// afterReset runs a store call; when the store lost its rules since this
// instance last read them (store.ErrReset), it puts back the rules held
// first and runs the call once more. So a listing of an emptied store is
// never taken for "every rule deleted", and a write never starts a new
// rule set beside the lost one. Call it with the writer lock held.
func (r *Registry) afterReset(ctx context.Context, call func() error) error {
	err := call()
	if !errors.Is(err, store.ErrReset) {
		return err
	}
	if err := r.republish(ctx); err != nil {
		return err
	}
	return call()
}

// republish writes every rule this instance holds, with its module, back to
// a store that lost them, in one step (store.Republisher): rules already
// there at the same or a later revision, and rules deleted since the loss,
// are left as they are. Queued changes are not part of it: flush writes
// them on top.
func (r *Registry) republish(ctx context.Context) error {
	rp, ok := r.store.(store.Republisher)
	if !ok {
		return fmt.Errorf("registry: the store lost its rules and cannot take them back; restart this instance: %w", store.ErrReset)
	}
	var held []store.HeldRule
	r.mu.Lock()
	for _, id := range r.sortedIDs() {
		if e := r.entries[id]; e.module != nil { // nil: never loaded here, nothing to put back
			held = append(held, store.HeldRule{Record: e.rec, Module: e.module})
		}
	}
	r.mu.Unlock()
	n, err := rp.RepublishRules(ctx, held)
	if err != nil {
		return fmt.Errorf("registry: put back the rules this instance holds after the store lost them: %w", err)
	}
	r.metrics.republished.Add(float64(n))
	r.logger.Error("the store lost its rules (Redis restarted empty or was flushed): put back the rules this instance holds; violations stored before the loss are gone, check Redis persistence",
		"rules_written", n, "rules_held", len(held))
	return nil
}

// Delete removes a rule; its module bytes stay in the store.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := r.lockWrites(ctx); err != nil {
		return err
	}
	defer r.unlockWrites()
	if !r.exists(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	// Deleting a rule already gone is no error, so a delete whose outcome
	// was unknown can simply be repeated.
	if err := r.afterReset(ctx, func() error { return r.store.DeleteRule(ctx, id) }); err != nil && !errors.Is(err, store.ErrNotFound) {
		return writeErr(fmt.Sprintf("delete rule %q", id), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return nil
	}
	delete(r.entries, id)
	r.publish()
	if e.rule != nil {
		go e.rule.Sandbox.Close(context.WithoutCancel(ctx))
	}
	closeShadow(ctx, e)
	r.logger.Info("rule deleted", "rule_id", id)
	return nil
}

// Quarantine records that a rule tripped its strikes and stops it.
func (r *Registry) Quarantine(ctx context.Context, id string, q rules.Quarantine) error {
	if v, err := r.Get(id); err == nil && v.Record.Quarantine != nil {
		return nil // another worker or instance got there first
	}
	r.metrics.quarantines.WithLabelValues(id).Inc()
	if err := r.lockWrites(ctx); err != nil {
		return err
	}
	defer r.unlockWrites()
	r.flush(ctx)
	quarantine := func(e *entry, rec *rules.Record) (*installed, error) {
		rec.Quarantine = &q
		return nil, nil
	}
	// Queued when the store is unreachable: the rule has stopped here
	// already, and the quarantine must reach the others when it is back.
	v, err := r.changeOnce(ctx, id, "rule quarantined", true, quarantine)
	if errors.Is(err, store.ErrConflict) {
		if err := r.sync(ctx); err != nil {
			return err
		}
		v, err = r.changeOnce(ctx, id, "rule quarantined", true, quarantine)
	}
	if err == nil && !v.Pending {
		r.logger.Warn("rule quarantined: it will not run until enabled again", "rule_id", id, "reason", q.Reason, "trace_id", q.TraceID, "fuel_used", q.FuelUsed, "last_error", q.LastError)
	}
	return err
}

// Close frees every sandbox.
func (r *Registry) Close(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e.rule != nil {
			e.rule.Sandbox.Close(ctx)
		}
		if e.shadow != nil {
			e.shadow.Sandbox.Close(ctx)
		}
	}
	r.entries = map[string]*entry{}
	r.active.Store(&[]*Rule{})
}

type metrics struct {
	rules       *prometheus.GaugeVec
	quarantines *prometheus.CounterVec
	republished prometheus.Counter
	pending     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rules: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "betrace_rules", Help: "Rules by state (active, disabled, quarantined)."}, []string{"state"}),
		quarantines: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_rule_quarantines_total",
			Help: "Times a rule was quarantined after repeated sandbox faults."}, []string{"rule_id"}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_rules_republished_total",
			Help: "Rules this instance wrote back to the store after it lost them (Redis restarted empty or was flushed)."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_rule_changes_pending",
			Help: "Rule changes made on this instance (quarantines) that the store could not take yet; written when it is back."}),
	}
	reg.MustRegister(m.rules, m.quarantines, m.republished, m.pending)
	return m
}
