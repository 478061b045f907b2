package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// cliResult is one run of the betrace binary as an operator command.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

// runBetrace runs the built binary with the test's clean environment plus
// env, and returns what it printed and its exit code.
func runBetrace(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("betrace %q did not finish within 30s", args)
	}
	return cliResult{args: args, stdout: out.String(), stderr: errb.String(), code: exitCode(err)}
}

// want requires exit code code and each fragment in stdout or stderr.
func (r cliResult) want(t testing.TB, code int, stdout []string, stderr ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("betrace %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.args, r.code, code, r.stdout, r.stderr)
		return
	}
	for _, f := range stdout {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("betrace %q: stdout lacks %q:\n%s", r.args, f, r.stdout)
		}
	}
	for _, f := range stderr {
		if !strings.Contains(r.stderr, f) {
			t.Errorf("betrace %q: stderr lacks %q:\n%s", r.args, f, r.stderr)
		}
	}
}

// decode parses stdout as one JSON document.
func (r cliResult) decode(t testing.TB) map[string]any {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("betrace %q: exit %d: %s", r.args, r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("betrace %q --json: not a JSON object (%v):\n%s", r.args, err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("betrace %q --json: more than one JSON document:\n%s", r.args, r.stdout)
	}
	return m
}

// tableRows returns the lines of a table on stdout after its header,
// requiring the header to start with first.
func (r cliResult) tableRows(t testing.TB, first string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], first) {
		t.Fatalf("betrace %q: no table with header %q:\n%s", r.args, first, r.stdout)
	}
	return lines[1:]
}

