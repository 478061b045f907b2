package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// runCLI runs a command line as main would, with env as the environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	if env == nil {
		code = run(context.Background(), args, &out, &errb)
	} else {
		code = newApp(&out, &errb, func(k string) string { return env[k] }).main(context.Background(), args)
	}
	return out.String(), errb.String(), code
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

// fakeAPI is a stand-in server recording what it was sent.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

type seen struct {
	Method, Path, Query, Auth, ContentType string
	Body                                   []byte
}

func newFakeAPI(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeAPI {
	f := &fakeAPI{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), body})
		f.mu.Unlock()
		handler(w, r, body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

func (f *fakeAPI) env() map[string]string { return map[string]string{"BETRACE_SERVER": f.URL} }

func writeJSONAnswer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func apiErr(code int, msg string) string {
	return fmt.Sprintf(`{"code":%d,"message":%q,"details":[]}`, code, msg)
}

const ruleDoc = `{"id":"r1","name":"Rule one","description":"","severity":"HIGH","tags":[],"enabled":true,"state":"active","stateReason":"",
"module":{"version":1,"sha256":"abc","sizeBytes":10,"abiVersion":1,"source":"wasm","createdAt":"2026-01-02T03:04:05Z"},
"versions":[{"version":1,"sha256":"abc","sizeBytes":10,"abiVersion":1,"source":"wasm","createdAt":"2026-01-02T03:04:05Z"}],
"limits":{"fuel":25000000,"memoryPages":512},"version":1,"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z",
"stats":{"evaluations":7,"violations":2,"errors":0,"fuelP99":1234}}`

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		pos     []string
		json    bool
		limit   int
		wantErr string
	}{
		{args: []string{"a", "--json", "b"}, pos: []string{"a", "b"}, json: true, limit: 1},
		{args: []string{"--json", "a"}, pos: []string{"a"}, json: true, limit: 1},
		{args: []string{"a", "-json"}, pos: []string{"a"}, json: true, limit: 1},
		{args: []string{"--limit=5", "x"}, pos: []string{"x"}, limit: 5},
		{args: []string{"x", "--limit", "5", "y"}, pos: []string{"x", "y"}, limit: 5},
		{args: []string{"a", "--", "--json", "-x"}, pos: []string{"a", "--json", "-x"}, limit: 1},
		{args: []string{"-"}, pos: []string{"-"}, limit: 1},
		{args: nil, pos: nil, limit: 1},
		{args: []string{"a", "--bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{args: []string{"--limit", "many"}, wantErr: "invalid value"},
		{args: []string{"--limit"}, wantErr: "flag needs an argument"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		j := fs.Bool("json", false, "")
		limit := fs.Int("limit", 1, "")
		pos, err := parseArgs(fs, tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(pos, tc.pos) || *j != tc.json || *limit != tc.limit {
			t.Errorf("%q: positional %q json %v limit %d (%v); want %q %v %d", tc.args, pos, *j, *limit, err, tc.pos, tc.json, tc.limit)
		}
	}
}

func TestGlobalFlagsAndEnvironment(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		writeJSONAnswer(w, 200, `{"rules":[],"totalCount":0}`)
	})
	other := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		writeJSONAnswer(w, 200, `{"rules":[],"totalCount":0}`)
	})
	// The environment names the server and the token.
	if _, stderr, code := runCLI(t, map[string]string{"BETRACE_SERVER": f.URL, "BETRACE_API_TOKEN": "env-token"}, "rules", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Flags win over the environment, before or after the arguments.
	if _, stderr, code := runCLI(t, map[string]string{"BETRACE_SERVER": "http://127.0.0.1:1", "BETRACE_API_TOKEN": "env-token"},
		"rules", "list", "--server", strings.TrimPrefix(other.URL, "http://"), "--token=flag-token"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// Global flags may also come before the command. No token anywhere:
	// no Authorization header.
	if _, stderr, code := runCLI(t, map[string]string{}, "--server", f.URL, "--timeout=5s", "rules", "list", "--enabled-only"); code != 0 {
		t.Fatalf("flags before the command: exit %d: %s", code, stderr)
	}
	got := f.requests()
	if len(got) != 2 || got[0].Auth != "Bearer env-token" || got[0].Path != "/v1/rules" || got[1].Auth != "" || got[1].Query != "enabled_only=true" {
		t.Errorf("requests to the env server: %+v", got)
	}
	if o := other.requests(); len(o) != 1 || o[0].Auth != "Bearer flag-token" {
		t.Errorf("requests to the --server server: %+v", o)
	}
}

func TestParseServer(t *testing.T) {
	for in, want := range map[string]string{
		"http://localhost:12011":       "http://localhost:12011",
		"localhost:12011":              "http://localhost:12011",
		"https://betrace.example/api/": "https://betrace.example/api",
		"10.0.0.1:80/":                 "http://10.0.0.1:80",
	} {
		u, err := parseServer(in)
		if err != nil || u.String() != want {
			t.Errorf("parseServer(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, in := range []string{"", "ftp://host", "http://", "http://host?x=1", "://"} {
		if _, err := parseServer(in); exitCode(err) != exitUsage {
			t.Errorf("parseServer(%q): %v, want a usage error", in, err)
		}
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	epoch := func(d time.Duration) string { return fmt.Sprint(now.Add(-d).Unix()) }
	for in, want := range map[string]string{
		"1h":                        epoch(time.Hour),
		"90s":                       epoch(90 * time.Second),
		"1h30m":                     epoch(90 * time.Minute),
		"7d":                        epoch(7 * 24 * time.Hour),
		"1d12h":                     epoch(36 * time.Hour),
		"0s":                        epoch(0),
		"2026-01-02T15:04:05Z":      "1767366245",
		"2026-01-02T16:04:05+01:00": "1767366245",
		"1767366245":                "1767366245",
		"1767366245000":             "1767366245000", // milliseconds: the server tells them apart
	} {
		got, err := parseWhen(in, now)
		if err != nil || got != want {
			t.Errorf("parseWhen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-1h", "1x", "d", "1.5d", "h1", "2026-01-02"} {
		if got, err := parseWhen(in, now); err == nil {
			t.Errorf("parseWhen(%q) = %q, want an error", in, got)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usageErrorf("bad"), exitUsage},
		{fmt.Errorf("file x: %w", usageErrorf("bad")), exitUsage},
		{&unreachableError{server: "s", err: errors.New("connection refused")}, exitUnreachable},
		{&unreachableError{server: "s", timeout: time.Second}, exitUnreachable},
		{&apiError{Status: 400}, exitFailed},
		{&apiError{Status: 401}, exitUnauthorized},
		{&apiError{Status: 403}, exitFailed},
		{&apiError{Status: 404}, exitNotFound},
		{fmt.Errorf("a.wasm: %w", &apiError{Status: 404}), exitNotFound},
		{&apiError{Status: 409}, exitFailed},
		{&apiError{Status: 500}, exitFailed},
		{&apiError{Status: 503}, exitFailed},
		{&reportedError{code: exitFailed}, exitFailed},
		{errInterrupted, exitFailed},
		{errors.New("open x.wasm: no such file or directory"), exitFailed},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestExitCodesFromAnswers runs real commands against answers of every kind.
func TestExitCodesFromAnswers(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}()
	slow := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		time.Sleep(500 * time.Millisecond)
		writeJSONAnswer(w, 200, ruleDoc)
	})
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		server  string
		args    []string
		want    int
		wantErr string
	}{
		{name: "ok", status: 200, body: ruleDoc, want: 0},
		{name: "bad request", status: 400, body: apiErr(3, "severity \"x\" is not one of CRITICAL, HIGH"), want: 1, wantErr: `betrace: severity "x" is not one of CRITICAL, HIGH`},
		{name: "unauthorized", status: 401, body: apiErr(16, "invalid bearer token"), want: 5, wantErr: "betrace: invalid bearer token"},
		{name: "forbidden", status: 403, body: apiErr(7, "no"), want: 1},
		{name: "not found", status: 404, body: apiErr(5, `rule not found: "r1"`), want: 4, wantErr: `betrace: rule not found: "r1"`},
		{name: "conflict", status: 409, body: apiErr(9, "changed meanwhile"), want: 1},
		{name: "internal", status: 500, body: apiErr(13, "internal error; the server log has the details"), want: 1},
		{name: "unavailable", status: 503, body: apiErr(14, "storage unavailable"), want: 1, wantErr: "storage unavailable"},
		{name: "proxy error page", status: 502, body: "<html>bad gateway</html>", want: 1, wantErr: "betrace: HTTP 502 Bad Gateway: <html>bad gateway</html>"},
		{name: "details", status: 400, body: `{"code":3,"message":"refused","details":["first","second"]}`, want: 1, wantErr: "betrace: refused\n  first\n  second"},
		{name: "connection refused", server: closed, want: 3, wantErr: "cannot reach the server at " + closed},
		{name: "timeout", server: slow.URL, args: []string{"--timeout", "100ms"}, want: 3, wantErr: "no answer from " + slow.URL + " within 100ms"},
		{name: "bad --timeout", args: []string{"--timeout", "0s"}, want: 2},
		{name: "bad --server", server: "ftp://x", want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := tc.server
			if server == "" {
				f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
					if tc.status == 502 {
						w.WriteHeader(502)
						io.WriteString(w, tc.body)
						return
					}
					writeJSONAnswer(w, tc.status, tc.body)
				})
				server = f.URL
			}
			args := append([]string{"rules", "get", "r1", "--server", server}, tc.args...)
			_, stderr, code := runCLI(t, map[string]string{}, args...)
			if code != tc.want {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.want, stderr)
			}
			if tc.wantErr != "" && !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.wantErr)
			}
		})
	}
}

