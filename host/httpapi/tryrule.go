package httpapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/betracehq/betrace/host/ingest"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/trial"
)

// candidateID names a candidate that names no rule, in its compiled module
// and in answers.
const candidateID = "candidate"

// candidateRequest is a rule to try and, for a test, the traces to try it on.
type candidateRequest struct {
	spec     registry.Spec
	named    bool // the request gave an id
	traces   [][]traces.Span
	traceIDs [][16]byte
}

// candidateJSON is the JSON form of a test or replay request.
type candidateJSON struct {
	ID          *string         `json:"id"`
	Name        *string         `json:"name"`
	Severity    *string         `json:"severity"`
	Expression  *string         `json:"expression"`
	Fuel        *uint64         `json:"fuel"`
	MemoryPages *uint32         `json:"memoryPages"`
	Traces      json.RawMessage `json:"traces"`
	TraceIDs    []string        `json:"traceIds"`
}

const candidateForms = "send JSON {\"expression\": …, \"traces\": <OTLP/JSON>} or {\"expression\": …, \"traceIds\": […]}, " +
	"multipart/form-data with a module or expression part and traces parts (OTLP/JSON or application/x-protobuf), " +
	"or application/wasm with trace_id query parameters"

// readCandidate reads a candidate in any accepted form. withTraces: the
// request must also carry traces (a test); otherwise it may not (a replay).
func (a *api) readCandidate(w http.ResponseWriter, r *http.Request, withTraces bool) (candidateRequest, error) {
	var c candidateRequest
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var expression *string
	switch mediaType {
	case "application/wasm", "application/octet-stream":
		body, err := readBody(r.Body)
		if err != nil {
			return c, err
		}
		if len(body) == 0 {
			return c, badRequest("empty " + mediaType + " body: send the candidate rule module's bytes")
		}
		c.spec.Module = body
	case "multipart/form-data":
		var err error
		if expression, err = a.readCandidateParts(r.Body, params["boundary"], &c); err != nil {
			return c, err
		}
	case "application/json", "":
		body, err := readBody(r.Body)
		if err != nil {
			return c, err
		}
		var req candidateJSON
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return c, badRequest("the body is not a JSON candidate: "+strings.TrimPrefix(err.Error(), "json: "), candidateForms)
		}
		if req.ID != nil {
			c.spec.ID = *req.ID
		}
		c.spec.Name, c.spec.Severity, c.spec.Fuel, c.spec.MemoryPages = req.Name, req.Severity, req.Fuel, req.MemoryPages
		expression = req.Expression
		if len(req.Traces) > 0 {
			if err := a.addOTLPJSON(&c, req.Traces, "traces"); err != nil {
				return c, err
			}
		}
		for _, s := range req.TraceIDs {
			if err := addTraceID(&c, s); err != nil {
				return c, err
			}
		}
	default:
		return c, &apiError{status: http.StatusUnsupportedMediaType, code: codeInvalidArgument,
			message: fmt.Sprintf("unsupported Content-Type %q: use application/json, multipart/form-data or application/wasm", mediaType)}
	}
	if err := specFromQuery(&c.spec, r.URL.Query()); err != nil {
		return c, err
	}
	for _, s := range r.URL.Query()["trace_id"] {
		if err := addTraceID(&c, s); err != nil {
			return c, err
		}
	}
	c.named = c.spec.ID != ""
	switch {
	case expression != nil && c.spec.Module != nil:
		return c, badRequest("send either a module or an expression, not both")
	case expression != nil:
		if c.spec.ID == "" {
			c.spec.ID = candidateID
		}
		if errs := compileExpression(*expression, &c.spec); errs != nil {
			return c, expressionError(errs)
		}
	case c.spec.Module == nil:
		return c, badRequest("no candidate rule: give an expression or a module", candidateForms)
	}
	n := len(c.traces) + len(c.traceIDs)
	switch {
	case withTraces && n == 0:
		return c, badRequest("no traces to test the rule on: give OTLP traces or trace IDs from this instance's tape", candidateForms)
	case !withTraces && n > 0:
		return c, badRequest("a replay runs on the tape of recent traces and takes none: to try given traces use POST /v1/rules/test")
	case n > a.trialConfig().MaxTraces:
		return c, badRequest(fmt.Sprintf("%d traces in one test, at most %d", n, a.trialConfig().MaxTraces))
	}
	return c, nil
}

