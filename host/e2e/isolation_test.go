package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func testEnableDisable(t *testing.T) {
	s := startServer(t, serverOptions{})
	s.loadRule(t, "payment-fraud-check")

	send := func() string {
		td, id := sample(t, "payment-fraud-check.violating")
		s.mustExport(t, otlpJSON(t, td), "application/json", "")
		return id
	}
	first := send()
	s.waitQuiet(t, 1)
	s.waitViolations(t, first, 2)

	s.mustJSON(t, http.MethodPost, "/v1/rules/payment-fraud-check/disable", nil, http.StatusOK)
	whileDisabled := send()
	s.waitQuiet(t, 2)
	if vs := s.traceViolations(t, whileDisabled); len(vs) != 0 {
		t.Errorf("a disabled rule reported %d violations", len(vs))
	}
	if ev := num(obj(s.rule(t, "payment-fraud-check"), "stats"), "evaluations"); ev != 1 {
		t.Errorf("a disabled rule was evaluated: %d evaluations, want 1", ev)
	}

	s.mustJSON(t, http.MethodPost, "/v1/rules/payment-fraud-check/enable", nil, http.StatusOK)
	again := send()
	s.waitQuiet(t, 3)
	s.waitViolations(t, again, 2)
	if vs := s.traceViolations(t, whileDisabled); len(vs) != 0 {
		t.Errorf("re-enabling evaluated a trace that completed while the rule was disabled: %d violations", len(vs))
	}
}

func testIsolation(t *testing.T) {
	s := startServer(t, serverOptions{Env: map[string]string{"BETRACE_QUARANTINE_STRIKES": "3", "BETRACE_QUARANTINE_WINDOW": "1m"}})
	s.loadRule(t, "payment-fraud-check")
	s.loadRule(t, "runaway-loop")

	const n = 10
	var ids []string
	for range n {
		td, id := sample(t, "payment-fraud-check.violating")
		s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
		ids = append(ids, id)
	}
	s.waitQuiet(t, n)
	for _, id := range ids {
		// Evaluated is not yet stored: the recorder writes a moment later.
		s.waitViolations(t, id, 2)
	}

	rl := s.rule(t, "runaway-loop")
	if str(rl, "state") != "quarantined" || rl["enabled"] != true {
		t.Fatalf("runaway-loop: state %v enabled %v, want quarantined and still enabled", rl["state"], rl["enabled"])
	}
	if reason := str(rl, "stateReason"); !strings.Contains(reason, "fuel") {
		t.Errorf("runaway-loop: stateReason %q should say it ran out of fuel", reason)
	}
	q := obj(rl, "quarantine")
	if q == nil {
		t.Fatalf("runaway-loop: no quarantine record: %v", rl)
	}
	if str(q, "reason") != "fuel" || !slices.Contains(ids, str(q, "traceId")) || num(q, "fuelUsed") <= 0 ||
		num(q, "strikes") != 3 || str(q, "lastError") == "" {
		t.Errorf("runaway-loop: quarantine %v; want reason fuel, the traceId of a sent trace, fuelUsed > 0, 3 strikes, lastError", q)
	}
	if at, err := time.Parse(time.RFC3339Nano, str(q, "at")); err != nil || time.Since(at) > time.Minute {
		t.Errorf("runaway-loop: quarantine at %v (%v)", q["at"], err)
	}
	// Three strikes quarantine; a call already running on another worker
	// may add one, but the rule must not run on every trace.
	faults := num(obj(rl, "stats"), "errors")
	if faults < 3 || faults >= n {
		t.Errorf("runaway-loop: stats %v, want 3 errors (a few more at most: no evaluation once quarantined)", rl["stats"])
	}
	if ids := ruleIDs(t, s.get(t, "/v1/rules?state=quarantined")); !slices.Equal(ids, []string{"runaway-loop"}) {
		t.Errorf("GET /v1/rules?state=quarantined: %v", ids)
	}
	if pf := s.rule(t, "payment-fraud-check"); str(pf, "state") != "active" || num(obj(pf, "stats"), "errors") != 0 {
		t.Errorf("payment-fraud-check: state %v stats %v, want active without errors", pf["state"], pf["stats"])
	}
	mfs := s.metrics(t)
	if v, _ := metricValue(mfs, "betrace_rule_quarantines_total", map[string]string{"rule_id": "runaway-loop"}); v != 1 {
		t.Errorf(`betrace_rule_quarantines_total{rule_id="runaway-loop"} = %v, want 1`, v)
	}
	if v, _ := metricValue(mfs, "betrace_rule_evaluation_errors_total", map[string]string{"rule_id": "runaway-loop", "reason": "fuel"}); v != float64(faults) {
		t.Errorf(`betrace_rule_evaluation_errors_total{rule_id="runaway-loop",reason="fuel"} = %v, want %d (stats.errors)`, v, faults)
	}
	if v, _ := metricValue(mfs, "betrace_rules", map[string]string{"state": "quarantined"}); v != 1 {
		t.Errorf(`betrace_rules{state="quarantined"} = %v, want 1`, v)
	}

	// Enabling clears the quarantine; the rule runs (and faults) again.
	en := s.mustJSON(t, http.MethodPost, "/v1/rules/runaway-loop/enable", nil, http.StatusOK)
	if str(en, "state") != "active" || en["quarantine"] != nil || str(en, "stateReason") != "" {
		t.Errorf("after enable: state %v quarantine %v stateReason %q; want active, none, empty", en["state"], en["quarantine"], en["stateReason"])
	}
	td, id := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	s.waitQuiet(t, n+1)
	s.waitViolations(t, id, 2)
	rl = s.rule(t, "runaway-loop")
	if str(rl, "state") != "active" || num(obj(rl, "stats"), "errors") != faults+1 {
		t.Errorf("after enable and one trace: state %v stats %v; want active (one new strike) with %d errors", rl["state"], rl["stats"], faults+1)
	}
}
