package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/cluster"
	"github.com/betracehq/betrace/host/internal/redistest"
)

// clusterTimings are the trace timings of cluster members. A trace's spans
// may reach its owner through a peer, so a trace completes 1 s after its
// root span arrives rather than the single-server tests' 100 ms.
var clusterTimings = map[string]string{
	"BETRACE_TRACE_SETTLE":       "1s",
	"BETRACE_TRACE_IDLE_TIMEOUT": "1s",
	"BETRACE_TRACE_MAX_AGE":      "10s",
}

// clusterIdle is BETRACE_TRACE_IDLE_TIMEOUT above: a trace first seen more
// than this after its partition changed owner is not a fragment.
const clusterIdle = time.Second

// memberConfig is the membership timing the binary runs with (heartbeat 2 s,
// member TTL 6 s); no environment variable changes it.
var memberConfig = cluster.DefaultConfig()

// clusterOptions configure a test cluster.
type clusterOptions struct {
	// Size is how many members start.
	Size int
	// Env is added to every member's environment (over clusterTimings).
	Env map[string]string
	// GRPC enables OTLP/gRPC on every member.
	GRPC bool
	// AppendOnly makes Redis keep its data across Stop and Start.
	AppendOnly bool
	// RedisURL, when set, is the Redis the members share (a Sentinel
	// group or a Cluster the test started) instead of a server of the
	// cluster's own; redis is nil then.
	RedisURL string
}

// testCluster is BeTrace instances sharing one redis-server of their own.
type testCluster struct {
	opts   clusterOptions
	redis  *redistest.Server
	prefix string
	nodes  []*server
	ids    []string // BETRACE_INSTANCE_ID of each node
	dead   []bool   // killed by the test
}

// startCluster starts Redis and opts.Size members, and waits until every
// member sees all the others and ownership has been stable for the idle
// timeout (see converge).
func startCluster(t testing.TB, opts clusterOptions) *testCluster {
	t.Helper()
	c := &testCluster{
		opts:   opts,
		prefix: "betrace-e2e:", // not the default: the prefix must reach every key
	}
	if opts.RedisURL == "" {
		c.redis = redistest.StartWith(t, redistest.Options{AppendOnly: opts.AppendOnly})
	}
	for range opts.Size {
		c.add(t)
	}
	c.converge(t)
	return c
}

// add starts one more member; it advertises 127.0.0.1 and its HTTP port.
func (c *testCluster) add(t testing.TB) *server {
	t.Helper()
	id := fmt.Sprintf("node-%d", len(c.nodes)+1)
	port := mustFreePort(t)
	env := map[string]string{
		"BETRACE_REDIS_URL":      c.redisURL(),
		"BETRACE_REDIS_PREFIX":   c.prefix,
		"BETRACE_INSTANCE_ID":    id,
		"BETRACE_ADVERTISE_ADDR": "127.0.0.1:" + port,
	}
	for k, v := range clusterTimings {
		env[k] = v
	}
	for k, v := range c.opts.Env {
		env[k] = v
	}
	s := startServer(t, serverOptions{Env: env, GRPC: c.opts.GRPC, HTTPPort: port})
	c.nodes = append(c.nodes, s)
	c.ids = append(c.ids, id)
	c.dead = append(c.dead, false)
	return s
}

func (c *testCluster) redisURL() string {
	if c.opts.RedisURL != "" {
		return c.opts.RedisURL
	}
	return c.redis.URL()
}

// kill sends SIGKILL to node i.
func (c *testCluster) kill(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].kill(t)
	c.dead[i] = true
}

// live returns the indexes of the members the test has not killed.
func (c *testCluster) live() []int {
	var out []int
	for i := range c.nodes {
		if !c.dead[i] {
			out = append(out, i)
		}
	}
	return out
}

// converge waits until every live member counts every live member, then
// for the idle timeout and a margin: a trace first seen after that is not
// taken for a fragment of the last ownership change.
func (c *testCluster) converge(t testing.TB) {
	t.Helper()
	live := c.live()
	c.waitMembers(t, 3*memberConfig.MemberTTL, len(live), live...)
	time.Sleep(clusterIdle + 300*time.Millisecond)
}

// waitMembers waits until each of nodes reports want cluster members, and
// returns how long that took.
func (c *testCluster) waitMembers(t testing.TB, timeout time.Duration, want int, nodes ...int) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, fmt.Sprintf("nodes %v each see %d members", nodes, want), func() (bool, string) {
		var got []string
		ok := true
		for _, i := range nodes {
			v := c.nodes[i].value(t, "betrace_cluster_members", nil)
			got = append(got, fmt.Sprintf("%s=%v", c.ids[i], v))
			ok = ok && v == float64(want)
		}
		return ok, strings.Join(got, " ")
	})
	return time.Since(start)
}

