// Command betrace-loadgen drives a BeTrace server with synthetic checkout
// traces over OTLP/gRPC or OTLP/HTTP and reports what the server sustained.
//
// With -spawn it also starts the server itself on a fresh data directory,
// uploads rules, runs the load and reads the server's own metrics: the
// completion-to-stored latency histogram and resident memory. `make bench`
// uses it that way.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type options struct {
	protocol      string
	httpTarget    string
	grpcTarget    string
	duration      time.Duration
	concurrency   int
	tracesPerReq  int
	spansPerTrace int
	violating     float64
	spawn         string
	rulesDir      string
	ruleCount     int
	dsl           bool
	rate          float64
	scenario      string
	heavy         bool
	sinkListen    string
}

func main() {
	var o options
	flag.StringVar(&o.protocol, "protocol", "grpc", "grpc or http")
	flag.StringVar(&o.httpTarget, "http", "http://127.0.0.1:12011", "server HTTP address (API, metrics, OTLP/HTTP)")
	flag.StringVar(&o.grpcTarget, "grpc", "127.0.0.1:4317", "server OTLP/gRPC address")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "how long to send")
	flag.IntVar(&o.concurrency, "concurrency", 4, "concurrent senders")
	flag.IntVar(&o.tracesPerReq, "traces-per-request", 20, "traces in one export request")
	flag.IntVar(&o.spansPerTrace, "spans-per-trace", 20, "spans in each trace")
	flag.Float64Var(&o.violating, "violating", 0.1, "fraction of traces that break payment-fraud-check")
	flag.StringVar(&o.spawn, "spawn", "", "path of a betrace binary to start on free ports for this run")
	flag.StringVar(&o.rulesDir, "rules-dir", "rules-examples/build", "with -spawn: where the example rule modules are")
	flag.IntVar(&o.ruleCount, "rules", 5, "with -spawn: how many rules to load (the five real examples, then copies)")
	flag.BoolVar(&o.dsl, "dsl", false, "with -spawn: load DSL rules compiled by the server instead of the Go examples")
	flag.Float64Var(&o.rate, "rate", 0, "spans per second to offer in total (0: as fast as the server accepts)")
	flag.StringVar(&o.scenario, "scenario", "", "with -spawn, a comparison measured in one run: neighbour, storm, memory or ceiling (see scenario.go)")
	flag.StringVar(&o.sinkListen, "sink-listen", "", "run only a decode-only OTLP/HTTP sink on this address (the ceiling of the ceiling scenario)")
	flag.BoolVar(&o.heavy, "heavy", false, "with -spawn: also load heavy-legal, a rule spending about 19M fuel on every trace")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "betrace-loadgen:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.sinkListen != "" {
		return serveSink(o.sinkListen)
	}
	if o.scenario != "" {
		if o.spawn == "" {
			return errors.New("-scenario needs -spawn: each phase starts a fresh server")
		}
		return runScenario(o)
	}
	if o.spawn != "" {
		srv, err := spawnWithRules(o)
		if err != nil {
			return err
		}
		defer srv.stop()
		o.httpTarget, o.grpcTarget = srv.http, srv.grpc
	}
	res, err := drive(o)
	if err != nil {
		return err
	}
	kind := "go-sdk"
	if o.dsl {
		kind = "dsl"
	}
	fmt.Printf("rule_kind=%s ", kind)
	fmt.Printf("protocol=%s rules=%d offered_rate=%.0f concurrency=%d spans_per_trace=%d duration=%s\n", o.protocol, o.ruleCount, o.rate, o.concurrency, o.spansPerTrace, res.elapsed.Round(time.Millisecond))
	fmt.Printf("accepted_spans=%d spans_per_second=%.0f pushed_back_requests=%d failed_requests=%d\n",
		res.spans, res.spansPerSecond(), res.pushedBack, res.failed)
	if o.spawn != "" {
		// Let the last traces settle and be evaluated, then read the server.
		time.Sleep(4 * time.Second)
		return report(o.httpTarget, res.peakRSS)
	}
	return nil
}

