package trial

import (
	"context"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
	"github.com/betracehq/betrace/host/violations"
)

func traceID(i int) [16]byte {
	var id [16]byte
	id[0], id[14], id[15] = 0xab, byte(i>>8), byte(i)
	return id
}

// TestTapeBound: the tape never holds more than its bound, sheds the
// oldest first and keeps the newest in order, stays nearly full once
// full, refuses a trace larger than itself without losing anything, and
// keeps nothing when off. References to shed traces read as gone.
func TestTapeBound(t *testing.T) {
	const bound = 10_000
	tape := NewTape(bound, prometheus.NewRegistry())
	var added []int // sizes of the traces added, by index
	first := tape.Refs()
	for i := range 400 {
		size := 100 + (i*37)%900 // 100 to 999 bytes, irregular
		enc := make([]byte, size)
		for k := range enc {
			enc[k] = byte(i + k)
		}
		tape.Add(traceID(i), enc, uint32(i), time.Unix(int64(i), 0))
		added = append(added, size)
		if i == 0 {
			first = tape.Refs()
		}

		n, held := tape.Len()
		if held > bound {
			t.Fatalf("after trace %d the tape holds %d bytes, bound %d", i, held, bound)
		}
		// What it holds is the newest n traces, oldest first, intact.
		refs := tape.Refs()
		if len(refs) != n {
			t.Fatalf("after trace %d: %d refs for %d traces", i, len(refs), n)
		}
		sum := int64(0)
		for k, ref := range refs {
			j := i - n + 1 + k
			e, ok := tape.Read(ref, nil)
			if !ok || e.TraceID != traceID(j) || len(e.Encoded) != added[j] || e.Spans != uint32(j) || e.Encoded[len(e.Encoded)-1] != byte(j+added[j]-1) {
				t.Fatalf("after trace %d: entry %d is %x (%d bytes, ok %v), want trace %d intact, oldest first", i, k, e.TraceID, len(e.Encoded), ok, j)
			}
			sum += int64(added[j])
		}
		if sum != held {
			t.Fatalf("after trace %d: held %d bytes, the traces sum to %d", i, held, sum)
		}
		// Once full it stays nearly full: at most one lap's unused tail
		// and the room the next traces need are free.
		if i > 100 && held < bound-3*999 {
			t.Fatalf("after trace %d the tape holds only %d of %d bytes", i, held, bound)
		}
	}
	if _, ok := tape.Read(first[0], nil); ok {
		t.Error("the first trace still reads after being shed")
	}
	before := tape.Refs()
	tape.Add(traceID(9999), make([]byte, bound+1), 1, time.Now())
	if after := tape.Refs(); !slices.Equal(after, before) {
		t.Errorf("a trace larger than the tape changed what it holds: %d traces before, %d after", len(before), len(after))
	}
	if _, ok := tape.Find(traceID(9999)); ok {
		t.Error("a trace larger than the tape was kept")
	}
	if e, ok := tape.Find(traceID(399)); !ok || e.Spans != 399 {
		t.Errorf("Find of the newest trace: %v %v", ok, e.Spans)
	}
	if _, ok := tape.Find(traceID(0)); ok {
		t.Error("the oldest trace is still found after being shed")
	}

	off := NewTape(0, nil)
	off.Add(traceID(1), []byte{1, 2, 3}, 1, time.Now())
	if n, b := off.Len(); n != 0 || b != 0 || off.Enabled() {
		t.Errorf("a tape of 0 bytes holds %d traces, %d bytes", n, b)
	}
}

