package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/ingest"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
)

// demo loads every module in -rules and every trace in -traces, evaluates
// each trace against each rule in its sandbox and prints what it found.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rulesDir := fs.String("rules", "rules-examples/build", "folder of compiled rule modules (*.wasm)")
	tracesDir := fs.String("traces", "rules-examples/traces", "folder of OTLP/JSON traces (*.json)")
	cacheDir := fs.String("cache", ".cache/wazero", "compilation cache folder")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	host, err := sandbox.NewHost(sandbox.HostConfig{CacheDir: *cacheDir})
	if err != nil {
		fmt.Fprintln(stderr, "betrace demo:", err)
		return 1
	}
	defer host.Close(context.WithoutCancel(ctx))

	modules, _ := filepath.Glob(filepath.Join(*rulesDir, "*.wasm"))
	if len(modules) == 0 {
		fmt.Fprintf(stderr, "betrace demo: no rule modules in %s: run `make rules` first\n", *rulesDir)
		return 1
	}
	var loaded []*registry.Rule
	for _, path := range modules {
		id := strings.TrimSuffix(filepath.Base(path), ".wasm")
		if isAdversarial(id) {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "betrace demo:", err)
			return 1
		}
		start := time.Now()
		sb, err := host.Load(ctx, b, sandbox.Limits{})
		if err != nil {
			fmt.Fprintf(stderr, "betrace demo: rule %s refused: %v\n", id, err)
			return 1
		}
		defer sb.Close(context.WithoutCancel(ctx))
		d := sb.Description()
		fmt.Fprintf(stdout, "loaded %-22s %-8s %s (%s)\n", id, d.Severity, d.Name, time.Since(start).Round(time.Millisecond))
		loaded = append(loaded, &registry.Rule{ID: id, Sandbox: sb, Strikes: rules.NewStrikes(rules.DefaultQuarantinePolicy(), time.Now)})
	}

	files, _ := filepath.Glob(filepath.Join(*tracesDir, "*.json"))
	sort.Strings(files)
	ev := evaluation.New(time.Now)
	for _, path := range files {
		body, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "betrace demo:", err)
			return 1
		}
		spans, _, err := ingest.DecodeJSON(body)
		if err != nil {
			fmt.Fprintf(stderr, "betrace demo: %s: %v\n", path, err)
			return 1
		}
		fmt.Fprintf(stdout, "\n%s (%d spans)\n", filepath.Base(path), len(spans))
		ev.Evaluate(ctx, spans, 0, loaded, func(v evaluation.Verdict) {
			if v.Fault != nil {
				fmt.Fprintf(stdout, "  %-22s error: %v\n", v.Rule.ID, v.Fault)
			}
			for _, viol := range v.Violations {
				s := spans[ev.SpanAt(viol.SpanIndex)]
				fmt.Fprintf(stdout, "  %-22s VIOLATION on %s (span %s): %s\n", v.Rule.ID, s.Name, hex.EncodeToString(s.SpanID[:]), viol.Message)
			}
		})
	}
	return 0
}

func isAdversarial(id string) bool {
	switch id {
	case "runaway-loop", "exp-recursion", "memory-hog", "panicker", "abi-liar":
		return true
	}
	return false
}
