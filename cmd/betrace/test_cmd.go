package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"mime/multipart"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The rule author's commands: try a rule on traces (test) or on the
// server's tape of recent traffic (replay) before it can page anyone.
func trialCommands() []command {
	return []command{
		{path: "test", args: "[RULE.btr|RULE.wasm] [TRACES.json|TRACES.pb...]", about: "run a rule on traces in a running server's sandbox, storing nothing; exit 1 when it faults on a trace or, with --expect, a verdict is not the one expected", minArgs: 0, maxArgs: -1, setup: testRule},
		{path: "replay", args: "[RULE.btr|RULE.wasm]", about: "replay a candidate rule over the server's tape of recent traces; --id of a stored rule compares it with the version in force", minArgs: 0, maxArgs: 1, setup: replayCandidate},
		{path: "rules replay", args: "ID", about: "replay a stored version of a rule (--version, default the one in force) over the tape, against the version in force", minArgs: 1, maxArgs: 1, setup: rulesReplay},
	}
}

// trialTimeout is the default --timeout of test and replay: a replay may
// take 30 s on the server, and a test of a thousand traces some seconds.
const trialTimeout = 65 * time.Second

// longer gives a command that may run long its own default --timeout.
func longer(fs *flag.FlagSet, a *app) error {
	if setFlags(fs)["timeout"] {
		return nil
	}
	c, err := newClient(a.g.server, a.g.token, trialTimeout)
	if err != nil {
		return err
	}
	a.c = c
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// candidateFlags are how a command names the rule to try.
type candidateFlags struct {
	expr, wasm, id string
	fuel, pages    uint64
}

func (c *candidateFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.expr, "e", "", "the rule as a DSL `EXPRESSION` instead of a file")
	fs.StringVar(&c.wasm, "wasm", "", "the rule as a compiled module `FILE` instead of a DSL file")
	fs.StringVar(&c.id, "id", "", "name the candidate `ID`; on a replay, a stored rule's id compares it with that rule's version in force")
	fs.Uint64Var(&c.fuel, "fuel", 0, "fuel budget per trace, `N` instructions (default the server's, 25000000)")
	fs.Uint64Var(&c.pages, "memory-pages", 0, "linear memory cap in 64 KiB `PAGES` (default 512)")
}

// parts reads the candidate into multipart parts, taking the rule file
// from args when no flag names it, and returns the remaining arguments.
func (c *candidateFlags) parts(mw *multipart.Writer, args []string) ([]string, error) {
	given := 0
	for _, s := range []string{c.expr, c.wasm} {
		if s != "" {
			given++
		}
	}
	if given > 1 {
		return nil, usageErrorf("give the rule once: -e EXPRESSION or --wasm FILE")
	}
	switch {
	case c.expr != "":
		return args, writePart(mw, "expression", "", "text/plain", []byte(c.expr))
	case c.wasm != "":
		b, err := os.ReadFile(c.wasm)
		if err != nil {
			return nil, usageErrorf("read the module: %v", err)
		}
		return args, writePart(mw, "module", filepath.Base(c.wasm), "application/wasm", b)
	case len(args) == 0:
		return nil, usageErrorf("no rule: give RULE.btr (DSL), -e EXPRESSION or --wasm FILE")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return nil, usageErrorf("read the rule: %v", err)
	}
	if bytes.HasPrefix(b, []byte("\x00asm")) {
		return args[1:], writePart(mw, "module", filepath.Base(args[0]), "application/wasm", b)
	}
	return args[1:], writePart(mw, "expression", "", "text/plain", b)
}

func (c *candidateFlags) query() url.Values {
	q := url.Values{}
	if c.id != "" {
		q.Set("id", c.id)
	}
	if c.fuel > 0 {
		q.Set("fuel", strconv.FormatUint(c.fuel, 10))
	}
	if c.pages > 0 {
		q.Set("memory_pages", strconv.FormatUint(c.pages, 10))
	}
	return q
}