// TestUsageErrors: exit 2, a message on stderr, and nothing sent.
func TestUsageErrors(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { writeJSONAnswer(w, 200, ruleDoc) })
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"rules"}, `"betrace rules" needs a command: list, get, push`},
		{[]string{"--bogus", "rules", "list"}, "flag provided but not defined: -bogus"},
		{[]string{"rules", "bogus"}, `unknown command "rules bogus"`},
		{[]string{"violations", "count"}, `unknown command "violations count"`},
		{[]string{"rules", "get"}, "rules get needs ID"},
		{[]string{"rules", "get", "a", "b"}, `rules get takes ID, not "a b"`},
		{[]string{"rules", "list", "extra"}, "rules list takes no arguments"},
		{[]string{"rules", "list", "--bogus"}, "flag provided but not defined"},
		{[]string{"rules", "get", "no/slash"}, `"no/slash" is not a rule id`},
		{[]string{"rules", "get", ".."}, `".." is not a rule id`},
		{[]string{"rules", "push"}, "rules push needs FILE.wasm..."},
		{[]string{"rules", "push", "a.wasm", "b.wasm", "--id", "x"}, "--id names one rule"},
		{[]string{"rules", "push", "a.wasm", "--fuel", "-1"}, "invalid value"},
		{[]string{"rules", "update", "r1"}, "nothing to update"},
		{[]string{"rules", "update", "r1", "--enable", "--disable"}, "contradict"},
		{[]string{"rules", "rollback", "r1", "--version", "0"}, "versions start at 1"},
		{[]string{"rules", "delete", "r1"}, "add --yes"},
		{[]string{"violations", "list", "--since", "yesterday"}, `--since: "yesterday" is not a duration`},
		{[]string{"violations", "list", "--until", "-5m"}, "positive duration"},
		{[]string{"violations", "list", "--limit", "0"}, "--limit 0"},
		{[]string{"status", "now"}, "status takes no arguments"},
	} {
		_, stderr, code := runCLI(t, f.env(), tc.args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "betrace: ") || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("usage errors sent %d requests", n)
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runCLI(t, nil, "help")
	if code != 0 {
		t.Fatalf("betrace help: exit %d", code)
	}
	for _, cmd := range commands() {
		if !strings.Contains(out, cmd.path) {
			t.Errorf("betrace help does not mention %q", cmd.path)
		}
	}
	for _, want := range []string{"--server", "--token", "--json", "--timeout", "BETRACE_SERVER", "BETRACE_API_TOKEN",
		"0  success", "1  the server answered", "2  usage error", "3  cannot reach", "4  not found", "5  unauthorized"} {
		if !strings.Contains(out, want) {
			t.Errorf("betrace help does not mention %q", want)
		}
	}
	for _, args := range [][]string{{"rules", "push", "--help"}, {"help", "rules", "push"}, {"rules", "push", "-h"}} {
		out, _, code := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(out, "usage: betrace rules push FILE.wasm...") || !strings.Contains(out, "--update") || !strings.Contains(out, "--server URL") {
			t.Errorf("%q: exit %d:\n%s", args, code, out)
		}
	}
	out, _, code = runCLI(t, map[string]string{}, "rules", "--help")
	if code != 0 || !strings.Contains(out, "rollback") {
		t.Errorf("rules --help: exit %d:\n%s", code, out)
	}
	// The token's value never shows in help.
	out, _, _ = runCLI(t, map[string]string{"BETRACE_API_TOKEN": "s3cret"}, "status", "--help")
	if strings.Contains(out, "s3cret") {
		t.Errorf("status --help shows the token:\n%s", out)
	}
}

