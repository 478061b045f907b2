package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

func rulesCommands() []command {
	return []command{
		{path: "rules list", about: "list the rules, ordered by id", maxArgs: 0, setup: rulesList},
		{path: "rules get", args: "ID", about: "show one rule: state, module versions, limits and statistics", minArgs: 1, maxArgs: 1, setup: rulesGet},
		{path: "rules push", args: "FILE.wasm... | RULE.btr | RULES.yaml", about: "create rules from compiled modules, a DSL rule file (.btr, compiled by the server; its id is the file name unless --id) or a rules file (.yaml: a `rules:` list of id, name, severity, condition); --update installs new versions of existing ones", minArgs: 1, maxArgs: -1, setup: rulesPush},
		{path: "rules update", args: "ID", about: "change a rule's fields, or install a new module version with --module", minArgs: 1, maxArgs: 1, setup: rulesUpdate},
		{path: "rules enable", args: "ID", about: "enable a rule; this also clears a quarantine", minArgs: 1, maxArgs: 1, setup: rulesSetEnabled(true)},
		{path: "rules disable", args: "ID", about: "disable a rule", minArgs: 1, maxArgs: 1, setup: rulesSetEnabled(false)},
		{path: "rules rollback", args: "ID", about: "return to an earlier module version (default: the one before the current)", minArgs: 1, maxArgs: 1, setup: rulesRollback},
		{path: "rules delete", args: "ID", about: "delete a rule (needs --yes)", minArgs: 1, maxArgs: 1, setup: rulesDelete},
	}
}

// ruleID checks an id argument the way the server does, so that it can
// be put in a URL path as is. "." and ".." are refused: a URL cannot name
// them.
func ruleID(id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return usageErrorf("%q is not a rule id: use 1 to 128 letters, digits, '-', '_' and '.'", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return usageErrorf("%q is not a rule id: use 1 to 128 letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

func rulePath(id string, suffix ...string) string {
	return "/v1/rules/" + id + strings.Join(suffix, "")
}

// splitTags reads a comma-separated list; "" is the empty list.
func splitTags(s string) []string {
	tags := []string{}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// ruleSummary is a one-line account of a rule after a change.
func ruleSummary(r ruleJSON) string {
	s := fmt.Sprintf("%s: version %d, %s, %s", r.ID, r.Version, r.Severity, r.State)
	if r.State == "quarantined" && r.StateReason != "" {
		s += " (" + r.StateReason + ")"
	}
	return s
}

func rulesList(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	enabledOnly := fs.Bool("enabled-only", false, "only enabled rules")
	severity := fs.String("severity", "", "only rules of `SEVERITY`: CRITICAL, HIGH, MEDIUM, LOW or INFO (any case)")
	state := fs.String("state", "", "only rules in `STATE`: active, disabled or quarantined")
	return func(ctx context.Context, a *app, _ []string) error {
		q := url.Values{}
		if *enabledOnly {
			q.Set("enabled_only", "true")
		}
		if *severity != "" {
			q.Set("severity", *severity)
		}
		if *state != "" {
			q.Set("state", *state)
		}
		var list ruleListJSON
		raw, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: "/v1/rules", Query: q}, &list)
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printJSON(raw)
		}
		if len(list.Rules) == 0 {
			fmt.Fprintln(a.stderr, "no rules")
			return nil
		}
		return writeRulesTable(a.stdout, list.Rules)
	}
}

func rulesGet(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	return func(ctx context.Context, a *app, args []string) error {
		if err := ruleID(args[0]); err != nil {
			return err
		}
		var r ruleJSON
		raw, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: rulePath(args[0])}, &r)
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printJSON(raw)
		}
		return writeRuleDetail(a.stdout, r)
	}
}

