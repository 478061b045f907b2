package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
)

// A rule may have one version installed in shadow (Record.Shadow): it runs
// on live traffic beside the version in force, in a sandbox of its own
// under the rule's limits, and what it finds is stored marked shadow and
// never exported (package evaluation). Promote makes it the version in
// force; DropShadow removes it. Like every change, both go store-first, and
// other instances load or close the shadow sandbox when they sync.

// ShadowView is the version in shadow as the API shows it.
type ShadowView struct {
	Module rules.Module
	// Running is false once its own faults stopped it on this instance
	// (Reason says why), or while its module failed to load here.
	Running bool
	Reason  string
	Stats   StatsSnapshot
}

func (e *entry) shadowView() *ShadowView {
	if e.rec.Shadow == nil {
		return nil
	}
	v := &ShadowView{Module: *e.rec.Shadow}
	switch {
	case e.shadow == nil:
		v.Reason = "its module is not loaded on this instance"
	default:
		v.Stats = e.shadow.Stats.Snapshot(time.Now())
		if q, stopped := e.shadow.Strikes.Quarantined(); stopped {
			v.Reason = fmt.Sprintf("stopped after %d faults: %s (trace %s): %s", q.Strikes, q.Reason, q.TraceID, q.LastError)
		} else {
			v.Running = e.current().Enabled
			if !v.Running {
				v.Reason = "the rule is disabled"
			}
		}
	}
	return v
}

func nextVersion(rec *rules.Record) int {
	if n := len(rec.Versions); n > 0 {
		return rec.Versions[n-1].Version + 1
	}
	return 1
}