func TestPush(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := dir + "/" + name
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good1, bad, good2 := file("one.wasm", "\x00asm one"), file("bad.wasm", "garbage"), file("two.wasm", "\x00asm two")
	var mu sync.Mutex
	existing := map[string]bool{}
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		id := r.URL.Query().Get("id")
		if id == "" {
			id = strings.Fields(string(body))[len(strings.Fields(string(body)))-1] // the fake module "describes" its id
		}
		switch {
		case r.Method == http.MethodPost && string(body) == "garbage":
			writeJSONAnswer(w, 400, apiErr(3, "module refused: not a WebAssembly module"))
		case r.Method == http.MethodPost && existing[id]:
			writeJSONAnswer(w, 409, apiErr(6, fmt.Sprintf("rule already exists: %q", id)))
		case r.Method == http.MethodPost:
			existing[id] = true
			writeJSONAnswer(w, 201, strings.Replace(ruleDoc, `"id":"r1"`, `"id":"`+id+`"`, 1))
		case r.Method == http.MethodPut:
			writeJSONAnswer(w, 200, strings.Replace(strings.Replace(ruleDoc, `"id":"r1"`, `"id":"`+strings.TrimPrefix(r.URL.Path, "/v1/rules/")+`"`, 1), `"version":1,"createdAt"`, `"version":2,"createdAt"`, 1))
		}
	})

	// Several files: the bad one fails (it is no module: refused before it is sent, with the way out), the others are still pushed.
	out, stderr, code := runCLI(t, f.env(), "rules", "push", good1, bad, good2, "--severity", "high", "--tags", "a,b", "--disabled", "--fuel", "5000", "--memory-pages", "64")
	if code != 1 {
		t.Errorf("push with a bad file: exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "betrace: "+bad+": not a WebAssembly module") || !strings.Contains(stderr, "betrace compile FILE.btr") || !strings.Contains(stderr, "1 of 3 files failed") {
		t.Errorf("stderr: %s", stderr)
	}
	if !strings.Contains(stderr, "[2/3] pushing "+bad) || strings.Contains(stderr, "\r") {
		t.Errorf("without a terminal, progress should be one line per file: %q", stderr)
	}
	if !strings.Contains(out, "created one: version 1") || !strings.Contains(out, "created two: version 1") || strings.Count(out, "\n") != 2 {
		t.Errorf("stdout: %s", out)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2 (the file that is no module is not sent)", len(reqs))
	}
	q, _ := url.ParseQuery(reqs[0].Query)
	if reqs[0].ContentType != "application/wasm" || q.Get("severity") != "high" || q.Get("tags") != "a,b" || q.Get("enabled") != "false" ||
		q.Get("fuel") != "5000" || q.Get("memory_pages") != "64" || q.Has("id") || q.Has("name") || string(reqs[0].Body) != "\x00asm one" {
		t.Errorf("first upload: %+v", reqs[0])
	}

	// Pushing again: 409, with a hint; --update installs a new version.
	_, stderr, code = runCLI(t, f.env(), "rules", "push", good1)
	if code != 1 || !strings.Contains(stderr, `betrace: `+good1+`: rule already exists: "one" (--update installs`) {
		t.Errorf("push of an existing rule: exit %d: %s", code, stderr)
	}
	out, stderr, code = runCLI(t, f.env(), "rules", "push", "--update", good1, good2, "--json")
	if code != 0 || !strings.Contains(out, `"action": "updated"`) || !strings.Contains(out, `"id": "two"`) {
		t.Errorf("push --update: exit %d: %s\n%s", code, out, stderr)
	}
	reqs = f.requests()
	last := reqs[len(reqs)-1]
	if last.Method != http.MethodPut || last.Path != "/v1/rules/two" || last.ContentType != "application/wasm" || last.Query != "" {
		t.Errorf("the update was sent as %+v", last)
	}
	// One file with --id and --json: the API's rule.
	out, _, code = runCLI(t, f.env(), "rules", "push", good1, "--id", "custom", "--name", "Custom", "--json")
	if code != 0 || !strings.HasPrefix(out, "{\n  \"id\": \"custom\"") {
		t.Errorf("push --id --json: exit %d:\n%s", code, out)
	}
	// A file that is not there fails alone.
	_, stderr, code = runCLI(t, f.env(), "rules", "push", dir+"/missing.wasm")
	if code != 1 || !strings.Contains(stderr, "missing.wasm") {
		t.Errorf("missing file: exit %d: %s", code, stderr)
	}
}