// writeRuleDetail shows one rule as labelled lines and its versions.
func writeRuleDetail(w io.Writer, r ruleJSON) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	line := func(label, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", label, cell(value))
	}
	line("ID", r.ID)
	line("Name", r.Name)
	line("Description", r.Description)
	state := r.State
	if r.StateReason != "" {
		state += " (" + r.StateReason + ")"
	}
	line("State", state)
	line("Enabled", strconv.FormatBool(r.Enabled))
	line("Severity", r.Severity)
	line("Tags", strings.Join(r.Tags, ", "))
	if r.Expression != nil {
		line("Expression", strings.Join(strings.Fields(*r.Expression), " "))
	}
	m := r.Module
	line("Version", fmt.Sprintf("%d (sha256 %s, %s, ABI %d, %s, %s)", r.Version, shortSHA(m.SHA256), formatBytes(m.SizeBytes), m.ABIVersion, m.Source, formatTime(m.CreatedAt)))
	line("Limits", fmt.Sprintf("fuel %d per evaluation, %d memory pages (%s)", r.Limits.Fuel, r.Limits.MemoryPages, formatBytes(int64(r.Limits.MemoryPages)*64<<10)))
	line("Stats", fmt.Sprintf("%d evaluations, %d violations, %d errors, fuel p99 %d", r.Stats.Evaluations, r.Stats.Violations, r.Stats.Errors, r.Stats.FuelP99))
	if q := r.Quarantine; q != nil {
		line("Quarantine", fmt.Sprintf("%s at %s after %d strikes (trace %s, fuel used %d): %s", q.Reason, formatTime(q.At), q.Strikes, q.TraceID, q.FuelUsed, q.LastError))
	}
	line("Created", formatTime(r.CreatedAt))
	line("Updated", formatTime(r.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Versions) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	rows := make([][]string, 0, len(r.Versions))
	for i := len(r.Versions) - 1; i >= 0; i-- {
		v := r.Versions[i]
		inForce := ""
		if v.Version == r.Version {
			inForce = "in force"
		}
		rows = append(rows, []string{strconv.Itoa(v.Version), v.SHA256, formatBytes(v.SizeBytes), v.Source, formatTime(v.CreatedAt), inForce})
	}
	return writeTable(w, []string{"VERSION", "SHA256", "SIZE", "SOURCE", "CREATED", ""}, rows)
}

type pushOptions struct {
	id, name, severity, description, tags string
	disabled, update                      bool
	fuel                                  uint64
	memoryPages                           uint
}

func rulesPush(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	var o pushOptions
	fs.StringVar(&o.id, "id", "", "rule `ID` (default: the id the module describes); one file only")
	fs.StringVar(&o.name, "name", "", "display `NAME` (default: the module's); one file only")
	fs.StringVar(&o.description, "description", "", "description `TEXT` (default: the module's); one file only")
	fs.StringVar(&o.severity, "severity", "", "`SEVERITY`: CRITICAL, HIGH, MEDIUM, LOW or INFO, any case (default: the module's)")
	fs.StringVar(&o.tags, "tags", "", "comma-separated `TAGS` (default: the module's)")
	fs.BoolVar(&o.disabled, "disabled", false, "create the rule disabled")
	fs.Uint64Var(&o.fuel, "fuel", 0, "fuel: `N` metered wasm instructions per evaluation (server default 25000000)")
	fs.UintVar(&o.memoryPages, "memory-pages", 0, "linear memory cap of `N` 64 KiB pages (server default 512)")
	fs.BoolVar(&o.update, "update", false, "when the rule exists, install the module as its new version")
	return func(ctx context.Context, a *app, files []string) error {
		return a.push(ctx, o, setFlags(fs), files)
	}
}

// pushResult is one file's outcome in `rules push --json` of several files.
type pushResult struct {
	File   string    `json:"file"`
	Action string    `json:"action"` // created, updated, unchanged or failed
	Rule   rawJSON   `json:"rule,omitempty"`
	Error  *apiError `json:"error,omitempty"`
}

