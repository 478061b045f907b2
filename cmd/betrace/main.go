// Command betrace is BeTrace's single binary: `betrace serve` runs the
// service; `rules`, `violations` and `status` are operator commands, clients
// of a running server's HTTP API; `demo` helps rule authors.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "compile":
		return compile(args[1:], stdout, stderr)
	case "demo":
		return demo(ctx, args[1:], stdout, stderr)
	case "rules", "violations", "status", "test", "replay":
		return runClient(ctx, args, stdout, stderr, os.Getenv)
	case "version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[0] == "help" {
			// betrace help rules push == betrace rules push --help
			return run(ctx, append(args[1:], "--help"), stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	if strings.HasPrefix(args[0], "-") {
		// global flags of the operator commands before the command
		return runClient(ctx, args, stdout, stderr, os.Getenv)
	}
	fmt.Fprintf(stderr, "betrace: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: betrace <command> [flags]

commands:
  serve       run the BeTrace service (betrace serve --help lists its settings)
  rules       manage the rules of a running server
  violations  query the violations a server recorded
  status      readiness, cluster members, rules by state, quarantined rules
  test        run a rule on traces in a server's sandbox, storing nothing (betrace test --help)
  replay      replay a candidate rule over a server's tape of recent traces
  compile     compile a BeTrace DSL rule into a WebAssembly module (betrace compile --help)
  demo        run the example rules over the sample traces and print the violations
  version     print the version
  help        this text; betrace help <command> describes one command
`)
	clientUsage(w)
}
