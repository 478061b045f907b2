package sandbox

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/betracehq/betrace/host/store"
)

// TestLoadOnFullDisk: when the compilation cache cannot be written because
// the disk is full, Load says disk full (store.ErrFull), not that the
// module is invalid: the same upload succeeds once space is freed.
func TestLoadOnFullDisk(t *testing.T) {
	if os.Getenv("BETRACE_TEST_NO_TMPFS") == "1" {
		t.Skip("BETRACE_TEST_NO_TMPFS=1: this environment cannot mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("this test needs to mount a small tmpfs (run as root or with CAP_SYS_ADMIN), or set BETRACE_TEST_NO_TMPFS=1 to skip it: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	h, err := NewHost(HostConfig{CacheDir: filepath.Join(dir, "compile-cache")})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 16<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	_, err = h.Load(context.Background(), abiModule(1).bytes(), Limits{})
	if !errors.Is(err, store.ErrFull) || errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Load on a full disk: %v; want store.ErrFull saying disk full, not ErrInvalidModule", err)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	s, err := h.Load(context.Background(), abiModule(1).bytes(), Limits{})
	if err != nil {
		t.Fatalf("Load after space returned: %v", err)
	}
	s.Close(context.Background())
}
