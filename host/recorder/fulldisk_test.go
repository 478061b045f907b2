package recorder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/embedded"
)

// noMountEnv, set to 1, says the environment cannot mount a tmpfs (not
// root, no CAP_SYS_ADMIN): the real full-disk tests skip instead of
// failing. Filling a real filesystem is never an option: it would starve
// everything else on the machine.
const noMountEnv = "BETRACE_TEST_NO_TMPFS"

// smallDisk mounts a tmpfs of size bytes and returns its path; it is
// unmounted when the test ends.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Getenv(noMountEnv) == "1" {
		t.Skipf("%s=1: this environment cannot mount a tmpfs, so the real full-disk test does not run", noMountEnv)
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("this test fills a small tmpfs to reproduce a full disk and needs to mount one (run as root or with CAP_SYS_ADMIN), or set %s=1 to skip it: mount -t tmpfs -o size=%s tmpfs %s: %v: %s",
			noMountEnv, size, dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the filesystem is full and returns its
// path; removing it frees the space.
func fill(t *testing.T, dir string) string {
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

// TestFullDisk runs the real embedded store on a real full filesystem.
func TestFullDisk(t *testing.T) {
	dir := smallDisk(t, "8m")
	st, err := embedded.Open(embedded.Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := newFixtureOn(t, Config{FlushInterval: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond}, st, nil)

	// Space for a few commits only, then none.
	filler := fill(t, dir)
	const traces, per = 1500, 1
	for range traces {
		if err := f.rec.Record(context.Background(), time.Now(), trace(per)); err != nil {
			t.Fatalf("Record while the disk is full: %v (the buffer should hold %d violations)", err, traces*per)
		}
	}
	eventually(t, "the recorder to see the full disk", func() bool { return f.rec.Check(context.Background()) != nil })
	err = f.rec.Check(context.Background())
	if !errors.Is(err, store.ErrFull) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Check() = %v, want disk full", err)
	}
	if err := f.rec.Accepting(); err == nil {
		t.Error("Accepting() = nil on a full disk")
	}
	stored := st.ViolationCount()
	_, held := f.rec.Held()
	if stored+held != traces*per {
		t.Errorf("stored %d + held %d, want %d: none lost", stored, held, traces*per)
	}
	// A rule upload's module write says disk full too.
	module := make([]byte, 1<<20)
	sum := sha256.Sum256(module)
	if err := st.PutModule(context.Background(), hex.EncodeToString(sum[:]), module); !errors.Is(err, store.ErrFull) {
		t.Errorf("PutModule on a full disk: %v, want store.ErrFull", err)
	}

	// Space returns: the recorder writes everything by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	eventually(t, "recovery", func() bool {
		return st.ViolationCount() == traces*per && f.rec.Check(context.Background()) == nil
	})
	if n := f.droppedAll(); n != 0 {
		t.Errorf("dropped %v", n)
	}
	t.Logf("stored while full: %d; held then written after space returned: %d", stored, held)
}
