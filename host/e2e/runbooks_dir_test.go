package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRunbooksDir runs every command of deploy/runbooks/*.md that calls the
// BeTrace API, verbatim, against a real server, so that a runbook cannot
// tell on-call to run a command that fails.
//
// A command is a line of a ```bash block (with its continuation lines), or
// a whole for/while/if block, that contains backend:12011. Variable
// assignments earlier in the same block (START=$(date …), RULES=$(curl …))
// run before it. kubectl, docker and helm lines, and lines that do not call
// the API, are not run.
//
// The server is one instance on a real redis-server, so that the Redis
// metrics and readiness check the runbooks read exist. It holds
// payment-fraud-check, whose version 1 recorded violations of a violating
// trace and whose version 2 (runaway-loop's module) was then quarantined
// for running out of fuel, and runaway-loop itself, also quarantined: a
// rule to inspect, roll back and re-enable, exactly as the runbooks do.
// {rule_id} is payment-fraud-check and backend:12011 the server's address.
//
// Each command runs with bash -c under set -eo pipefail, with curl and jq
// wrapped by shell functions so that the text stays verbatim but an HTTP
// error fails curl (--fail-with-body, i.e. -f) and a jq filter that
// yields nothing, null or false fails jq (-e). Commands run grouped by
// what they do, in document order within a group: reads first (while the
// rule is still quarantined), then rollbacks, updates (PUT), disables and
// enables last, so that each finds the state it is written for.
func TestRunbooksDir(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq", "date", "grep", "sort", "awk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the runbook commands need %s, which is not on PATH", tool)
		}
	}
	dir := filepath.Join(repoRoot, "deploy", "runbooks")
	files, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no runbooks (*.md) in %s", dir)
	}
	var cmds []runbookCommand
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		found, skipped, problems := extractRunbookCommands(name, string(src))
		for _, p := range problems {
			t.Error(p)
		}
		if len(found) == 0 {
			t.Errorf("%s: no command calls the BeTrace API (%s): every runbook needs at least one, and this test runs them", name, runbookHost)
		}
		t.Logf("%s: %d API commands to run; %d other commands (kubectl, docker, redis-cli…) not run", name, len(found), skipped)
		cmds = append(cmds, found...)
		if name != "README.md" && name != "post-incident-template.md" {
			checkRunbookShape(t, name, string(src))
		}
	}
	checkRunbookAlerts(t, dir)
	for _, r := range runbookRequired {
		if !slices.ContainsFunc(cmds, func(c runbookCommand) bool { return strings.Contains(c.text, r.text) }) {
			t.Errorf("no runbook has a command to %s: %s", r.what, r.text)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	s := startRunbookServer(t)
	replace := strings.NewReplacer(runbookHost, strings.TrimPrefix(s.base, "http://"), "{rule_id}", runbookRuleID)
	slices.SortStableFunc(cmds, func(a, b runbookCommand) int { return cmp.Compare(a.phase, b.phase) })
	work := t.TempDir() // the commands' working directory (some write files)
	// fixed.wasm is the fix a runbook tests before re-enabling the rule.
	if err := os.WriteFile(filepath.Join(work, "fixed.wasm"), module(t, runbookRuleID), 0o600); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	for i, c := range cmds {
		stdout, stderr, took, err := runbookShell(replace.Replace(c.text), work)
		t.Logf("runbook command %d/%d [%s] %s:%d (exit %s, %s)\n%s\n  stdout: %.240q", i+1, len(cmds), c.phase, c.file, c.line,
			exitText(err), took.Round(time.Millisecond), indent(c.text), stdout)
		if err != nil {
			t.Errorf("%s:%d: the command failed (%v):\n%s\nstdout: %.600s\nstderr: %.600s", c.file, c.line, err, indent(c.text), stdout, stderr)
		}
	}
	t.Logf("ran %d runbook commands in %s", len(cmds), time.Since(began).Round(time.Millisecond))

	// The mutations did what the runbooks say they do.
	r := s.rule(t, runbookRuleID)
	if str(r, "state") != "active" || r["enabled"] != true || r["quarantine"] != nil {
		t.Errorf("%s after the runbooks' rollback and enable: state %v, enabled %v, quarantine %v; want active, enabled, no quarantine",
			runbookRuleID, r["state"], r["enabled"], r["quarantine"])
	}
	if num(r, "version") < 3 {
		t.Errorf("%s: version %v after the runbooks' rollback; want a version above 2", runbookRuleID, r["version"])
	}
	if str(r, "severity") != "MEDIUM" {
		t.Errorf("%s: severity %v after the runbooks' PUT {\"severity\":\"MEDIUM\"}", runbookRuleID, r["severity"])
	}
	if fuel := num(obj(r, "limits"), "fuel"); fuel != 50000000 {
		t.Errorf("%s: fuel budget %d after the runbooks' PUT {\"fuel\": 50000000}", runbookRuleID, fuel)
	}
	if rl := s.rule(t, "runaway-loop"); rl["enabled"] != false {
		t.Errorf("runaway-loop is still enabled after the runbooks' \"disable all rules\" loop: %v", rl["state"])
	}
}

// runbookSections are the parts of every runbook, in this order.
var runbookSections = []string{"## Symptom", "## Impact", "## Diagnosis", "## Mitigation", "## Resolution", "## Prevention"}

var runbookAlertLine = regexp.MustCompile("(?m)^\\*\\*Alert:\\*\\* `(BeTrace[A-Za-z]+)` · \\*\\*Severity:\\*\\* (Critical|Warning|Info) ")

// checkRunbookShape requires the alert line and the six sections.
func checkRunbookShape(t *testing.T, name, src string) {
	t.Helper()
	if !runbookAlertLine.MatchString(src) {
		t.Errorf("%s: no line \"**Alert:** `BeTrace…` · **Severity:** Critical|Warning|Info · …\"", name)
	}
	at := 0
	for _, h := range runbookSections {
		i := strings.Index(src[at:], "\n"+h+"\n")
		if i < 0 {
			t.Errorf("%s: no %q section after the previous one (sections: %s)", name, h, strings.Join(runbookSections, ", "))
			return
		}
		at += i + len(h)
	}
}

// checkRunbookAlerts requires each alert of deploy/prometheus/alerts.yaml
// whose runbook_url names a runbook to be the alert that runbook names.
func checkRunbookAlerts(t *testing.T, dir string) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "alerts.yaml"))
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	alertKey := regexp.MustCompile(`^\s*-\s+alert:\s*(\S+)`)
	urlKey := regexp.MustCompile(`^\s*runbook_url:\s*\S*/deploy/runbooks/([^/\s]+\.md)\s*$`)
	alert := ""
	for _, line := range strings.Split(string(src), "\n") {
		if m := alertKey.FindStringSubmatch(line); m != nil {
			alert = m[1]
			continue
		}
		m := urlKey.FindStringSubmatch(line)
		if m == nil || alert == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, m[1]))
		if err != nil {
			t.Errorf("alert %s: runbook_url names %s, which cannot be read: %v", alert, m[1], err)
			continue
		}
		got := ""
		if named := runbookAlertLine.FindSubmatch(b); named != nil {
			got = string(named[1])
		}
		if got != alert {
			t.Errorf("alert %s links to %s, which names alert %q", alert, m[1], got)
		}
	}
}

// runbookHost is how the runbooks address a BeTrace instance, and
// runbookRuleID what replaces their {rule_id} placeholder.
const (
	runbookHost   = "backend:12011"
	runbookRuleID = "payment-fraud-check"
)

// runbookPrelude runs before every command: errors anywhere fail it, curl
// fails on HTTP errors (showing the error body) and jq on empty, null or
// false results, without changing the command's own text.
const runbookPrelude = `set -eo pipefail
shopt -s inherit_errexit
curl() { command curl -sS --fail-with-body "$@"; }
jq() { command jq -e "$@"; }
`

// runbookRequired are the commands on-call needs for a sandboxed rule;
// some runbook must contain each.
var runbookRequired = []struct{ what, text string }{
	{"check readiness (Redis DEGRADED)", "http://backend:12011/ready"},
	{"find the rule burning fuel", "curl -s http://backend:12011/metrics | grep betrace_rule_fuel_used"},
	{"read each rule's p99 fuel", ".stats.fuelP99"},
	{"see why a rule was quarantined", "curl -s http://backend:12011/v1/rules/{rule_id} | jq '.state, .stateReason, .quarantine'"},
	{"re-enable a rule", "curl -X POST http://backend:12011/v1/rules/{rule_id}/enable"},
	{"disable a rule", "curl -X POST http://backend:12011/v1/rules/{rule_id}/disable"},
	{"roll a rule back", "curl -X POST http://backend:12011/v1/rules/{rule_id}/rollback"},
	{"lower a rule's severity", `curl -X PUT -H 'Content-Type: application/json' -d '{"severity":"MEDIUM"}' http://backend:12011/v1/rules/{rule_id}`},
	{"raise a rule's fuel budget", `curl -X PUT -H 'Content-Type: application/json' -d '{"fuel": 50000000}' http://backend:12011/v1/rules/{rule_id}`},
	{"list a rule's recent violations", `curl "http://backend:12011/v1/violations?start_time=$START&rule_id={rule_id}"`},
	{"disable every rule", "for rule_id in $RULES; do"},
	{"test a fix before re-enabling a rule", "betrace test --server http://backend:12011"},
	{"replay a version over recent traffic", "/replay?version="},
}

