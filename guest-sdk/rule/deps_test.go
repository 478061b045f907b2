package rule_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A Go package that reaches syscall on wasip1 (time, os, fmt, ...) makes the
// module import WASI functions the BeTrace host does not provide, such as
// fd_prestat_get. Keep the SDK clear of them.
func TestNoSyscallDependency(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}}", ".")
	cmd.Env = append(cmd.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch p {
		case "syscall", "os", "fmt", "time", "reflect":
			t.Errorf("the SDK depends on %s when built for wasip1", p)
		}
	}
}