// TestCLI drives every operator command of the real binary against a real
// server with an API token: rules push (one and several modules, a bad
// one among them, --update), list, get, update, disable/enable, rollback,
// delete, violations list with its filters and paging, status with a
// quarantined rule, and the exit codes for a wrong token, an unreachable
// server, unknown rules and usage errors.
func TestCLI(t *testing.T) {
	t.Parallel()
	const token = "cli-secret"
	s := startServer(t, serverOptions{APIToken: token, Env: map[string]string{"BETRACE_QUARANTINE_STRIKES": "3", "BETRACE_QUARANTINE_WINDOW": "1m"}})
	env := []string{"BETRACE_SERVER=" + s.base, "BETRACE_API_TOKEN=" + token}
	cli := func(args ...string) cliResult {
		t.Helper()
		return runBetrace(t, env, args...)
	}
	pfc, pii, slowDB, nplus1, runaway := modulePath("payment-fraud-check"), modulePath("pii-access-audit"),
		modulePath("checkout-slow-db"), modulePath("n-plus-one-queries"), modulePath("runaway-loop")
	garbage := filepath.Join(t.TempDir(), "garbage.wasm")
	if err := os.WriteFile(garbage, []byte("this is not a WebAssembly module"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Several modules, a bad one between them: ids from the modules, the
	// server's message for the bad one, the others pushed, exit 1.
	cli("rules", "push", pfc, garbage, pii).want(t, 1,
		[]string{"created payment-fraud-check: version 1, CRITICAL, active", "created pii-access-audit: version 1, HIGH, active"},
		"[2/3] pushing "+garbage, "betrace: "+garbage+": not a WebAssembly module", "betrace compile", "1 of 3 files failed")
	for _, id := range []string{"payment-fraud-check", "pii-access-audit"} {
		if r := s.rule(t, id); num(r, "version") != 1 {
			t.Errorf("%s after push: %v", id, r)
		}
	}

	// One module with every metadata flag, --json: the API's rule.
	created := cli("rules", "push", slowDB, "--id", "slow-db", "--name", "Slow DB", "--severity", "low", "--tags", "a,b",
		"--disabled", "--fuel", "5000000", "--memory-pages", "256", "--json").decode(t)
	for k, want := range map[string]any{"id": "slow-db", "name": "Slow DB", "severity": "LOW", "enabled": false, "state": "disabled", "tags": []any{"a", "b"},
		"limits": map[string]any{"fuel": json.Number("5000000"), "memoryPages": json.Number("256")}} {
		if got := created[k]; !jsonEqual(got, want) {
			t.Errorf("push --json: %s = %#v, want %#v", k, got, want)
		}
	}

	// An existing rule: 409 with a hint; --update installs new versions,
	// with several files by the id each module describes.
	cli("rules", "push", pfc).want(t, 1, nil, `betrace: `+pfc+`: rule already exists: "payment-fraud-check"`, "--update")
	// The modules they already run: nothing to install, and no version
	// spent; with a field to change, a new version.
	cli("rules", "push", "--update", pfc, pii).want(t, 0,
		[]string{"unchanged payment-fraud-check: version 1", "unchanged pii-access-audit: version 1", "no new version"})
	cli("rules", "push", "--update", pfc, pii, "--tags", "v2").want(t, 0,
		[]string{"updated payment-fraud-check: version 2", "updated pii-access-audit: version 2"})
	cli("rules", "push", nplus1, "--id", "slow-db", "--update").want(t, 0, []string{"updated slow-db: version 2, LOW, disabled"})
	if sum := str(obj(s.rule(t, "slow-db"), "module"), "sha256"); sum != sha(module(t, "n-plus-one-queries")) {
		t.Errorf("slow-db after push --update runs module %s, want n-plus-one-queries'", sum)
	}

	// list and get: a table naming every rule, and the API's JSON.
	list := cli("rules", "list")
	list.want(t, 0, []string{"ID", "STATE", "SEVERITY", "VERSION", "EVALS", "VIOLATIONS", "ERRORS", "FUEL P99", "NAME"})
	rows := list.tableRows(t, "ID ")
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "payment-fraud-check  active") || !strings.HasPrefix(rows[2], "slow-db") ||
		!strings.Contains(rows[2], "disabled") || !strings.Contains(rows[2], "Slow DB") {
		t.Errorf("rules list table:\n%s", list.stdout)
	}
	listed := cli("rules", "list", "--json").decode(t)
	if ids := ruleIDs(t, listed); !slices.Equal(ids, []string{"payment-fraud-check", "pii-access-audit", "slow-db"}) {
		t.Errorf("rules list --json: %v", ids)
	}
	if ids := ruleIDs(t, cli("rules", "list", "--state", "disabled", "--json").decode(t)); !slices.Equal(ids, []string{"slow-db"}) {
		t.Errorf("rules list --state disabled: %v", ids)
	}
	cli("rules", "get", "payment-fraud-check").want(t, 0,
		[]string{"ID:           payment-fraud-check", "Name:         " + str(s.rule(t, "payment-fraud-check"), "name"), "State:        active", "Severity:     CRITICAL", "in force"})
	if got := cli("rules", "get", "--json", "payment-fraud-check").decode(t); str(got, "id") != "payment-fraud-check" || num(got, "version") != 2 {
		t.Errorf("rules get --json: %v", got)
	}

	// update: a JSON patch, then a new module.
	cli("rules", "update", "pii-access-audit", "--severity", "medium", "--tags", "x,y").want(t, 0, []string{"updated pii-access-audit: version 2, MEDIUM, active"})
	if r := s.rule(t, "pii-access-audit"); str(r, "severity") != "MEDIUM" || !jsonEqual(r["tags"], []any{"x", "y"}) {
		t.Errorf("after update: severity %v tags %v", r["severity"], r["tags"])
	}
	cli("rules", "update", "slow-db", "--module", slowDB, "--name", "Slow DB again").want(t, 0, []string{"updated slow-db: version 3"})
	if r := s.rule(t, "slow-db"); str(r, "name") != "Slow DB again" || str(obj(r, "module"), "sha256") != sha(module(t, "checkout-slow-db")) {
		t.Errorf("after update --module: %v", r)
	}

	// disable and enable.
	cli("rules", "disable", "payment-fraud-check").want(t, 0, []string{"disabled payment-fraud-check: version 2, CRITICAL, disabled"})
	if st := str(s.rule(t, "payment-fraud-check"), "state"); st != "disabled" {
		t.Errorf("after disable: state %s", st)
	}
	cli("rules", "enable", "payment-fraud-check").want(t, 0, []string{"enabled payment-fraud-check: version 2, CRITICAL, active"})

	// rollback: to a named version, then to the one before the current.
	back := cli("rules", "rollback", "slow-db", "--version", "2", "--json").decode(t)
	if num(back, "version") != 4 || str(obj(back, "module"), "sha256") != sha(module(t, "n-plus-one-queries")) {
		t.Errorf("rollback --version 2: version %v module %v", back["version"], back["module"])
	}
	cli("rules", "rollback", "slow-db").want(t, 0, []string{"rolled back slow-db: version 5", "the module of version 3"})
	if sum := str(obj(s.rule(t, "slow-db"), "module"), "sha256"); sum != sha(module(t, "checkout-slow-db")) {
		t.Errorf("after rollback: module %s", sum)
	}
	cli("rules", "rollback", "slow-db", "--version", "99").want(t, 1, nil, "betrace: invalid rule: no version to roll back to")

	// violations: send traces that break two rules.
	td, pfcTrace := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	td, piiTrace := sample(t, "pii-access-audit.violating")
	s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	s.waitQuiet(t, 2)
	nPII := len(s.traceViolations(t, piiTrace))
	if nPII == 0 {
		t.Fatal("the pii-access-audit trace has no violations")
	}
	crit := cli("violations", "list", "--since", "1h", "--severity", "critical")
	crit.want(t, 0, []string{"TIME", "SEVERITY", "RULE", "TRACE", "SPAN", "MESSAGE"})
	rows = crit.tableRows(t, "TIME ")
	if len(rows) != 2 {
		t.Errorf("violations list --severity critical: %d rows, want 2:\n%s", len(rows), crit.stdout)
	}
	for _, row := range rows {
		if !strings.Contains(row, "CRITICAL  payment-fraud-check  "+pfcTrace) || !strings.Contains(row, "fraud.check") {
			t.Errorf("violation row %q", row)
		}
	}
	page := cli("violations", "list", "--since", "1h", "--severity", "critical", "--json").decode(t)
	if vs := objects(t, page["violations"]); len(vs) != 2 || num(page, "totalCount") != 2 || str(vs[0], "ruleId") != "payment-fraud-check" || str(vs[0], "traceId") != pfcTrace {
		t.Errorf("violations list --json: %v", page)
	}
	for _, v := range objects(t, cli("violations", "list", "--trace", piiTrace, "--rule", "pii-access-audit", "--json").decode(t)["violations"]) {
		if str(v, "traceId") != piiTrace || str(v, "severity") != "MEDIUM" {
			t.Errorf("violations list --trace: %v", v)
		}
	}
	total := 2 + nPII
	one := cli("violations", "list", "--limit", "1")
	one.want(t, 0, nil, fmt.Sprintf("1 of %d violations shown", 2+nPII))
	if rows := one.tableRows(t, "TIME "); len(rows) != 1 {
		t.Errorf("violations list --limit 1: %d rows", len(rows))
	}
	all := cli("violations", "list", "--all", "--limit", "1", "--json").decode(t)
	if n := len(objects(t, all["violations"])); n != total || str(all, "nextCursor") != "" || num(all, "totalCount") != int64(total) {
		t.Errorf("violations list --all in pages of 1: %d violations, totalCount %v, nextCursor %q; want %d", n, all["totalCount"], all["nextCursor"], total)
	}
	none := cli("violations", "list", "--until", "1h")
	none.want(t, 0, nil, "no violations match")
	if none.stdout != "" {
		t.Errorf("violations list --until 1h printed %q", none.stdout)
	}
	cli("violations", "list", "--trace", "xyz").want(t, 1, nil, `betrace: trace_id "xyz" must be 32 hexadecimal digits`)

	// status, with a rule quarantined for running out of fuel.
	cli("rules", "push", runaway).want(t, 0, []string{"created runaway-loop"})
	for range 4 {
		td, _ := sample(t, "checkout-slow-db.clean")
		s.mustExport(t, otlpJSON(t, td), "application/json", "")
	}
	eventually(t, 20*time.Second, "runaway-loop quarantined", func() (bool, string) {
		st := str(s.rule(t, "runaway-loop"), "state")
		return st == "quarantined", st
	})
	cli("status").want(t, 0, []string{"Server:  " + s.base, "Status:  READY\n", "Checks:  recorder: ok\n", "rules: ok\n", "storage: ok\n",
		"Rules:   4 (2 active, 1 disabled, 1 quarantined)", "QUARANTINED", "runaway-loop", "quarantined after 3 strikes: fuel"})
	st := cli("status", "--json").decode(t)
	if str(obj(st, "ready"), "status") != "READY" || num(obj(st, "ruleCounts"), "quarantined") != 1 || num(obj(st, "ruleCounts"), "total") != 4 {
		t.Errorf("status --json: %v", st)
	}
	if q := objects(t, st["quarantined"]); len(q) != 1 || str(q[0], "id") != "runaway-loop" || !strings.Contains(str(q[0], "stateReason"), "fuel") {
		t.Errorf("status --json quarantined: %v", st["quarantined"])
	}
	if _, ok := st["clusterMembers"]; ok {
		t.Errorf("a single instance without Redis reports cluster members: %v", st["clusterMembers"])
	}
	cli("rules", "enable", "runaway-loop").want(t, 0, []string{"enabled runaway-loop: version 1, LOW, active"})

	// delete needs --yes.
	cli("rules", "delete", "slow-db").want(t, 2, nil, "add --yes")
	s.rule(t, "slow-db")
	cli("rules", "delete", "slow-db", "--yes").want(t, 0, []string{"deleted slow-db"})
	cli("rules", "get", "slow-db").want(t, 4, nil, `betrace: rule not found: "slow-db"`)

	// Unknown rules: exit 4 with the server's message, from every command.
	for _, args := range [][]string{
		{"rules", "get", "nope"}, {"rules", "update", "nope", "--severity", "low"}, {"rules", "update", "nope", "--module", pfc},
		{"rules", "enable", "nope"}, {"rules", "disable", "nope"}, {"rules", "rollback", "nope"}, {"rules", "delete", "nope", "--yes"},
	} {
		cli(args...).want(t, 4, nil, `betrace: rule not found: "nope"`)
	}

	// A wrong or missing token: exit 5, from the flag or the environment.
	cli("rules", "list", "--token", "wrong").want(t, 5, nil, "betrace: invalid bearer token")
	runBetrace(t, []string{"BETRACE_SERVER=" + s.base}, "violations", "list").want(t, 5, nil, "betrace: missing bearer token")
	runBetrace(t, []string{"BETRACE_SERVER=" + s.base, "BETRACE_API_TOKEN=wrong"}, "rules", "push", pfc, pii).want(t, 5, nil, "invalid bearer token")
	cli("status", "--token", "wrong").want(t, 5, []string{"Status:  READY"}, "invalid bearer token")
	runBetrace(t, nil, "--server", s.base, "--token", token, "rules", "get", "payment-fraud-check").want(t, 0, []string{"payment-fraud-check"})

	// No server: exit 3.
	closed := "http://127.0.0.1:" + mustFreePort(t)
	for _, args := range [][]string{{"rules", "list"}, {"status"}, {"rules", "push", pfc, pii}, {"violations", "list", "--all"}} {
		runBetrace(t, []string{"BETRACE_SERVER=" + closed}, args...).want(t, 3, nil, "cannot reach the server at "+closed)
	}

	// Usage errors: exit 2 and nothing changes.
	cli("rules", "get").want(t, 2, nil, "rules get needs ID")
	cli("rules", "frobnicate").want(t, 2, nil, `unknown command "rules frobnicate"`)
	cli("rules", "push", pfc, pii, "--id", "one").want(t, 2, nil, "--id names one rule")
	cli("violations", "list", "--since", "last tuesday").want(t, 2, nil, "--since")
	if ids := ruleIDs(t, cli("rules", "list", "--json").decode(t)); !slices.Equal(ids, []string{"payment-fraud-check", "pii-access-audit", "runaway-loop"}) {
		t.Errorf("rules at the end: %v", ids)
	}
}

// jsonEqual compares decoded JSON values.
func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// TestCLINewUser walks the operator commands a new user tripped over: each
// now does what its help says, or says what to do instead.
func TestCLINewUser(t *testing.T) {
	s := startServer(t, serverOptions{})
	env := []string{"BETRACE_SERVER=" + s.base}
	dir := t.TempDir()
	btr := filepath.Join(dir, "pay-check.btr")
	if err := os.WriteFile(btr, []byte("when { payment.charge }\nalways { fraud.check }\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// compile: flags after the file; the id defaults to the file name, so
	// the module is admitted as it is.
	out := filepath.Join(dir, "pay.wasm")
	runBetrace(t, env, "compile", btr, "-o", out, "--severity", "high").want(t, 0, nil, "wrote "+out)
	runBetrace(t, env, "rules", "push", out).want(t, 0, []string{"created pay-check"})
	// compile -e needs an id, and never writes binary to a terminal (here
	// stdout is a pipe, so it is written).
	runBetrace(t, env, "compile", "-e", "when { a } never { b }").want(t, 2, nil, "--id")

	// push --update of the very module it runs is no new version.
	runBetrace(t, env, "rules", "push", "--update", out).want(t, 0, []string{"unchanged pay-check", "no new version"})
	if v := num(s.rule(t, "pay-check"), "version"); v != 1 {
		t.Fatalf("an identical module made version %d", v)
	}

	// push of a .btr file: compiled by the server, id from the file name.
	btr2 := filepath.Join(dir, "fraud-dsl.btr")
	if err := os.WriteFile(btr2, []byte("when { payment.charge } always { fraud.check }"), 0o644); err != nil {
		t.Fatal(err)
	}
	runBetrace(t, env, "rules", "push", btr2, "--severity", "critical").want(t, 0, []string{"created fraud-dsl"})
	// rules get shows a DSL rule's expression.
	runBetrace(t, env, "rules", "get", "fraud-dsl").want(t, 0, []string{"Expression:", "when { payment.charge } always { fraud.check }"})
	// A module that is no module names the way out.
	runBetrace(t, env, "rules", "push", btr2+".wasm").want(t, 1, nil, "cannot read it")
	notWasm := filepath.Join(dir, "rule.wasm")
	if err := os.WriteFile(notWasm, []byte("when { a } always { b }"), 0o644); err != nil {
		t.Fatal(err)
	}
	runBetrace(t, env, "rules", "push", notWasm).want(t, 1, nil, "not a WebAssembly module", "betrace compile")

	// A bad severity in a rules file is blamed on the severity, once.
	yaml := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(yaml, []byte("rules:\n  - id: r1\n    name: R1\n    severity: urgent\n    condition: when { a } always { b }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runBetrace(t, env, "rules", "push", yaml)
	r.want(t, 1, []string{"severity"})
	if strings.Contains(r.stdout, "expression") || strings.Count(r.stdout, "urgent") != 1 {
		t.Errorf("bad severity reported as:\n%s", r.stdout)
	}

	// serve --validate says so on success.
	runBetrace(t, env, "serve", "--validate").want(t, 0, []string{"configuration is valid"})

	// violations list shows a long message whole: its end names what
	// was missing.
	missing := "fraud.check.by.the.risk.service.before.any.charge"
	s.mustJSON(t, "POST", "/v1/rules", map[string]any{"id": "long-msg", "expression": `when { payment.charge } always { "` + missing + `" }`}, 201)
	td, traceID := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	eventually(t, 20*time.Second, "the long-msg violation", func() (bool, string) {
		vs := s.violations(t, url.Values{"rule_id": {"long-msg"}, "trace_id": {traceID}})
		return len(vs) > 0, fmt.Sprint(len(vs))
	})
	runBetrace(t, env, "violations", "list", "--rule", "long-msg").want(t, 0, []string{"payment.charge without " + missing})
}
