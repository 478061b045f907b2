package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Set by TestMain.
var (
	repoRoot string // folder holding go.mod
	binPath  string // the betrace binary built for this run
	warmDir  string // a compilation cache holding every rule module the tests load
)

// ruleModules are the example rules the tests load; TestMain fails when
// one is not built.
var ruleModules = []string{
	"payment-fraud-check", "pii-access-audit", "checkout-slow-db", "n-plus-one-queries", "ai-tool-approval",
	"runaway-loop",
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	var err error
	if repoRoot, err = findRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	var missing []string
	for _, id := range ruleModules {
		if _, err := os.Stat(modulePath(id)); err != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: example rule modules are missing (%v under rules-examples/build): run `make rules` first\n", missing)
		return 1
	}
	tmp, err := os.MkdirTemp("", "betrace-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	binPath = filepath.Join(tmp, "betrace")
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is not on PATH; it is needed to build the betrace binary")
		return 1
	}
	build := exec.Command(gobin, "build", "-o", binPath, "./cmd/betrace")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/betrace failed: %v\n%s", err, out)
		return 1
	}

	warmDir = filepath.Join(tmp, "warm")
	start := time.Now()
	if err := warmCache(warmDir); err != nil {
		// Not fatal: every server then compiles its rules itself, slowly.
		fmt.Fprintf(os.Stderr, "e2e: warning: could not warm the compilation cache: %v\n", err)
		warmDir = ""
	} else if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: compilation cache warmed in %s\n", time.Since(start).Round(time.Millisecond))
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

// warmCache runs a server once on dir, loads every rule module so that it
// is compiled into dir/compile-cache, and stops it.
func warmCache(dir string) error {
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(binPath, "serve")
	cmd.Env = append(cleanEnv(),
		"BETRACE_LISTEN_HOST=127.0.0.1",
		"BETRACE_PORT_BACKEND="+httpPort,
		"BETRACE_OTLP_GRPC_PORT=0",
		"BETRACE_DATA_DIR="+filepath.Join(dir, "data"),
		"LOG_LEVEL=warn",
	)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			return errors.New("the warm-up server did not stop within 10s")
		}
	}
	base := "http://127.0.0.1:" + httpPort
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := httpClient.Get(base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the warm-up server exited (%v): %s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("the warm-up server was not ready within 30s: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 2)
	for _, id := range ruleModules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			b, err := os.ReadFile(modulePath(id))
			if err == nil {
				var resp *http.Response
				resp, err = httpClient.Post(base+"/v1/rules?id="+id, "application/wasm", bytes.NewReader(b))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("upload %s: status %d", id, resp.StatusCode)
					}
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", errors.Join(errs...), logs.String())
	}
	return nil
}

// linkCache fills dataDir/compile-cache with hard links to the warm cache
// (copies if linking fails). wazero replaces cache files by rename, never
// writes into one, so servers sharing the links cannot disturb each other.
func linkCache(dataDir string) error {
	if warmDir == "" {
		return nil
	}
	src := filepath.Join(warmDir, "data", "compile-cache")
	dst := filepath.Join(dataDir, "compile-cache")
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if err := os.Link(path, target); err == nil {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
}