// rawJSON embeds an answer of the server as is.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func (a *app) push(ctx context.Context, o pushOptions, set map[string]bool, files []string) error {
	if len(files) > 1 {
		for _, f := range []string{"id", "name", "description"} {
			if set[f] {
				return usageErrorf("--%s names one rule: push one file with it (with several files each module describes itself)", f)
			}
		}
	}
	q := url.Values{}
	if set["id"] {
		if err := ruleID(o.id); err != nil {
			return err
		}
		q.Set("id", o.id)
	}
	for _, f := range []struct{ key, value string }{{"name", o.name}, {"severity", o.severity}, {"description", o.description}, {"tags", o.tags}} {
		if set[f.key] {
			q.Set(f.key, f.value)
		}
	}
	if o.disabled {
		q.Set("enabled", "false")
	}
	if set["fuel"] {
		q.Set("fuel", strconv.FormatUint(o.fuel, 10))
	}
	if set["memory-pages"] {
		q.Set("memory_pages", strconv.FormatUint(uint64(o.memoryPages), 10))
	}

	if len(files) == 1 && isRulesFile(files[0]) {
		return a.pushRulesFile(ctx, files[0], o.update)
	}
	if len(files) == 1 && strings.HasSuffix(files[0], ".btr") {
		return a.pushDSL(ctx, files[0], o, set)
	}
	var prog *progress
	if len(files) > 1 {
		prog = &progress{w: a.stderr, tty: a.stderrTTY, total: len(files)}
	}
	var results []pushResult
	failed := 0
	for i, file := range files {
		prog.step(i, file)
		action, rule, raw, err := a.pushOne(ctx, file, q, o.update)
		prog.clear()
		if err != nil {
			// Without a server or with a wrong token no other file can
			// succeed: stop at once with that exit code.
			if c := exitCode(err); c == exitUnreachable || c == exitUnauthorized || errors.Is(err, errInterrupted) || len(files) == 1 {
				return fmt.Errorf("%s: %w", file, err)
			}
			failed++
			fmt.Fprintf(a.stderr, "betrace: %s: %s\n", file, err)
			res := pushResult{File: file, Action: "failed"}
			if !errors.As(err, &res.Error) {
				res.Error = &apiError{Message: err.Error(), Details: []string{}}
			}
			results = append(results, res)
			continue
		}
		results = append(results, pushResult{File: file, Action: action, Rule: raw})
		if !a.g.json {
			fmt.Fprintf(a.stdout, "%s %s (%s)\n", action, ruleSummary(rule), file)
			if action == "unchanged" {
				fmt.Fprintf(a.stdout, "  version %d already runs this module (sha256 %s): no new version\n", rule.Version, shortSHA(rule.Module.SHA256))
			}
		}
	}
	prog.finish()
	if a.g.json {
		var err error
		if len(files) == 1 {
			err = a.printJSON(results[0].Rule)
		} else {
			err = a.printValue(map[string]any{"results": results})
		}
		if err != nil {
			return err
		}
	}
	if failed > 0 {
		fmt.Fprintf(a.stderr, "betrace: %d of %d files failed\n", failed, len(files))
		return &reportedError{code: exitFailed}
	}
	return nil
}

