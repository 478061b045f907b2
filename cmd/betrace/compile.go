package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/betracehq/betrace/host/dsl"
)

// compile turns a DSL rule into a standalone ABI v1 module that any BeTrace
// server admits like an uploaded one.
func compile(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	expr := fs.String("e", "", "the rule as an expression instead of a file")
	out := fs.String("o", "", "output module (default: the input name with .wasm, or stdout with -e)")
	id := fs.String("id", "", "rule id the module reports")
	name := fs.String("name", "", "rule name the module reports")
	severity := fs.String("severity", "", "CRITICAL, HIGH, MEDIUM, LOW or INFO")
	description := fs.String("description", "", "rule description the module reports")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: betrace compile [flags] RULE.btr\n       betrace compile -e 'when { … } always { … }' [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	src := *expr
	switch {
	case src == "" && fs.NArg() == 1:
		b, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, "betrace compile:", err)
			return 1
		}
		src = string(b)
		if *out == "" {
			*out = strings.TrimSuffix(fs.Arg(0), ".btr") + ".wasm"
		}
	case src != "" && fs.NArg() == 0:
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