func (a *api) trialConfig() trial.Config { return a.deps.Trial.Config() }

// readCandidateParts reads a multipart test or replay request: a module or
// expression part, an optional metadata part, any number of traces parts
// and traceIds parts. It returns the expression, if one was sent.
func (a *api) readCandidateParts(body io.Reader, boundary string, c *candidateRequest) (*string, error) {
	if boundary == "" {
		return nil, badRequest("multipart/form-data without a boundary parameter")
	}
	mr := multipart.NewReader(body, boundary)
	var expression *string
	tracesPart := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return expression, nil
		}
		if err != nil {
			if _, e := readBody(errReader{err}); e != nil {
				return nil, e
			}
			return nil, badRequest("malformed multipart body: " + err.Error())
		}
		b, err := readBody(part)
		if err != nil {
			return nil, err
		}
		switch name := part.FormName(); name {
		case "module":
			c.spec.Module = b
		case "expression":
			s := string(b)
			expression = &s
		case "metadata":
			m, err := decodeMetadata(b)
			if err != nil {
				return nil, err
			}
			if m.Expression != nil {
				s := *m.Expression
				expression = &s
			}
			m.apply(&c.spec)
		case "traces":
			tracesPart++
			where := fmt.Sprintf("traces part %d", tracesPart)
			mt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
			if mt == "application/x-protobuf" || mt == "application/protobuf" {
				spans, rejected, err := ingest.DecodeProto(b)
				if err := a.addSpans(c, spans, rejected, err, where); err != nil {
					return nil, err
				}
				continue
			}
			if err := a.addOTLPJSON(c, b, where); err != nil {
				return nil, err
			}
		case "traceIds", "trace_id":
			for _, s := range strings.FieldsFunc(string(b), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
				if err := addTraceID(c, s); err != nil {
					return nil, err
				}
			}
		default:
			return nil, badRequest(fmt.Sprintf("unexpected multipart part %q: send module or expression, optional metadata, and traces or traceIds parts", name))
		}
	}
}

// addOTLPJSON reads an OTLP/JSON ExportTraceServiceRequest, or an array of
// them (one per file, as the CLI sends them).
func (a *api) addOTLPJSON(c *candidateRequest, raw []byte, where string) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		var docs []json.RawMessage
		if err := json.Unmarshal(raw, &docs); err != nil {
			return badRequest(where + " is not an array of OTLP/JSON requests: " + strings.TrimPrefix(err.Error(), "json: "))
		}
		for i, d := range docs {
			spans, rejected, err := ingest.DecodeJSON(d)
			if err := a.addSpans(c, spans, rejected, err, fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
		return nil
	}
	spans, rejected, err := ingest.DecodeJSON(raw)
	return a.addSpans(c, spans, rejected, err, where)
}

// addSpans groups decoded spans into traces, in the order each trace first
// appears. A span that live ingest would refuse fails the whole request:
// a test on part of a trace would not say what the rule does live.
func (a *api) addSpans(c *candidateRequest, spans []traces.Span, rejected []ingest.Rejected, err error, where string) error {
	if err != nil {
		return badRequest(fmt.Sprintf("%s: %v", where, err))
	}
	if len(rejected) > 0 {
		details := make([]string, 0, len(rejected))
		for _, r := range rejected {
			details = append(details, r.String())
		}
		return badRequest(fmt.Sprintf("%s: %d spans would be refused by ingest, first: %s", where, len(rejected), details[0]), details...)
	}
	index := make(map[[16]byte]int, len(c.traces))
	for i, t := range c.traces {
		index[t[0].TraceID] = i
	}
	for _, s := range spans {
		i, ok := index[s.TraceID]
		if !ok {
			i = len(c.traces)
			index[s.TraceID] = i
			c.traces = append(c.traces, nil)
		}
		c.traces[i] = append(c.traces[i], s)
		if max := a.trialConfig().MaxSpans; len(c.traces[i]) > max {
			return badRequest(fmt.Sprintf("%s: trace %s has more than %d spans, the most one trace holds live (BETRACE_TRACE_MAX_SPANS)", where, hex.EncodeToString(s.TraceID[:]), max))
		}
	}
	return nil
}

