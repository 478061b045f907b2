package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/betracehq/betrace/host/internal/testrules"
)

// TestTryRule runs the rule test and replay scenarios against real
// servers, then checks every answer they recorded against api/openapi.yaml.
func TestTryRule(t *testing.T) {
	t.Run("Scenarios", func(t *testing.T) {
		for _, sc := range []struct {
			name string
			fn   func(*testing.T)
		}{
			{"MatchesLive", testTryRuleMatchesLive},
			{"BadInput", testTryRuleBadInput},
			{"CLI", testTryRuleCLI},
			{"Shadow", testShadow},
		} {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.fn(t)
			})
		}
	})
	t.Run("OpenAPIResponses", testOpenAPIResponses)
}

const payDSL = "when { payment.charge } always { fraud.check }"

// triedTrace is one trace sent to a server: the OTLP request and its ID.
type triedTrace struct {
	name string
	td   ptrace.Traces
	id   string
}

// sendMixed sends each sample trace (violating and clean of each real rule)
// copies times under fresh trace IDs and waits until all are evaluated.
func sendMixed(t *testing.T, s *server, copies int) []triedTrace {
	t.Helper()
	var sent []triedTrace
	for range copies {
		for _, id := range testrules.Real {
			for _, kind := range []string{".violating", ".clean"} {
				td, traceID := sample(t, id+kind)
				s.mustExport(t, otlpJSON(t, td), "application/json", "")
				sent = append(sent, triedTrace{id + kind, td, traceID})
			}
		}
	}
	s.waitQuiet(t, len(sent))
	return sent
}

// liveViolations returns what a rule recorded, by trace: "spanId message",
// once every violation it found (betrace_violations_total) is stored: the
// recorder writes them a little after the trace is released.
func liveViolations(t *testing.T, s *server, ruleID string) map[string][]string {
	t.Helper()
	var out map[string][]string
	eventually(t, 15*time.Second, "the violations of "+ruleID+" stored", func() (bool, string) {
		found, _ := metricValue(s.metrics(t), "betrace_violations_total", map[string]string{"rule_id": ruleID})
		out = map[string][]string{}
		vs := s.violations(t, url.Values{"rule_id": {ruleID}})
		for _, v := range vs {
			out[str(v, "traceId")] = append(out[str(v, "traceId")], str(v, "spanId")+" "+str(v, "message"))
		}
		return found > 0 && len(vs) == int(found), fmt.Sprintf("%d stored of %v found", len(vs), found)
	})
	return out
}

// testedViolations reads a test answer the same way, checking that each
// trace's verdict agrees with its violations.
func testedViolations(t *testing.T, res map[string]any) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range objects(t, res["results"]) {
		vs := objects(t, r["violations"])
		if want := map[bool]string{true: "violation", false: "pass"}[len(vs) > 0]; str(r, "verdict") != want {
			t.Errorf("trace %s: verdict %s with %d violations", str(r, "traceId"), str(r, "verdict"), len(vs))
		}
		for _, v := range vs {
			out[str(r, "traceId")] = append(out[str(r, "traceId")], str(v, "spanId")+" "+str(v, "message"))
		}
	}
	return out
}

func sameViolations(t *testing.T, what string, got, want map[string][]string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: nothing was recorded live to compare with", what)
	}
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	for k := range keys {
		g, w := slices.Sorted(slices.Values(got[k])), slices.Sorted(slices.Values(want[k]))
		if !slices.Equal(g, w) {
			t.Errorf("%s: trace %s: tested %v, recorded live %v", what, k, g, w)
		}
	}
}

