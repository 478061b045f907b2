package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/betracehq/betrace/host/internal/bearer"
)

//go:embed static
var static embed.FS

// Config holds the console's settings.
type Config struct {
	// APIToken is the API's bearer token; empty leaves the console open,
	// like the API.
	APIToken string
	// TraceURLTemplate links a violation to the user's tracing backend;
	// "{traceId}" and "{spanId}" are replaced. Empty shows no link.
	TraceURLTemplate string
	// SessionTTL is how long a login lasts. Default 8h.
	SessionTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Throughput, when set, serves the overview's hour of spans per
	// second at /ui/throughput.
	Throughput *Throughput
}

// DefaultSessionTTL is Config.SessionTTL's default: a working day.
const DefaultSessionTTL = 8 * time.Hour

// CSRFHeader carries the session's anti-forgery token on every request
// that changes state and is authenticated by the session cookie.
const CSRFHeader = "X-BeTrace-CSRF"

const cookieName = "betrace_session"

// Errors Authorize returns.
var (
	// ErrNoSession: the request has no valid, unexpired session cookie.
	ErrNoSession = errors.New("no console session")
	// ErrForgery: the request has a session cookie but changes state
	// without the session's anti-forgery token, as a page on another site
	// forging it would.
	ErrForgery = errors.New("request refused as cross-site forgery: it carries the session cookie without the " + CSRFHeader + " header")
)

// Console serves the web console and checks its sessions.
type Console struct {
	cfg    Config
	token  bearer.Token
	key    []byte // signs session cookies; derived from the API token
	files  fs.FS
	logger *slog.Logger
}

// New returns a console; cfg.APIToken must be one bearer.Parse accepts.
func New(cfg Config, logger *slog.Logger) (*Console, error) {
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.SessionTTL < 0 {
		return nil, fmt.Errorf("console SessionTTL %s is negative", cfg.SessionTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if t := cfg.TraceURLTemplate; t != "" {
		u, err := url.Parse(strings.NewReplacer("{traceId}", "x", "{spanId}", "x").Replace(t))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("trace URL template %q: want an http(s) URL with {traceId}, e.g. http://grafana:3000/explore?left=...{traceId}", t)
		}
	}
	c := &Console{cfg: cfg, logger: logger}
	if cfg.APIToken != "" {
		tok, err := bearer.Parse("BETRACE_API_TOKEN", cfg.APIToken)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		c.token = tok
		m := hmac.New(sha256.New, []byte(cfg.APIToken))
		m.Write([]byte("betrace console session v1"))
		c.key = m.Sum(nil)
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("console: embedded files: %w", err)
	}
	c.files = sub
	return c, nil
}

// Handler serves everything under /ui/.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/session", c.session)
	mux.HandleFunc("POST /ui/login", c.login)
	mux.HandleFunc("POST /ui/logout", c.logout)
	if c.cfg.Throughput != nil {
		mux.HandleFunc("GET /ui/throughput", c.cfg.Throughput.serve)
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(c.files))
	mux.Handle("GET /ui/", files)
	return secure(mux)
}

// secure sets the headers every console response carries: no script,
// style or connection from anywhere but this origin, no framing.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// session tells the page whether it must log in, and gives it the
// anti-forgery token of its session.
func (c *Console) session(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{
		"authRequired":     c.key != nil,
		"authenticated":    c.key == nil,
		"traceUrlTemplate": c.cfg.TraceURLTemplate,
	}
	if payload, ok := c.verify(r); ok {
		body["authenticated"] = true
		body["csrf"] = c.csrf(payload)
		body["expires"] = time.Unix(int64(binary.BigEndian.Uint64(payload)), 0).UTC()
	}
	writeJSON(w, http.StatusOK, body)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if CrossOrigin(r) {
		writeError(w, http.StatusForbidden, "login refused: the request comes from another origin")
		return
	}
	if c.key == nil {
		writeError(w, http.StatusConflict, "the API has no token (BETRACE_API_TOKEN is unset): the console is open, no login needed")
		return
	}
	var in struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "login body: want JSON {\"token\": \"<BETRACE_API_TOKEN>\"}: "+err.Error())
		return
	}
	if !c.token.Match("Bearer " + in.Token) {
		c.logger.Warn("console login refused: wrong token", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "wrong token: use the value of BETRACE_API_TOKEN")
		return
	}
	payload := make([]byte, 8+16)
	exp := c.cfg.Now().Add(c.cfg.SessionTTL)
	binary.BigEndian.PutUint64(payload, uint64(exp.Unix()))
	if _, err := rand.Read(payload[8:]); err != nil {
		writeError(w, http.StatusInternalServerError, "cannot create a session: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: enc(payload) + "." + enc(c.sign(payload)),
		Path: "/", Expires: exp, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isTLS(r),
	})
	writeJSON(w, http.StatusOK, map[string]any{"authenticated": true, "csrf": c.csrf(payload), "expires": exp.UTC().Truncate(time.Second)})
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if CrossOrigin(r) {
		writeError(w, http.StatusForbidden, "logout refused: the request comes from another origin")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: isTLS(r)})
	w.WriteHeader(http.StatusNoContent)
}

// Authorize accepts a request made by a logged-in console: a valid session
// cookie and, on a request that changes state, the session's anti-forgery
// token in CSRFHeader. It returns ErrNoSession or ErrForgery otherwise.
func (c *Console) Authorize(r *http.Request) error {
	payload, ok := c.verify(r)
	if !ok {
		return ErrNoSession
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(c.csrf(payload))) != 1 {
		return ErrForgery
	}
	return nil
}

// verify returns the payload of the request's session cookie when its
// signature is right and it has not expired.
func (c *Console) verify(r *http.Request) ([]byte, bool) {
	if c.key == nil {
		return nil, false
	}
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil, false
	}
	p, s, ok := strings.Cut(ck.Value, ".")
	if !ok {
		return nil, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	sig, err2 := base64.RawURLEncoding.DecodeString(s)
	if err1 != nil || err2 != nil || len(payload) != 24 || !hmac.Equal(sig, c.sign(payload)) {
		return nil, false
	}
	if c.cfg.Now().Unix() >= int64(binary.BigEndian.Uint64(payload)) {
		return nil, false
	}
	return payload, true
}

func (c *Console) sign(payload []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("session\x00"))
	m.Write(payload)
	return m.Sum(nil)
}

func (c *Console) csrf(payload []byte) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("csrf\x00"))
	m.Write(payload)
	return enc(m.Sum(nil))
}

// CrossOrigin reports whether a browser sent r from a page of another
// origin (scheme, host and port). Browsers send Origin on every request
// that can change state; clients such as curl send none, and are not
// cross-origin.
func CrossOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return r.Header.Get("Sec-Fetch-Site") == "cross-site"
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return true // "null" and the like: an opaque origin
	}
	scheme := "http"
	if isTLS(r) {
		scheme = "https"
	}
	return !strings.EqualFold(u.Host, r.Host) || u.Scheme != scheme
}

func isTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers in the API's error shape (code, message, details), so
// the page handles both alike.
func writeError(w http.ResponseWriter, status int, msg string) {
	code := map[int]int{http.StatusBadRequest: 3, http.StatusUnauthorized: 16, http.StatusForbidden: 7, http.StatusConflict: 9}[status]
	if code == 0 {
		code = 13
	}
	writeJSON(w, status, map[string]any{"code": code, "message": msg, "details": []string{}})
}