func TestPushStopsWithoutServerOrToken(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for _, n := range []string{"a", "b", "c"} {
		p := dir + "/" + n + ".wasm"
		writeFile(p, "\x00asm")
		files = append(files, p)
	}
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		writeJSONAnswer(w, 401, apiErr(16, "invalid bearer token"))
	})
	_, stderr, code := runCLI(t, f.env(), append([]string{"rules", "push"}, files...)...)
	if code != exitUnauthorized || len(f.requests()) != 1 || !strings.Contains(stderr, "invalid bearer token") {
		t.Errorf("401: exit %d after %d requests: %s", code, len(f.requests()), stderr)
	}
	_, _, code = runCLI(t, map[string]string{"BETRACE_SERVER": "http://127.0.0.1:1"}, append([]string{"rules", "push"}, files...)...)
	if code != exitUnreachable {
		t.Errorf("unreachable: exit %d", code)
	}
}

func TestUpdateSendsPatchOrModule(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) { writeJSONAnswer(w, 200, ruleDoc) })
	_, stderr, code := runCLI(t, f.env(), "rules", "update", "r1", "--severity", "low", "--tags", "", "--disable", "--fuel", "9")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	mod := t.TempDir() + "/m.wasm"
	writeFile(mod, "\x00asm")
	if _, stderr, code := runCLI(t, f.env(), "rules", "update", "r1", "--module", mod, "--name", "N"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	reqs := f.requests()
	if r := reqs[0]; r.Method != "PUT" || r.Path != "/v1/rules/r1" || r.ContentType != "application/json" ||
		string(r.Body) != `{"enabled":false,"fuel":9,"severity":"low","tags":[]}` {
		t.Errorf("patch: %+v (%s)", r, r.Body)
	}
	if r := reqs[1]; r.ContentType != "application/wasm" || r.Query != "name=N" || string(r.Body) != "\x00asm" {
		t.Errorf("module: %+v", r)
	}
}

