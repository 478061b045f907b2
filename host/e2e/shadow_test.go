package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// testShadow: a version installed in shadow runs on live traffic beside the
// version in force; its violations are stored marked shadow, with its
// version, exactly the ones a test of it gives; they are counted under the
// shadow metrics and never exported; promote makes it the version in force.
func testShadow(t *testing.T) {
	col := startCollector(t)
	s := startServer(t, serverOptions{Env: mergeEnv(fastTimings, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": col.URL})})
	const v2 = "when { checkout } always { fraud.check }"
	s.mustJSON(t, http.MethodPost, "/v1/rules", map[string]any{"id": "pay-dsl", "severity": "HIGH", "expression": payDSL}, http.StatusCreated)
	r := s.mustJSON(t, http.MethodPut, "/v1/rules/pay-dsl/shadow", map[string]any{"expression": v2}, http.StatusOK)
	if sh := obj(r, "shadow"); num(r, "version") != 1 || num(obj(sh, "module"), "version") != 2 || sh["running"] != true {
		t.Fatalf("after installing a shadow version: version %v, shadow %v", r["version"], r["shadow"])
	}

	var sent []triedTrace
	for _, name := range []string{"payment-fraud-check.violating", "checkout-slow-db.violating", "payment-fraud-check.clean"} {
		td, id := sample(t, name)
		s.mustExport(t, otlpJSON(t, td), "application/json", "")
		sent = append(sent, triedTrace{name, td, id})
	}
	s.waitQuiet(t, len(sent))
	var ids []string
	for _, st := range sent {
		ids = append(ids, st.id)
	}
	want := func(expr string) map[string][]string {
		return testedViolations(t, s.mustJSON(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": expr, "traceIds": ids}, http.StatusOK))
	}
	wantLive, wantShadow := want(payDSL), want(v2)
	var liveIDs, shadowIDs []string
	gotLive, gotShadow := map[string][]string{}, map[string][]string{}
	eventually(t, 15*time.Second, "the live and shadow violations stored", func() (bool, string) {
		liveIDs, shadowIDs = nil, nil
		gotLive, gotShadow = map[string][]string{}, map[string][]string{}
		for _, v := range s.violations(t, url.Values{"rule_id": {"pay-dsl"}}) {
			key := str(v, "spanId") + " " + str(v, "message")
			if v["shadow"] == true {
				if num(v, "ruleVersion") != 2 {
					t.Errorf("shadow violation %s has rule version %v, want 2", str(v, "id"), v["ruleVersion"])
				}
				gotShadow[str(v, "traceId")] = append(gotShadow[str(v, "traceId")], key)
				shadowIDs = append(shadowIDs, str(v, "id"))
			} else {
				if num(v, "ruleVersion") != 1 {
					t.Errorf("live violation %s has rule version %v, want 1", str(v, "id"), v["ruleVersion"])
				}
				gotLive[str(v, "traceId")] = append(gotLive[str(v, "traceId")], key)
				liveIDs = append(liveIDs, str(v, "id"))
			}
		}
		return countOf(gotLive) == countOf(wantLive) && countOf(gotShadow) == countOf(wantShadow),
			fmt.Sprintf("%d live (want %d), %d shadow (want %d)", countOf(gotLive), countOf(wantLive), countOf(gotShadow), countOf(wantShadow))
	})
	sameViolations(t, "live violations", gotLive, wantLive)
	sameViolations(t, "shadow violations", gotShadow, wantShadow)
	if countOf(wantShadow) <= countOf(wantLive) {
		t.Fatalf("the scenario needs the shadow version to flag more: %d shadow, %d live", countOf(wantShadow), countOf(wantLive))
	}

	mfs := s.metrics(t)
	if n, _ := metricValue(mfs, "betrace_shadow_violations_total", map[string]string{"rule_id": "pay-dsl"}); int(n) != len(shadowIDs) {
		t.Errorf("betrace_shadow_violations_total{rule_id=pay-dsl} = %v, want %d", n, len(shadowIDs))
	}
	if n, _ := metricValue(mfs, "betrace_violations_total", map[string]string{"rule_id": "pay-dsl"}); int(n) != len(liveIDs) {
		t.Errorf("betrace_violations_total{rule_id=pay-dsl} = %v, want the %d live ones only", n, len(liveIDs))
	}

	// Exported: every live violation, no shadow one.
	var exported []string
	eventually(t, 15*time.Second, "the live violations at the collector", func() (bool, string) {
		spans, _ := col.received()
		exported = exported[:0]
		for _, sp := range spans {
			exported = append(exported, sp.attrs["betrace.violation.id"])
		}
		for _, id := range liveIDs {
			if !slices.Contains(exported, id) {
				return false, fmt.Sprintf("%d spans exported, %s not yet", len(spans), id)
			}
		}
		return true, ""
	})
	for _, id := range shadowIDs {
		if slices.Contains(exported, id) {
			t.Errorf("shadow violation %s was exported", id)
		}
	}

	// Promote: the shadow version is the version in force.
	r = s.mustJSON(t, http.MethodPost, "/v1/rules/pay-dsl/promote", nil, http.StatusOK)
	if num(r, "version") != 2 || r["shadow"] != nil || !strings.Contains(str(r, "expression"), "when { checkout }") || len(objects(t, r["versions"])) != 2 {
		t.Errorf("after promote: version %v, shadow %v, expression %q, %d versions", r["version"], r["shadow"], str(r, "expression"), len(objects(t, r["versions"])))
	}
	wantError(t, s.call(t, http.MethodPost, "/v1/rules/pay-dsl/promote", nil), http.StatusBadRequest, "no version in shadow")
	wantError(t, s.call(t, http.MethodDelete, "/v1/rules/pay-dsl/shadow", nil), http.StatusBadRequest, "no version in shadow")
	wantError(t, s.call(t, http.MethodPut, "/v1/rules/pay-dsl/shadow", map[string]any{"severity": "LOW"}), http.StatusBadRequest, "needs a module")
	wantError(t, s.call(t, http.MethodPut, "/v1/rules/no-such-rule/shadow", map[string]any{"expression": v2}), http.StatusNotFound, "no-such-rule")

	// Install and remove.
	s.mustJSON(t, http.MethodPut, "/v1/rules/pay-dsl/shadow", map[string]any{"expression": payDSL}, http.StatusOK)
	if r = s.mustJSON(t, http.MethodDelete, "/v1/rules/pay-dsl/shadow", nil, http.StatusOK); r["shadow"] != nil || num(r, "version") != 2 {
		t.Errorf("after removing the shadow version: shadow %v, version %v", r["shadow"], r["version"])
	}
	if rec := s.rule(t, "pay-dsl"); rec["shadow"] != nil || !strings.Contains(str(rec, "expression"), "checkout") {
		t.Errorf("the rule after its shadow was removed: %v", rec)
	}
}

func countOf(m map[string][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}
