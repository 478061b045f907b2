package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/betracehq/betrace/host/internal/testrules"
)

// exampleRule is what each real example rule reports on its violating
// sample trace (rules-examples/traces/README.md).
type exampleRule struct {
	id, name, severity string
	spans              []string // names of the offending spans, sorted
}

var exampleRules = []exampleRule{
	{"payment-fraud-check", "Payment charged without a fraud check", "CRITICAL", []string{"payment.charge", "payment.charge"}},
	{"pii-access-audit", "PII accessed without authentication", "HIGH", []string{"crm.lookup_customer", "email.render_confirmation"}},
	{"checkout-slow-db", "Slow database call during checkout", "MEDIUM", []string{"INSERT order_events", "SELECT stock_levels"}},
	{"n-plus-one-queries", "N+1 database queries", "MEDIUM", []string{"OrderItemsLoader.load_all"}},
	{"ai-tool-approval", "High-risk agent tool call without human approval", "HIGH", []string{"agent.tool_call"}},
}

var (
	hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)
	hex16 = regexp.MustCompile(`^[0-9a-f]{16}$`)
	uuid  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// sent is one trace sent to a server and what it should cause.
type sent struct {
	how     string
	rule    exampleRule
	td      ptrace.Traces
	traceID string
	want    int // violations
	trigger string
}

// checkViolations requires exactly the violations a trace should cause,
// each in the documented shape.
func checkViolations(t testing.TB, tr sent, vs []map[string]any, since time.Time) {
	t.Helper()
	where := fmt.Sprintf("%s via %s (trace %s)", tr.rule.id, tr.how, tr.traceID)
	if len(vs) != tr.want {
		t.Errorf("%s: %d violations, want %d: %v", where, len(vs), tr.want, vs)
		return
	}
	spans := spansOf(tr.td)
	var names []string
	for _, v := range vs {
		for k, want := range map[string]string{"ruleId": tr.rule.id, "ruleName": tr.rule.name, "severity": tr.rule.severity, "traceId": tr.traceID, "trigger": tr.trigger} {
			if got := str(v, k); got != want {
				t.Errorf("%s: violation %s %q, want %q", where, k, got, want)
			}
		}
		if !uuid.MatchString(str(v, "id")) {
			t.Errorf("%s: violation id %q is not a UUID", where, v["id"])
		}
		if num(v, "ruleVersion") < 1 {
			t.Errorf("%s: ruleVersion %v", where, v["ruleVersion"])
		}
		if !hex32.MatchString(str(v, "traceId")) || !hex16.MatchString(str(v, "spanId")) {
			t.Errorf("%s: traceId %q / spanId %q are not 32 / 16 lower-case hex digits", where, v["traceId"], v["spanId"])
		}
		if str(v, "message") == "" {
			t.Errorf("%s: empty message", where)
		}
		if _, ok := v["attributes"].(map[string]any); !ok {
			t.Errorf("%s: attributes %v is not an object", where, v["attributes"])
		}
		span, ok := spans[str(v, "spanId")]
		if !ok {
			t.Errorf("%s: spanId %s is not a span of the trace", where, v["spanId"])
		}
		md := obj(v, "metadata")
		if str(md, "span_name") != span.name || str(md, "service_name") != span.service {
			t.Errorf("%s: metadata %v, want span_name %q service_name %q", where, md, span.name, span.service)
		}
		names = append(names, span.name)
		at, err := time.Parse(time.RFC3339Nano, str(v, "timestamp"))
		if err != nil || at.Before(since) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: timestamp %v is not a time of this test (%v)", where, v["timestamp"], err)
		}
	}
	slices.Sort(names)
	if tr.want > 0 && !slices.Equal(names, tr.rule.spans) {
		t.Errorf("%s: violations on spans %q, want %q", where, names, tr.rule.spans)
	}
}

func testIngest(t *testing.T) {
	s := startServer(t, serverOptions{GRPC: true})
	for _, r := range exampleRules {
		s.loadRule(t, r.id)
	}
	since := time.Now().Add(-time.Second)

	var all []sent
	// The sample file itself, byte for byte, over OTLP/HTTP JSON.
	pay := exampleRules[0]
	verbatim, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(sampleBytes(t, pay.id+".violating"))
	if err != nil {
		t.Fatal(err)
	}
	s.mustExport(t, sampleBytes(t, pay.id+".violating"), "application/json", "")
	tid := verbatim.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID()
	all = append(all, sent{how: "the sample file as is", rule: pay, td: verbatim, traceID: fmt.Sprintf("%x", tid[:]), want: testrules.Expected[pay.id], trigger: "root"})

	// Every rule's violating and clean trace over every transport.
	for _, tp := range transports {
		for _, r := range exampleRules {
			for _, kind := range []string{"violating", "clean"} {
				td, id := sample(t, r.id+"."+kind)
				tp.send(t, s, td)
				want := testrules.Expected[r.id]
				if kind == "clean" {
					want = 0
				}
				all = append(all, sent{how: tp.name + " (" + kind + ")", rule: r, td: td, traceID: id, want: want, trigger: "root"})
			}
		}
	}

	// Legacy /v1/spans: a violating trace, plus spans refused one by one.
	td, id := sample(t, pay.id+".violating")
	spans := legacySpans(td)
	bad := []map[string]any{
		{"trace_id": id, "span_id": "0102", "name": "short span id", "parent_span_id": spans[0]["span_id"]},
		{"trace_id": id[:30], "span_id": "0102030405060708", "name": "short trace id"},
		{"trace_id": id, "span_id": "0102030405060709", "name": ""},
	}
	r, res := s.postSpans(t, append(slices.Clone(spans), bad...))
	if r.Status != http.StatusOK {
		t.Fatalf("POST /v1/spans: status %d: %s", r.Status, r.Body)
	}
	if res.Accepted != len(spans) || res.Rejected != len(bad) || len(res.Errors) != len(bad) {
		t.Errorf("POST /v1/spans: accepted %d rejected %d errors %q; want %d, %d and one error per rejected span", res.Accepted, res.Rejected, res.Errors, len(spans), len(bad))
	} else {
		for i, frag := range []string{"span_id", "trace_id", "name"} {
			if e := res.Errors[i]; !strings.Contains(e, fmt.Sprintf("spans[%d]", len(spans)+i)) || !strings.Contains(e, frag) {
				t.Errorf("POST /v1/spans: error %q should name spans[%d] and %s", e, len(spans)+i, frag)
			}
		}
	}
	all = append(all, sent{how: "legacy /v1/spans", rule: pay, td: td, traceID: id, want: testrules.Expected[pay.id], trigger: "root"})

	s.waitQuiet(t, len(all))
	for _, tr := range all {
		checkViolations(t, tr, s.traceViolations(t, tr.traceID), since)
	}
	total := 0
	for _, tr := range all {
		total += tr.want
	}
	if got := num(s.get(t, "/v1/violations?limit=1"), "totalCount"); got != int64(total) {
		t.Errorf("totalCount of all violations %d, want %d", got, total)
	}
	for _, rule := range objects(t, s.get(t, "/v1/rules")["rules"]) {
		if ev := num(obj(rule, "stats"), "evaluations"); ev != int64(len(all)) {
			t.Errorf("rule %s: stats.evaluations %d, want %d (one per trace)", rule["id"], ev, len(all))
		}
	}
}
