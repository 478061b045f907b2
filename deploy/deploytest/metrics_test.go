package deploytest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// prometheusMade are series that Prometheus makes itself, not BeTrace.
var prometheusMade = map[string]bool{
	"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true,
	"scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
}

// clusterMetrics are exported only in cluster mode (BETRACE_REDIS_URL set).
var clusterMetrics = []string{
	"betrace_redis_up", "betrace_cluster_members", "betrace_spans_forwarded_total",
	"betrace_forward_errors_total", "betrace_violations_spooled", "betrace_rule_sync_lag_seconds",
}

// targetLabels are added by Prometheus at scrape time, not exported.
var targetLabels = map[string]bool{"job": true, "instance": true}

const alertsFile = "deploy/prometheus/alerts.yaml"

// memoryLimit is the BETRACE_MEMORY_LIMIT of the embedded server; the
// Go collector must export it as go_gc_gomemlimit_bytes (BeTraceHighMemory
// divides by it).
const memoryLimit = 512 << 20

func readAlerts(t *testing.T) *ruleFile {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, alertsFile))
	if err != nil {
		t.Fatalf("read the alert rules: %v", err)
	}
	rf, err := parseRuleFile(alertsFile, string(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(rf.exprs) == 0 {
		t.Fatalf("%s: no rule expressions found", alertsFile)
	}
	return rf
}

// deployExpressions returns the expressions of alerts.yaml and of every
// Grafana dashboard in deploy/grafana (when that folder exists).
func deployExpressions(t *testing.T) ([]expression, *ruleFile) {
	t.Helper()
	rf := readAlerts(t)
	exprs := slices.Clone(rf.exprs)
	dashboards, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "grafana", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range dashboards {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, path)
		es, err := grafanaExprs(rel, src)
		if err != nil {
			t.Fatalf("read a Grafana dashboard: %v", err)
		}
		if len(es) == 0 {
			t.Errorf("%s: no Prometheus expression found", rel)
		}
		exprs = append(exprs, es...)
	}
	t.Logf("%d expressions: %d alert rules, %d Grafana dashboards", len(exprs), len(rf.exprs), len(dashboards))
	return exprs, rf
}

// TestDeployMetricsExposed checks that every metric named by an alert or a
// dashboard is exported by a real `betrace serve`, that the labels the
// alerts select on exist, and that the gauges the alerts rely on hold what
// the alerts assume.
func TestDeployMetricsExposed(t *testing.T) {
	exprs, rf := deployExpressions(t)
	uses := map[string][]string{} // metric -> where it is used
	for _, e := range exprs {
		for _, name := range metricNames(e.expr) {
			if prometheusMade[name] || slices.Contains(rf.recorded, name) {
				continue
			}
			if !slices.Contains(uses[name], e.where) {
				uses[name] = append(uses[name], e.where)
			}
		}
	}
	if len(uses) == 0 {
		t.Fatal("no metric name found in the expressions")
	}

	var embedded, clustered *exposition
	t.Run("servers", func(t *testing.T) {
		t.Run("embedded", func(t *testing.T) {
			t.Parallel()
			embedded = embeddedExposition(t)
		})
		t.Run("redis", func(t *testing.T) {
			t.Parallel()
			clustered = clusterExposition(t)
		})
	})
	if embedded == nil || clustered == nil {
		t.Fatal("a server scenario failed; nothing to check the expressions against")
	}

	names := make([]string, 0, len(uses))
	for name := range uses {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case embedded.has(name):
		case clustered.has(name):
			t.Logf("%s: exported in cluster mode only", name)
		default:
			t.Errorf("%s, used by %s, is not exported by betrace serve (embedded store or Redis)", name, strings.Join(uses[name], "; "))
		}
	}
	for _, name := range clusterMetrics {
		if !clustered.has(name) {
			t.Errorf("%s is not exported by betrace serve on Redis", name)
		}
	}

	// The label names alerts.yaml selects on exist on those metrics.
	for _, e := range rf.exprs {
		for metric, labels := range selectorLabels(e.expr) {
			if prometheusMade[metric] {
				continue
			}
			exp := embedded
			if !exp.has(metric) {
				exp = clustered
			}
			seen := exp.labelNames(metric)
			for _, l := range labels {
				if !targetLabels[l] && !seen[l] {
					t.Errorf("%s: %s has no label %q (it has %v)", e.where, metric, l, slices.Sorted(func(yield func(string) bool) {
						for k := range seen {
							if !yield(k) {
								return
							}
						}
					}))
				}
			}
		}
	}

	checkAlertAssumptions(t, embedded, clustered)
}