// spawnWithRules starts a server and loads the rules o asks for.
func spawnWithRules(o options) (*server, error) {
	srv, err := spawn(o.spawn)
	if err != nil {
		return nil, err
	}
	upload := func() error { return uploadRules(srv.http, o.rulesDir, o.ruleCount) }
	if o.dsl {
		upload = func() error { return postDSLRules(srv.http, o.ruleCount) }
	}
	err = upload()
	if err == nil && o.heavy {
		err = uploadModule(srv.http, o.rulesDir, "heavy-legal", "heavy-legal")
	}
	if err != nil {
		srv.stop()
		return nil, err
	}
	return srv, nil
}

// result is what one load run sustained.
type result struct {
	spans, pushedBack, failed int64
	elapsed                   time.Duration
	ended                     time.Time
	peakRSS                   float64 // bytes, sampled each second
	peakBytesPerSpan          float64 // trace buffer bytes per buffered span, at the buffer's peak
}

func (r result) spansPerSecond() float64 { return float64(r.spans) / r.elapsed.Seconds() }

// drive sends load for o.duration and reports what was accepted.
func drive(o options) (result, error) {
	ctx := context.Background()
	var send func(ctx context.Context, td ptrace.Traces) (retryAfter time.Duration, err error)
	switch o.protocol {
	case "grpc":
		conn, err := grpc.NewClient(o.grpcTarget, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return result{}, err
		}
		defer conn.Close()
		client := ptraceotlp.NewGRPCClient(conn)
		send = func(ctx context.Context, td ptrace.Traces) (time.Duration, error) {
			_, err := client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
			if status.Code(err) == codes.ResourceExhausted || status.Code(err) == codes.Unavailable {
				return 50 * time.Millisecond, err
			}
			return 0, err
		}
	case "http":
		url := strings.TrimSuffix(o.httpTarget, "/") + "/v1/traces"
		hc := &http.Client{Timeout: 30 * time.Second}
		send = func(ctx context.Context, td ptrace.Traces) (time.Duration, error) {
			body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
			if err != nil {
				return 0, err
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-protobuf")
			resp, err := hc.Do(req)
			if err != nil {
				return 0, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return 0, nil
			case http.StatusTooManyRequests, http.StatusServiceUnavailable:
				return 50 * time.Millisecond, fmt.Errorf("status %d", resp.StatusCode)
			}
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
	default:
		return result{}, fmt.Errorf("unknown protocol %q: use grpc or http", o.protocol)
	}

	var sent, pushedBack, failed atomic.Int64
	deadline := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// With a rate, each sender offers its share on a fixed schedule
			// and never bursts to catch up.
			var interval time.Duration
			if o.rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.tracesPerReq*o.spansPerTrace) * float64(o.concurrency) / o.rate)
			}
			next := time.Now()
			for time.Now().Before(deadline) {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
					if behind := time.Since(next); behind > interval {
						next = time.Now()
					}
				}
				td := batch(o.tracesPerReq, o.spansPerTrace, o.violating)
				wait, err := send(ctx, td)
				switch {
				case err == nil:
					sent.Add(int64(td.SpanCount()))
				case wait > 0:
					pushedBack.Add(1)
					time.Sleep(wait)
				default:
					failed.Add(1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	var peakRSS, peakBuffer, peakBytesPerSpan float64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Second):
				if values, _, err := scrape(o.httpTarget); err == nil {
					peakRSS = math.Max(peakRSS, values["process_resident_memory_bytes"])
					// Each request carries whole traces, so a buffered
					// trace holds spansPerTrace spans.
					buffered := (values["betrace_traces_active"] + values["betrace_traces_queued"]) * float64(o.spansPerTrace)
					if b := values["betrace_trace_buffer_bytes"]; b > peakBuffer && buffered > 0 {
						peakBuffer, peakBytesPerSpan = b, b/buffered
					}
				}
			}
		}
	}()
	start := time.Now()
	wg.Wait()
	ended := time.Now()
	close(stopSampling)
	<-sampled
	return result{spans: sent.Load(), pushedBack: pushedBack.Load(), failed: failed.Load(), elapsed: ended.Sub(start), ended: ended,
		peakRSS: peakRSS, peakBytesPerSpan: peakBytesPerSpan}, nil
}

