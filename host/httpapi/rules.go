package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
)

// ruleJSON is the Rule resource.
type ruleJSON struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Severity    rules.Severity    `json:"severity"`
	Tags        []string          `json:"tags"`
	Enabled     bool              `json:"enabled"`
	State       rules.State       `json:"state"`
	StateReason string            `json:"stateReason"`
	Pending     bool              `json:"pending"`
	Quarantine  *rules.Quarantine `json:"quarantine,omitempty"`
	Expression  string            `json:"expression,omitempty"`
	Module      moduleJSON        `json:"module"`
	Versions    []moduleJSON      `json:"versions"`
	Limits      limitsJSON        `json:"limits"`
	Version     int               `json:"version"`
	CreatedAt   time.Time         `json:"createdAt"`
	UpdatedAt   time.Time         `json:"updatedAt"`
	Stats       any               `json:"stats"`
	Shadow      *shadowJSON       `json:"shadow,omitempty"`
}

type moduleJSON struct {
	Version    int       `json:"version"`
	SHA256     string    `json:"sha256"`
	SizeBytes  int       `json:"sizeBytes"`
	ABIVersion int       `json:"abiVersion"`
	Source     string    `json:"source"`
	CreatedAt  time.Time `json:"createdAt"`
}

type limitsJSON struct {
	Fuel        uint64  `json:"fuel"`
	MemoryPages uint32  `json:"memoryPages"`
	Share       float64 `json:"share,omitempty"` // absent: the service's (BETRACE_RULE_SHARE)
}

func toRuleJSON(v registry.View) ruleJSON {
	rec := v.Record
	eff := sandbox.Limits{Fuel: rec.Limits.Fuel, MemoryPages: rec.Limits.MemoryPages}
	if eff.Fuel == 0 {
		eff.Fuel = sandbox.DefaultFuel
	}
	if eff.MemoryPages == 0 {
		eff.MemoryPages = sandbox.DefaultMemoryPages
	}
	out := ruleJSON{
		ID: rec.ID, Name: rec.Name, Description: rec.Description, Severity: rec.Severity, Tags: rec.Tags,
		Enabled: rec.Enabled, State: v.State, StateReason: v.StateReason, Pending: v.Pending, Quarantine: rec.Quarantine, Expression: rec.Expression,
		Module: moduleJSON(rec.Module), Limits: limitsJSON{Fuel: eff.Fuel, MemoryPages: eff.MemoryPages, Share: rec.Limits.Share},
		Version: rec.Module.Version, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, Stats: v.Stats,
		Versions: make([]moduleJSON, len(rec.Versions)),
	}
	for i, m := range rec.Versions {
		out.Versions[i] = moduleJSON(m)
	}
	out.Shadow = toShadowJSON(v.Shadow)
	if out.Tags == nil {
		out.Tags = []string{}
	}
	return out
}

