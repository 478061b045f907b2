package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ruleIDs lists the ids of a rule list answer, in order.
func ruleIDs(t testing.TB, list map[string]any) []string {
	t.Helper()
	var ids []string
	for _, r := range objects(t, list["rules"]) {
		ids = append(ids, str(r, "id"))
	}
	if n := num(list, "totalCount"); n != int64(len(ids)) {
		t.Errorf("rule list: totalCount %d, %d rules", n, len(ids))
	}
	return ids
}

// without returns a copy of m without the keys.
func without(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			out[k] = v
		}
	}
	return out
}

func versionsOf(t testing.TB, rule map[string]any) (versions []int64, shas []string) {
	t.Helper()
	for _, m := range objects(t, rule["versions"]) {
		versions = append(versions, num(m, "version"))
		shas = append(shas, str(m, "sha256"))
	}
	return versions, shas
}

func testRulesAPI(t *testing.T) {
	s := startServer(t, serverOptions{})
	payment, pii, slowDB, nplus1, ai := module(t, "payment-fraud-check"), module(t, "pii-access-audit"),
		module(t, "checkout-slow-db"), module(t, "n-plus-one-queries"), module(t, "ai-tool-approval")
	begin := time.Now().Add(-time.Second)

	// application/wasm with every metadata field in the query.
	r := s.uploadWasm(t, payment, url.Values{
		"id": {"pfc-custom"}, "name": {"Custom payment check"}, "severity": {"high"},
		"description": {"uploaded as wasm"}, "tags": {"a, b,c"}, "enabled": {"false"},
		"fuel": {"5000000"}, "memory_pages": {"256"},
	})
	if r.Status != http.StatusCreated {
		t.Fatalf("upload as application/wasm: status %d: %s", r.Status, r.Body)
	}
	if loc := r.Header.Get("Location"); loc != "/v1/rules/pfc-custom" {
		t.Errorf("Location %q, want /v1/rules/pfc-custom", loc)
	}
	created := decodeObject(t, r.Body)
	for k, want := range map[string]any{
		"id": "pfc-custom", "name": "Custom payment check", "severity": "HIGH", "description": "uploaded as wasm",
		"enabled": false, "state": "disabled", "tags": []any{"a", "b", "c"},
		"limits":  map[string]any{"fuel": json.Number("5000000"), "memoryPages": json.Number("256")},
		"version": json.Number("1"),
	} {
		if got := created[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("created rule: %s = %#v, want %#v", k, got, want)
		}
	}
	if str(created, "stateReason") == "" {
		t.Error("a disabled rule should say why in stateReason")
	}
	mod := obj(created, "module")
	if str(mod, "sha256") != sha(payment) || num(mod, "sizeBytes") != int64(len(payment)) || num(mod, "version") != 1 ||
		num(mod, "abiVersion") != 1 || str(mod, "source") != "wasm" {
		t.Errorf("created rule: module %v, want version 1, sha256 %s, %d bytes, abiVersion 1, source wasm", mod, sha(payment), len(payment))
	}
	for _, k := range []string{"createdAt", "updatedAt"} {
		at, err := time.Parse(time.RFC3339Nano, str(created, k))
		if err != nil || at.Before(begin) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("created rule: %s %v is not a time of this test (%v)", k, created[k], err)
		}
	}
	if v, _ := versionsOf(t, created); !slices.Equal(v, []int64{1}) {
		t.Errorf("created rule: versions %v, want [1]", v)
	}
	if st := obj(created, "stats"); st == nil || num(st, "evaluations") != 0 {
		t.Errorf("created rule: stats %v, want zero evaluations", created["stats"])
	}

	// multipart: module part and a metadata part.
	r = s.uploadMultipart(t, http.MethodPost, "/v1/rules", pii, map[string]any{
		"id": "pii-multi", "name": "PII (multipart)", "severity": "low", "tags": []string{"x"},
		"description": "uploaded as multipart", "limits": map[string]any{"fuel": 7000000, "memoryPages": 128},
	})
	if r.Status != http.StatusCreated {
		t.Fatalf("upload as multipart: status %d: %s", r.Status, r.Body)
	}
	multi := decodeObject(t, r.Body)
	for k, want := range map[string]any{
		"id": "pii-multi", "name": "PII (multipart)", "severity": "LOW", "description": "uploaded as multipart",
		"enabled": true, "state": "active", "tags": []any{"x"},
		"limits": map[string]any{"fuel": json.Number("7000000"), "memoryPages": json.Number("128")},
	} {
		if got := multi[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("multipart rule: %s = %#v, want %#v", k, got, want)
		}
	}
	if str(obj(multi, "module"), "sha256") != sha(pii) {
		t.Error("multipart rule: module sha256 is not the uploaded module's")
	}

	// No metadata at all: everything from the module itself, both forms.
	r = s.uploadWasm(t, slowDB, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("upload without metadata: status %d: %s", r.Status, r.Body)
	}
	fromModule := decodeObject(t, r.Body)
	for k, want := range map[string]any{
		"id": "checkout-slow-db", "name": "Slow database call during checkout", "severity": "MEDIUM",
		"description": "In a checkout trace, no database span (db.system set) may last longer than 1s.",
		"tags":        []any{"performance", "database", "checkout"}, "enabled": true, "state": "active",
	} {
		if got := fromModule[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("rule without metadata: %s = %#v, want %#v (from the module)", k, got, want)
		}
	}
	r = s.uploadMultipart(t, http.MethodPost, "/v1/rules", nplus1, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("multipart upload without a metadata part: status %d: %s", r.Status, r.Body)
	}
	if got := decodeObject(t, r.Body); str(got, "id") != "n-plus-one-queries" || str(got, "name") != "N+1 database queries" || str(got, "severity") != "MEDIUM" {
		t.Errorf("multipart without metadata: id %v, name %v, severity %v; want the module's own", got["id"], got["name"], got["severity"])
	}

	// Duplicate id.
	wantError(t, s.uploadWasm(t, slowDB, nil), http.StatusConflict, "checkout-slow-db")
	wantError(t, s.uploadWasm(t, ai, url.Values{"id": {"pfc-custom"}}), http.StatusConflict, "pfc-custom")

	// List, ordered by id, and its filters.
	all := []string{"checkout-slow-db", "n-plus-one-queries", "pfc-custom", "pii-multi"}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", all},
		{"?enabled_only=true", []string{"checkout-slow-db", "n-plus-one-queries", "pii-multi"}},
		{"?enabled_only=false", all},
		{"?severity=medium", []string{"checkout-slow-db", "n-plus-one-queries"}},
		{"?severity=MEDIUM", []string{"checkout-slow-db", "n-plus-one-queries"}},
		{"?severity=High", []string{"pfc-custom"}},
		{"?severity=critical", nil},
		{"?state=disabled", []string{"pfc-custom"}},
		{"?state=active", []string{"checkout-slow-db", "n-plus-one-queries", "pii-multi"}},
		{"?state=quarantined", nil},
		{"?state=active&severity=low", []string{"pii-multi"}},
	} {
		if got := ruleIDs(t, s.get(t, "/v1/rules"+c.query)); !slices.Equal(got, c.want) {
			t.Errorf("GET /v1/rules%s: %v, want %v", c.query, got, c.want)
		}
	}
	wantError(t, s.call(t, http.MethodGet, "/v1/rules?severity=urgent", nil), http.StatusBadRequest, "severity")
	wantError(t, s.call(t, http.MethodGet, "/v1/rules?state=sleeping", nil), http.StatusBadRequest, "state")
	wantError(t, s.call(t, http.MethodGet, "/v1/rules?enabled_only=maybe", nil), http.StatusBadRequest, "enabled_only")

	// Get, and the list's element is the same rule.
	got := s.rule(t, "pfc-custom")
	if !reflect.DeepEqual(without(got, "stats"), without(created, "stats")) {
		t.Errorf("GET /v1/rules/pfc-custom differs from the created rule:\n got %v\nwant %v", got, created)
	}
	for _, lr := range objects(t, s.get(t, "/v1/rules")["rules"]) {
		if str(lr, "id") == "pfc-custom" && !reflect.DeepEqual(without(lr, "stats"), without(got, "stats")) {
			t.Errorf("the list's pfc-custom differs from GET's:\n list %v\n  get %v", lr, got)
		}
	}
	wantError(t, s.call(t, http.MethodGet, "/v1/rules/no-such-rule", nil), http.StatusNotFound, "no-such-rule")

	// The module, byte for byte.
	mr := s.do(t, request{Method: http.MethodGet, Path: "/v1/rules/pfc-custom/module"})
	if mr.Status != http.StatusOK || !bytes.Equal(mr.Body, payment) {
		t.Errorf("GET module: status %d, %d bytes, want 200 and the %d uploaded bytes", mr.Status, len(mr.Body), len(payment))
	}
	if ct := mr.Header.Get("Content-Type"); ct != "application/wasm" {
		t.Errorf("GET module: Content-Type %q, want application/wasm", ct)
	}
	wantError(t, s.call(t, http.MethodGet, "/v1/rules/no-such-rule/module", nil), http.StatusNotFound)

	// PUT JSON changes only what it names.
	before := s.rule(t, "pfc-custom")
	after := s.mustJSON(t, http.MethodPut, "/v1/rules/pfc-custom", map[string]any{"severity": "MEDIUM"}, http.StatusOK)
	if str(after, "severity") != "MEDIUM" {
		t.Errorf("PUT severity: severity %v, want MEDIUM", after["severity"])
	}
	if a, b := without(after, "severity", "updatedAt", "stats"), without(before, "severity", "updatedAt", "stats"); !reflect.DeepEqual(a, b) {
		t.Errorf("PUT {severity} changed more than the severity:\nbefore %v\n after %v", b, a)
	}
	if !reflect.DeepEqual(without(s.rule(t, "pfc-custom"), "stats"), without(after, "stats")) {
		t.Error("GET after PUT differs from PUT's answer")
	}
	// A client may PUT back what it got.
	back := s.mustJSON(t, http.MethodPut, "/v1/rules/pfc-custom", without(after, "stats"), http.StatusOK)
	if a, b := without(back, "updatedAt", "stats"), without(after, "updatedAt", "stats"); !reflect.DeepEqual(a, b) {
		t.Errorf("PUT of the rule as GET shows it changed it:\nbefore %v\n after %v", b, a)
	}

	// PUT wasm installs version 2; metadata stays.
	r = s.do(t, request{Method: http.MethodPut, Path: "/v1/rules/pfc-custom", Body: ai, ContentType: "application/wasm"})
	if r.Status != http.StatusOK {
		t.Fatalf("PUT wasm: status %d: %s", r.Status, r.Body)
	}
	v2 := decodeObject(t, r.Body)
	if num(v2, "version") != 2 || str(obj(v2, "module"), "sha256") != sha(ai) || num(obj(v2, "module"), "version") != 2 {
		t.Errorf("PUT wasm: version %v, module %v; want version 2 with the new module", v2["version"], v2["module"])
	}
	if str(v2, "name") != "Custom payment check" || str(v2, "severity") != "MEDIUM" || v2["enabled"] != false {
		t.Errorf("PUT wasm changed metadata: name %v, severity %v, enabled %v", v2["name"], v2["severity"], v2["enabled"])
	}
	if b := s.do(t, request{Method: http.MethodGet, Path: "/v1/rules/pfc-custom/module"}).Body; !bytes.Equal(b, ai) {
		t.Error("GET module after PUT wasm is not the new module")
	}
	// PUT multipart installs version 3 and applies its metadata.
	r = s.uploadMultipart(t, http.MethodPut, "/v1/rules/pfc-custom", payment, map[string]any{"name": "Back to payments"})
	if r.Status != http.StatusOK {
		t.Fatalf("PUT multipart: status %d: %s", r.Status, r.Body)
	}
	if v3 := decodeObject(t, r.Body); num(v3, "version") != 3 || str(v3, "name") != "Back to payments" || str(obj(v3, "module"), "sha256") != sha(payment) {
		t.Errorf("PUT multipart: version %v, name %v; want version 3 named \"Back to payments\"", v3["version"], v3["name"])
	}

	// Rollback: the default goes to the version before the current one,
	// ?version= to that one; each becomes the newest version.
	for _, c := range []struct {
		query   string
		version int64
		sha     string
	}{
		{"", 4, sha(ai)},
		{"?version=1", 5, sha(payment)},
		{"?version=2", 6, sha(ai)},
	} {
		rb := s.mustJSON(t, http.MethodPost, "/v1/rules/pfc-custom/rollback"+c.query, nil, http.StatusOK)
		if num(rb, "version") != c.version || str(obj(rb, "module"), "sha256") != c.sha {
			t.Errorf("rollback%s: version %v sha %v, want version %d with sha %s", c.query, rb["version"], str(obj(rb, "module"), "sha256"), c.version, c.sha)
		}
	}
	final := s.rule(t, "pfc-custom")
	versions, shas := versionsOf(t, final)
	if want := []int64{1, 2, 3, 4, 5, 6}; !slices.Equal(versions, want) {
		t.Errorf("versions %v, want %v", versions, want)
	}
	if want := []string{sha(payment), sha(ai), sha(payment), sha(ai), sha(payment), sha(ai)}; !slices.Equal(shas, want) {
		t.Errorf("version shas %v, want %v", shas, want)
	}
	if b := s.do(t, request{Method: http.MethodGet, Path: "/v1/rules/pfc-custom/module"}).Body; !bytes.Equal(b, ai) {
		t.Error("GET module after rolling back to version 2 is not version 2's module")
	}
	wantError(t, s.call(t, http.MethodPost, "/v1/rules/pfc-custom/rollback?version=99", nil), http.StatusBadRequest, "roll back")
	wantError(t, s.call(t, http.MethodPost, "/v1/rules/pfc-custom/rollback?version=abc", nil), http.StatusBadRequest, "version")
	wantError(t, s.call(t, http.MethodPost, "/v1/rules/checkout-slow-db/rollback", nil), http.StatusBadRequest, "roll back")

	// Enable and disable are idempotent.
	for _, c := range []struct {
		action, state string
		enabled       bool
	}{
		{"enable", "active", true}, {"enable", "active", true},
		{"disable", "disabled", false}, {"disable", "disabled", false},
		{"enable", "active", true},
	} {
		b := s.mustJSON(t, http.MethodPost, "/v1/rules/pfc-custom/"+c.action, nil, http.StatusOK)
		if b["enabled"] != c.enabled || str(b, "state") != c.state {
			t.Errorf("%s: enabled %v state %v, want %v %s", c.action, b["enabled"], b["state"], c.enabled, c.state)
		}
		if c.state == "active" && str(b, "stateReason") != "" {
			t.Errorf("%s: an active rule has stateReason %q", c.action, b["stateReason"])
		}
		if num(b, "version") != 6 || str(b, "severity") != "MEDIUM" {
			t.Errorf("%s changed version or severity: %v %v", c.action, b["version"], b["severity"])
		}
	}

	// Delete, then it is gone everywhere.
	del := s.mustJSON(t, http.MethodDelete, "/v1/rules/pii-multi", nil, http.StatusOK)
	if del["success"] != true || str(del, "id") != "pii-multi" {
		t.Errorf("DELETE: %v, want {success: true, id: pii-multi}", del)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/rules/pii-multi"},
		{http.MethodGet, "/v1/rules/pii-multi/module"},
		{http.MethodDelete, "/v1/rules/pii-multi"},
		{http.MethodPost, "/v1/rules/pii-multi/enable"},
		{http.MethodPost, "/v1/rules/pii-multi/disable"},
		{http.MethodPost, "/v1/rules/pii-multi/rollback"},
	} {
		wantError(t, s.call(t, c.method, c.path, nil), http.StatusNotFound, "pii-multi")
	}
	wantError(t, s.call(t, http.MethodPut, "/v1/rules/pii-multi", map[string]any{"severity": "LOW"}), http.StatusNotFound, "pii-multi")
	if got := ruleIDs(t, s.get(t, "/v1/rules")); !slices.Equal(got, []string{"checkout-slow-db", "n-plus-one-queries", "pfc-custom"}) {
		t.Errorf("rules after DELETE: %v", got)
	}
	// The id is free again.
	if r := s.uploadMultipart(t, http.MethodPost, "/v1/rules", pii, map[string]any{"id": "pii-multi"}); r.Status != http.StatusCreated {
		t.Errorf("re-creating a deleted id: status %d: %s", r.Status, r.Body)
	}
}
