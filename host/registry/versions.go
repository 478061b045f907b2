package registry

import (
	"context"
	"fmt"
	"slices"

	"github.com/betracehq/betrace/host/rules"
)

// Version is one kept module version of a rule, with its bytes and the
// limits the rule runs under now.
type Version struct {
	RuleID  string
	Module  rules.Module
	Bytes   []byte
	Limits  rules.Limits
	Current bool // the version in force
}

// ModuleVersion returns a kept module version of a rule; 0 means the
// version in force. It changes nothing: replays read rules through it.
func (r *Registry) ModuleVersion(ctx context.Context, id string, version int) (Version, error) {
	v, err := r.Get(id)
	if err != nil {
		return Version{}, err
	}
	rec := v.Record
	if version == 0 {
		version = rec.Module.Version
	}
	i := slices.IndexFunc(rec.Versions, func(m rules.Module) bool { return m.Version == version })
	if i < 0 {
		kept := make([]int, len(rec.Versions))
		for j, m := range rec.Versions {
			kept[j] = m.Version
		}
		return Version{}, fmt.Errorf("%w: rule %q has no version %d (kept: %v)", ErrInvalid, id, version, kept)
	}
	m := rec.Versions[i]
	b, err := r.store.Module(ctx, m.SHA256)
	if err != nil {
		return Version{}, fmt.Errorf("read module version %d of %q: %w", version, id, err)
	}
	return Version{RuleID: id, Module: m, Bytes: b, Limits: rec.Limits, Current: version == rec.Module.Version}, nil
}
