package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/betracehq/betrace/host/service"
)

// option is one setting: a flag, its environment twin, its default and how
// to apply a value. The table is the single source of `serve --help`, the
// README's configuration reference and --print-config.
type option struct {
	flag, env, def, help string
	secret               bool
	set                  func(c *service.Config, v string) error
}

func options() []option {
	return []option{
		{"port", "BETRACE_PORT_BACKEND", "12011", "port of the HTTP API, /metrics and OTLP/HTTP ingest", false, func(c *service.Config, v string) error {
			p, err := port(v)
			c.HTTPAddr = net.JoinHostPort(hostOf(c.HTTPAddr), p)
			return err
		}},
		{"listen-host", "BETRACE_LISTEN_HOST", "", "interface to listen on (empty: all)", false, func(c *service.Config, v string) error {
			_, p, _ := net.SplitHostPort(c.HTTPAddr)
			c.HTTPAddr = net.JoinHostPort(v, p)
			if c.Ingest.GRPCAddr != "" {
				_, gp, _ := net.SplitHostPort(c.Ingest.GRPCAddr)
				c.Ingest.GRPCAddr = net.JoinHostPort(v, gp)
			}
			return nil
		}},
		{"otlp-grpc-port", "BETRACE_OTLP_GRPC_PORT", "4317", "port of OTLP/gRPC ingest; 0 disables it", false, func(c *service.Config, v string) error {
			p, err := port(v)
			if p == "0" {
				c.Ingest.GRPCAddr = ""
				return err
			}
			c.Ingest.GRPCAddr = net.JoinHostPort(hostOf(c.HTTPAddr), p)
			return err
		}},
		{"data-dir", "BETRACE_DATA_DIR", "./data", "directory of the embedded store and the compilation cache", false, func(c *service.Config, v string) error {
			c.DataDir, c.Store.Dir = v, v
			return nil
		}},
		{"api-token", "BETRACE_API_TOKEN", "", "bearer token required on /v1/rules and /v1/violations (empty: open)", true, func(c *service.Config, v string) error {
			c.APIToken = v
			return nil
		}},
		{"trace-url-template", "BETRACE_TRACE_URL_TEMPLATE", "", "link from the console's violations to a tracing backend, {traceId} and {spanId} replaced (e.g. http://jaeger:16686/trace/{traceId}; empty: no link)", false, func(c *service.Config, v string) error {
			c.TraceURLTemplate = v
			return nil
		}},
		{"ingest-token", "BETRACE_INGEST_TOKEN", "", "bearer token required for ingest (empty: open)", true, func(c *service.Config, v string) error {
			c.Ingest.Token = v
			return nil
		}},
		{"trace-settle", "BETRACE_TRACE_SETTLE", "2s", "wait after a trace's root span arrives before evaluating it", false, duration(func(c *service.Config) *time.Duration { return &c.Traces.Settle })},
		{"trace-idle-timeout", "BETRACE_TRACE_IDLE_TIMEOUT", "5s", "complete a trace after this long without a new span", false, duration(func(c *service.Config) *time.Duration { return &c.Traces.IdleTimeout })},
		{"trace-max-age", "BETRACE_TRACE_MAX_AGE", "30s", "complete a trace this long after its first span at the latest; late spans are recognised for twice as long", false, func(c *service.Config, v string) error {
			err := duration(func(c *service.Config) *time.Duration { return &c.Traces.MaxAge })(c, v)
			c.Traces.LateWindow = 2 * c.Traces.MaxAge
			return err
		}},
		{"trace-max-spans", "BETRACE_TRACE_MAX_SPANS", "10000", "most spans in one trace; the span that would exceed it completes the trace and is counted late", false, func(c *service.Config, v string) error {
			n, err := positive(v)
			c.Traces.MaxSpans = n
			return err
		}},
		{"trace-buffer-bytes", "BETRACE_TRACE_BUFFER_BYTES", "", "memory bound of buffered traces (empty: 256MiB, or in a container a third of the memory limit); ingest answers retry-later beyond it", false, func(c *service.Config, v string) error {
			c.Traces.MaxBytes = 0
			if v == "" {
				return nil
			}
			n, err := parseBytes(v)
			c.Traces.MaxBytes = n
			return err
		}},
		{"workers", "BETRACE_WORKERS", "0", "evaluation workers (0: one per CPU)", false, func(c *service.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number of workers", v)
			}
			c.Workers = n
			return nil
		}},
		{"violation-retention", "BETRACE_VIOLATION_RETENTION", "168h", "how long violations are kept", false, func(c *service.Config, v string) error {
			err := duration(func(c *service.Config) *time.Duration { return &c.Store.MaxViolationAge })(c, v)
			c.Redis.MaxViolationAge = c.Store.MaxViolationAge
			return err
		}},
		{"violation-max", "BETRACE_VIOLATION_MAX", "", "how many violations are kept, oldest dropped first (default 1,000,000 embedded, 250,000 in Redis)", false, func(c *service.Config, v string) error {
			if v == "" {
				return nil
			}
			n, err := positive(v)
			c.Store.MaxViolations, c.Redis.MaxViolations = n, n
			return err
		}},
		{"violation-max-per-rule", "BETRACE_VIOLATION_MAX_PER_RULE", "", "how many violations of one rule are kept; past it the rule loses its own oldest, and at BETRACE_VIOLATION_MAX the rule holding the most loses its oldest (default 100,000 embedded, 25,000 in Redis)", false, func(c *service.Config, v string) error {
			if v == "" {
				return nil
			}
			n, err := positive(v)
			c.Store.MaxViolationsPerRule, c.Redis.MaxViolationsPerRule = n, n
			return err
		}},
		{"violation-sample-rate", "BETRACE_VIOLATION_SAMPLE_RATE", "1000", "violations of one rule per minute kept as records; past it 1 in BETRACE_VIOLATION_SAMPLE_EVERY is kept and the rest only counted (-1: keep every violation)", false, func(c *service.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || (n < 1 && n != -1) {
				return fmt.Errorf("%q is not a positive number of violations a minute, or -1 to keep every violation", v)
			}
			c.Recorder.SampleRate = n
			return nil
		}},
		{"violation-sample-every", "BETRACE_VIOLATION_SAMPLE_EVERY", "100", "past BETRACE_VIOLATION_SAMPLE_RATE, keep 1 in this many of a rule's violations", false, func(c *service.Config, v string) error {
			n, err := positive(v)
			c.Recorder.SampleEvery = n
			return err
		}},
		{"quarantine-strikes", "BETRACE_QUARANTINE_STRIKES", "3", "fewest sandbox faults within the window that quarantine a rule", false, func(c *service.Config, v string) error {
			n, err := positive(v)
			c.Quarantine.Strikes = n
			return err
		}},
		{"quarantine-fault-rate", "BETRACE_QUARANTINE_FAULT_RATE", "0.5", "smallest share of a rule's evaluations within the window that must have faulted to quarantine it (0 to 1)", false, func(c *service.Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= 0 && f <= 1) {
				return fmt.Errorf("%q is not a share between 0 and 1", v)
			}
			c.Quarantine.FaultRate = f
			return nil
		}},
		{"quarantine-window", "BETRACE_QUARANTINE_WINDOW", "1m", "window in which strikes count", false, duration(func(c *service.Config) *time.Duration { return &c.Quarantine.Window })},
		{"otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "", "collector OTLP/HTTP address for violation spans, host:port or http://host:port (empty: no export)", false, func(c *service.Config, v string) error {
			c.Export.Endpoint = v
			return nil
		}},
		{"redis-url", "BETRACE_REDIS_URL", "", "Redis to share rules, state and violations with other instances: redis://127.0.0.1:6379/0, redis+sentinel://s1:26379,s2:26379/mymaster or redis+cluster://n1:6379,n2:6379 (empty: embedded store)", true, func(c *service.Config, v string) error {
			c.Redis.URL = v
			return nil
		}},
		{"redis-prefix", "BETRACE_REDIS_PREFIX", "betrace:", "prefix of every Redis key, so deployments can share one Redis", false, func(c *service.Config, v string) error {
			c.Redis.Prefix = v
			return nil
		}},
		{"redis-wait-replicas", "BETRACE_REDIS_WAIT_REPLICAS", "", "replicas that must hold each Redis write before it counts as done, so a failover loses nothing acknowledged (empty: 1 with Sentinel, none otherwise; -1: none)", false, func(c *service.Config, v string) error {
			if v == "" {
				c.Redis.WaitReplicas = 0
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < -1 {
				return fmt.Errorf("%q is not a number of replicas (or -1 for none)", v)
			}
			c.Redis.WaitReplicas = n
			return nil
		}},
		{"instance-id", "BETRACE_INSTANCE_ID", "", "this instance's name in the cluster and in exported spans (default: hostname:port)", false, func(c *service.Config, v string) error {
			c.Export.InstanceID, c.Cluster.InstanceID = v, v
			return nil
		}},
		{"advertise-addr", "BETRACE_ADVERTISE_ADDR", "", "host:port at which peers reach this instance's HTTP port (default: hostname or listen host, and the port)", false, func(c *service.Config, v string) error {
			c.Cluster.AdvertiseAddr = v
			return nil
		}},
		{"cluster-token", "BETRACE_CLUSTER_TOKEN", "", "bearer token instances present to each other on /internal routes (empty: one random token shared through Redis)", true, func(c *service.Config, v string) error {
			c.Cluster.Token = v
			return nil
		}},
		{"recorder-max-bytes", "BETRACE_RECORDER_MAX_BYTES", "64MiB", "violations held between evaluation and the store (waiting for a write or kept for retry while the disk is full); ingest answers 503 from three quarters full", false, func(c *service.Config, v string) error {
			n, err := parseBytes(v)
			if err == nil && n <= 0 {
				err = fmt.Errorf("%q is not a positive size", v)
			}
			c.Recorder.MaxBytes = n
			return err
		}},
		{"recorder-flush-interval", "BETRACE_RECORDER_FLUSH_INTERVAL", "10ms", "how long a violation waits for others before their batch is written (what kill -9 can lose of a healthy store)", false, duration(func(c *service.Config) *time.Duration { return &c.Recorder.FlushInterval })},
		{"shutdown-timeout", "BETRACE_SHUTDOWN_TIMEOUT", "10s", "how long a graceful shutdown may take", false, duration(func(c *service.Config) *time.Duration { return &c.ShutdownTimeout })},
		{"memory-limit", "BETRACE_MEMORY_LIMIT", "", "soft limit of the Go heap (empty: 768MiB, or in a container three quarters of its memory limit; GOMEMLIMIT wins when set); the GC works harder near it", false, func(c *service.Config, v string) error {
			c.MemoryLimit = 0
			if v == "" {
				return nil
			}
			n, err := parseBytes(v)
			c.MemoryLimit = n
			return err
		}},
		{"evidence-max-spans", "BETRACE_EVIDENCE_MAX_SPANS", "200", "spans of the snapshot of each violating trace stored with its violations, at most 200 (0: store no evidence, e.g. where attribute values are sensitive)", false, func(c *service.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 200 {
				return fmt.Errorf("%q is not a span count from 0 to 200", v)
			}
			c.EvidenceSpans = n
			if n == 0 {
				c.EvidenceSpans = -1
			}
			return nil
		}},
		{"rule-share", "BETRACE_RULE_SHARE", "", "most of the evaluation workers' time one rule may take over 10s while traces wait, 0 to 1 (empty: an equal share, one over the number of rules); past it the rule skips traces, counted", false, func(c *service.Config, v string) error {
			if v == "" {
				return nil
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				return fmt.Errorf("%q is not a fraction between 0 and 1", v)
			}
			c.Share.Share = f
			return nil
		}},
		{"rule-memory-budget", "BETRACE_RULE_MEMORY_BUDGET", "", "linear memory of every rule instance together (empty: a third of the memory limit, 256MiB by default); a rule cannot grow past it", false, func(c *service.Config, v string) error {
			if v == "" {
				return nil
			}
			n, err := parseBytes(v)
			c.RuleMemoryBudget = n
			return err
		}},
		{"tape-bytes", "BETRACE_TAPE_BYTES", "16MiB", "recent completed traces kept, in their encoded form, for replaying candidate rules (POST /v1/rules/replay); per instance, oldest shed first; 0 turns it off", false, func(c *service.Config, v string) error {
			if strings.TrimSpace(v) == "0" {
				c.TapeBytes = 0
				return nil
			}
			n, err := parseBytes(v)
			c.TapeBytes = n
			return err
		}},
		{"debug-addr", "BETRACE_DEBUG_ADDR", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060 (empty: off); never expose it", false, func(c *service.Config, v string) error {
			if v != "" {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("%q is not host:port", v)
				}
			}
			c.DebugAddr = v
			return nil
		}},
		{"log-level", "LOG_LEVEL", "info", "debug, info, warn or error", false, func(c *service.Config, v string) error { return nil }},
	}
}

