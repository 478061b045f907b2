// Package testrules gives tests the example rule modules that `make rules`
// builds and the sample traces beside them. A missing module fails the test
// with the make target that builds it: tests never skip for want of one.
package testrules

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/betracehq/betrace/host/ingest"
	"github.com/betracehq/betrace/host/traces"
)

// Real lists the example rules that check real behaviour.
var Real = []string{"payment-fraud-check", "pii-access-audit", "checkout-slow-db", "n-plus-one-queries", "ai-tool-approval"}

// Adversarial lists the rules that misbehave on purpose.
var Adversarial = []string{"runaway-loop", "exp-recursion", "memory-hog", "panicker", "abi-liar"}

// Root returns the repository root (the folder holding go.mod).
func Root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("testrules: no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Module returns the compiled example rule id.
func Module(tb testing.TB, id string) []byte {
	tb.Helper()
	path := filepath.Join(Root(tb), "rules-examples", "build", id+".wasm")
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("example rule %s is not built (%v): run `make rules` first", id, err)
	}
	return b
}

// CacheDir returns a compilation cache shared by every test run, so each
// Go guest is compiled once per machine rather than once per test.
func CacheDir(tb testing.TB) string {
	tb.Helper()
	dir := filepath.Join(Root(tb), ".cache", "wazero")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Trace loads rules-examples/traces/<name>.json, e.g. "payment-fraud-check.violating".
func Trace(tb testing.TB, name string) []traces.Span {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(Root(tb), "rules-examples", "traces", name+".json"))
	if err != nil {
		tb.Fatalf("sample trace %s: %v", name, err)
	}
	spans, rejected, err := ingest.DecodeJSON(b)
	if err != nil {
		tb.Fatalf("sample trace %s: %v", name, err)
	}
	if len(rejected) > 0 {
		tb.Fatalf("sample trace %s: %d spans rejected, first: %v", name, len(rejected), rejected[0].Err)
	}
	return spans
}

// Expected is how many violations each real rule reports on its
// rules-examples/traces/<id>.violating.json (and 0 on <id>.clean.json).
var Expected = map[string]int{
	"payment-fraud-check": 2,
	"pii-access-audit":    2,
	"checkout-slow-db":    2,
	"n-plus-one-queries":  1,
	"ai-tool-approval":    1,
}