// checkAlertAssumptions checks what the alert rules assume of the values
// and label values of the metrics they use.
func checkAlertAssumptions(t *testing.T, embedded, clustered *exposition) {
	t.Helper()
	for _, c := range []struct {
		exp    *exposition
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
		alert  string
	}{
		{embedded, "go_gc_gomemlimit_bytes", nil, func(v float64) bool { return v == memoryLimit },
			fmt.Sprintf("%d (BETRACE_MEMORY_LIMIT)", memoryLimit), "BeTraceHighMemory"},
		{embedded, "process_resident_memory_bytes", nil, func(v float64) bool { return v > 0 }, "> 0", "BeTraceHighMemory"},
		{embedded, "go_sched_gomaxprocs_threads", nil, func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceHighCPU"},
		{embedded, "process_cpu_seconds_total", nil, func(v float64) bool { return v > 0 }, "> 0", "BeTraceHighCPU"},
		{embedded, "betrace_rules", map[string]string{"state": "quarantined"}, func(v float64) bool { return v == 1 }, "1", "BeTraceRuleQuarantined"},
		{embedded, "betrace_violations_total", map[string]string{"rule_id": "payment-fraud-check", "severity": "CRITICAL"},
			func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceCriticalViolationSpike"},
		{embedded, "betrace_rule_evaluation_total", map[string]string{"rule_id": "runaway-loop", "result": "error"},
			func(v float64) bool { return v >= 3 }, ">= 3", "BeTraceHighErrorRate"},
		{embedded, "betrace_ingest_requests_total", map[string]string{"transport": "otlp_http", "outcome": "malformed"},
			func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceIngestBackpressure"},
		{embedded, "betrace_ingest_requests_total", map[string]string{"transport": "otlp_http", "outcome": "ok"},
			func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceIngestBackpressure"},
		{embedded, "http_requests_total", map[string]string{"route": "/v1/rules/{id}", "status": "404"},
			func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceHighErrorRate"},
		{embedded, "http_requests_total", map[string]string{"route": "/v1/traces", "status": "400"},
			func(v float64) bool { return v >= 1 }, ">= 1", "BeTraceHighErrorRate"},
		{embedded, "betrace_compliance_span_emissions_failed_total", map[string]string{"reason": "retries_exhausted"},
			func(v float64) bool { return v == 0 }, "0 (exported before any failure)", "BeTraceComplianceEmissionFailure"},
		{clustered, "betrace_redis_up", nil, func(v float64) bool { return v == 1 }, "1", "BeTraceRedisDown"},
	} {
		v, found := c.exp.value(c.name, c.labels)
		switch {
		case !found:
			t.Errorf("%s relies on %s%s, which is not exported", c.alert, c.name, formatLabels(c.labels))
		case !c.ok(v):
			t.Errorf("%s relies on %s%s being %s; it is %g", c.alert, c.name, formatLabels(c.labels), c.want, v)
		}
	}
}

func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ", ") + "}"
}

// embeddedExposition runs a server on its embedded store, makes it evaluate
// violating traces, quarantine a faulting rule and answer a malformed
// request and an unknown route, and returns its /metrics.
func embeddedExposition(t *testing.T) *exposition {
	s := startServer(t, map[string]string{"BETRACE_MEMORY_LIMIT": "512MiB"})

	var wg sync.WaitGroup
	errs := make([]error, len(exampleRules))
	for i, id := range exampleRules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			module, err := os.ReadFile(modulePath(id))
			if err == nil {
				var status int
				var body []byte
				status, body, err = s.request(http.MethodPost, "/v1/rules", "application/wasm", module)
				if err == nil && status != http.StatusCreated {
					err = fmt.Errorf("status %d: %s", status, body)
				}
			}
			if err != nil {
				errs[i] = fmt.Errorf("upload %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	samples, err := filepath.Glob(filepath.Join(repoRoot, "rules-examples", "traces", "*.json"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("no sample traces under rules-examples/traces (%v)", err)
	}
	for _, path := range samples {
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if status, resp := s.do(t, http.MethodPost, "/v1/traces", "application/json", body); status != http.StatusOK {
			t.Fatalf("POST /v1/traces %s: status %d: %s", filepath.Base(path), status, resp)
		}
	}
	if status, _ := s.do(t, http.MethodPost, "/v1/traces", "application/json", []byte(`{"resourceSpans": [`)); status != http.StatusBadRequest {
		t.Errorf("POST /v1/traces with a truncated body: status %d, want 400", status)
	}
	// An unknown path is answered 404 outside the route middleware, so
	// http_requests_total does not count it; a missing rule is a 404 of a
	// known route and is counted.
	for _, path := range []string{"/v1/deploytest-no-such-route", "/v1/rules/deploytest-no-such-rule"} {
		if status, _ := s.do(t, http.MethodGet, path, "", nil); status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, status)
		}
	}

	eventually(t, 15*time.Second, "a payment-fraud-check violation is listed", func() (bool, string) {
		status, body := s.do(t, http.MethodGet, "/v1/violations?rule_id=payment-fraud-check", "", nil)
		var page struct {
			TotalCount int `json:"totalCount"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &page) != nil {
			return false, fmt.Sprintf("status %d: %s", status, body)
		}
		return page.TotalCount > 0, fmt.Sprintf("%d violations", page.TotalCount)
	})
	eventually(t, 15*time.Second, "runaway-loop is quarantined", func() (bool, string) {
		status, body := s.do(t, http.MethodGet, "/v1/rules/runaway-loop", "", nil)
		var rule struct {
			State string `json:"state"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &rule) != nil {
			return false, fmt.Sprintf("status %d: %s", status, body)
		}
		return rule.State == "quarantined", "state " + rule.State
	})
	return s.metrics(t)
}

// clusterExposition runs two servers on a real redis-server, kills one so
// that forwarding to it fails, and returns the survivor's /metrics.
func clusterExposition(t *testing.T) *exposition {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not on PATH: install redis-server (apt-get install redis-server)")
	}
	port := freePort(t)
	redis := startProcess(t, redisBin, nil, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	eventually(t, 10*time.Second, "redis-server answers PING", func() (bool, string) {
		if !redis.running() {
			t.Fatalf("redis-server exited: %v", redis.exitErr)
		}
		err := redisPing("127.0.0.1:" + port)
		return err == nil, fmt.Sprint(err)
	})

	env := map[string]string{"BETRACE_REDIS_URL": "redis://127.0.0.1:" + port + "/0"}
	a := startServer(t, env)
	b := startServer(t, env)
	eventually(t, 15*time.Second, "each instance sees two members", func() (bool, string) {
		v, _ := a.metrics(t).value("betrace_cluster_members", nil)
		return v == 2, fmt.Sprintf("betrace_cluster_members %g", v)
	})

	// Killed, b stays a member until its heartbeat expires, so a forwards
	// b's share of these traces to it and fails.
	b.stop(t, syscall.SIGKILL)
	if status, body := a.do(t, http.MethodPost, "/v1/traces", "application/json", randomTraces(t, 64)); status != http.StatusOK {
		t.Fatalf("POST /v1/traces: status %d: %s", status, body)
	}
	var e *exposition
	eventually(t, 10*time.Second, "forwarding to the killed peer fails", func() (bool, string) {
		e = a.metrics(t)
		return e.has("betrace_forward_errors_total"), "no betrace_forward_errors_total"
	})
	return e
}

// redisPing sends PING to a Redis server and expects +PONG.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// randomTraces is an OTLP/JSON request of n one-span traces with random IDs.
func randomTraces(t *testing.T, n int) []byte {
	t.Helper()
	now := time.Now().UnixNano()
	spans := make([]map[string]any, n)
	for i := range spans {
		spans[i] = map[string]any{
			"traceId":           randomHex(t, 16),
			"spanId":            randomHex(t, 8),
			"name":              "deploytest.forwarded",
			"kind":              2,
			"startTimeUnixNano": fmt.Sprint(now - int64(time.Millisecond)),
			"endTimeUnixNano":   fmt.Sprint(now),
		}
	}
	body, err := json.Marshal(map[string]any{"resourceSpans": []any{map[string]any{
		"resource": map[string]any{"attributes": []any{
			map[string]any{"key": "service.name", "value": map[string]any{"stringValue": "deploytest"}},
		}},
		"scopeSpans": []any{map[string]any{"spans": spans}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestRunbookLinks checks that every alert links to its runbook under
// deploy/runbooks/, and, once that folder exists, that the file is there.
func TestRunbookLinks(t *testing.T) {
	rf := readAlerts(t)
	const prefix = "https://github.com/betracehq/betrace/blob/main/"
	dir := filepath.Join(repoRoot, "deploy", "runbooks")
	_, err := os.Stat(dir)
	haveRunbooks := err == nil
	if !haveRunbooks {
		t.Logf("deploy/runbooks does not exist yet: runbook files not checked")
	}
	alerts := 0
	for _, e := range rf.exprs {
		name := strings.TrimPrefix(e.where, alertsFile+" ")
		if slices.Contains(rf.recorded, name) {
			continue
		}
		alerts++
		url, ok := rf.runbooks[name]
		if !ok {
			t.Errorf("alert %s has no runbook_url", name)
			continue
		}
		rel, ok := strings.CutPrefix(url, prefix)
		if !ok || !strings.HasPrefix(rel, "deploy/runbooks/") || !strings.HasSuffix(rel, ".md") {
			t.Errorf("alert %s: runbook_url %s is not %sdeploy/runbooks/<name>.md", name, url, prefix)
			continue
		}
		if haveRunbooks {
			if _, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(rel))); err != nil {
				t.Errorf("alert %s: its runbook %s does not exist", name, rel)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alert found")
	}
}

var (
	jobMatcherRe = regexp.MustCompile(`\bjob\s*=\s*"([^"]*)"`)
	jobNameRe    = regexp.MustCompile(`(?m)^\s*(?:-\s+)?job_name:\s*["']?([^"'\s#]+)`)
)

// TestScrapeJobsMatchAlerts checks that the alerts select one job name and
// that every Prometheus configuration under deploy/ scrapes a job of that
// name: otherwise the alerts see nothing (and BeTraceBackendDown fires for
// the absent job).
func TestScrapeJobsMatchAlerts(t *testing.T) {
	rf := readAlerts(t)
	jobs := map[string]bool{}
	for _, e := range rf.exprs {
		for _, m := range jobMatcherRe.FindAllStringSubmatch(e.expr, -1) {
			jobs[m[1]] = true
		}
	}
	if len(jobs) != 1 {
		t.Fatalf("%s selects the jobs %v; want a single job name", alertsFile, jobs)
	}
	var job string
	for j := range jobs {
		job = j
	}
	configs, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "*", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) == 0 {
		t.Fatal("no deploy/*/prometheus.yml found")
	}
	for _, path := range configs {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, path)
		var names []string
		for _, m := range jobNameRe.FindAllStringSubmatch(string(src), -1) {
			names = append(names, m[1])
		}
		if !slices.Contains(names, job) {
			t.Errorf("%s scrapes the jobs %q, but the alerts select job=%q", rel, names, job)
		}
	}
}
