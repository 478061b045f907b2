package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/betracehq/betrace/host/console"
	"github.com/betracehq/betrace/host/health"
	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/trial"
)

// Config holds the API's settings.
type Config struct {
	// APIToken, when set, is required as a bearer token on /v1/rules… and
	// /v1/violations. Empty leaves them open.
	APIToken string
	// MaxBodyBytes caps request bodies (a module upload with its
	// metadata). Default 17 MiB: the 16 MiB module limit plus room for
	// multipart framing.
	MaxBodyBytes int64
}

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default.
const DefaultMaxBodyBytes = 17 << 20

// Deps are the components the API serves.
type Deps struct {
	Rules      *registry.Registry
	Violations store.Violations
	Health     *health.Reporter
	Gatherer   prometheus.Gatherer
	// Ingest maps paths (e.g. /v1/traces) to ingest handlers, which do
	// their own authentication.
	Ingest map[string]http.Handler
	// Console, when set, is served at /ui/ and its sessions are accepted
	// in place of the bearer token.
	Console *console.Console
	// Trial tests and replays candidate rules (POST /v1/rules/test, …/replay).
	Trial   *trial.Runner
	Version string
	Started time.Time
	Now     func() time.Time
}

type api struct {
	cfg     Config
	deps    Deps
	logger  *slog.Logger
	metrics *metrics
}

// New returns the router serving the whole HTTP surface on one port.
func New(cfg Config, deps Deps, logger *slog.Logger, reg prometheus.Registerer) http.Handler {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	a := &api{cfg: cfg, deps: deps, logger: logger, metrics: newMetrics(reg)}
	r := mux.NewRouter()
	// Middleware runs only for matched routes, so these two count
	// themselves (route "unmatched").
	r.NotFoundHandler = a.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeErrorBody(w, &apiError{status: http.StatusNotFound, code: codeNotFound, message: "no such endpoint: " + r.URL.Path})
	}))
	r.MethodNotAllowedHandler = a.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeErrorBody(w, &apiError{status: http.StatusMethodNotAllowed, code: codeUnimplemented, message: r.Method + " is not allowed on " + r.URL.Path})
	}))
	r.Use(a.recoverPanics, a.instrument)

	for _, p := range []string{"/health", "/v1/health"} {
		r.HandleFunc(p, a.health).Methods(http.MethodGet, http.MethodHead)
	}
	for _, p := range []string{"/ready", "/v1/ready"} {
		r.HandleFunc(p, a.ready).Methods(http.MethodGet, http.MethodHead)
	}
	r.Handle("/metrics", promhttp.HandlerFor(deps.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)})).Methods(http.MethodGet)
	for path, h := range deps.Ingest {
		r.Handle(path, h)
	}
	if deps.Console != nil {
		r.PathPrefix("/ui").Handler(deps.Console.Handler()).Methods(http.MethodGet, http.MethodHead, http.MethodPost)
	}

	// The /v1 routes sit on the root router, each wrapped in authentication,
	// rather than on a subrouter: a gorilla/mux subrouter answers 404 instead
	// of 405 for a known path with the wrong method.
	v1 := func(path string, h http.HandlerFunc, method string) {
		r.Handle(path, a.authenticate(h)).Methods(method)
	}
	v1("/v1/rules", a.listRules, http.MethodGet)
	v1("/v1/rules", a.createRule, http.MethodPost)
	v1("/v1/rules/validate", a.validateRule, http.MethodPost)
	if deps.Trial != nil {
		v1("/v1/rules/test", a.testRule, http.MethodPost)
		v1("/v1/rules/replay", a.replayCandidate, http.MethodPost)
		v1("/v1/rules/{id}/replay", a.replayStored, http.MethodPost)
	}
	v1("/v1/rules/{id}", a.getRule, http.MethodGet)
	v1("/v1/rules/{id}", a.updateRule, http.MethodPut)
	v1("/v1/rules/{id}", a.deleteRule, http.MethodDelete)
	v1("/v1/rules/{id}/module", a.getModule, http.MethodGet)
	v1("/v1/rules/{id}/enable", a.enableRule(true), http.MethodPost)
	v1("/v1/rules/{id}/disable", a.enableRule(false), http.MethodPost)
	v1("/v1/rules/{id}/rollback", a.rollbackRule, http.MethodPost)
	v1("/v1/rules/{id}/shadow", a.installShadow, http.MethodPut)
	v1("/v1/rules/{id}/shadow", a.dropShadow, http.MethodDelete)
	v1("/v1/rules/{id}/promote", a.promoteShadow, http.MethodPost)
	v1("/v1/violations", a.listViolations, http.MethodGet)
	v1("/v1/violations/summary", a.summarizeViolations, http.MethodGet)
	return r
}

