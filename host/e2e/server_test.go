package e2e

import (
	"bytes"
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Timings of a test server unless a test sets its own: traces complete
// quickly so that tests do not wait.
var fastTimings = map[string]string{
	"BETRACE_TRACE_SETTLE":       "100ms",
	"BETRACE_TRACE_IDLE_TIMEOUT": "500ms",
	"BETRACE_TRACE_MAX_AGE":      "10s",
}

// serverOptions configure a test server.
type serverOptions struct {
	// Env is added to (and overrides) the test defaults.
	Env map[string]string
	// GRPC enables the OTLP/gRPC receiver on a free port.
	GRPC bool
	// APIToken and IngestToken set BETRACE_API_TOKEN and
	// BETRACE_INGEST_TOKEN; the helpers send them.
	APIToken, IngestToken string
	// HTTPPort, when set, is the HTTP port of every run (a cluster member
	// advertises it to its peers); otherwise each run takes a free port.
	HTTPPort string
	// DataDir, when set, is the data directory (e.g. a small tmpfs);
	// otherwise a fresh temporary one.
	DataDir string
}

// server is one `betrace serve` process (and its restarts on the same data
// directory).
type server struct {
	t       testing.TB
	opts    serverOptions
	dataDir string
	logs    *syncBuffer // every run's output

	base     string // http://127.0.0.1:port
	grpcAddr string
	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	running  bool
	runs     int

	grpcMu   sync.Mutex
	grpcConn *grpc.ClientConn
}

// startServer starts a server with a fresh data directory and stops it
// (SIGTERM, at most 10 s) when the test ends. Its output is logged if the
// test failed.
func startServer(t testing.TB, opts serverOptions) *server {
	t.Helper()
	s := &server{t: t, opts: opts, dataDir: opts.DataDir, logs: &syncBuffer{}}
	if s.dataDir == "" {
		s.dataDir = filepath.Join(t.TempDir(), "data")
	}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if opts.DataDir != "" {
		// A data directory of the test's own (a small disk) is not
		// filled with the warm cache of every example rule.
	} else if err := linkCache(s.dataDir); err != nil {
		t.Logf("could not link the warm compilation cache (rules will compile slowly): %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("betrace output (%s):\n%s", s.dataDir, s.logs.String())
		}
	})
	t.Cleanup(func() {
		s.closeGRPC()
		if s.running {
			s.stop(t)
		}
	})
	s.start(t)
	return s
}

// start runs the binary on s.dataDir with fresh ports and waits for /ready.
func (s *server) start(t testing.TB) {
	t.Helper()
	if s.running {
		t.Fatal("server already running")
	}
	s.runs++
	httpPort := s.opts.HTTPPort
	if httpPort == "" {
		httpPort = mustFreePort(t)
	}
	env := map[string]string{
		"BETRACE_LISTEN_HOST":    "127.0.0.1",
		"BETRACE_PORT_BACKEND":   httpPort,
		"BETRACE_OTLP_GRPC_PORT": "0",
		"BETRACE_DATA_DIR":       s.dataDir,
		"LOG_LEVEL":              "info",
	}
	for k, v := range fastTimings {
		env[k] = v
	}
	s.grpcAddr = ""
	if s.opts.GRPC {
		p := mustFreePort(t)
		env["BETRACE_OTLP_GRPC_PORT"] = p
		s.grpcAddr = "127.0.0.1:" + p
	}
	if s.opts.APIToken != "" {
		env["BETRACE_API_TOKEN"] = s.opts.APIToken
	}
	if s.opts.IngestToken != "" {
		env["BETRACE_INGEST_TOKEN"] = s.opts.IngestToken
	}
	for k, v := range s.opts.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	cmd := exec.Command(binPath, "serve")
	cmd.Env = cleanEnv()
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	fmt.Fprintf(s.logs, "=== run %d: betrace serve on 127.0.0.1:%s\n", s.runs, httpPort)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start betrace: %v", err)
	}
	s.cmd, s.exited, s.running = cmd, make(chan struct{}), true
	// Written only when it changes: a cluster member restarts on its own
	// port while load generators read base concurrently.
	if b := "http://127.0.0.1:" + httpPort; b != s.base {
		s.base = b
	}
	go func(exited chan struct{}) {
		err := cmd.Wait()
		s.exitErr = err
		close(exited)
	}(s.exited)

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := httpClient.Get(s.base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.exited:
			s.running = false
			t.Fatalf("betrace exited before it was ready (%v); output:\n%s", s.exitErr, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("betrace was not ready within 30s (last error %v)", err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop sends SIGTERM, requires an exit within 10 s and returns the exit code.
func (s *server) stop(t testing.TB) int {
	t.Helper()
	s.closeGRPC()
	if !s.running {
		t.Fatal("stop: server not running")
	}
	s.running = false
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("betrace did not exit within 10s of SIGTERM; killing it")
		s.cmd.Process.Kill()
		<-s.exited
	}
	return exitCode(s.exitErr)
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *server) kill(t testing.TB) {
	t.Helper()
	s.closeGRPC()
	if !s.running {
		t.Fatal("kill: server not running")
	}
	s.running = false
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("betrace did not die within 10s of SIGKILL")
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// grpc returns a client connection to the server's OTLP/gRPC receiver.
func (s *server) grpc(t testing.TB) *grpc.ClientConn {
	t.Helper()
	if s.grpcAddr == "" {
		t.Fatal("this server was started without gRPC (serverOptions.GRPC)")
	}
	s.grpcMu.Lock()
	defer s.grpcMu.Unlock()
	if s.grpcConn == nil {
		conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("grpc client: %v", err)
		}
		s.grpcConn = conn
	}
	return s.grpcConn
}

func (s *server) closeGRPC() {
	s.grpcMu.Lock()
	defer s.grpcMu.Unlock()
	if s.grpcConn != nil {
		s.grpcConn.Close()
		s.grpcConn = nil
	}
}

// cleanEnv is the test's environment without BeTrace's own settings and
// proxies, so the developer's shell cannot change what a test runs.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "BETRACE_"), strings.HasPrefix(k, "OTEL_"), k == "LOG_LEVEL",
			strings.EqualFold(k, "http_proxy"), strings.EqualFold(k, "https_proxy"), strings.EqualFold(k, "all_proxy"), strings.EqualFold(k, "no_proxy"):
			continue
		}
		out = append(out, kv)
	}
	return append(out, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func mustFreePort(t testing.TB) string {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
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

// eventually polls cond every 50 ms until it holds, failing the test after
// timeout with what cond last said.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
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

// ctxTimeout is a context for one call.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