func TestViolationsPaging(t *testing.T) {
	const total = 5
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		q := r.URL.Query()
		start := 0
		fmt.Sscan(q.Get("cursor"), &start)
		limit := 100
		fmt.Sscan(q.Get("limit"), &limit)
		var items []string
		end := min(start+limit, total)
		for i := start; i < end; i++ {
			items = append(items, fmt.Sprintf(`{"id":"v%d","ruleId":"r1","severity":"CRITICAL","traceId":"%032d","spanId":"%016d","message":"m%d","timestamp":"2026-01-02T03:04:05Z"}`, i, i, i, i))
		}
		next := ""
		if end < total {
			next = fmt.Sprint(end)
		}
		writeJSONAnswer(w, 200, fmt.Sprintf(`{"violations":[%s],"totalCount":%d,"nextCursor":%q}`, strings.Join(items, ","), total, next))
	})
	fixed := time.Unix(1_800_000_000, 0)
	runAt := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		a := newApp(&out, &errb, func(k string) string { return f.env()[k] })
		a.now = func() time.Time { return fixed }
		code := a.main(context.Background(), args)
		return out.String(), errb.String(), code
	}

	out, stderr, code := runAt("violations", "list", "--limit", "3", "--since", "1h", "--until", "2026-01-02T00:00:00Z", "--severity", "critical", "--rule", "r1")
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(stderr, "3 of 5 violations shown") {
		t.Errorf("--limit 3: exit %d:\n%s%s", code, out, stderr)
	}
	q, _ := url.ParseQuery(f.requests()[0].Query)
	if q.Get("start_time") != fmt.Sprint(fixed.Unix()-3600) || q.Get("end_time") != "1767312000" || q.Get("severity") != "critical" ||
		q.Get("rule_id") != "r1" || q.Get("limit") != "3" {
		t.Errorf("query %v", q)
	}

	out, _, code = runAt("violations", "list", "--all", "--limit", "2", "--json")
	if code != 0 || strings.Count(out, `"id": "v`) != total || !strings.Contains(out, `"totalCount": 5`) || !strings.Contains(out, `"nextCursor": ""`) {
		t.Errorf("--all --limit 2: exit %d:\n%s", code, out)
	}
	if n := len(f.requests()); n != 1+3 {
		t.Errorf("--all with pages of 2 made %d requests, want 3", n-1)
	}
	out, _, code = runAt("violations", "list", "--limit", "4", "--cursor", "2", "--json")
	if code != 0 || strings.Count(out, `"id": "v`) != 3 || !strings.Contains(out, `"id": "v2"`) {
		t.Errorf("--cursor: exit %d:\n%s", code, out)
	}
}