func duration(field func(*service.Config) *time.Duration) func(*service.Config, string) error {
	return func(c *service.Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 500ms, 2s or 1m", v)
		}
		*field(c) = d
		return nil
	}
}

func positive(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive whole number", v)
	}
	return n, nil
}

// parseBytes reads a size such as 768MiB, 1GiB or 805306368.
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n <= 0 {
				break
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("%q is not a size such as 768MiB or 2GiB", v)
}

func port(v string) (string, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 65535 {
		return "0", fmt.Errorf("%q is not a port number (0-65535)", v)
	}
	return strconv.Itoa(n), nil
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func parseLevel(v string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		return 0, fmt.Errorf("%q is not a log level: use debug, info, warn or error", v)
	}
	return l, nil
}

// loadConfig applies defaults, then the environment, then flags, and
// reports every bad value at once.
//
// container is the memory limit of the process's container (0: none), from
// which memory defaults derive.
func loadConfig(args []string, getenv func(string) string, container int64, stderr io.Writer) (service.Config, slog.Level, bool, bool, error) {
	cfg := service.DefaultConfig()
	cfg.HTTPAddr = ":12011"
	cfg.Ingest.GRPCAddr = ":4317"
	cfg.Version = version
	opts := options()
	values := map[string]string{}
	for _, o := range opts {
		values[o.flag] = o.def
		if v, ok := lookup(getenv, o.env); ok {
			values[o.flag] = v
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { serveUsage(stderr) }
	for _, o := range opts {
		fs.Func(o.flag, o.help, func(v string) error { values[o.flag] = v; return nil })
	}
	validate := fs.Bool("validate", false, "check the configuration and exit 0 or 1")
	printCfg := fs.Bool("print-config", false, "print the effective configuration (secrets masked) and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, 0, false, false, err
	}
	var problems []string
	for _, o := range opts {
		if err := o.set(&cfg, values[o.flag]); err != nil {
			problems = append(problems, fmt.Sprintf("%s (--%s): %v", o.env, o.flag, err))
		}
	}
	deriveMemoryDefaults(&cfg.MemoryLimit, &cfg.Traces.MaxBytes, container)
	for flag, n := range map[string]int64{"memory-limit": cfg.MemoryLimit, "trace-buffer-bytes": cfg.Traces.MaxBytes} {
		if values[flag] == "" {
			values[flag] = fmt.Sprintf("%dMiB (derived)", n>>20)
		}
	}
	level, err := parseLevel(values["log-level"])
	if err != nil {
		problems = append(problems, "LOG_LEVEL (--log-level): "+err.Error())
	}
	host, _ := os.Hostname()
	if cfg.Export.InstanceID == "" {
		cfg.Export.InstanceID = host + ":" + values["port"]
		cfg.Cluster.InstanceID = cfg.Export.InstanceID
	}
	if cfg.Cluster.AdvertiseAddr == "" {
		if h := values["listen-host"]; h != "" && h != "0.0.0.0" && h != "::" {
			host = h
		}
		cfg.Cluster.AdvertiseAddr = net.JoinHostPort(host, values["port"])
	}
	if err := cfg.Validate(); err != nil {
		problems = append(problems, err.Error())
	}
	if *printCfg {
		for _, o := range opts {
			v := values[o.flag]
			if o.secret && v != "" {
				v = "(set)"
			}
			fmt.Fprintf(stderr, "%s=%s\n", o.env, v)
		}
	}
	if len(problems) > 0 {
		return cfg, level, *validate, *printCfg, fmt.Errorf("invalid configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	return cfg, level, *validate, *printCfg, nil
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func serveUsage(w io.Writer) {
	fmt.Fprint(w, "usage: betrace serve [flags]\n\nEvery flag has an environment twin; a flag wins over the environment.\n\n")
	for _, o := range options() {
		def := o.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%-22s %-30s default %s\n      %s\n", o.flag, o.env, def, o.help)
	}
	fmt.Fprint(w, "  --validate                check the configuration and exit\n  --print-config            print the effective configuration and exit\n")
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, level, validateOnly, printOnly, err := loadConfig(args, os.Getenv, containerMemoryLimit(os.DirFS("/")), stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "betrace serve:", err)
		return 1
	}
	if validateOnly {
		fmt.Fprintln(stdout, "betrace serve: the configuration is valid")
	}
	if validateOnly || printOnly {
		return 0
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	} else if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		cfg.MemoryLimit = l // the limit in force, from which defaults derive
	}

	if cfg.DebugAddr != "" {
		go serveProfiler(cfg.DebugAddr, logger)
	}
	svc, err := service.New(cfg, logger)
	if err != nil {
		logger.Error("betrace could not start", "err", err)
		return 1
	}
	if err := svc.Start(ctx); err != nil {
		logger.Error("betrace could not start", "err", err)
		shutdown(svc, cfg.ShutdownTimeout)
		return 1
	}
	code := 0
	select {
	case <-ctx.Done():
	case err := <-svc.Err():
		logger.Error("betrace stopped serving", "err", err)
		code = 1
	}
	if err := shutdown(svc, cfg.ShutdownTimeout); err != nil {
		logger.Error("shutdown incomplete", "err", err)
		code = 1
	}
	return code
}

func shutdown(svc *service.Service, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return svc.Shutdown(ctx)
}

// serveProfiler serves net/http/pprof on its own listener, apart from the
// API, so profiling needs no token and cannot be reached on the API port.
func serveProfiler(addr string, logger *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logger.Warn("serving the Go profiler; keep this address private", "addr", addr)
	if err := srv.ListenAndServe(); err != nil {
		logger.Error("the Go profiler stopped", "addr", addr, "err", err)
	}
}