var spanNames = []string{"cart.load", "inventory.reserve", "SELECT stock", "pricing.quote", "SELECT prices", "shipping.rate", "auth.check", "user.lookup"}

// batch builds n checkout traces of spansPerTrace spans: a root, a
// payment.charge, usually a fraud.check, and assorted work spans with a few
// attributes each.
func batch(n, spansPerTrace int, violating float64) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	rs.Resource().Attributes().PutStr("deployment.environment", "load")
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	var r [8]byte
	for range n {
		var tid [16]byte
		rand.Read(tid[:])
		rand.Read(r[:])
		skipFraud := float64(r[0])/256 < violating
		var rootID pcommon.SpanID
		for i := range spansPerTrace {
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(tid)
			var sid [8]byte
			rand.Read(sid[:])
			sp.SetSpanID(sid)
			start := now.Add(time.Duration(i) * time.Millisecond)
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(3 * time.Millisecond)))
			attrs := sp.Attributes()
			switch i {
			case 0:
				sp.SetName("checkout")
				sp.SetKind(ptrace.SpanKindServer)
				rootID = sp.SpanID()
				attrs.PutStr("http.method", "POST")
				attrs.PutStr("http.route", "/api/checkout")
				attrs.PutInt("http.status_code", 200)
				continue
			case 1:
				sp.SetName("payment.charge")
				attrs.PutInt("payment.amount_cents", 4999)
				attrs.PutStr("payment.currency", "EUR")
			case 2:
				sp.SetName("fraud.check")
				if skipFraud {
					sp.SetName("risk.score")
				}
				attrs.PutDouble("fraud.score", 0.12)
			default:
				name := spanNames[i%len(spanNames)]
				sp.SetName(name)
				if strings.HasPrefix(name, "SELECT") {
					attrs.PutStr("db.system", "postgresql")
					attrs.PutStr("db.statement", name+" WHERE id = ?")
				}
				attrs.PutStr("component", "checkout-service")
			}
			sp.SetParentSpanID(rootID)
		}
	}
	return td
}

type server struct {
	cmd        *exec.Cmd
	http, grpc string
	dir        string
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func spawn(bin string) (*server, error) {
	hp, err := freePort()
	if err != nil {
		return nil, err
	}
	gp, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "betrace-loadgen-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "BETRACE_PORT_BACKEND="+hp, "BETRACE_OTLP_GRPC_PORT="+gp, "BETRACE_DATA_DIR="+dir,
		"BETRACE_LISTEN_HOST=127.0.0.1", "LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{cmd: cmd, http: "http://127.0.0.1:" + hp, grpc: "127.0.0.1:" + gp, dir: dir}
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(s.http + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
	}
	s.stop()
	return nil, errors.New("the server did not become ready within 30s")
}

func (s *server) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(s.dir)
}

var realRules = []string{"payment-fraud-check", "pii-access-audit", "checkout-slow-db", "n-plus-one-queries", "ai-tool-approval"}

// dslRules are five DSL rules over the generated traces, between them using
// every kind of construct: absence, attribute filters, `matches` and
// `contains` (host functions, the latter on every SELECT span), counts and
// intrinsics. The first two fire on the violating traces.
var dslRules = []string{
	`when { payment.charge } always { fraud.check }`,
	`when { payment.charge.where(payment.amount_cents > 1000 and payment.currency in [EUR, USD]) } always { fraud.check.where(fraud.score < 0.5) }`,
	`when { checkout.where(http.route matches "^/api/") } never { "SELECT stock".where(db.statement contains "DELETE") }`,
	`when { count("SELECT prices") > 10 } always { cache.hit }`,
	`when { checkout.where(span.duration > 2s or span.status == error) } always { alert }`,
}