func (a *api) listRules(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var (
		enabledOnly bool
		severity    rules.Severity
		state       rules.State
		err         error
	)
	if s := first(q, "enabled_only", "enabledOnly"); s != "" {
		if enabledOnly, err = strconv.ParseBool(s); err != nil {
			a.writeError(w, r, badRequest(fmt.Sprintf("enabled_only %q is not a boolean: use true or false", s)))
			return
		}
	}
	if s := q.Get("severity"); s != "" {
		if severity, err = rules.ParseSeverity(s); err != nil {
			a.writeError(w, r, badRequest(err.Error()))
			return
		}
	}
	if s := q.Get("state"); s != "" {
		if state, err = rules.ParseState(s); err != nil {
			a.writeError(w, r, badRequest(err.Error()))
			return
		}
	}
	out := []ruleJSON{}
	for _, v := range a.deps.Rules.List() {
		if (enabledOnly && !v.Record.Enabled) || (severity != "" && v.Record.Severity != severity) || (state != "" && v.State != state) {
			continue
		}
		out = append(out, toRuleJSON(v))
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": out, "totalCount": len(out)})
}

func (a *api) getRule(w http.ResponseWriter, r *http.Request) {
	v, err := a.deps.Rules.Get(mux.Vars(r)["id"])
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}

func (a *api) getModule(w http.ResponseWriter, r *http.Request) {
	b, err := a.deps.Rules.Module(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (a *api) createRule(w http.ResponseWriter, r *http.Request) {
	spec, err := a.readSpec(w, r, true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	v, err := a.deps.Rules.Create(r.Context(), spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/rules/"+url.PathEscape(v.Record.ID))
	writeJSON(w, http.StatusCreated, toRuleJSON(v))
}

func (a *api) updateRule(w http.ResponseWriter, r *http.Request) {
	spec, err := a.readSpec(w, r, false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := mux.Vars(r)["id"]
	if spec.ID != "" && spec.ID != id {
		a.writeError(w, r, badRequest(fmt.Sprintf("the body names rule %q but the path names %q; a rule's id cannot change", spec.ID, id)))
		return
	}
	spec.ID = id
	v, err := a.deps.Rules.Update(r.Context(), spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}

func (a *api) deleteRule(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	if err := a.deps.Rules.Delete(r.Context(), id); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "id": id})
}

func (a *api) enableRule(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := a.deps.Rules.SetEnabled(r.Context(), mux.Vars(r)["id"], enabled)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, toRuleJSON(v))
	}
}

func (a *api) rollbackRule(w http.ResponseWriter, r *http.Request) {
	version := 0
	if s := r.URL.Query().Get("version"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			a.writeError(w, r, badRequest(fmt.Sprintf("version %q must be a positive module version number", s)))
			return
		}
		version = n
	}
	v, err := a.deps.Rules.Rollback(r.Context(), mux.Vars(r)["id"], version)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRuleJSON(v))
}

// metadataJSON is the metadata a client may send: the multipart metadata
// part, or a PUT body. Read-only fields of the Rule resource are accepted
// (so a client can PUT back what it GOT) and ignored; anything else unknown
// is an error.
type metadataJSON struct {
	ID          *string   `json:"id"`
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	Severity    *string   `json:"severity"`
	Tags        *[]string `json:"tags"`
	Enabled     *bool     `json:"enabled"`
	Expression  *string   `json:"expression"`
	Limits      *struct {
		Fuel        *uint64  `json:"fuel"`
		MemoryPages *uint32  `json:"memoryPages"`
		Share       *float64 `json:"share"`
	} `json:"limits"`
	Share        *float64 `json:"share"`
	Fuel         *uint64  `json:"fuel"`
	MemoryPages  *uint32  `json:"memoryPages"`
	MemoryPages2 *uint32  `json:"memory_pages"`

	State       json.RawMessage `json:"state"`
	StateReason json.RawMessage `json:"stateReason"`
	Pending     json.RawMessage `json:"pending"`
	Quarantine  json.RawMessage `json:"quarantine"`
	Module      json.RawMessage `json:"module"`
	Versions    json.RawMessage `json:"versions"`
	Version     json.RawMessage `json:"version"`
	CreatedAt   json.RawMessage `json:"createdAt"`
	UpdatedAt   json.RawMessage `json:"updatedAt"`
	Stats       json.RawMessage `json:"stats"`
}

func (m *metadataJSON) apply(spec *registry.Spec) {
	if m.ID != nil {
		spec.ID = *m.ID
	}
	spec.Name, spec.Description, spec.Severity, spec.Tags, spec.Enabled = m.Name, m.Description, m.Severity, m.Tags, m.Enabled
	spec.Fuel, spec.MemoryPages, spec.Share = m.Fuel, m.MemoryPages, m.Share
	if m.MemoryPages2 != nil {
		spec.MemoryPages = m.MemoryPages2
	}
	if m.Limits != nil {
		if m.Limits.Fuel != nil {
			spec.Fuel = m.Limits.Fuel
		}
		if m.Limits.MemoryPages != nil {
			spec.MemoryPages = m.Limits.MemoryPages
		}
		if m.Limits.Share != nil {
			spec.Share = m.Limits.Share
		}
	}
}

func decodeMetadata(b []byte) (metadataJSON, error) {
	var m metadataJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, badRequest("metadata is not valid JSON for a rule: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return m, badRequest("metadata has data after the JSON object")
	}
	return m, nil
}

// readSpec reads a rule from the request body in any accepted form.
func (a *api) readSpec(w http.ResponseWriter, r *http.Request, create bool) (registry.Spec, error) {
	var spec registry.Spec
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mediaType {
	case "application/wasm", "application/octet-stream":
		body, err := readBody(r.Body)
		if err != nil {
			return spec, err
		}
		if len(body) == 0 {
			// An empty module would read as "no module" and change nothing.
			return spec, badRequest("empty " + mediaType + " body: send the compiled rule module's bytes")
		}
		spec.Module = body
		return spec, specFromQuery(&spec, r.URL.Query())
	case "multipart/form-data":
		if err := readMultipart(r.Body, params["boundary"], &spec); err != nil {
			return spec, err
		}
		return spec, specFromQuery(&spec, r.URL.Query())
	case "application/json", "":
		body, err := readBody(r.Body)
		if err != nil {
			return spec, err
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return spec, badRequest("empty body: send the module as application/wasm, as multipart/form-data with a module part, or (PUT only) a JSON object of the fields to change")
		}
		m, err := decodeMetadata(body)
		if err != nil {
			return spec, err
		}
		m.apply(&spec)
		if m.Expression != nil {
			if create && spec.ID == "" && spec.Name != nil {
				spec.ID = ruleIDFromName(*spec.Name)
			}
			if create && spec.Enabled == nil {
				on := true
				spec.Enabled = &on
			}
			// A bad severity is the metadata's mistake, not the expression's.
			if spec.Severity != nil {
				if _, err := rules.ParseSeverity(*spec.Severity); err != nil {
					return spec, badRequest("severity: " + err.Error())
				}
			}
			if errs := compileExpression(*m.Expression, &spec); errs != nil {
				return spec, expressionError(errs)
			}
			return spec, nil
		}
		if create {
			return spec, badRequest("a new rule needs a module or an expression: send the module as application/wasm (metadata in query parameters) or multipart/form-data, or JSON with an \"expression\"")
		}
		return spec, nil
	}
	return spec, &apiError{status: http.StatusUnsupportedMediaType, code: codeInvalidArgument,
		message: fmt.Sprintf("unsupported Content-Type %q: use application/wasm, multipart/form-data or application/json", mediaType)}
}

func readBody(body io.Reader) ([]byte, error) {
	b, err := io.ReadAll(body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: codeResourceExhausted,
			message: fmt.Sprintf("request body is larger than the %d-byte limit", tooBig.Limit)}
	}
	if err != nil {
		return nil, badRequest("could not read the request body: " + err.Error())
	}
	return b, nil
}