// waitRule waits until GET /v1/rules/{id} on every live member satisfies
// cond.
func (c *testCluster) waitRule(t testing.TB, id, what string, cond func(rule map[string]any) bool) {
	t.Helper()
	eventually(t, 10*time.Second, "rule "+id+" "+what+" on every member", func() (bool, string) {
		for _, i := range c.live() {
			r := c.nodes[i].call(t, http.MethodGet, "/v1/rules/"+id, nil)
			if r.Status != http.StatusOK {
				return false, fmt.Sprintf("%s: status %d", c.ids[i], r.Status)
			}
			if rule := decodeObject(t, r.Body); !cond(rule) {
				return false, fmt.Sprintf("%s: state %v enabled %v version %v", c.ids[i], rule["state"], rule["enabled"], rule["version"])
			}
		}
		return true, ""
	})
}

// sum adds a metric over nodes.
func (c *testCluster) sum(t testing.TB, name string, labels map[string]string, nodes ...int) float64 {
	t.Helper()
	var total float64
	for _, i := range nodes {
		total += c.nodes[i].value(t, name, labels)
	}
	return total
}

// waitQuiet waits until nodes have completed at least completed traces
// between them and hold nothing buffered or queued: every completed
// trace's violations are then stored, or spooled while Redis is down.
func (c *testCluster) waitQuiet(t testing.TB, completed float64, nodes ...int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%v traces completed and evaluated", completed), func() (bool, string) {
		var done, busy float64
		for _, i := range nodes {
			mfs := c.nodes[i].metrics(t)
			d, _ := metricValue(mfs, "betrace_traces_completed_total", nil)
			done += d
			for _, name := range []string{"betrace_traces_active", "betrace_trace_buffer_bytes", "betrace_evaluation_queue_length"} {
				v, _ := metricValue(mfs, name, nil)
				busy += v
			}
		}
		return done >= completed && busy == 0, fmt.Sprintf("completed %v, still busy %v", done, busy)
	})
}

// owner returns the node that owns traceID while the nodes in members form
// the cluster, from host/cluster's own partition table, so that a test can
// aim a trace at a member; TestClusterSpread checks it against the
// forwarding counters.
func (c *testCluster) owner(traceID pcommon.TraceID, members []int) int {
	ms := make([]cluster.Member, len(members))
	for k, i := range members {
		ms[k] = cluster.Member{ID: c.ids[i]}
	}
	owner, _ := cluster.NewView(ms, "").Owner(traceID)
	for _, i := range members {
		if c.ids[i] == owner.ID {
			return i
		}
	}
	return -1
}

// paymentTrace is the payment-fraud-check sample (violating: two
// payment.charge spans and no fraud.check) under a fresh trace ID and
// fresh span IDs.
type paymentTrace struct {
	td      ptrace.Traces
	id      string   // trace ID in hex
	charges []string // span IDs of the payment.charge spans, in hex
}

func newPayment(t testing.TB, violating bool) paymentTrace {
	t.Helper()
	return copyPayment(paymentTemplate(t, violating), newTraceID())
}

func newPaymentWithID(t testing.TB, violating bool, id pcommon.TraceID) paymentTrace {
	t.Helper()
	return copyPayment(paymentTemplate(t, violating), id)
}

var paymentTemplates struct {
	sync.Mutex
	td map[bool]ptrace.Traces
}

// paymentTemplate returns the parsed sample, read once; callers copy it.
func paymentTemplate(t testing.TB, violating bool) ptrace.Traces {
	t.Helper()
	paymentTemplates.Lock()
	defer paymentTemplates.Unlock()
	if td, ok := paymentTemplates.td[violating]; ok {
		return td
	}
	name := "payment-fraud-check.clean"
	if violating {
		name = "payment-fraud-check.violating"
	}
	td, _ := sample(t, name)
	if paymentTemplates.td == nil {
		paymentTemplates.td = map[bool]ptrace.Traces{}
	}
	paymentTemplates.td[violating] = td
	return td
}