// postDSLRules creates n rules from dslRules (copies after the first five).
func postDSLRules(base string, n int) error {
	for i := range n {
		body, _ := json.Marshal(map[string]string{"id": fmt.Sprintf("dsl-%d", i+1), "expression": dslRules[i%len(dslRules)]})
		resp, err := http.Post(base+"/v1/rules", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("create dsl-%d: %d %s", i+1, resp.StatusCode, msg)
		}
	}
	return nil
}

func uploadRules(base, dir string, n int) error {
	for i := range n {
		id := realRules[i%len(realRules)]
		ruleID := id
		if i >= len(realRules) {
			ruleID = fmt.Sprintf("%s-copy-%d", id, i/len(realRules))
		}
		if err := uploadModule(base, dir, id, ruleID); err != nil {
			return err
		}
	}
	return nil
}

// uploadModule creates rule ruleID from dir/<module>.wasm.
func uploadModule(base, dir, module, ruleID string) error {
	b, err := os.ReadFile(filepath.Join(dir, module+".wasm"))
	if err != nil {
		return fmt.Errorf("%w (run `make rules`)", err)
	}
	resp, err := http.Post(base+"/v1/rules?id="+ruleID, "application/wasm", bytes.NewReader(b))
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: %d %s", ruleID, resp.StatusCode, body)
	}
	return nil
}

type bucket struct{ le, count float64 }

// scrape reads the server's metrics: summed values by series name, and the
// buckets of the completion-to-stored latency histogram.
func scrape(base string) (map[string]float64, []bucket, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	var buckets []bucket
	values := map[string]float64{}
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(name, "betrace_violation_record_latency_seconds_bucket{le=") {
			leStr := strings.TrimSuffix(strings.TrimPrefix(name, `betrace_violation_record_latency_seconds_bucket{le="`), `"}`)
			le, err := strconv.ParseFloat(leStr, 64)
			if leStr == "+Inf" {
				le, err = math.Inf(1), nil
			}
			if err == nil {
				buckets = append(buckets, bucket{le, v})
			}
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			values[name[:i]] += v
		}
		values[name] += v
	}
	return values, buckets, nil
}

// report prints the server's view of the run: completion-to-stored latency
// percentiles, peak resident memory and what it processed.
func report(base string, peakRSS float64) error {
	values, buckets, err := scrape(base)
	if err != nil {
		return err
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	quantile := func(q float64) float64 {
		if len(buckets) == 0 || buckets[len(buckets)-1].count == 0 {
			return math.NaN()
		}
		target := q * buckets[len(buckets)-1].count
		prevLE, prevCount := 0.0, 0.0
		for _, b := range buckets {
			if b.count >= target {
				if math.IsInf(b.le, 1) {
					return prevLE
				}
				return prevLE + (b.le-prevLE)*(target-prevCount)/math.Max(b.count-prevCount, 1)
			}
			prevLE, prevCount = b.le, b.count
		}
		return math.NaN()
	}
	out := map[string]any{
		"completion_to_stored_p50_ms": quantile(0.5) * 1000,
		"completion_to_stored_p99_ms": quantile(0.99) * 1000,
		"peak_rss_mib":                math.Max(peakRSS, values["process_resident_memory_bytes"]) / (1 << 20),
		"spans_received":              values["betrace_spans_received_total"],
		"violations":                  values["betrace_violations_total"],
		"traces_completed":            values["betrace_traces_completed_total"],
		"rule_errors":                 values["betrace_rule_evaluation_errors_total"],
		// where the server's CPU went: all of it per span received, and
		// the part spent inside rules per trace evaluated
		"server_cpu_us_per_span":       values["process_cpu_seconds_total"] * 1e6 / math.Max(values["betrace_spans_received_total"], 1),
		"rule_evaluation_us_per_trace": values["betrace_rule_evaluation_duration_seconds_sum"] * 1e6 / math.Max(values["betrace_traces_completed_total"], 1),
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	return nil
}