// multipartTest builds a multipart test request: the rule part, then one
// traces part per trace, protobuf for every other one.
func multipartTest(t *testing.T, rulePart, ruleType string, rule []byte, sent []triedTrace) ([]byte, string) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part := func(name, ctype string, b []byte) {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf("form-data; name=%q", name))
		h.Set("Content-Type", ctype)
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	part(rulePart, ruleType, rule)
	for i, st := range sent {
		if i%2 == 0 {
			part("traces", "application/json", otlpJSON(t, st.td))
		} else {
			part("traces", "application/x-protobuf", otlpProto(t, st.td))
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return body.Bytes(), mw.FormDataContentType()
}

// testTryRuleMatchesLive: a candidate's test verdicts, on the traces given
// or on the same traces from the tape, are exactly what the same rule
// recorded live on those traces; testing stores nothing; a replay of an
// earlier version is compared with the version in force, and a runaway
// candidate is stopped.
func testTryRuleMatchesLive(t *testing.T) {
	s := startServer(t, serverOptions{Env: fastTimings})
	s.loadRule(t, "payment-fraud-check")
	s.mustJSON(t, http.MethodPost, "/v1/rules", map[string]any{"id": "pay-dsl", "severity": "HIGH", "expression": payDSL}, http.StatusCreated)
	sent := sendMixed(t, s, 2)
	liveGo, liveDSL := liveViolations(t, s, "payment-fraud-check"), liveViolations(t, s, "pay-dsl")
	stored := len(s.violations(t, nil))
	rulesBefore := s.get(t, "/v1/rules")

	// The Go rule's module, multipart, traces as OTLP/JSON and protobuf.
	body, ctype := multipartTest(t, "module", "application/wasm", module(t, "payment-fraud-check"), sent)
	r := s.do(t, request{Method: http.MethodPost, Path: "/v1/rules/test", Body: body, ContentType: ctype})
	if r.Status != http.StatusOK {
		t.Fatalf("POST /v1/rules/test (module): %d %s", r.Status, r.Body)
	}
	res := decodeObject(t, r.Body)
	if num(res, "traces") != int64(len(sent)) || num(res, "errors") != 0 {
		t.Errorf("test answer: %d traces, %d errors; want %d, 0", num(res, "traces"), num(res, "errors"), len(sent))
	}
	sameViolations(t, "module test", testedViolations(t, res), liveGo)

	// The DSL rule as JSON, traces as an array of OTLP/JSON requests.
	var docs []json.RawMessage
	for _, st := range sent {
		docs = append(docs, otlpJSON(t, st.td))
	}
	res = s.mustJSON(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": payDSL, "traces": docs}, http.StatusOK)
	sameViolations(t, "expression test", testedViolations(t, res), liveDSL)

	// The same traces from the tape, by ID.
	var ids []string
	for _, st := range sent {
		ids = append(ids, st.id)
	}
	res = s.mustJSON(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": payDSL, "traceIds": ids}, http.StatusOK)
	sameViolations(t, "tape test", testedViolations(t, res), liveDSL)
	for _, r := range objects(t, res["results"]) {
		if num(r, "fuelUsed") == 0 {
			t.Errorf("trace %s: no fuel used", str(r, "traceId"))
		}
	}

	// Nothing was stored or changed.
	if n := len(s.violations(t, nil)); n != stored {
		t.Errorf("tests changed the stored violations: %d before, %d after", stored, n)
	}
	if after := s.get(t, "/v1/rules"); num(after, "totalCount") != num(rulesBefore, "totalCount") {
		t.Errorf("tests changed the rules: %v before, %v after", rulesBefore["totalCount"], after["totalCount"])
	}

	// Version 2 of pay-dsl asks every checkout for a fraud check: it flags
	// what version 1 flags and the slow-database checkouts too. Replaying
	// version 1 against it: those are gone, the payment traces unchanged.
	const v2 = "when { checkout } always { fraud.check }"
	s.mustJSON(t, http.MethodPut, "/v1/rules/pay-dsl", map[string]any{"expression": v2}, http.StatusOK)
	v2res := s.mustJSON(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": v2, "traceIds": ids}, http.StatusOK)
	flagged2 := map[string]bool{}
	for _, r := range objects(t, v2res["results"]) {
		flagged2[str(r, "traceId")] = str(r, "verdict") == "violation"
	}
	var wantNew, wantGone, wantSame []string
	for _, id := range ids {
		switch v1 := len(liveDSL[id]) > 0; {
		case v1 && flagged2[id]:
			wantSame = append(wantSame, id)
		case v1:
			wantNew = append(wantNew, id)
		case flagged2[id]:
			wantGone = append(wantGone, id)
		}
	}
	rep := s.mustJSON(t, http.MethodPost, "/v1/rules/pay-dsl/replay?version=1", nil, http.StatusOK)
	if num(rep, "traces") < int64(len(sent)) || num(rep, "evaluated") != num(rep, "traces") || str(rep, "stopped") != "" {
		t.Errorf("replay: %v traces, %v evaluated, stopped %q; want at least %d, all, not stopped", rep["traces"], rep["evaluated"], str(rep, "stopped"), len(sent))
	}
	d := obj(rep, "diff")
	for _, g := range []struct {
		name string
		want []string
	}{{"new", wantNew}, {"gone", wantGone}, {"unchanged", wantSame}} {
		var got []string
		for _, id := range obj(d, g.name)["traceIds"].([]any) {
			got = append(got, id.(string))
		}
		if num(obj(d, g.name), "count") != int64(len(g.want)) || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(g.want))) {
			t.Errorf("replay diff %s: %v, want %v", g.name, got, g.want)
		}
	}
	if num(d, "version") != 2 || num(obj(rep, "rule"), "version") != 1 {
		t.Errorf("replay compared version %v with %v; want 1 with 2", obj(rep, "rule")["version"], d["version"])
	}
	if len(wantGone) == 0 || len(wantSame) == 0 {
		t.Errorf("the replay scenario should have gone and unchanged traces: %d gone, %d unchanged", len(wantGone), len(wantSame))
	}

	// A runaway candidate: each trace stopped by fuel, the replay by the
	// faults that would quarantine it.
	r = s.do(t, request{Method: http.MethodPost, Path: "/v1/rules/replay?fuel=1000000", Body: module(t, "runaway-loop"), ContentType: "application/wasm"})
	if r.Status != http.StatusOK {
		t.Fatalf("replay runaway-loop: %d %s", r.Status, r.Body)
	}
	rep = decodeObject(t, r.Body)
	if num(rep, "evaluated") != 3 || !strings.Contains(str(rep, "stopped"), "quarantine") || num(obj(obj(rep, "faults"), "byReason"), "fuel") != 3 || num(obj(rep, "fuel"), "max") != 1000000 {
		t.Errorf("replay of runaway-loop: evaluated %v, stopped %q, faults %v, fuel %v", rep["evaluated"], str(rep, "stopped"), rep["faults"], rep["fuel"])
	}
}

// testTryRuleBadInput: each mistake gets a 4xx naming it, and changes
// nothing.
func testTryRuleBadInput(t *testing.T) {
	s := startServer(t, serverOptions{Env: fastTimings})
	s.loadRule(t, "payment-fraud-check")
	td, _ := sample(t, "payment-fraud-check.violating")
	trace := json.RawMessage(otlpJSON(t, td))
	manyIDs := make([]string, 1001)
	for i := range manyIDs {
		manyIDs[i] = fmt.Sprintf("%032x", i+1)
	}
	for _, c := range []struct {
		name      string
		path      string
		body      any
		ctype     string
		status    int
		fragments []string
	}{
		{"no candidate", "/v1/rules/test", map[string]any{"traces": trace}, "", 400, []string{"no candidate rule"}},
		{"no traces", "/v1/rules/test", map[string]any{"expression": payDSL}, "", 400, []string{"no traces"}},
		{"bad expression", "/v1/rules/test", map[string]any{"expression": "when { payment.charge always", "traces": trace}, "", 400, []string{"does not compile"}},
		{"unknown field", "/v1/rules/test", map[string]any{"expresion": payDSL}, "", 400, []string{"expresion"}},
		{"bad trace id", "/v1/rules/test", map[string]any{"expression": payDSL, "traceIds": []string{"xyz"}}, "", 400, []string{"xyz", "32 hex digits"}},
		{"not on the tape", "/v1/rules/test", map[string]any{"expression": payDSL, "traceIds": []string{strings.Repeat("ab", 16)}}, "", 404, []string{"not on this instance's tape"}},
		{"too many traces", "/v1/rules/test", map[string]any{"expression": payDSL, "traceIds": manyIDs}, "", 400, []string{"1001 traces", "at most 1000"}},
		{"malformed OTLP", "/v1/rules/test", map[string]any{"expression": payDSL, "traces": map[string]any{"resourceSpans": "x"}}, "", 400, []string{"traces"}},
		{"unsupported content type", "/v1/rules/replay?fuel=1", []byte("\x00asm"), "text/csv", 415, []string{"Content-Type"}},
		{"replay with traces", "/v1/rules/replay", map[string]any{"expression": payDSL, "traces": trace}, "", 400, []string{"takes none"}},
		{"replay of no rule", "/v1/rules/no-such-rule/replay", nil, "", 404, []string{"no-such-rule"}},
		{"replay of no version", "/v1/rules/payment-fraud-check/replay?version=7", nil, "", 400, []string{"no version 7"}},
		{"replay bad version", "/v1/rules/payment-fraud-check/replay?version=x", nil, "", 400, []string{"version"}},
		{"memory cap too large", "/v1/rules/test", map[string]any{"expression": payDSL, "traces": trace, "memoryPages": 70000}, "", 400, []string{"memoryPages 70000"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r response
			if b, ok := c.body.([]byte); ok {
				r = s.do(t, request{Method: http.MethodPost, Path: c.path, Body: b, ContentType: c.ctype})
			} else {
				r = s.call(t, http.MethodPost, c.path, c.body)
			}
			wantError(t, r, c.status, c.fragments...)
		})
	}
	body, ctype := multipartTest(t, "module", "application/wasm", []byte("not wasm"), []triedTrace{{td: td}})
	wantError(t, s.do(t, request{Method: http.MethodPost, Path: "/v1/rules/test", Body: body, ContentType: ctype}), 400, "module refused")
	if n := len(s.violations(t, nil)); n != 0 {
		t.Errorf("bad requests stored %d violations", n)
	}
	if rl := s.get(t, "/v1/rules"); num(rl, "totalCount") != 1 {
		t.Errorf("bad requests changed the rules: %v", rl["totalCount"])
	}

	// The same admission as an upload: a cap larger than the rule memory
	// budget is refused by both, alike.
	small := startServer(t, serverOptions{Env: mergeEnv(fastTimings, map[string]string{"BETRACE_RULE_MEMORY_BUDGET": "16MiB"})})
	up := small.uploadWasm(t, module(t, "payment-fraud-check"), url.Values{"id": {"big"}, "memory_pages": {"512"}})
	tr := small.call(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": payDSL, "traces": trace, "memoryPages": 512})
	wantError(t, up, http.StatusBadRequest, "BETRACE_RULE_MEMORY_BUDGET")
	wantError(t, tr, up.Status, "BETRACE_RULE_MEMORY_BUDGET")

	off := startServer(t, serverOptions{Env: mergeEnv(fastTimings, map[string]string{"BETRACE_TAPE_BYTES": "0"})})
	wantError(t, off.call(t, http.MethodPost, "/v1/rules/replay", map[string]any{"expression": payDSL}), 409, "BETRACE_TAPE_BYTES=0")
	// A test on given traces needs no tape.
	res := off.mustJSON(t, http.MethodPost, "/v1/rules/test", map[string]any{"expression": payDSL, "traces": trace}, http.StatusOK)
	if num(res, "flagged") != 1 {
		t.Errorf("test with the tape off: %v flagged, want 1", res["flagged"])
	}
}

func mergeEnv(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// testTryRuleCLI: betrace test with a DSL file, -e and --wasm, its table,
// --json and --expect exit codes; betrace replay and rules replay.
func testTryRuleCLI(t *testing.T) {
	s := startServer(t, serverOptions{Env: fastTimings})
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rule := write("pay.btr", []byte(payDSL+"\n"))
	bad, badID := sample(t, "payment-fraud-check.violating")
	good, _ := sample(t, "payment-fraud-check.clean")
	badFile, goodFile := write("bad.json", otlpJSON(t, bad)), write("good.json", otlpJSON(t, good))
	bad2, _ := sample(t, "payment-fraud-check.violating")
	badProto := write("bad.pb", otlpProto(t, bad2))
	wasm := modulePath("payment-fraud-check")
	env := []string{"BETRACE_SERVER=" + s.base}

	runBetrace(t, env, "test", rule, badFile, badProto, "--expect", "violation").want(t, 0, []string{"TRACE", "VIOLATION", badID, "payment.charge", "2 traces, 2 flagged"})
	runBetrace(t, env, "test", rule, goodFile, "--expect", "pass").want(t, 0, []string{"PASS", "1 traces, 0 flagged, 1 passed"})
	runBetrace(t, env, "test", rule, badFile, goodFile, "--expect", "pass").want(t, 1, []string{"FAIL want pass"}, "1 of 2 traces did not get the expected verdict pass")
	runBetrace(t, env, "test", "-e", payDSL, goodFile, "--expect", "violation").want(t, 1, nil, "did not get the expected verdict violation")
	runBetrace(t, env, "test", "--wasm", wasm, badFile, "--expect", "violation").want(t, 0, []string{"VIOLATION"})
	m := runBetrace(t, env, "test", "--wasm", wasm, badFile, "--json").decode(t)
	if num(m, "flagged") != 1 || len(objects(t, m["results"])) != 1 {
		t.Errorf("betrace test --json: %v", m)
	}
	runBetrace(t, env, "test", rule).want(t, 2, nil, "no traces")
	runBetrace(t, env, "test", rule, badFile, "--expect", "maybe").want(t, 2, nil, "--expect")
	runBetrace(t, env, "test", "-e", "when {", badFile).want(t, 1, nil, "does not compile")

	// The tape: the violating trace sent live, then replayed and tested by ID.
	s.loadRule(t, "payment-fraud-check")
	s.mustExport(t, otlpJSON(t, bad), "application/json", "")
	s.waitViolations(t, badID, 2)
	runBetrace(t, env, "test", "-e", payDSL, "--trace-id", badID, "--expect", "violation").want(t, 0, []string{badID})
	runBetrace(t, env, "replay", rule, "--id", "payment-fraud-check").want(t, 0, []string{"on 1 of 1 traces of the tape: 1 flagged", "0 new, 0 gone, 1 unchanged"})
	runBetrace(t, env, "rules", "replay", "payment-fraud-check").want(t, 0, []string{"payment-fraud-check version 1", "1 flagged"})
	runBetrace(t, env, "rules", "replay", "no-such-rule").want(t, 4, nil, "no-such-rule")
}
