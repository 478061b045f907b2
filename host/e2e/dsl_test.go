package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testDSLRules: a rule posted as a DSL expression is compiled by the server,
// admitted and metered like any module, and catches its violating OTLP
// trace while ignoring the clean one.
func testDSLRules(t *testing.T) {
	s := startServer(t, serverOptions{})
	const expr = "when { payment.charge } always { fraud.check }"

	// Validation stores nothing.
	ok := s.mustJSON(t, http.MethodPost, "/v1/rules/validate", map[string]any{"expression": expr}, http.StatusOK)
	if ok["valid"] != true {
		t.Fatalf("validate %q: %v", expr, ok)
	}
	bad := s.mustJSON(t, http.MethodPost, "/v1/rules/validate", map[string]any{"expression": "when { a && b } always { c }"}, http.StatusOK)
	errs, _ := bad["errors"].([]any)
	if bad["valid"] != false || len(errs) == 0 || !strings.Contains(errs[0].(map[string]any)["message"].(string), "and") {
		t.Fatalf("validate of the && dialect: %v", bad)
	}
	if rules := s.get(t, "/v1/rules"); num(rules, "totalCount") != 0 {
		t.Fatalf("validate stored a rule: %v", rules)
	}

	// Created from the earlier server's body shape: the id comes from the name.
	created := s.mustJSON(t, http.MethodPost, "/v1/rules", map[string]any{
		"name": "Payments fraud-checked", "description": "every charge has a fraud check",
		"expression": expr, "severity": "critical", "enabled": true, "tags": []string{"payments"},
	}, http.StatusCreated)
	if created["id"] != "payments-fraud-checked" || created["expression"] != expr || obj(created, "module")["source"] != "dsl" || created["severity"] != "CRITICAL" {
		t.Fatalf("created %v", created)
	}
	if size := num(obj(created, "module"), "sizeBytes"); size > 64<<10 {
		t.Fatalf("compiled module is %d bytes", size)
	}

	// Rules using the betrace host functions: one that fires on the
	// violating trace (EUR charges of 12,999 cents) and one that does not
	// (the provider is stripe).
	const euExpr = `when { payment.charge.where(payment.currency matches "^(EUR|GBP)$" and payment.amount_cents > 10000) } always { fraud.check }`
	s.mustJSON(t, http.MethodPost, "/v1/rules", map[string]any{"id": "eu-charges-checked", "expression": euExpr, "severity": "HIGH"}, http.StatusCreated)
	s.mustJSON(t, http.MethodPost, "/v1/rules", map[string]any{"id": "adyen-charges-checked",
		"expression": `when { payment.charge.where(payment.provider contains "adyen") } always { fraud.check }`}, http.StatusCreated)

	td, violating := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	td, clean := sample(t, "payment-fraud-check.clean")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	s.waitQuiet(t, 2)
	vs := s.waitViolations(t, violating, 2)
	byRule := map[any]map[string]any{}
	for _, v := range vs {
		byRule[v["ruleId"]] = v
	}
	if v := byRule["payments-fraud-checked"]; v == nil || v["message"] != "payment.charge without fraud.check" {
		t.Fatalf("violations %v: want payments-fraud-checked with its message", vs)
	}
	if v := byRule["eu-charges-checked"]; v == nil || !strings.Contains(v["message"].(string), "without fraud.check") {
		t.Fatalf("violations %v: want eu-charges-checked", vs)
	}
	if n := len(s.traceViolations(t, clean)); n != 0 {
		t.Fatalf("the clean trace got %d violations", n)
	}

	// A compile error is a 400 that names line and column, and changes nothing.
	r := s.call(t, http.MethodPost, "/v1/rules", map[string]any{"id": "broken", "expression": "when { payment.charge }"})
	if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "1:") {
		t.Fatalf("a rule with no always/never: %d %s", r.Status, r.Body)
	}
	// PUT with a new expression installs a new version.
	updated := s.mustJSON(t, http.MethodPut, "/v1/rules/payments-fraud-checked", map[string]any{"expression": "when { payment.charge } never { payment.refund }"}, http.StatusOK)
	if num(updated, "version") != 2 || updated["expression"] != "when { payment.charge } never { payment.refund }" {
		t.Fatalf("after PUT %v", updated)
	}

	// A module compiled by `betrace compile` and uploaded as wasm still
	// shows the rule as written.
	wasmFile := filepath.Join(t.TempDir(), "admin.wasm")
	const adminExpr = `when { api.request.where(endpoint matches "^/api/v[0-9]+/admin/") } always { auth.check_admin }`
	runBetrace(t, nil, "compile", "-e", adminExpr, "--id", "admin-auth", "-o", wasmFile).want(t, 0, nil)
	wasm, err := os.ReadFile(wasmFile)
	if err != nil {
		t.Fatal(err)
	}
	r = s.do(t, request{Method: http.MethodPost, Path: "/v1/rules", Body: wasm, ContentType: "application/wasm"})
	if r.Status != http.StatusCreated {
		t.Fatalf("upload of the compiled module: %d %s", r.Status, r.Body)
	}
	got := s.rule(t, "admin-auth")
	if expr, _ := got["expression"].(string); strings.Join(strings.Fields(expr), " ") != adminExpr || obj(got, "module")["source"] != "wasm" {
		t.Fatalf("uploaded compiled rule %v: want expression %q (in canonical layout)", got, adminExpr)
	}

	// The earlier project's rules file moves over in one command: a result
	// line per rule, and a non-zero exit because one rule does not compile.
	file := filepath.Join(t.TempDir(), "rules.yaml")
	yamlText := `rules:
- id: pii-needs-auth
  name: PII access needs auth
  description: |
    Reads of PII happen under an auth check.
  severity: high
  condition: when { pii.read } always { auth.check }
- id: broken-rule
  name: Broken
  severity: low
  condition: when { a && b } always { c }
`
	if err := os.WriteFile(file, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runBetrace(t, nil, "rules", "push", "--server", s.base, file)
	res.want(t, 1, []string{"created", "pii-needs-auth", "failed", "broken-rule"})
	if got := s.rule(t, "pii-needs-auth"); got["severity"] != "HIGH" || obj(got, "module")["source"] != "dsl" {
		t.Fatalf("pushed rule %v", got)
	}
}