// copyPayment copies a template under trace ID id with fresh span IDs; it
// does not need a testing.TB, so background senders call it.
func copyPayment(tmpl ptrace.Traces, id pcommon.TraceID) paymentTrace {
	paymentTemplates.Lock()
	td := ptrace.NewTraces()
	tmpl.CopyTo(td)
	paymentTemplates.Unlock()
	fresh := map[pcommon.SpanID]pcommon.SpanID{}
	forEachSpan(td, func(_ pcommon.Resource, sp ptrace.Span) { fresh[sp.SpanID()] = newSpanID() })
	p := paymentTrace{td: td, id: hex.EncodeToString(id[:])}
	forEachSpan(td, func(_ pcommon.Resource, sp ptrace.Span) {
		sp.SetTraceID(id)
		sp.SetSpanID(fresh[sp.SpanID()])
		if parent := sp.ParentSpanID(); !parent.IsEmpty() {
			sp.SetParentSpanID(fresh[parent])
		}
		if sp.Name() == "payment.charge" {
			sid := sp.SpanID()
			p.charges = append(p.charges, hex.EncodeToString(sid[:]))
		}
	})
	return p
}

// ownedPayment is a payment trace whose trace ID the member owner owns
// while members form the cluster.
func (c *testCluster) ownedPayment(t testing.TB, violating bool, owner int, members []int) paymentTrace {
	t.Helper()
	for {
		id := newTraceID()
		if c.owner(id, members) == owner {
			return newPaymentWithID(t, violating, id)
		}
	}
}

// roundRobin splits td span by span: span i, in document order, goes to
// part i%n with its resource and scope.
func roundRobin(td ptrace.Traces, n int) []ptrace.Traces {
	parts := make([]ptrace.Traces, n)
	for k := range parts {
		parts[k] = ptrace.NewTraces()
	}
	i := 0
	for r := 0; r < td.ResourceSpans().Len(); r++ {
		rs := td.ResourceSpans().At(r)
		for s := 0; s < rs.ScopeSpans().Len(); s++ {
			ss := rs.ScopeSpans().At(s)
			dst := make([]ptrace.SpanSlice, n)
			made := make([]bool, n)
			for j := 0; j < ss.Spans().Len(); j++ {
				k := i % n
				i++
				if !made[k] {
					made[k] = true
					nrs := parts[k].ResourceSpans().AppendEmpty()
					rs.Resource().CopyTo(nrs.Resource())
					nrs.SetSchemaUrl(rs.SchemaUrl())
					nss := nrs.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(nss.Scope())
					nss.SetSchemaUrl(ss.SchemaUrl())
					dst[k] = nss.Spans()
				}
				ss.Spans().At(j).CopyTo(dst[k].AppendEmpty())
			}
		}
	}
	return parts
}

// appendTraces moves every span of src into dst.
func appendTraces(dst, src ptrace.Traces) {
	src.ResourceSpans().MoveAndAppendTo(dst.ResourceSpans())
}

// offer sends td over OTLP/HTTP protobuf without failing the test, for
// senders running beside it and for servers that may be gone: nil means
// every span was accepted. Answers are not recorded for the OpenAPI check.
func (s *server) offer(td ptrace.Traces) error {
	body, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, s.base+"/v1/traces", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if s.opts.IngestToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.IngestToken)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /v1/traces: status %d: %.200s", resp.StatusCode, b)
	}
	er := ptraceotlp.NewExportResponse()
	if err := er.UnmarshalProto(b); err != nil {
		return fmt.Errorf("POST /v1/traces: %w", err)
	}
	if n := er.PartialSuccess().RejectedSpans(); n != 0 {
		return fmt.Errorf("POST /v1/traces: %d spans rejected: %s", n, er.PartialSuccess().ErrorMessage())
	}
	return nil
}

// offerGRPC is offer over an OTLP/gRPC connection obtained beforehand.
func offerGRPC(conn *grpc.ClientConn, td ptrace.Traces) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
	if err != nil {
		return err
	}
	if n := resp.PartialSuccess().RejectedSpans(); n != 0 {
		return fmt.Errorf("OTLP/gRPC: %d spans rejected: %s", n, resp.PartialSuccess().ErrorMessage())
	}
	return nil
}

// value reads one metric of the server (summed over matching series; 0
// when absent).
func (s *server) value(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := metricValue(s.metrics(t), name, labels)
	return v
}

// readiness returns /ready's status code, its "status" and its checks.
func (s *server) readiness(t testing.TB) (int, string, map[string]any) {
	t.Helper()
	r := s.do(t, request{Method: http.MethodGet, Path: "/ready"})
	body := decodeObject(t, r.Body)
	return r.Status, str(body, "status"), obj(body, "checks")
}