func readMultipart(body io.Reader, boundary string, spec *registry.Spec) error {
	if boundary == "" {
		return badRequest("multipart/form-data without a boundary parameter")
	}
	mr := multipart.NewReader(body, boundary)
	var sawModule bool
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if _, e := readBody(errReader{err}); e != nil {
				return e
			}
			return badRequest("malformed multipart body: " + err.Error())
		}
		b, err := readBody(part)
		if err != nil {
			return err
		}
		switch part.FormName() {
		case "module":
			spec.Module, sawModule = b, true
		case "metadata":
			m, err := decodeMetadata(b)
			if err != nil {
				return err
			}
			if m.Expression != nil {
				return badRequest("metadata may not carry an expression together with a module")
			}
			m.apply(spec)
		default:
			return badRequest(fmt.Sprintf("unexpected multipart part %q: send a module part and an optional metadata part", part.FormName()))
		}
	}
	if !sawModule {
		return badRequest("multipart body has no module part")
	}
	return nil
}

// errReader lets readBody classify an error from the multipart reader
// (which wraps the MaxBytesReader's error).
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// specFromQuery reads metadata from query parameters; they win over the
// multipart metadata part.
func specFromQuery(spec *registry.Spec, q url.Values) error {
	str := func(key string) *string {
		if !q.Has(key) {
			return nil
		}
		v := q.Get(key)
		return &v
	}
	if s := str("id"); s != nil {
		spec.ID = *s
	}
	if s := str("name"); s != nil {
		spec.Name = s
	}
	if s := str("description"); s != nil {
		spec.Description = s
	}
	if s := str("severity"); s != nil {
		spec.Severity = s
	}
	if s := str("tags"); s != nil {
		var tags []string
		for _, t := range strings.Split(*s, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
		spec.Tags = &tags
	}
	if s := str("enabled"); s != nil {
		b, err := strconv.ParseBool(*s)
		if err != nil {
			return badRequest(fmt.Sprintf("enabled %q is not a boolean: use true or false", *s))
		}
		spec.Enabled = &b
	}
	if s := str("fuel"); s != nil {
		n, err := strconv.ParseUint(*s, 10, 64)
		if err != nil || n == 0 {
			return badRequest(fmt.Sprintf("fuel %q must be a positive whole number of instructions", *s))
		}
		spec.Fuel = &n
	}
	for _, key := range []string{"memory_pages", "memoryPages"} {
		if s := str(key); s != nil {
			n, err := strconv.ParseUint(*s, 10, 32)
			if err != nil || n == 0 {
				return badRequest(fmt.Sprintf("%s %q must be a positive number of 64 KiB pages", key, *s))
			}
			p := uint32(n)
			spec.MemoryPages = &p
		}
	}
	return nil
}

func first(q url.Values, keys ...string) string {
	for _, k := range keys {
		if v := q.Get(k); v != "" {
			return v
		}
	}
	return ""
}
