// Package service builds BeTrace from one Config and owns the order in which
// its parts start and stop. It is imported only by cmd/betrace.
//
// Start goes downstream first (store, sandboxes and rules, exporter,
// recorder, evaluation workers, assembler) and opens the doors last (HTTP, gRPC), so
// nothing is accepted that cannot be processed. Shutdown goes the other way:
// stop accepting, complete every buffered trace, evaluate it, drain the
// recorder into the store, flush the exporter, close the store — all within the
// shutdown deadline.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/cluster"
	"github.com/betracehq/betrace/host/console"
	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/export"
	"github.com/betracehq/betrace/host/health"
	"github.com/betracehq/betrace/host/httpapi"
	"github.com/betracehq/betrace/host/ingest"
	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/recorder"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/embedded"
	"github.com/betracehq/betrace/host/store/redisstore"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/trial"
)

// Config is everything an operator can set. Each part is its package's own
// Config; cmd/betrace fills them from flags and the environment.
type Config struct {
	// HTTPAddr serves the API, metrics and OTLP/HTTP. Default ":12011".
	HTTPAddr string
	// DataDir holds the embedded store and the compilation cache. Default "./data".
	DataDir string
	// APIToken guards /v1/rules… and /v1/violations; empty leaves them open.
	APIToken string
	// TraceURLTemplate links the console's violations to a tracing
	// backend: "{traceId}" and "{spanId}" are replaced. Empty: no link.
	TraceURLTemplate string
	// DebugAddr, when set, is where main serves Go's profiler
	// (/debug/pprof/). Default empty: off. Bind it to localhost.
	DebugAddr string
	// Workers evaluating completed traces; 0 means one per CPU.
	Workers int
	// Share is each rule's share of the workers while traces wait for one.
	Share evaluation.ShareConfig
	// EvidenceSpans caps the snapshot of each violating trace stored with
	// its violations: 0 means 200, negative stores none.
	EvidenceSpans int
	// ShutdownTimeout bounds Shutdown. Default 10s.
	ShutdownTimeout time.Duration
	// MemoryLimit is the Go heap's soft limit in bytes, applied by main.
	// Default 768 MiB.
	MemoryLimit int64
	// RuleMemoryBudget bounds the linear memory of every rule instance
	// together, in bytes. Zero: a third of MemoryLimit (256 MiB by
	// default), so the heap's soft limit and the rules fit a container of
	// four thirds of MemoryLimit, as the deployment sets them.
	RuleMemoryBudget int64
	// TapeBytes bounds the tape of recent traces that candidate rules are
	// replayed on (package trial). Default 64 MiB; 0 turns it off.
	TapeBytes int64

	Traces     traces.Config
	Ingest     ingest.Config
	Export     export.Config
	Recorder   recorder.Config
	Store      embedded.Config // Dir defaults to DataDir
	Quarantine rules.QuarantinePolicy
	// Redis, when its URL is set, replaces the embedded store and makes
	// this instance a member of the cluster described by Cluster.
	Redis   redisstore.Config
	Cluster cluster.Config
	Version string
}

// DefaultConfig returns every default.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:        ":12011",
		DataDir:         "./data",
		ShutdownTimeout: 10 * time.Second,
		MemoryLimit:     768 << 20,
		TapeBytes:       trial.DefaultTapeBytes,
		Traces:          traces.DefaultConfig(),
		Ingest:          ingest.DefaultConfig(),
		Export:          export.DefaultConfig(),
		Recorder:        recorder.DefaultConfig(),
		Store:           embedded.DefaultConfig(),
		Quarantine:      rules.DefaultQuarantinePolicy(),
		Redis:           redisstore.DefaultConfig(),
		Cluster:         cluster.DefaultConfig(),
		Version:         "dev",
	}
}

func (c Config) ruleMemoryBudget() int64 {
	if c.RuleMemoryBudget > 0 {
		return c.RuleMemoryBudget
	}
	return max(c.MemoryLimit/3, 1<<20)
}