// pushRulesFile creates every rule of a rules file (the earlier project's
// format), compiled by the server, with a result line per rule; with update
// an existing rule gets the new condition as its next version.
func (a *app) pushRulesFile(ctx context.Context, file string, update bool) error {
	items, err := readRulesFile(file)
	if err != nil {
		return usageErrorf("%s: %v", file, err)
	}
	prog := &progress{w: a.stderr, tty: a.stderrTTY, total: len(items)}
	failed := 0
	for i, it := range items {
		prog.step(i, it.id)
		var rule ruleJSON
		action := "created"
		_, err := a.c.callJSON(ctx, request{Method: http.MethodPost, Path: "/v1/rules", Body: it.body, ContentType: "application/json"}, &rule)
		var ae *apiError
		if update && errors.As(err, &ae) && ae.Status == http.StatusConflict && ruleID(it.id) == nil {
			action = "updated"
			_, err = a.c.callJSON(ctx, request{Method: http.MethodPut, Path: rulePath(it.id), Body: it.body, ContentType: "application/json"}, &rule)
		}
		prog.clear()
		if err != nil {
			if c := exitCode(err); c == exitUnreachable || c == exitUnauthorized || errors.Is(err, errInterrupted) {
				return fmt.Errorf("%s: %w", it.id, err)
			}
			failed++
			fmt.Fprintf(a.stdout, "failed  %s: %s\n", it.id, err)
			continue
		}
		fmt.Fprintf(a.stdout, "%s %s\n", action, ruleSummary(rule))
	}
	prog.finish()
	if failed > 0 {
		fmt.Fprintf(a.stderr, "betrace: %d of %d rules in %s failed\n", failed, len(items), file)
		return &reportedError{code: exitFailed}
	}
	return nil
}

// pushDSL creates a rule from a DSL file, compiled by the server; with
// update an existing rule gets the expression as its next version.
func (a *app) pushDSL(ctx context.Context, file string, o pushOptions, set map[string]bool) error {
	src, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s: cannot read it: %w", file, err)
	}
	id := strings.TrimSuffix(filepath.Base(file), ".btr")
	if set["id"] {
		id = o.id
	}
	if err := ruleID(id); err != nil {
		return usageErrorf("%s: %v (name the file after the rule, or give --id)", file, err)
	}
	body := map[string]any{"id": id, "expression": string(src)}
	for _, f := range []struct{ key, value string }{{"name", o.name}, {"severity", o.severity}, {"description", o.description}} {
		if set[f.key] {
			body[f.key] = f.value
		}
	}
	if set["tags"] {
		body["tags"] = splitTags(o.tags)
	}
	if o.disabled {
		body["enabled"] = false
	}
	if set["fuel"] || set["memory-pages"] {
		lim := map[string]any{}
		if set["fuel"] {
			lim["fuel"] = o.fuel
		}
		if set["memory-pages"] {
			lim["memoryPages"] = o.memoryPages
		}
		body["limits"] = lim
	}
	b, _ := json.Marshal(body)
	var rule ruleJSON
	action := "created"
	raw, err := a.c.callJSON(ctx, request{Method: http.MethodPost, Path: "/v1/rules", Body: b, ContentType: "application/json"}, &rule)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == 6 {
		if !o.update {
			hint := *ae
			hint.Message += " (--update installs the expression as the rule's new version)"
			return fmt.Errorf("%s: %w", file, &hint)
		}
		delete(body, "id")
		b, _ = json.Marshal(body)
		action = "updated"
		raw, err = a.c.callJSON(ctx, request{Method: http.MethodPut, Path: rulePath(id), Body: b, ContentType: "application/json"}, &rule)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if a.g.json {
		return a.printJSON(raw)
	}
	fmt.Fprintf(a.stdout, "%s %s\n", action, ruleSummary(rule))
	return nil
}

