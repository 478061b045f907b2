package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Set by TestMain.
var (
	repoRoot string // the folder holding go.mod
	binPath  string // the betrace binary built for this run
)

// exampleRules are the rule modules the tests upload.
var exampleRules = []string{"payment-fraud-check", "runaway-loop"}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if repoRoot, err = findRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "deploytest:", err)
		return 1
	}
	for _, id := range exampleRules {
		if _, err := os.Stat(modulePath(id)); err != nil {
			fmt.Fprintf(os.Stderr, "deploytest: the example rule module %s is missing: run `make rules` first\n",
				filepath.Join("rules-examples", "build", id+".wasm"))
			return 1
		}
	}
	tmp, err := os.MkdirTemp("", "betrace-deploytest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploytest:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploytest: the go command is not on PATH; it is needed to build the betrace binary")
		return 1
	}
	binPath = filepath.Join(tmp, "betrace")
	build := exec.Command(gobin, "build", "-o", binPath, "./cmd/betrace")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "deploytest: go build ./cmd/betrace failed: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func modulePath(id string) string {
	return filepath.Join(repoRoot, "rules-examples", "build", id+".wasm")
}

// process is one child process (betrace or redis-server) with its output.
type process struct {
	name    string
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	exitErr error
	stopped bool
}

// startProcess starts name with args and env (added to a clean
// environment) and, when the test ends, stops it with SIGTERM (SIGKILL
// after 10 s). Its output is logged if the test failed.
func startProcess(t *testing.T, name string, env map[string]string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(name), logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = cleanEnv()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p.cmd.Env = append(p.cmd.Env, k+"="+env[k])
	}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", p.name, strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

// stop sends sig (SIGKILL after 10 s) and waits for the process to exit.
func (p *process) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not exit within 10s of %v; killing it", p.name, sig)
		p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// server is a running `betrace serve`.
type server struct {
	*process
	base string // http://127.0.0.1:port
}

// startServer runs `betrace serve` on a free port with a fresh data
// directory, traces that complete quickly, and env on top; it returns once
// /ready answers 200.
func startServer(t *testing.T, env map[string]string) *server {
	t.Helper()
	port := freePort(t)
	all := map[string]string{
		"BETRACE_LISTEN_HOST":        "127.0.0.1",
		"BETRACE_PORT_BACKEND":       port,
		"BETRACE_OTLP_GRPC_PORT":     "0",
		"BETRACE_DATA_DIR":           filepath.Join(t.TempDir(), "data"),
		"BETRACE_TRACE_SETTLE":       "100ms",
		"BETRACE_TRACE_IDLE_TIMEOUT": "500ms",
		"BETRACE_SHUTDOWN_TIMEOUT":   "3s",
		"LOG_LEVEL":                  "info",
	}
	for k, v := range env {
		all[k] = v
	}
	s := &server{process: startProcess(t, binPath, all, "serve"), base: "http://127.0.0.1:" + port}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := httpClient.Get(s.base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if !s.running() {
			t.Fatalf("betrace exited before it was ready (%v)", s.exitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("betrace was not ready within 20s (last error: %v)", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// request sends one request and returns the status and body; it may be
// called from any goroutine.
func (s *server) request(method, path, contentType string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return 0, nil, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, b.Bytes(), nil
}

// do is request, failing the test on a transport error.
func (s *server) do(t *testing.T, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	status, b, err := s.request(method, path, contentType, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, b
}

// metrics fetches and parses /metrics.
func (s *server) metrics(t *testing.T) *exposition {
	t.Helper()
	status, body := s.do(t, http.MethodGet, "/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", status)
	}
	e, err := parseExposition(string(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return e
}

// eventually polls cond every 50 ms until it holds, failing the test after
// timeout with what cond last said.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without BeTrace's own settings, Go
// runtime limits and proxies, so the developer's shell cannot change what
// a test runs.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "BETRACE_"), strings.HasPrefix(k, "OTEL_"), k == "LOG_LEVEL",
			k == "GOMEMLIMIT", k == "GOMAXPROCS", k == "GOGC",
			strings.EqualFold(k, "http_proxy"), strings.EqualFold(k, "https_proxy"), strings.EqualFold(k, "all_proxy"), strings.EqualFold(k, "no_proxy"):
			continue
		}
		out = append(out, kv)
	}
	return append(out, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
