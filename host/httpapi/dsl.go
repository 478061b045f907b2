package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/betracehq/betrace/host/dsl"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
)

// dslError is one problem with a rule's expression, as the API shows it.
type dslError struct {
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Message string `json:"message"`
}

// compileExpression parses and compiles a DSL expression into a module the
// registry admits like any upload. The module describes itself with the
// request's metadata so it also reads well when downloaded.
func compileExpression(expr string, spec *registry.Spec) []dslError {
	r, err := dsl.Parse(expr)
	if err != nil {
		return toDSLErrors(err)
	}
	meta := dsl.Meta{ID: spec.ID}
	if spec.Name != nil {
		meta.Name = *spec.Name
	}
	if spec.Description != nil {
		meta.Description = *spec.Description
	}
	if spec.Severity != nil {
		sev, err := rules.ParseSeverity(*spec.Severity)
		if err != nil {
			return []dslError{{Message: err.Error()}}
		}
		meta.Severity = string(sev)
	}
	module, err := dsl.Compile(r, meta)
	if err != nil {
		return toDSLErrors(err)
	}
	spec.Module, spec.Source, spec.Expression = module, "dsl", &expr
	return nil
}

func toDSLErrors(err error) []dslError {
	var pe *dsl.Error
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Hint != "" {
			msg += " (hint: " + pe.Hint + ")"
		}
		return []dslError{{Line: pe.Line, Column: pe.Column, Message: msg}}
	}
	return []dslError{{Message: strings.TrimPrefix(err.Error(), "dsl: ")}}
}

// ruleIDFromName turns a rule name into an id, for clients of the earlier
// server that created rules by name only.
func ruleIDFromName(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(strings.TrimSpace(name)) {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_'
		switch {
		case ok:
			b.WriteRune(c)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

func expressionError(errs []dslError) *apiError {
	details := make([]string, len(errs))
	for i, e := range errs {
		if e.Line > 0 {
			details[i] = strconv.Itoa(e.Line) + ":" + strconv.Itoa(e.Column) + ": " + e.Message
		} else {
			details[i] = e.Message
		}
	}
	return &apiError{status: http.StatusBadRequest, code: codeInvalidArgument, message: "the expression does not compile: " + details[0], details: details}
}

// validateRule answers whether an expression compiles, storing nothing.
func (a *api) validateRule(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	body, err := readBody(r.Body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var req struct {
		Expression *string `json:"expression"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Expression == nil {
		a.writeError(w, r, badRequest(`send {"expression": "when { … } always { … }"}`))
		return
	}
	var spec registry.Spec
	errs := compileExpression(*req.Expression, &spec)
	if errs == nil {
		errs = []dslError{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"valid": len(errs) == 0, "errors": errs})
}