// authenticate refuses a state change sent by a browser from another
// origin (a page elsewhere posting a form to an open API), then requires
// the API token, or a console session, when a token is configured. A token
// that bearer.Parse refuses accepts nothing: the service refuses it at
// start-up, so this only guards a caller that skipped validation.
func (a *api) authenticate(next http.Handler) http.Handler {
	sameOrigin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && console.CrossOrigin(r) {
			writeErrorBody(w, &apiError{status: http.StatusForbidden, code: codePermissionDenied,
				message: "cross-origin request refused: " + r.Method + " " + r.URL.Path + " was sent by a page of " + r.Header.Get("Origin") + "; use the console on this server, or a client that sends no Origin"})
			return
		}
		next.ServeHTTP(w, r)
	})
	if a.cfg.APIToken == "" {
		return sameOrigin
	}
	want, _ := bearer.Parse("BETRACE_API_TOKEN", a.cfg.APIToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		if got == "" && a.deps.Console != nil {
			switch err := a.deps.Console.Authorize(r); {
			case err == nil:
				sameOrigin.ServeHTTP(w, r)
				return
			case errors.Is(err, console.ErrForgery):
				writeErrorBody(w, &apiError{status: http.StatusForbidden, code: codePermissionDenied, message: err.Error()})
				return
			}
		}
		if !want.Match(got) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="betrace"`)
			msg := "missing bearer token: send Authorization: Bearer <BETRACE_API_TOKEN>"
			if got != "" {
				msg = "invalid bearer token"
			}
			writeErrorBody(w, &apiError{status: http.StatusUnauthorized, code: codeUnauthenticated, message: msg})
			return
		}
		sameOrigin.ServeHTTP(w, r)
	})
}

// recoverPanics turns a handler panic into a 500 and a log line; the
// process keeps serving.
func (a *api) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				a.logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
				writeErrorBody(w, &apiError{status: http.StatusInternalServerError, code: codeInternal, message: "internal error; the server log has the details"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts requests by route template, never by raw path, so the
// label set stays bounded.
func (a *api) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := "unmatched"
		if cr := mux.CurrentRoute(r); cr != nil {
			if tpl, err := cr.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		a.metrics.requests.WithLabelValues(r.Method, route, strconv.Itoa(sw.status)).Inc()
		a.metrics.duration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}

func (a *api) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"status":        "HEALTHY",
		"version":       a.deps.Version,
		"uptimeSeconds": int64(a.deps.Now().Sub(a.deps.Started).Seconds()),
	})
}

func (a *api) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res := a.deps.Health.Ready(ctx)
	body := map[string]any{"status": "READY", "checks": res.Checks, "version": a.deps.Version}
	status := http.StatusOK
	if res.Degraded {
		body["status"] = "DEGRADED"
	}
	if !res.Ready {
		body["status"] = "NOT_READY"
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

func (a *api) listViolations(w http.ResponseWriter, r *http.Request) {
	q, err := parseViolationQuery(r.URL.Query())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	page, err := a.deps.Violations.QueryViolations(r.Context(), q)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	withEvidence := false
	if s := r.URL.Query().Get("evidence"); s != "" {
		if withEvidence, err = strconv.ParseBool(s); err != nil {
			a.writeError(w, r, badRequest(fmt.Sprintf("evidence %q: want true or false", s)))
			return
		}
	}
	out := make([]violationJSON, len(page.Violations))
	for i, v := range page.Violations {
		out[i] = toViolationJSON(v)
		if !withEvidence {
			out[i].Evidence = nil
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"violations": out, "totalCount": page.TotalCount, "nextCursor": page.NextCursor})
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "HTTP requests by method, route template and status."},
			[]string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_request_duration_seconds", Help: "HTTP request latency by method and route template.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"method", "route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}
