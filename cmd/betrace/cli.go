package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// The operator commands (rules, violations, status) are clients of a
// running server's HTTP API. Their exit codes are part of their interface.
const (
	exitOK           = 0 // success
	exitFailed       = 1 // the server answered an error, or an item of a batch failed
	exitUsage        = 2 // bad command, flag or argument
	exitUnreachable  = 3 // no answer: connection refused, DNS, timeout
	exitNotFound     = 4 // HTTP 404
	exitUnauthorized = 5 // HTTP 401
)

const defaultServer = "http://localhost:12011"

// app is one run of a client command.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	stderrTTY      bool // draw a progress bar on stderr

	g globals
	c *client
}

// globals are the flags every client command takes.
type globals struct {
	server  string
	token   string
	json    bool
	timeout time.Duration
}

func newApp(stdout, stderr io.Writer, getenv func(string) string) *app {
	return &app{stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now, stderrTTY: isTerminal(stderr)}
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// usageError is a mistake in the command line: exit 2.
type usageError struct {
	msg  string
	help string // the command whose --help to suggest
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// reportedError says that the failure was already written to stderr (for
// example each failed file of a push); it only carries the exit code.
type reportedError struct{ code int }

func (e *reportedError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// exitCode maps an error of a client command to the process's exit code.
func exitCode(err error) int {
	var (
		ue *usageError
		ae *apiError
		ne *unreachableError
		re *reportedError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &re):
		return re.code
	case errors.As(err, &ne):
		return exitUnreachable
	case errors.As(err, &ae):
		switch ae.Status {
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusUnauthorized:
			return exitUnauthorized
		}
	}
	return exitFailed
}

// command is one leaf command: `betrace <path> [flags] <args>`.
type command struct {
	path    string // "rules push"
	args    string // positional arguments, for the usage line
	about   string
	minArgs int
	maxArgs int // -1: any number
	// setup registers the command's own flags and returns its body, which
	// runs after parsing with a.c connected and args checked.
	setup func(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error
}

func commands() []command {
	return append(append(append(rulesCommands(), violationsCommands()...), statusCommand()), trialCommands()...)
}

// groups of commands: `betrace rules <sub>`, `betrace violations <sub>`.
var groups = map[string]string{
	"rules":      "manage the rules of a running server",
	"violations": "query the violations a server recorded",
}

// runClient runs a client command and returns the exit code.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return newApp(stdout, stderr, getenv).main(ctx, args)
}

func (a *app) main(ctx context.Context, args []string) int {
	err := a.dispatch(ctx, args)
	if err == nil {
		return exitOK
	}
	var re *reportedError
	if !errors.As(err, &re) {
		fmt.Fprintf(a.stderr, "betrace: %s\n", err)
		var ue *usageError
		if errors.As(err, &ue) && ue.help != "" {
			fmt.Fprintf(a.stderr, "run 'betrace %s --help' for usage\n", ue.help)
		}
	}
	return exitCode(err)
}

func (a *app) dispatch(ctx context.Context, args []string) error {
	if len(args) > 0 && strings.HasPrefix(args[0], "-") {
		// Global flags before the command (betrace --server X rules list)
		// go after it, where every command parses them.
		fs := flag.NewFlagSet("betrace", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		registerGlobals(fs, new(globals))
		if err := fs.Parse(args); err != nil {
			return usageErrorf("%v", err)
		}
		rest := fs.Args()
		args = append(slices.Clip(rest), args[:len(args)-len(rest)]...)
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErrorf("no command: run 'betrace help'")
	}
	if _, isGroup := groups[args[0]]; isGroup {
		group := args[0]
		if len(args) == 1 || isHelp(args[1]) {
			if len(args) == 1 {
				return &usageError{msg: fmt.Sprintf("%q needs a command: %s", "betrace "+group, strings.Join(subcommands(group), ", ")), help: group}
			}
			a.groupUsage(a.stdout, group)
			return nil
		}
		path := group + " " + args[1]
		for _, cmd := range commands() {
			if cmd.path == path {
				return a.runCommand(ctx, cmd, args[2:])
			}
		}
		return &usageError{msg: fmt.Sprintf("unknown command %q", path), help: group}
	}
	for _, cmd := range commands() {
		if cmd.path == args[0] {
			return a.runCommand(ctx, cmd, args[1:])
		}
	}
	return usageErrorf("unknown command %q", args[0])
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" || s == "help" }

// runCommand parses the command line of cmd, connects and runs it.
func (a *app) runCommand(ctx context.Context, cmd command, args []string) error {
	fs := flag.NewFlagSet(cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	body := cmd.setup(fs)
	a.addGlobals(fs)
	pos, err := parseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		a.commandUsage(a.stdout, cmd, fs)
		return nil
	}
	if err != nil {
		return &usageError{msg: err.Error(), help: cmd.path}
	}
	switch {
	case len(pos) < cmd.minArgs:
		return &usageError{msg: fmt.Sprintf("%s needs %s", cmd.path, cmd.args), help: cmd.path}
	case cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs:
		return &usageError{msg: fmt.Sprintf("%s takes %s, not %q", cmd.path, orNone(cmd.args), strings.Join(pos, " ")), help: cmd.path}
	}
	if err := a.resolveGlobals(fs); err != nil {
		return &usageError{msg: err.Error(), help: cmd.path}
	}
	if a.c, err = newClient(a.g.server, a.g.token, a.g.timeout); err != nil {
		return err
	}
	err = body(ctx, a, pos)
	var ue *usageError
	if errors.As(err, &ue) && ue.help == "" {
		ue.help = cmd.path
	}
	return err
}

func orNone(s string) string {
	if s == "" {
		return "no arguments"
	}
	return s
}

var globalFlags = []string{"server", "token", "json", "timeout"}

func subcommands(group string) []string {
	var subs []string
	for _, cmd := range commands() {
		if sub, ok := strings.CutPrefix(cmd.path, group+" "); ok {
			subs = append(subs, sub)
		}
	}
	return subs
}

func (a *app) addGlobals(fs *flag.FlagSet) { registerGlobals(fs, &a.g) }

func registerGlobals(fs *flag.FlagSet, g *globals) {
	fs.StringVar(&g.server, "server", "", "`URL` of the BeTrace API (default $BETRACE_SERVER, else "+defaultServer+")")
	fs.StringVar(&g.token, "token", "", "`TOKEN` for the API, sent as Authorization: Bearer (default $BETRACE_API_TOKEN)")
	fs.BoolVar(&g.json, "json", false, "print the API's JSON (one document) instead of tables")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Second, "give up on each request after `DURATION` (default 10s)")
}

// resolveGlobals fills what the flags left unset from the environment.
func (a *app) resolveGlobals(fs *flag.FlagSet) error {
	set := setFlags(fs)
	if !set["server"] {
		a.g.server = a.getenv("BETRACE_SERVER")
		if a.g.server == "" {
			a.g.server = defaultServer
		}
	}
	if !set["token"] {
		a.g.token = a.getenv("BETRACE_API_TOKEN")
	}
	if a.g.timeout <= 0 {
		return fmt.Errorf("--timeout %s must be positive", a.g.timeout)
	}
	return nil
}

// setFlags names the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// parseArgs parses flags anywhere on the command line (`rules get ID
// --json` as well as `rules get --json ID`) and returns the positional
// arguments in order. Everything after "--" is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := args[:len(args)-len(rest)]
		if len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// printJSON writes an API answer, indented, as one document.
func (a *app) printJSON(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %v", err)
	}
	buf.WriteByte('\n')
	_, err := a.stdout.Write(buf.Bytes())
	return err
}

// printValue marshals v (a document the CLI composed) indented.
func (a *app) printValue(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(append(b, '\n'))
	return err
}

// Usage texts.

func clientUsage(w io.Writer) {
	fmt.Fprintf(w, `
operator commands (clients of a running server's HTTP API):
  rules list      [--enabled-only] [--severity S] [--state active|disabled|quarantined]
  rules get       ID
  rules push      FILE.wasm... | RULES.yaml [--id ID] [--name N] [--severity S] [--description D]
                  [--tags a,b] [--disabled] [--fuel N] [--memory-pages N] [--update]
                  upload modules; with several files each id comes from the module
                  itself; --update installs a new version of a rule that exists
  rules update    ID [--severity S] [--name N] [--description D] [--tags a,b]
                  [--enable | --disable] [--fuel N] [--memory-pages N] [--module FILE.wasm]
  rules enable    ID              (also clears a quarantine)
  rules disable   ID
  rules rollback  ID [--version N]   (default: the version before the current one)
  rules delete    ID --yes
  violations list [--since 1h] [--until 10m] [--severity S] [--rule ID] [--trace TRACE_ID]
                  [--limit N] [--cursor C] [--all]
                  newest first; --since/--until take a duration ago (90s, 1h, 7d), an
                  RFC 3339 time or Unix epoch seconds; --limit (default 100) caps the rows,
                  --all follows the cursors to the last match (--limit is then the page size)
  violations summary [--since 1h] [--until 10m] [--bucket 1h] [--severity S] [--rule ID]
                  counts by rule, severity and bucket: KEPT as records, COUNTED in all
                  (past a rule's sample rate most violations are only counted)
  status          readiness and each check, cluster members, rules by state and
                  the quarantined rules with their reason
  test            [RULE.btr|RULE.wasm] [TRACES.json|TRACES.pb...] [-e EXPR] [--wasm FILE]
                  [--trace-id ID] [--expect violation|pass] [--fuel N] [--memory-pages N]
                  run a rule on traces in the server's sandbox, storing nothing: a table of
                  verdicts; exit 1 when the rule faults on a trace, or --expect is given
                  and a trace gets another verdict
  replay          [RULE.btr|RULE.wasm] [-e EXPR] [--wasm FILE] [--id ID]
                  replay a candidate over the server's tape of recent traces; with --id of
                  a stored rule, what it flags that the version in force does not, and back
  rules replay    ID [--version N]   replay a stored version against the one in force
                  (test and replay wait up to 65s for the answer unless --timeout is given)

flags of every operator command, anywhere on its command line:
  --server URL       the API (default %s; env BETRACE_SERVER)
  --token TOKEN      API token, sent as Authorization: Bearer (env BETRACE_API_TOKEN)
  --json             print the API's JSON as one document instead of tables: the rule,
                     rule list or delete answer; rules push of several files prints
                     {"results":[{"file","action","rule"|"error"}]}; violations list
                     {"violations","totalCount","nextCursor"} over the pages fetched;
                     status {"server","ready","clusterMembers","ruleCounts","quarantined"}
  --timeout DURATION give up on each request after it (default 10s)
A flag wins over its environment variable. betrace <command> --help shows one command.

exit codes:
  0  success (status: READY or DEGRADED)
  1  the server answered with an error, or any file of a push failed (the others are
     still pushed); status: NOT_READY
  2  usage error: unknown command, bad flag or argument (nothing was sent)
  3  cannot reach the server: connection refused, DNS failure, timeout
  4  not found (HTTP 404): no such rule
  5  unauthorized (HTTP 401): missing or wrong API token
Errors go to stderr as "betrace: <message>", the server's own message when it sent one.
`, defaultServer)
}

func (a *app) groupUsage(w io.Writer, group string) {
	fmt.Fprintf(w, "usage: betrace %s <command> [flags]\n\n%s.\n\ncommands:\n", group, upperFirst(groups[group]))
	for _, cmd := range commands() {
		if sub, ok := strings.CutPrefix(cmd.path, group+" "); ok {
			fmt.Fprintf(w, "  %-9s %s\n", sub, cmd.about)
		}
	}
	fmt.Fprintf(w, "\nbetrace %s <command> --help shows its flags; betrace help lists the exit codes.\n", group)
}

func (a *app) commandUsage(w io.Writer, cmd command, fs *flag.FlagSet) {
	line := "betrace " + cmd.path
	if cmd.args != "" {
		line += " " + cmd.args
	}
	fmt.Fprintf(w, "usage: %s [flags]\n\n%s.\n", line, upperFirst(cmd.about))
	var own, global []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if slices.Contains(globalFlags, f.Name) {
			global = append(global, f)
		} else {
			own = append(own, f)
		}
	})
	printFlags := func(title string, flags []*flag.Flag) {
		if len(flags) == 0 {
			return
		}
		sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, f := range flags {
			name, usage := flag.UnquoteUsage(f)
			head := "--" + f.Name
			if name != "" {
				head += " " + name
			}
			fmt.Fprintf(w, "  %-26s %s\n", head, usage)
		}
	}
	printFlags("flags", own)
	printFlags("global flags", global)
	fmt.Fprint(w, "\nexit codes: 0 ok, 1 error from the server or a failed item, 2 usage, 3 server unreachable, 4 not found, 5 unauthorized\n")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