// runbookPhase orders the commands: each group needs the state the ones
// before it leave.
type runbookPhase int

const (
	phaseRead     runbookPhase = iota // GETs and ingest probes, while the rule is quarantined
	phaseRollback                     // needs two module versions
	phaseUpdate                       // PUT severity, fuel, memory
	phaseDisable
	phaseEnable // after disable: leaves the rule active
	phaseDelete
)

func (p runbookPhase) String() string {
	return [...]string{"read", "rollback", "update", "disable", "enable", "delete"}[p]
}

func phaseOf(cmd string) runbookPhase {
	switch {
	case strings.Contains(cmd, "-X DELETE"):
		return phaseDelete
	case strings.Contains(cmd, "/enable"):
		return phaseEnable
	case strings.Contains(cmd, "/disable"):
		return phaseDisable
	case strings.Contains(cmd, "-X PUT"):
		return phaseUpdate
	case strings.Contains(cmd, "/rollback"):
		return phaseRollback
	}
	return phaseRead
}

// runbookCommand is one command of a runbook.
type runbookCommand struct {
	file  string // the runbook's file name
	line  int    // where the command starts
	text  string // as written, after the assignments of its block that precede it
	phase runbookPhase
}

var (
	shellAssignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	notRunTools     = regexp.MustCompile(`(^|[\s;|&(])(kubectl|docker|helm)\s`)
	otherAPIHost    = regexp.MustCompile(`(localhost|127\.0\.0\.1|\[::1\]):12011`)
	blockStart      = regexp.MustCompile(`^(for|while|until|if)\s`)
)