func writePart(mw *multipart.Writer, name, filename, contentType string, b []byte) error {
	h := textproto.MIMEHeader{}
	disp := fmt.Sprintf(`form-data; name=%q`, name)
	if filename != "" {
		disp += fmt.Sprintf(`; filename=%q`, filename)
	}
	h.Set("Content-Disposition", disp)
	h.Set("Content-Type", contentType)
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// testResultJSON is the answer of POST /v1/rules/test, as far as the CLI
// reads it.
type testResultJSON struct {
	Rule struct {
		ID       string `json:"id"`
		Severity string `json:"severity"`
	} `json:"rule"`
	Traces  int    `json:"traces"`
	Flagged int    `json:"flagged"`
	Passed  int    `json:"passed"`
	Errors  int    `json:"errors"`
	Stopped string `json:"stopped"`
	Results []struct {
		TraceID    string `json:"traceId"`
		Spans      int    `json:"spans"`
		Verdict    string `json:"verdict"`
		FuelUsed   uint64 `json:"fuelUsed"`
		Violations []struct {
			SpanID   string `json:"spanId"`
			SpanName string `json:"spanName"`
			Message  string `json:"message"`
		} `json:"violations"`
		Fault *struct {
			Reason string `json:"reason"`
			Error  string `json:"error"`
		} `json:"fault"`
	} `json:"results"`
}

func testRule(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	var c candidateFlags
	c.register(fs)
	var traceIDs stringList
	fs.Var(&traceIDs, "trace-id", "test on a trace of the server's tape of recent traffic, by `ID` (repeatable)")
	expect := fs.String("expect", "", "`VERDICT` every trace must get: violation or pass; exit 1 when one does not")
	return func(ctx context.Context, a *app, args []string) error {
		if err := longer(fs, a); err != nil {
			return err
		}
		if *expect != "" && *expect != "violation" && *expect != "pass" {
			return usageErrorf("--expect %q: use violation or pass", *expect)
		}
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		files, err := c.parts(mw, args)
		if err != nil {
			return err
		}
		if len(files) == 0 && len(traceIDs) == 0 {
			return usageErrorf("no traces: give TRACES.json (OTLP/JSON) or TRACES.pb (OTLP protobuf) files, or --trace-id ID")
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return usageErrorf("read traces: %v", err)
			}
			ct := "application/json"
			if t := bytes.TrimSpace(b); len(t) == 0 || (t[0] != '{' && t[0] != '[') {
				ct = "application/x-protobuf"
			}
			if err := writePart(mw, "traces", filepath.Base(f), ct, b); err != nil {
				return err
			}
		}
		if len(traceIDs) > 0 {
			if err := writePart(mw, "traceIds", "", "text/plain", []byte(strings.Join(traceIDs, ","))); err != nil {
				return err
			}
		}
		if err := mw.Close(); err != nil {
			return err
		}
		var res testResultJSON
		raw, err := a.c.callJSON(ctx, request{Method: "POST", Path: "/v1/rules/test", Query: c.query(), Body: body.Bytes(), ContentType: mw.FormDataContentType()}, &res)
		if err != nil {
			return err
		}
		failed := 0
		rows := make([][]string, 0, len(res.Results))
		for _, r := range res.Results {
			detail := ""
			switch {
			case r.Fault != nil:
				detail = r.Fault.Reason + ": " + r.Fault.Error
			case len(r.Violations) > 0:
				var msgs []string
				for _, v := range r.Violations {
					msgs = append(msgs, fmt.Sprintf("%s (%s): %s", v.SpanName, v.SpanID, v.Message))
				}
				detail = strings.Join(msgs, "; ")
			}
			row := []string{r.TraceID, strconv.Itoa(r.Spans), strings.ToUpper(r.Verdict), strconv.FormatUint(r.FuelUsed, 10)}
			if *expect != "" {
				mark := "ok"
				if r.Verdict != *expect {
					mark = "FAIL want " + *expect
					failed++
				}
				row = append(row, mark)
			}
			rows = append(rows, append(row, truncate(detail, 160)))
		}
		if a.g.json {
			if err := a.printJSON(raw); err != nil {
				return err
			}
		} else {
			header := []string{"TRACE", "SPANS", "VERDICT", "FUEL"}
			if *expect != "" {
				header = append(header, "EXPECT")
			}
			if err := writeTable(a.stdout, append(header, "DETAIL"), rows); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: %d traces, %d flagged, %d passed, %d errors\n", res.Rule.ID, res.Traces, res.Flagged, res.Passed, res.Errors)
			if res.Stopped != "" {
				fmt.Fprintf(a.stdout, "stopped: %s\n", res.Stopped)
			}
		}
		if failed > 0 {
			fmt.Fprintf(a.stderr, "betrace: %d of %d traces did not get the expected verdict %s\n", failed, len(res.Results), *expect)
		}
		// A rule that faults is broken whatever was expected: it would
		// take strikes live.
		if res.Errors > 0 {
			fmt.Fprintf(a.stderr, "betrace: the rule faulted on %d of %d traces (see DETAIL)\n", res.Errors, len(res.Results))
		}
		if failed > 0 || res.Errors > 0 {
			return &reportedError{code: exitFailed}
		}
		return nil
	}
}