// pushOne uploads one module: POST, and with update a PUT of the same
// module when the rule exists, unless it already runs that very module.
func (a *app) pushOne(ctx context.Context, file string, q url.Values, update bool) (action string, rule ruleJSON, raw []byte, err error) {
	module, err := os.ReadFile(file)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = fmt.Errorf("cannot read it: %w", pe.Err) // the caller names the file
	}
	if err != nil {
		return "", rule, nil, err
	}
	if len(module) == 0 {
		return "", rule, nil, errors.New("the file is empty")
	}
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return "", rule, nil, errors.New("not a WebAssembly module (it does not start with \\0asm): compile a DSL rule with `betrace compile FILE.btr`, or push the .btr file itself")
	}
	raw, err = a.c.callJSON(ctx, request{Method: http.MethodPost, Path: "/v1/rules", Query: q, Body: module, ContentType: "application/wasm"}, &rule)
	if err == nil {
		return "created", rule, raw, nil
	}
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != 6 {
		return "", rule, nil, err
	}
	id := q.Get("id")
	if id == "" {
		id = conflictID(ae.Message)
	}
	if !update || ruleID(id) != nil {
		hint := *ae
		hint.Message += " (--update installs the module as the rule's new version)"
		return "", rule, nil, &hint
	}
	// The same module again is no new version: it would only push real
	// versions out of the rollback history.
	var current ruleJSON
	if raw, err := a.c.callJSON(ctx, request{Method: http.MethodGet, Path: rulePath(id)}, &current); err == nil && current.Module.SHA256 == sha256Hex(module) && onlyID(q) {
		return "unchanged", current, raw, nil
	}
	put := url.Values{}
	for k, v := range q {
		if k != "id" {
			put[k] = v
		}
	}
	raw, err = a.c.callJSON(ctx, request{Method: http.MethodPut, Path: rulePath(id), Query: put, Body: module, ContentType: "application/wasm"}, &rule)
	if err != nil {
		return "", rule, nil, err
	}
	return "updated", rule, raw, nil
}

// conflictID reads the rule id out of the server's 409 message,
// `rule already exists: "ID"`: with several files only the server knows
// the id each module describes.
func conflictID(msg string) string {
	i := strings.LastIndex(msg, `: "`)
	if i < 0 {
		return ""
	}
	id, err := strconv.Unquote(msg[i+2:])
	if err != nil {
		return ""
	}
	return id
}

type updateOptions struct {
	severity, name, description, tags, module string
	enable, disable                           bool
	fuel                                      uint64
	memoryPages                               uint
}

func rulesUpdate(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	var o updateOptions
	fs.StringVar(&o.severity, "severity", "", "new `SEVERITY`: CRITICAL, HIGH, MEDIUM, LOW or INFO (any case)")
	fs.StringVar(&o.name, "name", "", "new display `NAME`")
	fs.StringVar(&o.description, "description", "", "new description `TEXT`")
	fs.StringVar(&o.tags, "tags", "", "new comma-separated `TAGS` (\"\" clears them)")
	fs.BoolVar(&o.enable, "enable", false, "enable the rule (clears a quarantine)")
	fs.BoolVar(&o.disable, "disable", false, "disable the rule")
	fs.Uint64Var(&o.fuel, "fuel", 0, "fuel: `N` metered wasm instructions per evaluation")
	fs.UintVar(&o.memoryPages, "memory-pages", 0, "linear memory cap of `N` 64 KiB pages")
	fs.StringVar(&o.module, "module", "", "install this compiled module (`FILE.wasm`) as the rule's new version")
	return func(ctx context.Context, a *app, args []string) error {
		return a.update(ctx, o, setFlags(fs), args[0])
	}
}