func addTraceID(c *candidateRequest, s string) error {
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return badRequest(fmt.Sprintf("trace ID %.64q is not 32 hex digits", s))
	}
	var id [16]byte
	copy(id[:], b)
	c.traceIDs = append(c.traceIDs, id)
	return nil
}

// loadCandidate admits a candidate as an upload would be admitted.
func (a *api) loadCandidate(ctx context.Context, spec registry.Spec) (*sandbox.Sandbox, error) {
	c := trial.Candidate{Module: spec.Module}
	if spec.Fuel != nil {
		c.Fuel = *spec.Fuel
	}
	if spec.MemoryPages != nil {
		c.MemoryPages = *spec.MemoryPages
	}
	sb, err := a.deps.Trial.Load(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", registry.ErrRefused, err)
	}
	return sb, nil
}

// candidateRule names the candidate in an answer: what the request said,
// else what the module says about itself.
func candidateRule(spec registry.Spec, sb *sandbox.Sandbox) map[string]any {
	d := sb.Description()
	id, name, severity := spec.ID, d.Name, d.Severity
	if id == "" {
		id = d.ID
	}
	if id == "" {
		id = candidateID
	}
	if spec.Name != nil {
		name = *spec.Name
	}
	if spec.Severity != nil {
		severity = strings.ToUpper(*spec.Severity)
	}
	lim := sb.Limits()
	return map[string]any{"id": id, "name": name, "severity": severity, "limits": map[string]any{"fuel": lim.Fuel, "memoryPages": lim.MemoryPages}}
}

