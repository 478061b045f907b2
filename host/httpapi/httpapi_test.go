package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/betracehq/betrace/host/console"
	"github.com/betracehq/betrace/host/store"
)

func TestAuthenticate(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	cases := []struct {
		name, token, header string
		want                int
	}{
		{"open without a token", "", "", http.StatusNoContent},
		{"exact", "s3cret", "Bearer s3cret", http.StatusNoContent},
		{"scheme in lower case", "s3cret", "bearer s3cret", http.StatusNoContent},
		{"scheme in upper case, blanks around", "s3cret", "  BEARER   s3cret ", http.StatusNoContent},
		{"missing", "s3cret", "", http.StatusUnauthorized},
		{"wrong", "s3cret", "Bearer s3cre", http.StatusUnauthorized},
		{"other scheme", "s3cret", "Basic s3cret", http.StatusUnauthorized},
		{"token only", "s3cret", "s3cret", http.StatusUnauthorized},
		{"unusable configured token accepts nothing", "bad token", "Bearer bad token", http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := (&api{cfg: Config{APIToken: c.token}}).authenticate(ok)
			req := httptest.NewRequest(http.MethodGet, "/v1/rules", nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body)
			}
		})
	}
}

// TestAuthenticateConsole: a console session stands in for the token, a
// state change needs the session's anti-forgery token, and a browser page
// of another origin changes nothing even on an open API.
func TestAuthenticateConsole(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	ui, err := console.New(console.Config{APIToken: "s3cret"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	ui.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/login", strings.NewReader(`{"token":"s3cret"}`)))
	var session struct{ CSRF string }
	if err := json.Unmarshal(rec.Body.Bytes(), &session); err != nil || len(rec.Result().Cookies()) != 1 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	cookie := rec.Result().Cookies()[0]

	cases := []struct {
		name, token, method, origin, auth string
		cookie, csrf                      bool
		want                              int
	}{
		{"session reads", "s3cret", http.MethodGet, "", "", true, false, http.StatusNoContent},
		{"session changes with its token", "s3cret", http.MethodPost, "http://example.com", "", true, true, http.StatusNoContent},
		{"session changes without its token: forged", "s3cret", http.MethodPost, "", "", true, false, http.StatusForbidden},
		{"session from another origin", "s3cret", http.MethodPost, "http://evil.example", "", true, true, http.StatusForbidden},
		{"no session, no token", "s3cret", http.MethodPost, "", "", false, false, http.StatusUnauthorized},
		{"bearer token still works", "s3cret", http.MethodPost, "", "Bearer s3cret", false, false, http.StatusNoContent},
		{"open API, curl", "", http.MethodPost, "", "", false, false, http.StatusNoContent},
		{"open API, same-origin page", "", http.MethodDelete, "http://example.com", "", false, false, http.StatusNoContent},
		{"open API, page of another origin", "", http.MethodPost, "http://evil.example", "", false, false, http.StatusForbidden},
		{"open API, another origin may read", "", http.MethodGet, "http://evil.example", "", false, false, http.StatusNoContent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := (&api{cfg: Config{APIToken: c.token}, deps: Deps{Console: ui}}).authenticate(ok)
			req := httptest.NewRequest(c.method, "http://example.com/v1/rules/x/disable", nil)
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			if c.cookie {
				req.AddCookie(cookie)
			}
			if c.csrf {
				req.Header.Set(console.CSRFHeader, session.CSRF)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body)
			}
		})
	}
}

func TestReadSpecRefusesEmptyModules(t *testing.T) {
	for _, ctype := range []string{"application/wasm", "application/octet-stream"} {
		for _, create := range []bool{true, false} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPut, "/v1/rules/r", bytes.NewReader(nil))
			req.Header.Set("Content-Type", ctype)
			_, err := (&api{cfg: Config{MaxBodyBytes: DefaultMaxBodyBytes}}).readSpec(rec, req, create)
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || !strings.Contains(ae.message, "empty") {
				t.Errorf("%s create=%v: %v, want a 400 naming the empty body", ctype, create, err)
			}
		}
	}
}

// 503 means the change was not applied; a write that may have landed is a
// 504 whose message says to look before repeating it.
func TestStoreWriteOutcomeStatus(t *testing.T) {
	refused := fmt.Errorf("store rule %q: redisstore: update rule: %w: connection refused", "r", store.ErrUnavailable)
	unknown := fmt.Errorf("store rule %q: %w: redisstore: update rule: %w: no answer within 2s; GET the rule to see its state before repeating the change", "r", store.ErrMaybeApplied, store.ErrUnavailable)
	for _, c := range []struct {
		err        error
		status     int
		code       int
		mustSayMay bool
	}{
		{refused, http.StatusServiceUnavailable, codeUnavailable, false},
		{unknown, http.StatusGatewayTimeout, codeDeadlineExceeded, true},
	} {
		rec := httptest.NewRecorder()
		(&api{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).writeError(rec, httptest.NewRequest(http.MethodPut, "/v1/rules/r", nil), c.err)
		var body struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		says := strings.Contains(body.Message, "may have been applied") && strings.Contains(body.Message, "GET the rule")
		if rec.Code != c.status || body.Code != c.code || says != c.mustSayMay {
			t.Errorf("%v: %d %s, want %d code %d (saying it may have been applied: %v)", c.err, rec.Code, rec.Body, c.status, c.code, c.mustSayMay)
		}
	}
}
