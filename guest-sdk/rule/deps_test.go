package rule_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The SDK and the example rules stay clear of syscall, os, fmt, time and
// reflect on wasip1: those packages add module size, start-up work and
// allocations that a rule evaluated on every trace should not pay for.
func TestNoSyscallDependency(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go command is needed on PATH for this test")
	}
	pkgs := []string{"."}
	if _, err := os.Stat("../../rules-examples"); err == nil {
		pkgs = append(pkgs, "../../rules-examples/...")
	}
	args := append([]string{"list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}"}, pkgs...)
	cmd := exec.Command(gobin, args...)
	cmd.Env = append(cmd.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		n++
		for _, dep := range fields[1:] {
			switch dep {
			case "syscall", "os", "fmt", "time", "reflect":
				t.Errorf("%s depends on %s when built for wasip1", fields[0], dep)
			}
		}
	}
	if n == 0 {
		t.Fatal("go list listed no packages")
	}
}
