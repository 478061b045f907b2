package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openAPI is api/openapi.yaml, parsed.
type openAPI struct {
	doc   map[string]any
	paths map[string]any
}

func loadOpenAPI(t testing.TB) *openAPI {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "api", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := parseYAML(string(b))
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	doc, _ := v.(map[string]any)
	paths, _ := doc["paths"].(map[string]any)
	if len(paths) == 0 {
		t.Fatal("api/openapi.yaml has no paths")
	}
	return &openAPI{doc: doc, paths: paths}
}

// resolve follows a $ref ("#/a/b/c") if node is one.
func (o *openAPI) resolve(node any) any {
	for range 10 {
		m, ok := node.(map[string]any)
		if !ok {
			return node
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return node
		}
		var cur any = o.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cm, _ := cur.(map[string]any)
			cur = cm[part]
		}
		node = cur
	}
	return node
}

// template finds the documented path that a concrete path matches.
func (o *openAPI) template(path string) (string, bool) {
	if _, ok := o.paths[path]; ok {
		return path, true
	}
	segs := strings.Split(path, "/")
	for tpl := range o.paths {
		ts := strings.Split(tpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		ok := true
		for i := range ts {
			if strings.HasPrefix(ts[i], "{") && strings.HasSuffix(ts[i], "}") {
				ok = ok && segs[i] != ""
			} else {
				ok = ok && ts[i] == segs[i]
			}
		}
		if ok {
			return tpl, true
		}
	}
	return "", false
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

// check validates v against schema; problems are added to errs.
func (o *openAPI) check(schema any, v any, at string, errs *[]string) {
	s, ok := o.resolve(schema).(map[string]any)
	if !ok {
		return
	}
	fail := func(format string, args ...any) {
		*errs = append(*errs, at+": "+fmt.Sprintf(format, args...))
	}
	typ, _ := s["type"].(string)
	if typ == "" && (s["properties"] != nil || s["required"] != nil) {
		typ = "object"
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			fail("want an object, got %s", jsonKind(v))
			return
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := m[fmt.Sprint(r)]; !ok {
				fail("required field %q is missing", r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, fv := range m {
			if ps, ok := props[k]; ok {
				o.check(ps, fv, at+"."+k, errs)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case string:
				if ap == "false" {
					fail("field %q is not in the schema", k)
				}
			case map[string]any:
				o.check(ap, fv, at+"."+k, errs)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			fail("want an array, got %s", jsonKind(v))
			return
		}
		if items, ok := s["items"]; ok {
			for i, e := range a {
				o.check(items, e, fmt.Sprintf("%s[%d]", at, i), errs)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("want a string, got %s", jsonKind(v))
			return
		}
		if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == str }) {
			fail("%q is not one of %v", str, enum)
		}
		if p, ok := s["pattern"].(string); ok {
			if re, err := regexp.Compile(p); err != nil {
				fail("the schema's pattern %q does not compile: %v", p, err)
			} else if !re.MatchString(str) {
				fail("%q does not match %s", str, p)
			}
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				fail("%q is not a date-time: %v", str, err)
			}
		}
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			fail("want an integer, got %s", jsonKind(v))
			return
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			if _, uerr := strconv.ParseUint(n.String(), 10, 64); uerr != nil {
				fail("%s is not an integer", n)
			}
		}
	case "number":
		if _, ok := v.(json.Number); !ok {
			fail("want a number, got %s", jsonKind(v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("want a boolean, got %s", jsonKind(v))
		}
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// testOpenAPIResponses checks every answer the scenarios recorded: its
// status is declared for its path and method, and its body satisfies the
// declared schema.
func testOpenAPIResponses(t *testing.T) {
	o := loadOpenAPI(t)
	recorded.Lock()
	list := slices.Clone(recorded.list)
	recorded.Unlock()
	if len(list) == 0 {
		t.Skip("no scenario ran, so there are no answers to check")
	}
	problems := map[string]int{}
	exercised := map[string]bool{}
	checked := 0
	for _, r := range list {
		tpl, ok := o.template(r.Path)
		if !ok {
			continue // an undocumented path, on purpose (e.g. /v1/rulez)
		}
		item, _ := o.paths[tpl].(map[string]any)
		op, ok := item[strings.ToLower(r.Method)].(map[string]any)
		if !ok {
			continue // an undocumented method, on purpose (e.g. PATCH)
		}
		checked++
		where := fmt.Sprintf("%s %s %d", r.Method, tpl, r.Status)
		exercised[where] = true
		responses, _ := op["responses"].(map[string]any)
		resp, ok := responses[strconv.Itoa(r.Status)]
		if !ok {
			resp, ok = responses["default"]
		}
		if !ok {
			problems[fmt.Sprintf("%s: the status is not declared for %s %s in api/openapi.yaml", where, r.Method, tpl)]++
			continue
		}
		content, _ := o.resolve(resp).(map[string]any)["content"].(map[string]any)
		ctype := r.Header.Get("Content-Type")
		for media, mt := range content {
			if !strings.HasPrefix(ctype, media) {
				problems[fmt.Sprintf("%s: Content-Type %q, the document says %s", where, ctype, media)]++
				continue
			}
			if media != "application/json" {
				continue
			}
			var body any
			dec := json.NewDecoder(bytes.NewReader(r.Body))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				problems[fmt.Sprintf("%s: the body is not JSON: %v", where, err)]++
				continue
			}
			var errs []string
			schema, _ := mt.(map[string]any)
			o.check(schema["schema"], body, "$", &errs)
			for _, e := range errs {
				problems[where+": "+e]++
			}
		}
	}
	keys := make([]string, 0, len(problems))
	for k := range problems {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i == 60 {
			t.Errorf("… and %d more problems", len(keys)-60)
			break
		}
		t.Errorf("%s (%d answers)", k, problems[k])
	}
	// What the scenarios never saw, for whoever extends them.
	var unseen []string
	for tpl, item := range o.paths {
		im, _ := item.(map[string]any)
		for _, m := range httpMethods {
			op, ok := im[m].(map[string]any)
			if !ok {
				continue
			}
			responses, _ := op["responses"].(map[string]any)
			for code := range responses {
				if w := fmt.Sprintf("%s %s %s", strings.ToUpper(m), tpl, code); !exercised[w] {
					unseen = append(unseen, w)
				}
			}
		}
	}
	slices.Sort(unseen)
	t.Logf("checked %d of %d recorded answers against api/openapi.yaml; declared answers never seen: %v", checked, len(list), unseen)
}

// testOpenAPIPathsServed requests every documented path and method: none
// may be unknown to the server.
func testOpenAPIPathsServed(t *testing.T) {
	o := loadOpenAPI(t)
	s := startServer(t, serverOptions{})
	for tpl, item := range o.paths {
		im, _ := item.(map[string]any)
		for _, m := range httpMethods {
			if _, ok := im[m]; !ok {
				continue
			}
			method := strings.ToUpper(m)
			path := regexp.MustCompile(`\{[^}]*\}`).ReplaceAllString(tpl, "no-such-rule")
			req := request{Method: method, Path: path}
			switch {
			case path == "/v1/traces":
				req.ContentType = "application/x-protobuf" // an empty request is valid
			case path == "/v1/spans":
				req.Body, req.ContentType = []byte(`{"spans":[]}`), "application/json"
			case method == http.MethodPut || method == http.MethodPost:
				req.Body, req.ContentType = []byte(`{}`), "application/json"
			}
			r := s.do(t, req)
			if r.Status == http.StatusMethodNotAllowed || (r.Status == http.StatusNotFound && bytes.Contains(r.Body, []byte("no such endpoint"))) {
				t.Errorf("%s %s (documented as %s): %d %s", method, path, tpl, r.Status, r.Body)
			}
		}
	}
}

func TestOpenAPIDocumentParses(t *testing.T) {
	o := loadOpenAPI(t)
	// Every $ref resolves.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok && o.resolve(x) == nil {
				t.Errorf("%s: $ref %s does not resolve", at, ref)
			}
			for k, e := range x {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
	walk(o.doc, "#")
}
