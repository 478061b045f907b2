package console

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newConsole(t *testing.T, token string, clk *clock) *Console {
	t.Helper()
	c, err := New(Config{APIToken: token, Now: clk.now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// login logs in through the handler and returns the cookie and the
// anti-forgery token.
func login(t *testing.T, c *Console, token string) (*http.Cookie, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/login", strings.NewReader(`{"token":"`+token+`"}`)))
	if rec.Code != http.StatusOK {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	var out struct{ CSRF string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.CSRF == "" {
		t.Fatalf("login body %s: %v", rec.Body, err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("login set %d cookies", len(cookies))
	}
	ck := cookies[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
	}
	if strings.Contains(ck.Value, token) || strings.Contains(rec.Body.String(), token) {
		t.Fatal("the session or the answer contains the API token")
	}
	return ck, out.CSRF
}

func TestAuthorize(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := newConsole(t, "s3cret", clk)
	ck, csrf := login(t, c, "s3cret")
	other := newConsole(t, "another", clk)
	foreign, _ := login(t, other, "another")
	tampered := *ck
	b := []byte(ck.Value)
	b[12] ^= 1 // a character of the signed payload (inside its nonce)
	tampered.Value = string(b)

	tests := []struct {
		name   string
		method string
		cookie *http.Cookie
		csrf   string
		after  time.Duration
		want   error
	}{
		{"read with the session", http.MethodGet, ck, "", 0, nil},
		{"change with the session and its token", http.MethodPost, ck, csrf, 0, nil},
		{"change without the token: forgery", http.MethodPost, ck, "", 0, ErrForgery},
		{"change with a wrong token: forgery", http.MethodDelete, ck, csrf[:len(csrf)-1] + "x", 0, ErrForgery},
		{"no cookie", http.MethodGet, nil, "", 0, ErrNoSession},
		{"tampered cookie", http.MethodGet, &tampered, "", 0, ErrNoSession},
		{"cookie signed for another token", http.MethodGet, foreign, "", 0, ErrNoSession},
		{"expired", http.MethodGet, ck, "", DefaultSessionTTL, ErrNoSession},
		{"just before expiry", http.MethodGet, ck, "", DefaultSessionTTL - time.Second, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.t = time.Unix(1_800_000_000, 0).Add(tt.after)
			r := httptest.NewRequest(tt.method, "/v1/rules/x/disable", nil)
			if tt.cookie != nil {
				r.AddCookie(tt.cookie)
			}
			if tt.csrf != "" {
				r.Header.Set(CSRFHeader, tt.csrf)
			}
			if err := c.Authorize(r); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Authorize = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	tests := []struct {
		name   string
		token  string // configured
		body   string
		origin string
		want   int
	}{
		{"right token", "s3cret", `{"token":"s3cret"}`, "", http.StatusOK},
		{"right token, same origin", "s3cret", `{"token":"s3cret"}`, "http://example.com", http.StatusOK},
		{"wrong token", "s3cret", `{"token":"s3cre"}`, "", http.StatusUnauthorized},
		{"not JSON", "s3cret", `token=s3cret`, "", http.StatusBadRequest},
		{"from another origin", "s3cret", `{"token":"s3cret"}`, "http://evil.example", http.StatusForbidden},
		{"open API: nothing to log in to", "", `{"token":"x"}`, "", http.StatusConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConsole(t, tt.token, clk)
			r := httptest.NewRequest(http.MethodPost, "http://example.com/ui/login", strings.NewReader(tt.body))
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			rec := httptest.NewRecorder()
			c.Handler().ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if got := len(rec.Result().Cookies()); (got == 1) != (tt.want == http.StatusOK) {
				t.Fatalf("%d cookies set", got)
			}
		})
	}
}

func TestLogoutAndSession(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c := newConsole(t, "s3cret", clk)
	session := func(ck *http.Cookie) map[string]any {
		r := httptest.NewRequest(http.MethodGet, "/ui/session", nil)
		if ck != nil {
			r.AddCookie(ck)
		}
		rec := httptest.NewRecorder()
		c.Handler().ServeHTTP(rec, r)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := session(nil); m["authRequired"] != true || m["authenticated"] != false || m["csrf"] != nil {
		t.Fatalf("session before login: %v", m)
	}
	ck, csrf := login(t, c, "s3cret")
	if m := session(ck); m["authenticated"] != true || m["csrf"] != csrf {
		t.Fatalf("session after login: %v", m)
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/logout", nil))
	cs := rec.Result().Cookies()
	if rec.Code != http.StatusNoContent || len(cs) != 1 || cs[0].MaxAge >= 0 || cs[0].Value != "" {
		t.Fatalf("logout: %d, cookies %+v: want the session cookie cleared", rec.Code, cs)
	}
}

func TestStaticFiles(t *testing.T) {
	c := newConsole(t, "", &clock{t: time.Now()})
	for path, want := range map[string]string{"/ui/": "<title>BeTrace</title>", "/ui/app.js": "function route", "/ui/app.css": "prefers-color-scheme: dark"} {
		rec := httptest.NewRecorder()
		c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, rec.Code, want)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	// The page must work under its own policy: no inline script or style.
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/", nil))
	if s := rec.Body.String(); strings.Contains(s, "<script>") || strings.Contains(s, "style=") || strings.Contains(s, "<style") {
		t.Error("index.html has inline script or style, which its Content-Security-Policy blocks")
	}
}

func TestCrossOrigin(t *testing.T) {
	tests := []struct {
		origin, fetchSite string
		tls               bool
		want              bool
	}{
		{"", "", false, false},                                 // curl
		{"", "cross-site", false, true},                        // a browser that sent no Origin
		{"http://betrace:12011", "", false, false},             // the console itself
		{"http://BETRACE:12011", "", false, false},             // host names are case-insensitive
		{"http://betrace:8080", "", false, true},               // another port is another origin
		{"https://betrace:12011", "", false, true},             // another scheme
		{"https://betrace:12011", "", true, false},             // behind TLS
		{"http://evil.example", "", false, true},               // another site
		{"null", "", false, true},                              // an opaque origin (sandboxed frame, file:)
		{"http://betrace:12011.evil.example", "", false, true}, // a look-alike
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "http://betrace:12011/v1/rules", nil)
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if tt.fetchSite != "" {
			r.Header.Set("Sec-Fetch-Site", tt.fetchSite)
		}
		if tt.tls {
			r.Header.Set("X-Forwarded-Proto", "https")
		}
		if got := CrossOrigin(r); got != tt.want {
			t.Errorf("Origin %q (Sec-Fetch-Site %q, TLS %v): CrossOrigin = %v, want %v", tt.origin, tt.fetchSite, tt.tls, got, tt.want)
		}
	}
}

func TestTraceURLTemplate(t *testing.T) {
	for tpl, ok := range map[string]bool{
		"":                                    true,
		"http://jaeger:16686/trace/{traceId}": true,
		"https://grafana.example/explore?q={traceId}&s={spanId}": true,
		"javascript:alert({traceId})":                            false,
		"jaeger:16686/trace/{traceId}":                           false,
		"/relative/{traceId}":                                    false,
	} {
		_, err := New(Config{TraceURLTemplate: tpl}, slog.New(slog.DiscardHandler))
		if (err == nil) != ok {
			t.Errorf("template %q: err = %v, want ok=%v", tpl, err, ok)
		}
	}
}