func (a *app) update(ctx context.Context, o updateOptions, set map[string]bool, id string) error {
	if err := ruleID(id); err != nil {
		return err
	}
	enable, disable := set["enable"] && o.enable, set["disable"] && o.disable
	if enable && disable {
		return usageErrorf("--enable and --disable contradict each other")
	}
	patch := map[string]any{}
	q := url.Values{}
	for _, f := range []struct {
		flag, key string
		value     string
	}{{"severity", "severity", o.severity}, {"name", "name", o.name}, {"description", "description", o.description}} {
		if set[f.flag] {
			patch[f.key] = f.value
			q.Set(f.key, f.value)
		}
	}
	if set["tags"] {
		patch["tags"] = splitTags(o.tags)
		q.Set("tags", o.tags)
	}
	if enable || disable {
		patch["enabled"] = enable
		q.Set("enabled", strconv.FormatBool(enable))
	}
	if set["fuel"] {
		patch["fuel"] = o.fuel
		q.Set("fuel", strconv.FormatUint(o.fuel, 10))
	}
	if set["memory-pages"] {
		patch["memoryPages"] = o.memoryPages
		q.Set("memory_pages", strconv.FormatUint(uint64(o.memoryPages), 10))
	}

	req := request{Method: http.MethodPut, Path: rulePath(id)}
	if set["module"] {
		module, err := os.ReadFile(o.module)
		if err != nil {
			return err
		}
		req.Query, req.Body, req.ContentType = q, module, "application/wasm"
	} else {
		if len(patch) == 0 {
			return usageErrorf("nothing to update: give --severity, --name, --description, --tags, --enable, --disable, --fuel, --memory-pages or --module")
		}
		body, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		req.Body, req.ContentType = body, "application/json"
	}
	var r ruleJSON
	raw, err := a.c.callJSON(ctx, req, &r)
	if err != nil {
		return err
	}
	if a.g.json {
		return a.printJSON(raw)
	}
	fmt.Fprintf(a.stdout, "updated %s\n", ruleSummary(r))
	return nil
}

func rulesSetEnabled(enabled bool) func(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	return func(fs *flag.FlagSet) func(context.Context, *app, []string) error {
		return func(ctx context.Context, a *app, args []string) error {
			id := args[0]
			if err := ruleID(id); err != nil {
				return err
			}
			verb := "disable"
			if enabled {
				verb = "enable"
			}
			var r ruleJSON
			raw, err := a.c.callJSON(ctx, request{Method: http.MethodPost, Path: rulePath(id, "/", verb)}, &r)
			if err != nil {
				return err
			}
			if a.g.json {
				return a.printJSON(raw)
			}
			fmt.Fprintf(a.stdout, "%sd %s\n", verb, ruleSummary(r))
			return nil
		}
	}
}

func rulesRollback(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	version := fs.Int("version", 0, "module version `N` to return to (default: the one before the current)")
	return func(ctx context.Context, a *app, args []string) error {
		id := args[0]
		if err := ruleID(id); err != nil {
			return err
		}
		q := url.Values{}
		if setFlags(fs)["version"] {
			if *version < 1 {
				return usageErrorf("--version %d: module versions start at 1", *version)
			}
			q.Set("version", strconv.Itoa(*version))
		}
		var r ruleJSON
		raw, err := a.c.callJSON(ctx, request{Method: http.MethodPost, Path: rulePath(id, "/rollback"), Query: q}, &r)
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printJSON(raw)
		}
		// The server installs the old module as the newest version: name
		// the version whose module it is.
		from := ""
		for i := len(r.Versions) - 1; i >= 0; i-- {
			if v := r.Versions[i]; v.Version != r.Version && v.SHA256 == r.Module.SHA256 {
				from = fmt.Sprintf(", the module of version %d", v.Version)
				break
			}
		}
		fmt.Fprintf(a.stdout, "rolled back %s%s (sha256 %s)\n", ruleSummary(r), from, shortSHA(r.Module.SHA256))
		return nil
	}
}

func rulesDelete(fs *flag.FlagSet) func(context.Context, *app, []string) error {
	yes := fs.Bool("yes", false, "really delete (required)")
	return func(ctx context.Context, a *app, args []string) error {
		id := args[0]
		if err := ruleID(id); err != nil {
			return err
		}
		if !*yes {
			return usageErrorf("deleting rule %q cannot be undone: add --yes", id)
		}
		raw, err := a.c.call(ctx, request{Method: http.MethodDelete, Path: rulePath(id)})
		if err != nil {
			return err
		}
		if a.g.json {
			return a.printJSON(raw)
		}
		fmt.Fprintf(a.stdout, "deleted %s\n", id)
		return nil
	}
}

// onlyID reports whether q sets nothing but the rule id: an update with
// other fields still has those to apply.
func onlyID(q url.Values) bool {
	for k := range q {
		if k != "id" {
			return false
		}
	}
	return true
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