// InstallShadow admits spec.Module and installs it in shadow on rule
// spec.ID, replacing any version already there.
func (r *Registry) InstallShadow(ctx context.Context, spec Spec) (View, error) {
	if len(spec.Module) == 0 {
		return View{}, fmt.Errorf("%w: a shadow version needs a module or an expression", ErrInvalid)
	}
	var sb *sandbox.Sandbox
	_, err := r.change(ctx, spec.ID, "shadow version installed", func(e *entry, rec *rules.Record) (*installed, error) {
		if sb != nil { // a second attempt, after another instance's change
			sb.Close(ctx)
			sb = nil
		}
		s, err := r.host.Load(ctx, spec.Module, r.limits(rec.Limits))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		m := r.moduleRef(spec, r.now().UTC())
		m.Version = nextVersion(rec)
		if err := r.store.PutModule(ctx, m.SHA256, spec.Module); err != nil {
			s.Close(ctx)
			return nil, fmt.Errorf("store module of %q: %w", rec.ID, err)
		}
		rec.Shadow, sb = &m, s
		return nil, nil
	})
	if err != nil {
		if sb != nil {
			sb.Close(ctx)
		}
		return View{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[spec.ID]
	if !ok || e.rec.Shadow == nil {
		sb.Close(ctx)
		return View{}, fmt.Errorf("%w: %q changed while its shadow version was installed", ErrNotFound, spec.ID)
	}
	r.setShadow(ctx, e, sb)
	r.publish()
	return e.view(), nil
}

// Promote makes the version in shadow the version in force: it becomes the
// newest version, and the rule stops running a shadow. A quarantine or a
// disabled rule stays as it is; enable the rule to run it.
func (r *Registry) Promote(ctx context.Context, id string) (View, error) {
	v, err := r.change(ctx, id, "shadow version promoted", func(e *entry, rec *rules.Record) (*installed, error) {
		if rec.Shadow == nil {
			return nil, fmt.Errorf("%w: rule %q has no version in shadow: install one with PUT /v1/rules/%s/shadow", ErrInvalid, id, id)
		}
		m := *rec.Shadow
		module, err := r.store.Module(ctx, m.SHA256)
		if err != nil {
			return nil, fmt.Errorf("read the shadow module of %q: %w", id, err)
		}
		sb, err := r.host.Load(ctx, module, r.limits(rec.Limits))
		if err != nil {
			return nil, fmt.Errorf("%w: the shadow version %d: %w", ErrRefused, m.Version, err)
		}
		m.CreatedAt = r.now().UTC()
		rec.Expression = sb.Source()
		rec.AddVersion(m)
		rec.Shadow = nil
		return &installed{sb, module}, nil
	})
	if err != nil {
		return View{}, err
	}
	return r.afterShadowChange(ctx, id, v), nil
}

// DropShadow removes the version in shadow.
func (r *Registry) DropShadow(ctx context.Context, id string) (View, error) {
	v, err := r.change(ctx, id, "shadow version removed", func(e *entry, rec *rules.Record) (*installed, error) {
		if rec.Shadow == nil {
			return nil, fmt.Errorf("%w: rule %q has no version in shadow", ErrInvalid, id)
		}
		rec.Shadow = nil
		return nil, nil
	})
	if err != nil {
		return View{}, err
	}
	return r.afterShadowChange(ctx, id, v), nil
}

// afterShadowChange closes the shadow sandbox once the record has none.
func (r *Registry) afterShadowChange(ctx context.Context, id string, v View) View {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.entries[id]; ok && e.rec.Shadow == nil && e.shadow != nil {
		closeShadow(ctx, e)
		r.publish()
		return e.view()
	}
	return v
}

// setShadow makes sb the entry's shadow sandbox, with strikes and counters
// of its own; call with mu held.
func (r *Registry) setShadow(ctx context.Context, e *entry, sb *sandbox.Sandbox) {
	closeShadow(ctx, e)
	e.shadow = &Rule{ID: e.rec.ID, Name: e.rec.Name, Severity: string(e.rec.Severity), Version: e.rec.Shadow.Version,
		Sandbox: sb, Strikes: rules.NewStrikes(r.cfg.Quarantine, r.now), Stats: &Stats{}, Share: e.rec.Limits.Share, Shadow: true}
}

// closeShadow closes the entry's shadow sandbox, after calls in flight.
func closeShadow(ctx context.Context, e *entry) {
	if e.shadow != nil {
		go e.shadow.Sandbox.Close(context.WithoutCancel(ctx))
		e.shadow = nil
	}
}

// withShadows appends the shadow versions that run to active: every one
// loaded on an enabled rule, quarantined or not (a fix for a quarantined
// rule is what a shadow is for). Call with mu held.
func (r *Registry) withShadows(active []*Rule) []*Rule {
	for _, id := range r.sortedIDs() {
		e := r.entries[id]
		if e.shadow == nil || e.rec.Shadow == nil || !e.current().Enabled {
			continue
		}
		sh := *e.shadow
		sh.Name, sh.Severity, sh.Version = e.rec.Name, string(e.rec.Severity), e.rec.Shadow.Version
		e.shadow = &sh
		active = append(active, e.shadow)
	}
	return active
}

// shadowStep is what a refresh does about a record's shadow version.
type shadowStep struct {
	load, drop bool
	inst       *installed
	err        error
}

// shadowStepFor decides it from the cached entry (nil: none yet).
func shadowStepFor(e *entry, rec rules.Record) shadowStep {
	switch {
	case rec.Shadow == nil:
		return shadowStep{drop: e != nil && e.shadow != nil}
	case e == nil || e.shadow == nil || e.rec.Shadow == nil || e.rec.Shadow.SHA256 != rec.Shadow.SHA256 || e.rec.Limits != rec.Limits:
		return shadowStep{load: true}
	}
	return shadowStep{}
}

// admitShadowStep loads the shadow module when the step says so; it takes
// no lock.
func (r *Registry) admitShadowStep(ctx context.Context, rec rules.Record, st *shadowStep) {
	if !st.load {
		return
	}
	module, err := r.store.Module(ctx, rec.Shadow.SHA256)
	if err != nil {
		st.err = fmt.Errorf("read shadow module %s: %w", rec.Shadow.SHA256, err)
		return
	}
	sb, err := r.host.Load(ctx, module, r.limits(rec.Limits))
	if err != nil {
		st.err = err
		return
	}
	st.inst = &installed{sb, module}
}

// applyShadowStep installs what admitShadowStep loaded; call with mu held
// after e.rec is the record the step was made for.
func (r *Registry) applyShadowStep(ctx context.Context, e *entry, st shadowStep) {
	switch {
	case st.drop:
		closeShadow(ctx, e)
	case st.load && st.err != nil:
		closeShadow(ctx, e)
		r.logger.Error("shadow version failed to load; it will not run here", "rule_id", e.rec.ID, "err", st.err)
	case st.load:
		r.setShadow(ctx, e, st.inst.sb)
	}
}
