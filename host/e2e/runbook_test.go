package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runbookCommands are the curl commands of the runbooks README ("Common
// Diagnosis Commands" and "Common Mitigation Actions"), verbatim: the
// host backend:12011 and {rule_id} are replaced before each runs.
var runbookCommands = []struct {
	name    string
	script  string
	method  string // the request the command makes, checked from Go too
	path    string
	outputs string // what stdout must hold: "json", "metrics" or "grep"
}{
	{"health check", `curl http://backend:12011/health`, "GET", "/health", "json"},
	{"readiness check", `curl http://backend:12011/ready`, "GET", "/ready", "json"},
	{"metrics", `curl http://backend:12011/metrics`, "GET", "/metrics", "metrics"},
	{"list all rules", `curl http://backend:12011/v1/rules`, "GET", "/v1/rules", "json"},
	{"get specific rule", `curl http://backend:12011/v1/rules/{rule_id}`, "GET", "/v1/rules/{rule_id}", "json"},
	{"check rule evaluation stats", `curl http://backend:12011/metrics | grep betrace_rule_evaluation`, "GET", "/metrics", "grep"},
	{"recent violations (last 1h)", `START=$(date -u -d '1 hour ago' +%s)
curl "http://backend:12011/v1/violations?start_time=$START"`, "GET", "/v1/violations?start_time={start}", "json"},
	{"violations by severity", `curl http://backend:12011/v1/violations?severity=CRITICAL`, "GET", "/v1/violations?severity=CRITICAL", "json"},
	{"violations by rule", `curl http://backend:12011/v1/violations?rule_id={rule_id}`, "GET", "/v1/violations?rule_id={rule_id}", "json"},
	{"disable problematic rule", `curl -X POST http://backend:12011/v1/rules/{rule_id}/disable`, "POST", "/v1/rules/{rule_id}/disable", "json"},
}

// runbookEmergency is "Emergency: Disable All Rules", verbatim.
const runbookEmergency = `# List all rule IDs
RULES=$(curl -s http://backend:12011/v1/rules | jq -r '.rules[].id')

# Disable each rule
for rule_id in $RULES; do
  curl -X POST http://backend:12011/v1/rules/$rule_id/disable
done`

func testRunbook(t *testing.T) {
	for _, tool := range []struct{ name, hint string }{
		{"bash", "install bash"},
		{"curl", "install curl (apt-get install curl)"},
		{"jq", "install jq (apt-get install jq)"},
		{"date", "install GNU coreutils"},
		{"grep", "install grep"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			t.Fatalf("the runbook commands need %s, which is not on PATH: %s", tool.name, tool.hint)
		}
	}
	s := startServer(t, serverOptions{})
	const ruleID = "payment-fraud-check"
	s.loadRule(t, ruleID)
	s.loadRule(t, "checkout-slow-db")
	td, traceID := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpJSON(t, td), "application/json", "")
	s.waitQuiet(t, 1)
	s.waitViolations(t, traceID, 2)
	host := strings.TrimPrefix(s.base, "http://")

	for _, c := range runbookCommands {
		script := strings.NewReplacer("backend:12011", host, "{rule_id}", ruleID).Replace(c.script)
		out := runBash(t, c.name, script)
		// The same request from Go: curl without -f exits 0 on any status.
		path := strings.NewReplacer("{rule_id}", ruleID, "{start}", strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)).Replace(c.path)
		if r := s.do(t, request{Method: c.method, Path: path}); r.Status/100 != 2 {
			t.Errorf("runbook %q: %s %s answers %d", c.name, c.method, path, r.Status)
		}
		switch c.outputs {
		case "json":
			var v map[string]any
			if err := json.Unmarshal(out, &v); err != nil {
				t.Errorf("runbook %q: output is not a JSON object (%v): %.300s", c.name, err, out)
				continue
			}
			if _, isErr := v["code"]; isErr {
				t.Errorf("runbook %q: got an error answer: %s", c.name, out)
			}
			if vs, ok := v["violations"].([]any); ok && len(vs) == 0 {
				t.Errorf("runbook %q: no violations listed", c.name)
			}
		case "metrics":
			if !bytes.Contains(out, []byte("betrace_rules{")) {
				t.Errorf("runbook %q: output does not look like BeTrace metrics: %.300s", c.name, out)
			}
		case "grep":
			if len(bytes.TrimSpace(out)) == 0 {
				t.Errorf("runbook %q: grep found nothing", c.name)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.Contains(line, "betrace_rule_evaluation") {
					t.Errorf("runbook %q: unexpected line %q", c.name, line)
				}
			}
		}
	}
	if r := s.rule(t, ruleID); r["enabled"] != false {
		t.Errorf("after the runbook's disable command %s is still enabled", ruleID)
	}

	// The emergency loop, with the ids jq found printed after it.
	s.mustJSON(t, http.MethodPost, "/v1/rules/"+ruleID+"/enable", nil, http.StatusOK)
	script := strings.ReplaceAll(runbookEmergency, "backend:12011", host) + "\nprintf 'RULES=[%s]\\n' \"$(echo $RULES)\"\n"
	out := runBash(t, "emergency: disable all rules", script)
	m := regexp.MustCompile(`RULES=\[([^\]]*)\]`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("emergency loop: no RULES line in %s", out)
	}
	if found := strings.Fields(string(m[1])); !slices.Equal(found, []string{"checkout-slow-db", ruleID}) {
		t.Errorf("emergency loop: jq found rule ids %q, want [checkout-slow-db %s]", found, ruleID)
	}
	for _, r := range objects(t, s.get(t, "/v1/rules")["rules"]) {
		if r["enabled"] != false || str(r, "state") != "disabled" {
			t.Errorf("after the emergency loop rule %s is %v", r["id"], r["state"])
		}
	}
}

// runBash runs a script with bash -c; it must exit 0 within 30 s.
func runBash(t *testing.T, name, script string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = cleanEnv()
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("runbook %q failed (%v):\n%s\nstdout: %.500s\nstderr: %.500s", name, err, script, stdout.String(), stderr.String())
	}
	if testing.Verbose() {
		t.Logf("runbook %q: %s", name, fmt.Sprintf("%.120q", stdout.String()))
	}
	return stdout.Bytes()
}