// testRule runs a candidate on the request's traces, storing nothing.
func (a *api) testRule(w http.ResponseWriter, r *http.Request) {
	c, err := a.readCandidate(w, r, true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	inputs := make([]trial.Input, 0, len(c.traces)+len(c.traceIDs))
	for _, spans := range c.traces {
		inputs = append(inputs, trial.Input{Spans: spans})
	}
	tape := a.deps.Trial.Tape()
	if len(c.traceIDs) > 0 && !tape.Enabled() {
		a.writeError(w, r, trial.ErrNoTape)
		return
	}
	for _, id := range c.traceIDs {
		e, ok := tape.Find(id)
		if !ok {
			n, b := tape.Len()
			a.writeError(w, r, &apiError{status: http.StatusNotFound, code: codeNotFound,
				message: fmt.Sprintf("trace %s is not on this instance's tape, which holds the last %d completed traces (%d bytes); send the trace itself instead", hex.EncodeToString(id[:]), n, b)})
			return
		}
		inputs = append(inputs, trial.Input{Entry: &e})
	}
	sb, err := a.loadCandidate(r.Context(), c.spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer sb.Close(context.WithoutCancel(r.Context()))
	tr, err := a.deps.Trial.Test(r.Context(), sb, inputs)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	counts := map[string]int{}
	for _, res := range tr.Results {
		counts[res.Verdict]++
	}
	body := map[string]any{
		"rule": candidateRule(c.spec, sb), "traces": len(tr.Results),
		"flagged": counts[trial.VerdictViolation], "passed": counts[trial.VerdictPass], "errors": counts[trial.VerdictError],
		"results": tr.Results,
	}
	if tr.Stopped != "" {
		body["stopped"] = tr.Stopped
	}
	writeJSON(w, http.StatusOK, body)
}

// replayCandidate replays a posted candidate on the tape; when its id names
// a stored rule, against that rule's version in force.
func (a *api) replayCandidate(w http.ResponseWriter, r *http.Request) {
	c, err := a.readCandidate(w, r, false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if !a.deps.Trial.Tape().Enabled() {
		a.writeError(w, r, trial.ErrNoTape)
		return
	}
	sb, err := a.loadCandidate(r.Context(), c.spec)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer sb.Close(context.WithoutCancel(r.Context()))
	opt := trial.ReplayOptions{Candidate: sb}
	if c.named {
		if _, err := a.deps.Rules.Get(c.spec.ID); err == nil {
			base, v, err := a.loadVersion(r.Context(), c.spec.ID, 0)
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			defer base.Close(context.WithoutCancel(r.Context()))
			opt.Baseline, opt.RuleID, opt.Version = base, c.spec.ID, v.Module.Version
		}
	}
	a.replay(w, r, opt, candidateRule(c.spec, sb))
}

// replayStored replays a stored rule's version (default the one in force)
// on the tape, against the version in force.
func (a *api) replayStored(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	version := 0
	if s := r.URL.Query().Get("version"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			a.writeError(w, r, badRequest(fmt.Sprintf("version %q must be a positive module version number", s)))
			return
		}
		version = n
	}
	if _, err := a.deps.Rules.Get(id); err != nil {
		a.writeError(w, r, err)
		return
	}
	if !a.deps.Trial.Tape().Enabled() {
		a.writeError(w, r, trial.ErrNoTape)
		return
	}
	cand, cv, err := a.loadVersion(r.Context(), id, version)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer cand.Close(context.WithoutCancel(r.Context()))
	base, bv, err := a.loadVersion(r.Context(), id, 0)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer base.Close(context.WithoutCancel(r.Context()))
	rule := candidateRule(registry.Spec{ID: id}, cand)
	rule["version"] = cv.Module.Version
	a.replay(w, r, trial.ReplayOptions{Candidate: cand, Baseline: base, RuleID: id, Version: bv.Module.Version}, rule)
}

// loadVersion admits a stored version of a rule in a sandbox of its own,
// under the rule's limits: the live rule's own sandbox is left to live
// evaluation.
func (a *api) loadVersion(ctx context.Context, id string, version int) (*sandbox.Sandbox, registry.Version, error) {
	v, err := a.deps.Rules.ModuleVersion(ctx, id, version)
	if err != nil {
		return nil, v, err
	}
	spec := registry.Spec{Module: v.Bytes}
	if v.Limits.Fuel > 0 {
		spec.Fuel = &v.Limits.Fuel
	}
	if v.Limits.MemoryPages > 0 {
		spec.MemoryPages = &v.Limits.MemoryPages
	}
	sb, err := a.loadCandidate(ctx, spec)
	return sb, v, err
}

func (a *api) replay(w http.ResponseWriter, r *http.Request, opt trial.ReplayOptions, rule map[string]any) {
	res, err := a.deps.Trial.Replay(r.Context(), opt)
	if errors.Is(err, trial.ErrBusy) {
		w.Header().Set("Retry-After", "1")
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Rule map[string]any `json:"rule"`
		trial.ReplayResult
	}{rule, res})
}

// trialError maps the runner's errors to statuses; toAPIError consults it
// for errors its table does not know.
func trialError(err error) (*apiError, bool) {
	switch {
	case errors.Is(err, trial.ErrBusy):
		return &apiError{status: http.StatusTooManyRequests, code: codeResourceExhausted, message: err.Error()}, true
	case errors.Is(err, trial.ErrNoTape):
		return &apiError{status: http.StatusConflict, code: codeFailedPrecondition, message: err.Error()}, true
	case errors.Is(err, trial.ErrTooMany):
		return badRequest(err.Error()), true
	}
	return nil, false
}
