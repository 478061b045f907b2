package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/betracehq/betrace/host/registry"
)

// shadowJSON is a rule's version in shadow.
type shadowJSON struct {
	Module  moduleJSON `json:"module"`
	Running bool       `json:"running"`
	Reason  string     `json:"reason,omitempty"`
	Stats   any        `json:"stats"`
}

func toShadowJSON(v *registry.ShadowView) *shadowJSON {
	if v == nil {
		return nil
	}
	return &shadowJSON{Module: moduleJSON(v.Module), Running: v.Running, Reason: v.Reason, Stats: v.Stats}
}

// installShadow installs a module or expression in shadow on a rule: it
// runs on live traffic, its violations stored marked shadow and never
// exported, until promoted or removed.
func (a *api) installShadow(w http.ResponseWriter, r *http.Request) {
	spec, err := a.readSpec(w, r, false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := mux.Vars(r)["id"]
	if len(spec.Module) == 0 {
		a.writeError(w, r, badRequest("a shadow version needs a module: send it as application/wasm or multipart/form-data, or JSON with an \"expression\""))
		return
	}
	if spec.ID != "" && spec.ID != id {
		a.writeError(w, r, badRequest("the body names rule "+spec.ID+" but the path names "+id))
		return
	}
	spec.ID = id
	v, err := a.deps.Rules.InstallShadow(r.Context(), spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}

func (a *api) dropShadow(w http.ResponseWriter, r *http.Request) {
	v, err := a.deps.Rules.DropShadow(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}

// promoteShadow makes the version in shadow the version in force.
func (a *api) promoteShadow(w http.ResponseWriter, r *http.Request) {
	v, err := a.deps.Rules.Promote(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}