// replayJSON is a replay answer, as far as the CLI reads it.
type replayJSON struct {
	Rule struct {
		ID      string `json:"id"`
		Version int    `json:"version"`
	} `json:"rule"`
	Traces        int      `json:"traces"`
	Evaluated     int      `json:"evaluated"`
	Flagged       int      `json:"flagged"`
	Passed        int      `json:"passed"`
	Errors        int      `json:"errors"`
	FlaggedTraces []string `json:"flaggedTraces"`
	Diff          *struct {
		Version   int       `json:"version"`
		New       groupJSON `json:"new"`
		Gone      groupJSON `json:"gone"`
		Unchanged groupJSON `json:"unchanged"`
	} `json:"diff"`
	Fuel struct {
		P50 uint64 `json:"p50"`
		P99 uint64 `json:"p99"`
		Max uint64 `json:"max"`
	} `json:"fuel"`
	Faults struct {
		Count    int            `json:"count"`
		ByReason map[string]int `json:"byReason"`
	} `json:"faults"`
	Stopped string `json:"stopped"`
}

type groupJSON struct {
	Count    int      `json:"count"`
	TraceIDs []string `json:"traceIds"`
}

func replayCandidate(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	var c candidateFlags
	c.register(fs)
	return func(ctx context.Context, a *app, args []string) error {
		if err := longer(fs, a); err != nil {
			return err
		}
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		rest, err := c.parts(mw, args)
		if err != nil {
			return err
		}
		if len(rest) > 0 {
			return usageErrorf("replay runs on the server's tape and takes no trace files (%s): use betrace test for those", strings.Join(rest, " "))
		}
		if err := mw.Close(); err != nil {
			return err
		}
		return a.replay(ctx, request{Method: "POST", Path: "/v1/rules/replay", Query: c.query(), Body: body.Bytes(), ContentType: mw.FormDataContentType()})
	}
}

func rulesReplay(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	version := fs.Int("version", 0, "replay module `VERSION` (default the one in force)")
	return func(ctx context.Context, a *app, args []string) error {
		if err := longer(fs, a); err != nil {
			return err
		}
		if err := ruleID(args[0]); err != nil {
			return err
		}
		q := url.Values{}
		if *version > 0 {
			q.Set("version", strconv.Itoa(*version))
		}
		return a.replay(ctx, request{Method: "POST", Path: rulePath(args[0], "/replay"), Query: q})
	}
}

func (a *app) replay(ctx context.Context, req request) error {
	var res replayJSON
	raw, err := a.c.callJSON(ctx, req, &res)
	if err != nil {
		return err
	}
	if a.g.json {
		return a.printJSON(raw)
	}
	name := res.Rule.ID
	if res.Rule.Version > 0 {
		name += " version " + strconv.Itoa(res.Rule.Version)
	}
	fmt.Fprintf(a.stdout, "%s on %d of %d traces of the tape: %d flagged, %d passed, %d errors\n", name, res.Evaluated, res.Traces, res.Flagged, res.Passed, res.Errors)
	fmt.Fprintf(a.stdout, "fuel per trace: p50 %d, p99 %d, max %d\n", res.Fuel.P50, res.Fuel.P99, res.Fuel.Max)
	if res.Faults.Count > 0 {
		b, _ := json.Marshal(res.Faults.ByReason)
		fmt.Fprintf(a.stdout, "faults: %d %s\n", res.Faults.Count, b)
	}
	if d := res.Diff; d != nil {
		fmt.Fprintf(a.stdout, "against version %d in force: %d new, %d gone, %d unchanged\n", d.Version, d.New.Count, d.Gone.Count, d.Unchanged.Count)
		for _, g := range []struct {
			name string
			g    groupJSON
		}{{"new", d.New}, {"gone", d.Gone}} {
			for _, id := range g.g.TraceIDs {
				fmt.Fprintf(a.stdout, "  %-4s %s\n", g.name, id)
			}
		}
	}
	if res.Stopped != "" {
		fmt.Fprintf(a.stdout, "stopped: %s\n", res.Stopped)
	}
	return nil
}
