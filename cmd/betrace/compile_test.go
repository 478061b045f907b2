package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "pay.btr")
	if err := os.WriteFile(src, []byte("when { payment.charge }\nalways { fraud.check }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	// Flags may follow the file, as in `rules push`.
	if code := compile([]string{src, "--id", "pay", "--severity", "critical"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	module, err := os.ReadFile(filepath.Join(dir, "pay.wasm"))
	if err != nil || !bytes.HasPrefix(module, []byte("\x00asm")) {
		t.Fatalf("no module written: %v", err)
	}
	stdout.Reset()
	if code := compile([]string{"-e", "when { a } never { b }", "--id", "ab"}, &stdout, &stderr); code != 0 || !bytes.HasPrefix(stdout.Bytes(), []byte("\x00asm")) {
		t.Fatalf("-e to stdout (not a terminal): exit %d", code)
	}
	stderr.Reset()
	if code := compile([]string{"-e", "when { a } never { b }"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--id") {
		t.Fatalf("-e without --id: exit %d, %q (a module without an id is refused at upload)", code, stderr.String())
	}
	stderr.Reset()
	if code := compile([]string{"-e", "when { a && b } always { c }", "--id", "x"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "1:") {
		t.Fatalf("a bad rule: exit %d, %q", code, stderr.String())
	}
	if code := compile(nil, &stdout, &stderr); code != 2 {
		t.Fatalf("no input: exit %d", code)
	}
}
