// Package redistest runs real redis-server processes for tests: one per
// call to Start, on a free loopback port, in a temporary directory, without
// persistence (StartWith can turn on an append-only file), stopped when the
// test ends. A test can stop a server and start it again on the same port
// to simulate an outage.
//
// There are no fakes of Redis here or anywhere else in BeTrace: tests that
// need Redis need redis-server on PATH, and fail (not skip) without it, so
// that a machine without it cannot pass them by accident.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NotInstalled is the message a test fails with when redis-server is not
// on PATH.
const NotInstalled = "redis-server is not installed: run `apt-get install redis-server` (make test installs it when it can)"

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 15 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	t    testing.TB
	opts Options
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	proc   *process // nil while stopped
	client *redis.Client
}

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

// Options change how StartWith runs redis-server.
type Options struct {
	// AppendOnly keeps the data set in an append-only file in the server's
	// directory, fsynced on every write, so that Start after Stop brings
	// back everything acknowledged, as a deployed Redis with persistence
	// does. Without it a restarted server is empty.
	AppendOnly bool
	// DebugCommand lets the test's own loopback clients run DEBUG (for
	// example DEBUG SLEEP, to stall the server the way a slow disk or a
	// long command does). Needs Redis 7 or later.
	DebugCommand bool
	// Args are added to the command line, e.g. "--replicaof", host, port,
	// or "--cluster-enabled", "yes".
	Args []string
	// SentinelConfig, when set, runs the process as a Sentinel with this
	// configuration (written to sentinel.conf in its directory, which
	// Sentinel rewrites as it learns the topology) instead of a data
	// server.
	SentinelConfig string
}

// Start starts a redis-server on a free port of 127.0.0.1 and waits until
// it answers PING. The server is stopped, and its client closed, when the
// test ends. Start fails the test if redis-server is not installed or does
// not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(NotInstalled)
	}
	s := &Server{t: t, opts: opts, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.cleanup)
	// Another process may take the free port between our probe and the
	// server's bind; try a few ports before giving up.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for database 0 of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a client of the server, created on first use and closed
// when the test ends. It survives Stop and Start: go-redis reconnects.
func (s *Server) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr()})
	}
	return s.client
}

// Stop kills the server (SIGKILL: no shutdown, no save) and waits for it
// to exit, so the port refuses connections when Stop returns. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

// Pause freezes the server (SIGSTOP): connections stay open and new ones
// are accepted by the kernel, but nothing answers, as with a hung server
// or a partitioned network. Resume undoes it; Stop works while paused.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		s.t.Fatalf("redistest: %v sent to a stopped server", sig)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: send %v: %v", sig, err)
	}
}

// Start starts a stopped server again on the same port, empty (unless
// Options.AppendOnly), and waits until it answers PING; it fails the test
// if it cannot. Starting a running server does nothing.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		return
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}
	if s.opts.SentinelConfig != "" {
		conf := filepath.Join(s.dir, "sentinel.conf")
		if _, err := os.Stat(conf); err != nil { // a restart keeps what Sentinel learnt
			if err := os.WriteFile(conf, []byte(s.opts.SentinelConfig), 0o600); err != nil {
				return err
			}
		}
		args = []string{conf, "--sentinel", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
			"--dir", s.dir, "--daemonize", "no", "--loglevel", "warning"}
	}
	args = append(args, s.opts.Args...)
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}
	if s.opts.DebugCommand {
		args = append(args, "--enable-debug-command", "local")
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := waitReady(s.Addr(), p); err != nil {
		cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("redis-server on %s: %w; its output:\n%s", s.Addr(), err, out.String())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

func (s *Server) cleanup() {
	s.Stop()
	s.mu.Lock()
	c := s.client
	s.client = nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// waitReady polls the server with PING until it answers PONG, the process
// exits, or startTimeout passes.
func waitReady(addr string, p *process) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %s: %w", startTimeout, err)
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering PING (%v)", p.err)
		case <-tick.C:
		}
	}
}

// ping sends one inline PING on a new connection. It does not use go-redis,
// so that readiness does not depend on the client's reconnection logic.
func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
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
	if line != "+PONG\r\n" {
		// -LOADING and the like: not ready yet.
		return errors.New("answered " + string(bytes.TrimSpace([]byte(line))))
	}
	return nil
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects a process's output for error messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to explain a failure
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
