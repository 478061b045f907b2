package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/betracehq/betrace/host/dsl"
)

// compile turns a DSL rule into a standalone ABI v1 module that any BeTrace
// server admits like an uploaded one.
func compile(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	expr := fs.String("e", "", "the rule as an expression instead of a file")
	out := fs.String("o", "", "output module (default: the input name with .wasm; with -e give it, or - for stdout)")
	id := fs.String("id", "", "rule id the module reports (default: the file name without .btr; required with -e)")
	name := fs.String("name", "", "rule name the module reports")
	severity := fs.String("severity", "", "CRITICAL, HIGH, MEDIUM, LOW or INFO")
	description := fs.String("description", "", "rule description the module reports")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: betrace compile [flags] RULE.btr\n       betrace compile -e 'when { … } always { … }' [flags]\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args) // flags may follow the file, as in `rules push`
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	src := *expr
	switch {
	case src == "" && len(pos) == 1:
		b, err := os.ReadFile(pos[0])
		if err != nil {
			fmt.Fprintln(stderr, "betrace compile:", err)
			return 1
		}
		src = string(b)
		if *out == "" {
			*out = strings.TrimSuffix(pos[0], ".btr") + ".wasm"
		}
		if *id == "" {
			*id = strings.TrimSuffix(filepath.Base(pos[0]), ".btr")
		}
	case src != "" && len(pos) == 0:
		if *id == "" {
			fmt.Fprintln(stderr, "betrace compile: give the rule an id with --id: a module without one is refused at upload")
			return 2
		}
		if *out == "" {
			if isTerminal(stdout) {
				fmt.Fprintln(stderr, "betrace compile: not writing a binary module to the terminal: give -o FILE.wasm (or -o - to write it to stdout anyway)")
				return 2
			}
			*out = "-"
		}
	default:
		fs.Usage()
		return 2
	}
	r, err := dsl.Parse(src)
	if err != nil {
		fmt.Fprintln(stderr, "betrace compile:", err)
		return 1
	}
	module, err := dsl.Compile(r, dsl.Meta{ID: *id, Name: *name, Severity: strings.ToUpper(*severity), Description: *description})
	if err != nil {
		fmt.Fprintln(stderr, "betrace compile:", err)
		return 1
	}
	if *out == "" || *out == "-" {
		stdout.Write(module)
		return 0
	}
	if err := os.WriteFile(*out, module, 0o644); err != nil {
		fmt.Fprintln(stderr, "betrace compile:", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s (%d bytes)\n", *out, len(module))
	return 0
}