func newHost(t testing.TB) *sandbox.Host {
	t.Helper()
	h, err := sandbox.NewHost(sandbox.HostConfig{CacheDir: testrules.CacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// withID returns a copy of spans moved to trace id.
func withID(spans []traces.Span, id [16]byte) []traces.Span {
	out := slices.Clone(spans)
	for i := range out {
		out[i].TraceID = id
	}
	return out
}

// mixedTraces are the sample traces (violating and clean for each real
// rule) and traces that break two rules at once, each copy under its own
// trace ID.
func mixedTraces(t testing.TB, copies int) [][]traces.Span {
	var base [][]traces.Span
	for _, id := range testrules.Real {
		base = append(base, testrules.Trace(t, id+".violating"), testrules.Trace(t, id+".clean"))
	}
	both := append(slices.Clone(testrules.Trace(t, "payment-fraud-check.violating")), testrules.Trace(t, "pii-access-audit.violating")...)
	base = append(base, both)
	var out [][]traces.Span
	for c := range copies {
		for i, spans := range base {
			out = append(out, withID(spans, traceID(c*len(base)+i)))
		}
	}
	return out
}

// live runs traces through a real evaluation pool with the given rules,
// the tape fed as in the service, and returns what the pool recorded: the
// violations of each rule, by trace.
func live(t *testing.T, tape *Tape, rs []*registry.Rule, all [][]traces.Span) map[string]map[string][]string {
	t.Helper()
	var (
		mu  sync.Mutex
		got = map[string]map[string][]string{} // rule → trace → "span message"
	)
	var done sync.WaitGroup
	pool := evaluation.NewPool(evaluation.PoolConfig{Workers: 2}, evaluation.PoolDeps{
		Rules: func() []*registry.Rule { return rs },
		Record: violations.Sink(func(_ context.Context, _ time.Time, vs []violations.Violation) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range vs {
				if got[v.RuleID] == nil {
					got[v.RuleID] = map[string][]string{}
				}
				got[v.RuleID][v.TraceID] = append(got[v.RuleID][v.TraceID], v.SpanID+" "+v.Message)
			}
			return nil
		}),
		Quarantine: func(context.Context, string, rules.Quarantine) {},
		Tape:       tape.Add,
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: prometheus.NewRegistry(),
		Now:        time.Now,
	})
	ctx := context.Background()
	if err := pool.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, spans := range all {
		done.Add(1)
		if err := pool.Submit(ctx, evaluation.Job{Spans: spans, Trigger: "root", CompletedAt: time.Now(), Done: done.Done}); err != nil {
			t.Fatal(err)
		}
	}
	done.Wait()
	if err := pool.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	return got
}

func loadLive(t *testing.T, h *sandbox.Host, id string) *registry.Rule {
	sb, err := h.Load(context.Background(), testrules.Module(t, id), sandbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close(context.Background()) })
	return &registry.Rule{ID: id, Sandbox: sb, Strikes: rules.NewStrikes(rules.DefaultQuarantinePolicy(), time.Now)}
}

func load(t *testing.T, r *Runner, id string, fuel uint64) *sandbox.Sandbox {
	t.Helper()
	sb, err := r.Load(context.Background(), Candidate{Module: testrules.Module(t, id), Fuel: fuel})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close(context.Background()) })
	return sb
}

