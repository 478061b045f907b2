package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// noTmpfsEnv, set to 1, says this environment cannot mount a tmpfs (not
// root, no CAP_SYS_ADMIN): the full-disk test then skips. Filling a real
// filesystem is never done: it would starve the whole machine.
const noTmpfsEnv = "BETRACE_TEST_NO_TMPFS"

// TestDurabilityDiskFull runs the real binary on a small tmpfs, fills it,
// and checks that BeTrace says so everywhere instead of losing violations
// silently: /ready NOT_READY with "disk full", ingest 503 with Retry-After
// (gRPC UNAVAILABLE), rule uploads 507 "disk full", the violations found
// meanwhile held and stored once space returns, with nothing dropped.
func TestDurabilityDiskFull(t *testing.T) {
	if os.Getenv(noTmpfsEnv) == "1" {
		t.Skipf("%s=1: this environment cannot mount a tmpfs", noTmpfsEnv)
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// 32 MiB: room for the database and a Go rule's compiled code (~7 MB).
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("this test needs to mount a small tmpfs as the data directory (run as root or with CAP_SYS_ADMIN), or set %s=1 to skip it: mount -t tmpfs -o size=32m tmpfs %s: %v: %s",
			noTmpfsEnv, dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	s := startServer(t, serverOptions{DataDir: dir, GRPC: true})
	s.loadRule(t, "payment-fraud-check")
	before, beforeID := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpProto(t, before), "application/x-protobuf", "")
	want := len(s.waitViolations(t, beforeID, 2))

	filler := fillDisk(t, dir)

	// Evaluation goes on; the write of these violations fails.
	td, id := sample(t, "payment-fraud-check.violating")
	s.mustExport(t, otlpProto(t, td), "application/x-protobuf", "")
	var ready map[string]any
	eventually(t, 20*time.Second, "/ready to say disk full", func() (bool, string) {
		r := s.do(t, request{Method: http.MethodGet, Path: "/ready"})
		ready = decodeObject(t, r.Body)
		rec, _ := obj(ready, "checks")["recorder"].(string)
		return r.Status == http.StatusServiceUnavailable && str(ready, "status") == "NOT_READY" && strings.Contains(rec, "disk full"), string(r.Body)
	})
	t.Logf("/ready on a full disk: %v", ready)

	// Ingest pushes back, retryably, on both transports.
	more, _ := sample(t, "payment-fraud-check.violating")
	r := s.export(t, otlpProto(t, more), "application/x-protobuf", "")
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Errorf("POST /v1/traces on a full disk: status %d, Retry-After %q: %s; want 503 with Retry-After", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	if _, err := s.exportGRPC(t, more, ""); status.Code(err) != codes.Unavailable {
		t.Errorf("OTLP/gRPC export on a full disk: %v; want UNAVAILABLE", err)
	}

	// A rule upload says disk full, not "invalid module".
	up := s.uploadWasm(t, module(t, "checkout-slow-db"), nil)
	wantError(t, up, http.StatusInsufficientStorage, "disk full")

	mfs := s.metrics(t)
	if v, _ := metricValue(mfs, "betrace_recorder_store_writable", nil); v != 0 {
		t.Errorf("betrace_recorder_store_writable = %v on a full disk, want 0", v)
	}
	held, _ := metricValue(mfs, "betrace_recorder_buffer_bytes", nil)
	dropped, _ := metricValue(mfs, "betrace_violations_dropped_total", nil)
	if held == 0 && dropped == 0 {
		t.Errorf("the violations of trace %s are neither held (betrace_recorder_buffer_bytes 0) nor counted as dropped", id)
	}

	// Space returns: everything recovers by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "READY after space returned", func() (bool, string) {
		r := s.do(t, request{Method: http.MethodGet, Path: "/ready"})
		return r.Status == http.StatusOK && str(decodeObject(t, r.Body), "status") == "READY", string(r.Body)
	})
	s.waitViolations(t, id, want)
	if v, _ := metricValue(s.metrics(t), "betrace_violations_dropped_total", nil); v != 0 {
		t.Errorf("betrace_violations_dropped_total = %v, want 0: the buffer held everything", v)
	}
	s.mustExport(t, otlpProto(t, more), "application/x-protobuf", "")
	if r := s.uploadWasm(t, module(t, "checkout-slow-db"), nil); r.Status != http.StatusCreated {
		t.Errorf("rule upload after space returned: status %d: %s", r.Status, r.Body)
	}
}

// fillDisk writes a file in dir until its filesystem is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}