// extractRunbookCommands returns the API commands of one runbook, how many
// other commands it skipped, and the mistakes that would let an API call
// escape this test.
func extractRunbookCommands(name, src string) (cmds []runbookCommand, skipped int, problems []string) {
	lines := strings.Split(src, "\n")
	var (
		inFence bool
		lang    string
		prelude []string // assignments seen so far in this block
		pending int      // line of an assignment calling the API that no command has used yet
	)
	isFence := func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "```") }
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if isFence(lines[i]) {
			if !inFence {
				inFence, lang, prelude, pending = true, strings.TrimSpace(strings.TrimPrefix(trimmed, "```")), nil, 0
				continue
			}
			if pending > 0 { // an API call whose result nothing reads is still a command
				cmds = append(cmds, runbookCommand{file: name, line: pending, text: strings.Join(prelude, "\n"), phase: phaseOf(strings.Join(prelude, "\n"))})
			}
			inFence = false
			continue
		}
		switch {
		case !inFence:
			if strings.Contains(trimmed, "curl ") && strings.Contains(trimmed, ":12011") {
				problems = append(problems, fmt.Sprintf("%s:%d: a curl command outside a ```bash block is never run by this test; put it in one", name, i+1))
			}
			continue
		case lang != "bash":
			if strings.Contains(trimmed, ":12011") {
				problems = append(problems, fmt.Sprintf("%s:%d: a call to port 12011 in a ```%s block is never run by this test; use ```bash", name, i+1, lang))
			}
			continue
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		}

		// One command: a line and its continuation lines, or a whole loop
		// or if block.
		start, text := i+1, lines[i]
		block := blockStart.MatchString(trimmed)
		depth := shellDepth(trimmed)
		for i+1 < len(lines) && !isFence(lines[i+1]) &&
			(strings.HasSuffix(strings.TrimRight(lines[i], " \t"), `\`) || (block && depth > 0)) {
			i++
			text += "\n" + lines[i]
			depth += shellDepth(lines[i])
		}
		switch {
		case !block && shellAssignment.MatchString(trimmed):
			prelude = append(prelude, text)
			if strings.Contains(text, runbookHost) {
				pending = start
			}
		case notRunTools.MatchString(text):
			skipped++
		case !strings.Contains(text, runbookHost):
			if otherAPIHost.MatchString(text) {
				problems = append(problems, fmt.Sprintf("%s:%d: the API is called as %s; write http://%s so that this test runs the command", name, start, otherAPIHost.FindString(text), runbookHost))
			}
			skipped++
		default:
			full := strings.Join(append(slices.Clone(prelude), text), "\n")
			cmds = append(cmds, runbookCommand{file: name, line: start, text: full, phase: phaseOf(text)})
			pending = 0
		}
	}
	if inFence {
		problems = append(problems, fmt.Sprintf("%s: a code block is not closed", name))
	}
	return cmds, skipped, problems
}

// shellDepth is how many for/while/until/if blocks a line opens minus how
// many it closes.
func shellDepth(line string) int {
	d := 0
	for _, w := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == ';' }) {
		switch w {
		case "do", "if":
			d++
		case "done", "fi":
			d--
		}
	}
	return d
}

// startRunbookServer starts one instance on Redis holding the rules the
// runbooks act on (see TestRunbooksDir).
func startRunbookServer(t *testing.T) *server {
	t.Helper()
	c := startCluster(t, clusterOptions{Size: 1, Env: fastTimings})
	s := c.nodes[0]
	s.loadRule(t, runbookRuleID)
	s.loadRule(t, "runaway-loop")
	td, traceID := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	sent := 1
	s.waitViolations(t, traceID, 2)

	// Version 2 of payment-fraud-check is a runaway module: it runs out of
	// fuel on every trace and is quarantined, with version 1 to roll back to.
	r := s.do(t, request{Method: http.MethodPut, Path: "/v1/rules/" + runbookRuleID, Body: module(t, "runaway-loop"), ContentType: "application/wasm"})
	if r.Status != http.StatusOK {
		t.Fatalf("PUT a second module version of %s: status %d: %s", runbookRuleID, r.Status, r.Body)
	}
	if v := num(decodeObject(t, r.Body), "version"); v != 2 {
		t.Fatalf("PUT a second module version of %s: version %d, want 2", runbookRuleID, v)
	}
	eventually(t, 20*time.Second, runbookRuleID+" version 2 and runaway-loop quarantined", func() (bool, string) {
		ids := ruleIDs(t, s.get(t, "/v1/rules?state=quarantined"))
		if slices.Equal(ids, []string{runbookRuleID, "runaway-loop"}) {
			return true, ""
		}
		td, _ := sample(t, "payment-fraud-check.violating")
		s.mustExport(t, otlpJSON(t, td), "application/json", "")
		sent++
		return false, fmt.Sprintf("quarantined: %v after %d traces", ids, sent)
	})
	c.waitQuiet(t, float64(sent), 0)
	return s
}

// runbookShell runs one command with bash -c after runbookPrelude.
func runbookShell(command, dir string) (stdout, stderr []byte, took time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", runbookPrelude+command+"\n")
	// The runbooks call betrace itself too: the binary under test.
	cmd.Env = append(cleanEnv(), "LC_ALL=C", "PATH="+filepath.Dir(binPath)+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	began := time.Now()
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), time.Since(began), err
}

func exitText(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// indent shows a command in the log: prompted, without the indentation it
// has inside a Markdown list.
func indent(s string) string {
	lines := strings.Split(s, "\n")
	margin := len(lines[0]) - len(strings.TrimLeft(lines[0], " \t"))
	for i, l := range lines {
		if len(l)-len(strings.TrimLeft(l, " \t")) >= margin {
			l = l[margin:]
		}
		if i == 0 {
			lines[i] = "  $ " + l
		} else {
			lines[i] = "    " + l
		}
	}
	return strings.Join(lines, "\n")
}