// TestTestAndReplayMatchLive: on a tape fed by a real evaluation pool, a
// test of a rule on the original spans and a replay of it on the tape give
// exactly the verdicts the pool recorded for the same rule live; and the
// replay's diff between two rules (one standing for the live version, the
// other for a candidate) is exactly the difference of their live records.
func TestTestAndReplayMatchLive(t *testing.T) {
	h := newHost(t)
	tape := NewTape(DefaultTapeBytes, prometheus.NewRegistry())
	all := mixedTraces(t, 3)
	recorded := live(t, tape, []*registry.Rule{loadLive(t, h, "payment-fraud-check"), loadLive(t, h, "pii-access-audit")}, all)
	if n, _ := tape.Len(); n != len(all) {
		t.Fatalf("the tape holds %d traces after the pool evaluated %d", n, len(all))
	}
	r := NewRunner(Config{MaxTraces: len(all)}, Deps{Host: h, Tape: tape})
	ctx := context.Background()
	oldV, newV := load(t, r, "payment-fraud-check", 0), load(t, r, "pii-access-audit", 0)

	// Test on the request's spans and on the tape's copies: the same
	// violations as recorded live, span for span.
	inputs := make([]Input, len(all))
	fromTape := make([]Input, len(all))
	for i, spans := range all {
		inputs[i] = Input{Spans: spans}
		e, ok := tape.Find(spans[0].TraceID)
		if !ok {
			t.Fatalf("trace %x is not on the tape", spans[0].TraceID)
		}
		fromTape[i] = Input{Entry: &e}
	}
	for _, in := range [][]Input{inputs, fromTape} {
		res, err := r.Test(ctx, oldV, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Results) != len(all) || res.Stopped != "" {
			t.Fatalf("test: %d results, stopped %q; want %d, not stopped", len(res.Results), res.Stopped, len(all))
		}
		got := map[string][]string{}
		for _, tr := range res.Results {
			for _, v := range tr.Violations {
				got[tr.TraceID] = append(got[tr.TraceID], v.SpanID+" "+v.Message)
			}
			if (tr.Verdict == VerdictViolation) != (len(recorded["payment-fraud-check"][tr.TraceID]) > 0) {
				t.Errorf("trace %s: test verdict %s, live recorded %d violations", tr.TraceID, tr.Verdict, len(recorded["payment-fraud-check"][tr.TraceID]))
			}
		}
		if !equalSets(got, recorded["payment-fraud-check"]) {
			t.Errorf("test violations differ from the live ones:\n test %v\n live %v", got, recorded["payment-fraud-check"])
		}
	}

	res, err := r.Replay(ctx, ReplayOptions{Candidate: newV, Baseline: oldV, RuleID: "payment-fraud-check", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	var wantNew, wantGone, wantSame []string
	for _, spans := range all {
		id := hex.EncodeToString(spans[0].TraceID[:])
		o, n := len(recorded["payment-fraud-check"][id]) > 0, len(recorded["pii-access-audit"][id]) > 0
		switch {
		case o && n:
			wantSame = append(wantSame, id)
		case n:
			wantNew = append(wantNew, id)
		case o:
			wantGone = append(wantGone, id)
		}
	}
	if len(wantNew) == 0 || len(wantGone) == 0 || len(wantSame) == 0 {
		t.Fatalf("the mixed tape should have new, gone and unchanged traces: %d, %d, %d", len(wantNew), len(wantGone), len(wantSame))
	}
	d := res.Diff
	for _, c := range []struct {
		name string
		got  Group
		want []string
	}{{"new", d.New, wantNew}, {"gone", d.Gone, wantGone}, {"unchanged", d.Unchanged, wantSame}} {
		if c.got.Count != len(c.want) || !slices.Equal(sorted(c.got.TraceIDs), sorted(c.want)) {
			t.Errorf("diff %s: %d %v, want %d %v", c.name, c.got.Count, c.got.TraceIDs, len(c.want), c.want)
		}
	}
	if res.Traces != len(all) || res.Evaluated != len(all) || res.Flagged != len(wantNew)+len(wantSame) || res.Errors != 0 || res.Stopped != "" {
		t.Errorf("replay: %d traces, %d evaluated, %d flagged, %d errors, stopped %q; want %d, %d, %d, 0, not stopped",
			res.Traces, res.Evaluated, res.Flagged, res.Errors, res.Stopped, len(all), len(all), len(wantNew)+len(wantSame))
	}
	if res.Fuel.P50 == 0 || res.Fuel.P50 > res.Fuel.P99 || res.Fuel.P99 > res.Fuel.Max {
		t.Errorf("fuel percentiles out of order: %+v", res.Fuel)
	}
}

func equalSets(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(sorted(v), sorted(b[k])) {
			return false
		}
	}
	return true
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func fillTape(t *testing.T, n int) *Tape {
	tape := NewTape(DefaultTapeBytes, nil)
	enc := abi.NewEncoder()
	spans := testrules.Trace(t, "payment-fraud-check.clean")
	for i := range n {
		s := withID(spans, traceID(i))
		tape.Add(s[0].TraceID, enc.Encode(s, 0), uint32(len(s)), time.Now())
	}
	return tape
}

// TestReplayRunawayStopped: a runaway candidate is stopped by fuel on each
// trace, and the replay stops once its faults would quarantine it live; with
// a quarantine it cannot reach, the replay's own fuel budget stops it.
func TestReplayRunawayStopped(t *testing.T) {
	h := newHost(t)
	tape := fillTape(t, 50)
	const fuel = 2_000_000
	for _, c := range []struct {
		name      string
		cfg       Config
		evaluated int
		stopped   string
	}{
		{"quarantine", Config{}, rules.DefaultStrikes, "as live evaluation would quarantine the rule"},
		{"replay fuel", Config{ReplayFuel: 5 * fuel, Quarantine: rules.QuarantinePolicy{Strikes: 1000, Window: time.Hour}}, 5, "fuel budget of 10000000 was spent after 5 of 50 traces"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewRunner(c.cfg, Deps{Host: h, Tape: tape})
			res, err := r.Replay(context.Background(), ReplayOptions{Candidate: load(t, r, "runaway-loop", fuel)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Evaluated != c.evaluated || !strings.Contains(res.Stopped, c.stopped) {
				t.Errorf("evaluated %d, stopped %q; want %d, %q", res.Evaluated, res.Stopped, c.evaluated, c.stopped)
			}
			if res.Faults.Count != res.Evaluated || res.Faults.ByReason["fuel"] != res.Evaluated || res.Fuel.Max != fuel {
				t.Errorf("faults %+v, fuel %+v; want every evaluation a fuel fault at %d", res.Faults, res.Fuel, fuel)
			}
			if ex := res.Faults.Examples; len(ex) == 0 || ex[0].Reason != "fuel" || ex[0].FuelUsed != fuel {
				t.Errorf("fault examples %+v", ex)
			}
		})
	}
}

// TestTestRunawayStopped: a test of a runaway candidate on many traces
// stops once its faults would quarantine it live, each fault a verdict.
func TestTestRunawayStopped(t *testing.T) {
	h := newHost(t)
	r := NewRunner(Config{}, Deps{Host: h})
	var inputs []Input
	for _, spans := range mixedTraces(t, 2) {
		inputs = append(inputs, Input{Spans: spans})
	}
	res, err := r.Test(context.Background(), load(t, r, "runaway-loop", 1_000_000), inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != rules.DefaultStrikes || !strings.Contains(res.Stopped, "would quarantine the rule") {
		t.Fatalf("%d results, stopped %q; want %d, stopped by the quarantine rule", len(res.Results), res.Stopped, rules.DefaultStrikes)
	}
	for _, tr := range res.Results {
		if tr.Verdict != VerdictError || tr.Fault == nil || tr.Fault.Reason != "fuel" || tr.FuelUsed != 1_000_000 {
			t.Errorf("trace %s: %s %+v fuel %d; want a fuel fault at 1000000", tr.TraceID, tr.Verdict, tr.Fault, tr.FuelUsed)
		}
	}
}

// TestReplayOneAtATimeOnSpareCapacity: a replay waits while live traces
// wait for a worker, a second replay meanwhile is refused, and the first
// completes once the live queue is empty.
func TestReplayOneAtATimeOnSpareCapacity(t *testing.T) {
	h := newHost(t)
	var busy atomic.Bool
	var asked atomic.Int64
	busy.Store(true)
	r := NewRunner(Config{}, Deps{Host: h, Tape: fillTape(t, 5), Busy: func() bool { asked.Add(1); return busy.Load() }})
	sb := load(t, r, "payment-fraud-check", 0)
	type answer struct {
		res ReplayResult
		err error
	}
	first := make(chan answer, 1)
	go func() {
		res, err := r.Replay(context.Background(), ReplayOptions{Candidate: sb})
		first <- answer{res, err}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for asked.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the replay never asked whether live traces wait")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := r.Replay(context.Background(), ReplayOptions{Candidate: sb}); err != ErrBusy {
		t.Errorf("a second replay while one runs: %v, want ErrBusy", err)
	}
	busy.Store(false)
	a := <-first
	if a.err != nil || a.res.Evaluated != 5 || a.res.Passed != 5 {
		t.Errorf("the first replay: %+v, %v; want 5 traces passed", a.res, a.err)
	}
	if _, err := NewRunner(Config{}, Deps{Host: h, Tape: NewTape(0, nil)}).Replay(context.Background(), ReplayOptions{Candidate: sb}); err != ErrNoTape {
		t.Errorf("replay with the tape off: %v, want ErrNoTape", err)
	}
}

// TestTapeFedWithoutRules: with no rule loaded the workers still put every
// completed trace on the tape, so the first rule written can be replayed
// on the traffic that came before it, with the verdicts a test gives.
func TestTapeFedWithoutRules(t *testing.T) {
	tape := NewTape(DefaultTapeBytes, nil)
	all := mixedTraces(t, 1)
	live(t, tape, nil, all)
	if n, _ := tape.Len(); n != len(all) {
		t.Fatalf("the tape holds %d traces after the pool completed %d with no rules", n, len(all))
	}
	h := newHost(t)
	r := NewRunner(Config{}, Deps{Host: h, Tape: tape})
	sb := load(t, r, "payment-fraud-check", 0)
	var inputs []Input
	for _, spans := range all {
		inputs = append(inputs, Input{Spans: spans})
	}
	tested, err := r.Test(context.Background(), sb, inputs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Replay(context.Background(), ReplayOptions{Candidate: sb})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, tr := range tested.Results {
		if tr.Verdict == VerdictViolation {
			want = append(want, tr.TraceID)
		}
	}
	if len(want) == 0 || !slices.Equal(sorted(res.FlaggedTraces), sorted(want)) || res.Flagged != len(want) || res.Evaluated != len(all) {
		t.Errorf("replay flagged %v (%d of %d evaluated); a test of the same traces flags %v", res.FlaggedTraces, res.Flagged, res.Evaluated, want)
	}
}

// TestTapeGrows: the ring grows with the traffic up to its bound, and every
// trace held reads back intact across each growth and wrap.
func TestTapeGrows(t *testing.T) {
	const bound = 1 << 20
	tape := NewTape(bound, nil)
	pattern := func(i, size int) []byte {
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(i*7 + k)
		}
		return b
	}
	sizes := map[[16]byte]int{}
	for i := range 800 {
		size := 1000 + (i*389)%4000
		tape.Add(traceID(i), pattern(i, size), 1, time.Time{})
		sizes[traceID(i)] = size
		if i%50 != 49 {
			continue
		}
		if grown := len(tape.ring); grown > bound {
			t.Fatalf("after trace %d the ring is %d bytes, bound %d", i, grown, bound)
		}
		refs := tape.Refs()
		for k, ref := range refs {
			e, ok := tape.Read(ref, nil)
			j := i - len(refs) + 1 + k
			if !ok || e.TraceID != traceID(j) || !slices.Equal(e.Encoded, pattern(j, sizes[e.TraceID])) {
				t.Fatalf("after trace %d: entry %d (trace %d) does not read back intact", i, k, j)
			}
		}
	}
	if n, held := tape.Len(); held < bound-3*5000 || n == 800 {
		t.Errorf("after 800 traces of ~3 KB: %d held, %d bytes; want the tape full and shedding", n, held)
	}
}