func TestStatus(t *testing.T) {
	quarantined := strings.NewReplacer(`"id":"r1"`, `"id":"loop"`, `"state":"active","stateReason":""`,
		`"state":"quarantined","stateReason":"quarantined after 3 strikes: fuel","quarantine":{"reason":"fuel","lastError":"out of fuel","fuelUsed":9,"traceId":"t","strikes":3,"at":"2026-01-02T03:04:05Z"}`).Replace(ruleDoc)
	readyStatus, readyBody := 200, `{"status":"READY","version":"1.2.3","checks":{"rules":"ok","storage":"ok"}}`
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch r.URL.Path {
		case "/ready":
			writeJSONAnswer(w, readyStatus, readyBody)
		case "/metrics":
			io.WriteString(w, "# HELP betrace_cluster_members Live members.\n# TYPE betrace_cluster_members gauge\nbetrace_cluster_members 3\nbetrace_cluster_members_other 7\n")
		case "/v1/rules":
			writeJSONAnswer(w, 200, `{"rules":[`+ruleDoc+`,`+quarantined+`],"totalCount":2}`)
		}
	})
	out, stderr, code := runCLI(t, f.env(), "status")
	for _, want := range []string{"Status:   READY", "version 1.2.3", "rules: ok", "storage: ok", "Cluster:  3 members",
		"Rules:    2 (1 active, 0 disabled, 1 quarantined)", "loop         2026-01-02T03:04:05Z  quarantined after 3 strikes: fuel"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("READY: exit %d: %s", code, stderr)
	}
	out, _, code = runCLI(t, f.env(), "status", "--json")
	if code != 0 || !strings.Contains(out, `"clusterMembers": 3`) || !strings.Contains(out, `"quarantined": 1`) || !strings.Contains(out, `"id": "loop"`) {
		t.Errorf("status --json: exit %d:\n%s", code, out)
	}
	readyStatus, readyBody = 503, `{"status":"NOT_READY","checks":{"rules":"ok","storage":"bbolt: timeout"}}`
	out, _, code = runCLI(t, f.env(), "status")
	if code != 1 || !strings.Contains(out, "NOT_READY") || !strings.Contains(out, "storage: bbolt: timeout") {
		t.Errorf("NOT_READY: exit %d:\n%s", code, out)
	}
}