// Validate reports every problem, each prefixed with where it is.
func (c Config) Validate() error {
	var errs []error
	add := func(where string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http address is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory is empty"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("shutdown timeout must be positive"))
	}
	add("rule share", c.Share.Validate())
	if c.RuleMemoryBudget < 0 || (c.RuleMemoryBudget > 0 && c.RuleMemoryBudget < 1<<20) {
		errs = append(errs, fmt.Errorf("rule memory budget %d bytes: give at least 1MiB, or 0 for a third of the memory limit", c.RuleMemoryBudget))
	}
	if c.TapeBytes < 0 {
		errs = append(errs, fmt.Errorf("tape bytes %d: give a size, or 0 to turn the tape off", c.TapeBytes))
	}
	if c.APIToken != "" {
		if _, err := bearer.Parse("BETRACE_API_TOKEN", c.APIToken); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := console.New(console.Config{TraceURLTemplate: c.TraceURLTemplate}, slog.New(slog.DiscardHandler)); err != nil {
		errs = append(errs, err)
	}
	add("traces", c.Traces.Validate())
	add("ingest", c.Ingest.Validate())
	add("export", c.Export.Validate())
	add("recorder", c.Recorder.Validate())
	add("quarantine", c.Quarantine.Validate())
	if c.Redis.URL != "" {
		add("redis", c.Redis.Validate())
		add("cluster", c.Cluster.Validate())
	}
	return errors.Join(errs...)
}

// Service is a running BeTrace.
type Service struct {
	cfg      Config
	logger   *slog.Logger
	registry *prometheus.Registry

	store store.Store
	host  *sandbox.Host
	// throughput samples spans/s for the console's overview.
	throughput *console.Throughput
	cluster    *clustered         // nil on the embedded store
	live       *registry.Registry // the live rule set
	exporter   *export.Exporter
	recorder   *recorder.Recorder
	pool       *evaluation.Pool
	assembler  *traces.Assembler
	receiver   *ingest.Receiver
	trialTape  *trial.Tape
	http       *http.Server
	listener   net.Listener
	serveErr   chan error
}

// New builds every component; nothing runs until Start.
func New(cfg Config, logger *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Service{cfg: cfg, logger: logger, registry: reg, serveErr: make(chan error, 1)}
	now := time.Now

	var err error
	regCfg := registry.Config{Quarantine: cfg.Quarantine}
	if cfg.Redis.URL != "" {
		if s.cluster, err = newClustered(cfg, logger, reg, now); err != nil {
			return nil, err
		}
		s.store = s.cluster.store
		regCfg.NewStrikes = s.cluster.strikes
	} else {
		if cfg.Store.Dir == "" {
			cfg.Store.Dir = cfg.DataDir
		}
		st, err := embedded.Open(cfg.Store, now)
		if err != nil {
			return nil, fmt.Errorf("open the embedded store: %w", err)
		}
		s.store = st
	}
	st := s.store
	s.host, err = sandbox.NewHost(sandbox.HostConfig{CacheDir: filepath.Join(cfg.DataDir, "compile-cache"), MemoryBudget: cfg.ruleMemoryBudget()})
	if err != nil {
		st.Close()
		return nil, err
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "betrace_rule_memory_bytes", Help: "Linear memory committed by every rule instance together."},
			func() float64 { return float64(s.host.MemoryInUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "betrace_rule_memory_budget_bytes", Help: "Budget for the linear memory of every rule instance together (BETRACE_RULE_MEMORY_BUDGET)."},
			func() float64 { return float64(s.host.MemoryBudget()) }))
	s.live = registry.New(regCfg, st, s.host, logger.With("component", "rules"), reg, now)
	if s.cluster != nil {
		s.cluster.rules = s.live
	}

	s.exporter, err = export.New(cfg.Export, logger.With("component", "export"), reg)
	if err != nil {
		s.closeStorage()
		return nil, err
	}
	write := recorder.WriteFunc(st.AppendViolations)
	if s.cluster != nil {
		write = s.cluster.spool.Record // spools while Redis is unreachable
	}
	s.recorder, err = recorder.New(cfg.Recorder, write, exportLive(s.exporter.Export), recorder.Settings{
		Logger: logger.With("component", "recorder"), Registerer: reg, Now: now, Count: st.CountViolations})
	if err != nil {
		s.closeStorage()
		return nil, err
	}
	s.pool = evaluation.NewPool(evaluation.PoolConfig{Workers: cfg.Workers, Share: cfg.Share, EvidenceSpans: cfg.EvidenceSpans}, evaluation.PoolDeps{
		Rules:      s.live.Active,
		Record:     s.recorder.Record,
		Quarantine: s.quarantine,
		Tape:       s.tape(reg),
		Logger:     logger.With("component", "evaluation"),
		Registerer: reg,
		Now:        now,
	})
	s.assembler, err = traces.New(cfg.Traces, s.evaluate, traces.Settings{Logger: logger.With("component", "traces"), Registerer: reg, Now: now})
	if err != nil {
		s.closeStorage()
		return nil, err
	}
	sink := traces.Sink(s.admit)
	handlers := map[string]http.Handler{}
	if s.cluster != nil {
		s.cluster.router = cluster.NewRouter(cluster.ForwardConfig{Token: s.cluster.token, IdleTimeout: cfg.Traces.IdleTimeout}, s.cluster.members, s.admit, logger.With("component", "cluster"), reg)
		s.cluster.router.SetFragmentSink(s.admitFragments)
		sink = s.cluster.router.Route
		handlers[cluster.ForwardPath] = s.cluster.router.Handler()
		s.cluster.members.OnChange(s.handOff)
	}
	s.receiver, err = ingest.New(cfg.Ingest, sink, ingest.Settings{Logger: logger.With("component", "ingest"), Registerer: reg})
	if err != nil {
		s.closeStorage()
		return nil, err
	}
	handlers["/v1/traces"], handlers["/v1/spans"] = s.receiver.TracesHandler(), s.receiver.SpansHandler()

	hr := health.New(2 * time.Second)
	hr.Register("rules", func(context.Context) error {
		if !s.live.Loaded() {
			return errors.New("rules are still loading")
		}
		return nil
	})
	if s.cluster != nil {
		hr.RegisterDegraded("redis", s.cluster.members.RedisUp)
	} else {
		hr.Register("storage", st.Ping)
	}
	// Not ready while violations cannot be stored (disk full) or the
	// recorder's buffer is nearly full: ingest refuses traces then too.
	hr.Register("recorder", s.recorder.Check)
	started := now()
	s.throughput = console.NewThroughput(reg, now)
	ui, err := console.New(console.Config{APIToken: cfg.APIToken, TraceURLTemplate: cfg.TraceURLTemplate, Now: now, Throughput: s.throughput}, logger.With("component", "console"))
	if err != nil {
		s.closeStorage()
		return nil, err
	}
	s.http = &http.Server{
		Handler: httpapi.New(httpapi.Config{APIToken: cfg.APIToken}, httpapi.Deps{
			Rules: s.live, Violations: st, Health: hr, Gatherer: reg,
			Ingest:  handlers,
			Console: ui,
			Trial:   s.newTrial(logger),
			Version: cfg.Version, Started: started, Now: now,
		}, logger.With("component", "httpapi"), reg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// evaluate hands a completed trace to the worker pool; it blocks while the
// pool is full, which keeps the trace's bytes counted and pushes back on
// ingest.
func (s *Service) evaluate(t *traces.Trace) {
	if s.cluster != nil && t.Completion != traces.CompletionShutdown && !t.Fragment {
		// Completed a moment after a view gave its partition away, before
		// the hand-off took it out of the buffer: its owner assembles it,
		// with whatever reaches it directly.
		if _, self := s.cluster.members.View().Owner(t.ID); !self {
			s.cluster.router.HandOff(t.Spans)
			t.Release()
			return
		}
	}
	var flags uint32
	switch {
	case t.Fragment:
		flags |= abiv1.TraceFlagFragment
		if s.cluster != nil {
			s.cluster.members.CountFragment()
		}
	case s.cluster != nil && s.cluster.members.Fragment(t.ID, t.FirstSeen, t.Completed, s.cfg.Traces.IdleTimeout):
		flags |= abiv1.TraceFlagFragment
	}
	err := s.pool.Submit(context.Background(), evaluation.Job{
		Spans: t.Spans, Flags: flags, Trigger: t.Completion.String(), CompletedAt: t.Completed, Done: t.Release,
	})
	if err != nil {
		t.Release()
		s.logger.Error("completed trace dropped: the evaluation pool is stopped", "err", err)
	}
}

// handOff runs when a cluster view takes effect: traces this instance is
// assembling in partitions it no longer owns go, whole so far, to the new
// owner, which every instance routes their next spans to from the same
// moment. No trace is then split by the change.
func (s *Service) handOff(old, next *cluster.View) {
	whole, frags := s.assembler.Extract(func(id [16]byte) bool {
		_, was := old.Owner(id)
		_, is := next.Owner(id)
		return was && !is
	})
	if len(whole)+len(frags) > 0 {
		s.logger.Info("handing over open traces of partitions another member now owns", "spans", len(whole)+len(frags), "fragment_spans", len(frags), "epoch", next.Epoch)
		s.cluster.router.HandOff(whole)
		s.cluster.router.HandOffFragments(frags)
	}
}

// admit takes spans this instance evaluates, unless the recorder cannot
// keep more violations (the store cannot write, or its buffer is nearly
// full): then ingest answers a retryable 503 / UNAVAILABLE rather than
// accept traces whose violations would be lost.
func (s *Service) admit(ctx context.Context, spans []traces.Span) error {
	if err := s.recorder.Accepting(); err != nil {
		return pushback{err}
	}
	return s.assembler.Add(ctx, spans)
}

// admitFragments is admit for spans whose traces may have lost spans with
// a member that died: their traces are evaluated as fragments.
func (s *Service) admitFragments(ctx context.Context, spans []traces.Span) error {
	if err := s.recorder.Accepting(); err != nil {
		return pushback{err}
	}
	return s.assembler.AddFragments(ctx, spans)
}

// pushback is the recorder's refusal as ingest sees it: retryable, like
// traces.ErrUnavailable (HTTP 503 with Retry-After, gRPC UNAVAILABLE), but
// with the recorder's reason ("disk full …") as its whole text.
type pushback struct{ err error }

func (p pushback) Error() string {
	return "ingest spans: " + p.err.Error() + "; retry later"
}
func (p pushback) Is(target error) bool { return target == traces.ErrUnavailable }
func (p pushback) Unwrap() error        { return p.err }

// quarantine records a rule's quarantine off the evaluation worker: the
// write waits for the registry's writer and the store, and evaluation never
// waits on storage. The rule already stopped running here, its strikes
// being quarantined.
func (s *Service) quarantine(ctx context.Context, ruleID string, q rules.Quarantine) {
	ctx = context.WithoutCancel(ctx)
	go func() {
		if err := s.live.Quarantine(ctx, ruleID, q); err != nil {
			s.logger.Error("could not record a rule's quarantine", "rule_id", ruleID, "err", err)
		}
	}()
}

// component is one stage of the service: started in the order of
// components, stopped in reverse, so each stage starts after what it hands
// data to and stops before it. A nil start or stop has nothing to do.
type component struct {
	name        string
	start, stop func(context.Context) error
}

// components lists the stages from the storage end to the doors.
func (s *Service) components() []component {
	cs := []component{
		{"storage", nil, func(context.Context) error { return s.closeStorage() }},
		{"rules", s.live.Load, func(ctx context.Context) error { s.live.Close(ctx); return nil }},
	}
	if s.cluster != nil {
		cs = append(cs, component{"cluster", s.cluster.Start, s.cluster.Shutdown}) // spool and rule sync, below the recorder
	}
	cs = append(cs,
		component{"export", s.exporter.Start, s.exporter.Shutdown},
		component{"recorder", s.recorder.Start, s.recorder.Shutdown}, // writes every violation it holds
		component{"evaluation", s.pool.Start, s.pool.Shutdown},       // evaluates every completed trace
		component{"traces", s.assembler.Start, s.assembler.Shutdown}, // completes every buffered trace
	)
	if s.cluster != nil {
		cs = append(cs, component{"forwarding", nil, s.cluster.router.Shutdown}) // delivers spans queued for peers
	}
	cs = append(cs,
		component{"throughput", s.throughput.Start, s.throughput.Shutdown}, // the console's hour of spans/s
		component{"http", s.listen, s.stopHTTP},
		component{"ingest", s.receiver.Start, s.receiver.Shutdown},
	)
	if s.cluster != nil {
		cs = append(cs, component{"membership", nil, s.cluster.members.Leave}) // peers stop routing traces here first
	}
	return cs
}

// Start starts every component, doors last; the error of one that fails
// names it. Call Shutdown afterwards either way: it stops every component,
// started or not.
func (s *Service) Start(ctx context.Context) error {
	for _, c := range s.components() {
		if c.start == nil {
			continue
		}
		if err := c.start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", c.name, err)
		}
	}
	s.logger.Info("betrace serving", "http", s.listener.Addr().String(), "otlp_grpc", s.receiver.GRPCAddr(), "data_dir", s.cfg.DataDir,
		"rules", len(s.live.List()), "version", s.cfg.Version,
		"trace_settle", s.cfg.Traces.Settle.String(), "trace_idle_timeout", s.cfg.Traces.IdleTimeout.String(), "trace_max_age", s.cfg.Traces.MaxAge.String(),
		"trace_max_spans", s.cfg.Traces.MaxSpans, "trace_buffer_bytes", s.cfg.Traces.MaxBytes,
		"rule_fuel", sandbox.DefaultFuel, "rule_memory_pages", sandbox.DefaultMemoryPages, "rule_memory_budget", s.host.MemoryBudget(),
		"api_token", s.cfg.APIToken != "", "ingest_token", s.cfg.Ingest.Token != "", "export", s.cfg.Export.Endpoint != "")
	return nil
}

// listen opens the HTTP API's port and serves it.
func (s *Service) listen(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s for the HTTP API: %w (set BETRACE_PORT_BACKEND to use another port)", s.cfg.HTTPAddr, err)
	}
	s.listener = ln
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- err
		}
	}()
	return nil
}

func (s *Service) stopHTTP(ctx context.Context) error {
	if s.listener == nil {
		return nil
	}
	return s.http.Shutdown(ctx)
}

// stopAll stops cs in reverse, naming each component that failed.
func stopAll(ctx context.Context, cs []component) error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].stop == nil {
			continue
		}
		if err := cs[i].stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", cs[i].name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) HTTPAddr() string { return s.listener.Addr().String() }

// Err reports a fatal serving error.
func (s *Service) Err() <-chan error { return s.serveErr }

// Shutdown stops intake, evaluates what is buffered, persists and releases
// everything, within ctx's deadline: the components in reverse.
func (s *Service) Shutdown(ctx context.Context) error {
	s.logger.Info("betrace shutting down: no new spans are accepted")
	if err := stopAll(ctx, s.components()); err != nil {
		return err
	}
	s.logger.Info("betrace stopped")
	return nil
}

func (s *Service) closeStorage() error {
	var errs []error
	if s.host != nil {
		errs = append(errs, s.host.Close(context.Background()))
	}
	errs = append(errs, s.store.Close()) // closes the cluster's client too
	return errors.Join(errs...)
}