// allViolations pages through every violation matching query, cursor by
// cursor, and returns them with the first page's totalCount.
func (s *server) allViolations(t testing.TB, query url.Values) ([]map[string]any, int64) {
	t.Helper()
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", "1000")
	var all []map[string]any
	total := int64(-1)
	for {
		page := s.get(t, "/v1/violations?"+q.Encode())
		if total < 0 {
			total = num(page, "totalCount")
		}
		all = append(all, objects(t, page["violations"])...)
		next := str(page, "nextCursor")
		if next == "" {
			return all, total
		}
		q.Set("cursor", next)
	}
}

// violationKey identifies what a violation is about.
func violationKey(v map[string]any) string {
	return str(v, "ruleId") + "/" + str(v, "traceId") + "/" + str(v, "spanId")
}

// byTrace counts violations per trace ID.
func byTrace(vs []map[string]any) map[string]int {
	out := map[string]int{}
	for _, v := range vs {
		out[str(v, "traceId")]++
	}
	return out
}

// redisInfo returns one INFO section of the cluster's Redis as key: value.
func (c *testCluster) redisInfo(t testing.TB, section string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := c.redis.Client().Info(ctx, section).Result()
	if err != nil {
		t.Fatalf("redis INFO %s: %v", section, err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}

// redisCommands returns the total commands Redis processed and the calls of
// each command.
func (c *testCluster) redisCommands(t testing.TB) (int64, map[string]int64) {
	t.Helper()
	total, err := strconv.ParseInt(c.redisInfo(t, "stats")["total_commands_processed"], 10, 64)
	if err != nil {
		t.Fatalf("redis INFO stats: total_commands_processed: %v", err)
	}
	calls := map[string]int64{}
	for k, v := range c.redisInfo(t, "commandstats") {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(f, "calls="); ok {
				calls[name], _ = strconv.ParseInt(n, 10, 64)
			}
		}
	}
	return total, calls
}

// topCommands formats the commands that grew most between two readings.
func topCommands(before, after map[string]int64, n int) string {
	type kv struct {
		name  string
		calls int64
	}
	var d []kv
	for k, v := range after {
		if v-before[k] > 0 {
			d = append(d, kv{k, v - before[k]})
		}
	}
	slices.SortFunc(d, func(a, b kv) int {
		if a.calls != b.calls {
			return int(b.calls - a.calls)
		}
		return strings.Compare(a.name, b.name)
	})
	var parts []string
	for i, e := range d {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s=%d", e.name, e.calls))
	}
	return strings.Join(parts, " ")
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// sentTrace is one trace a background sender offered.
type sentTrace struct {
	p  paymentTrace
	to int       // node it was sent to
	at time.Time // when it was sent
	ok bool      // acknowledged
}

// sender offers one violating payment trace every interval to the node
// target(i) chooses, until stopped.
type sender struct {
	mu   sync.Mutex
	sent []sentTrace
	stop chan struct{}
	done chan struct{}
}

func startSender(t testing.TB, c *testCluster, interval time.Duration, target func(i int) int) *sender {
	t.Helper()
	s := &sender{stop: make(chan struct{}), done: make(chan struct{})}
	tmpl := paymentTemplate(t, true)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			to := target(i)
			p := copyPayment(tmpl, newTraceID())
			at := time.Now()
			err := c.nodes[to].offer(p.td)
			s.mu.Lock()
			s.sent = append(s.sent, sentTrace{p: p, to: to, at: at, ok: err == nil})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.halt)
	return s
}

// halt stops the sender and waits for its last send.
func (s *sender) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *sender) traces() []sentTrace {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

// checkForwardAuth checks that the route peers forward spans on takes only
// the cluster token the members share through Redis: no ingest token is
// set, and the route is still closed to anyone else.
func (c *testCluster) checkForwardAuth(t testing.TB) {
	t.Helper()
	token, err := c.redis.Client().Get(context.Background(), c.prefix+cluster.TokenKey).Result()
	if err != nil {
		t.Fatalf("the members shared no cluster token in Redis: %v", err)
	}
	body := abi.NewEncoder().Encode(nil, 0)
	for _, tc := range []struct {
		auth string
		want int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"bearer " + token, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodPost, c.nodes[0].base+cluster.ForwardPath, bytes.NewReader(body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST %s with Authorization %.12q…: %d, want %d", cluster.ForwardPath, tc.auth, resp.StatusCode, tc.want)
		}
	}
}