func TestMetricValue(t *testing.T) {
	expo := []byte("# TYPE betrace_cluster_members gauge\nbetrace_cluster_members 3\nbetrace_cluster_members_total 9\nx{a=\"b\"} 1\nbetrace_rules{state=\"active\"} 4\nbetrace_rules{state=\"disabled\"} 1 1700000000\n")
	for _, tc := range []struct {
		name  string
		want  float64
		found bool
	}{{"betrace_cluster_members", 3, true}, {"betrace_rules", 5, true}, {"betrace_redis_up", 0, false}} {
		if v, found := metricValue(expo, tc.name); v != tc.want || found != tc.found {
			t.Errorf("%s = %v, %v; want %v, %v", tc.name, v, found, tc.want, tc.found)
		}
	}
}

func TestViolationsSummary(t *testing.T) {
	f := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.URL.Path != "/v1/violations/summary" {
			writeJSONAnswer(w, 404, apiErr(404, "no such endpoint"))
			return
		}
		writeJSONAnswer(w, 200, `{"bucket":"1h0m0s","kept":1021,"counted":5021,"rows":[
{"start":"2026-01-02T03:00:00Z","ruleId":"storm","severity":"HIGH","kept":1020,"counted":5020},
{"start":"2026-01-02T03:00:00Z","ruleId":"quiet","severity":"LOW","kept":1,"counted":1}]}`)
	})
	fixed := time.Unix(1_800_000_000, 0)
	var out, errb bytes.Buffer
	a := newApp(&out, &errb, func(k string) string { return f.env()[k] })
	a.now = func() time.Time { return fixed }
	if code := a.main(context.Background(), []string{"violations", "summary", "--since", "2h", "--rule", "storm"}); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "KEPT") || !strings.Contains(lines[0], "ONLY COUNTED") ||
		!strings.Contains(lines[1], "storm") || !strings.HasSuffix(lines[1], "1020  5020     4000") {
		t.Errorf("table:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "5021 violations counted, 1021 kept as records, 4000 only counted") {
		t.Errorf("stderr %q", errb.String())
	}
	q, _ := url.ParseQuery(f.requests()[0].Query)
	if q.Get("start_time") != fmt.Sprint(fixed.Unix()-7200) || q.Get("bucket") != "1h" || q.Get("rule_id") != "storm" || q.Has("end_time") {
		t.Errorf("query %v", q)
	}
}
