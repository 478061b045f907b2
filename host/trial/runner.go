package trial

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

// Defaults of Config.
const (
	DefaultMaxTraces     = 1000
	DefaultMaxSpans      = 10000
	DefaultReplayFuel    = 10_000_000_000 // 400 evaluations at the default budget: ~5 s of CPU
	DefaultReplayTimeout = 30 * time.Second
	DefaultListLimit     = 100
)

// Config bounds what one test or replay may do.
type Config struct {
	// MaxTraces is the most traces one test may carry. Default 1000.
	MaxTraces int
	// MaxSpans is the most spans in one trace of a test, as live
	// (BETRACE_TRACE_MAX_SPANS). Default 10000.
	MaxSpans int
	// ReplayFuel is the fuel one replay may spend over the whole tape,
	// candidate and live version together, on top of each evaluation's
	// own budget. Default 10,000,000,000.
	ReplayFuel uint64
	// ReplayTimeout ends a replay that runs longer, with what it found so
	// far: a replay pauses while live traces wait, so on a saturated
	// instance it may not get far. Default 30s (the API's write timeout
	// is 60s).
	ReplayTimeout time.Duration
	// ListLimit is how many trace IDs each list of a replay answer shows;
	// counts are always complete. Default 100.
	ListLimit int
	// Quarantine decides when a candidate's faults stop a replay: when
	// they would quarantine it live.
	Quarantine rules.QuarantinePolicy
}

func (c Config) withDefaults() Config {
	if c.MaxTraces <= 0 {
		c.MaxTraces = DefaultMaxTraces
	}
	if c.MaxSpans <= 0 {
		c.MaxSpans = DefaultMaxSpans
	}
	if c.ReplayFuel == 0 {
		c.ReplayFuel = DefaultReplayFuel
	}
	if c.ReplayTimeout <= 0 {
		c.ReplayTimeout = DefaultReplayTimeout
	}
	if c.ListLimit <= 0 {
		c.ListLimit = DefaultListLimit
	}
	if c.Quarantine == (rules.QuarantinePolicy{}) {
		c.Quarantine = rules.DefaultQuarantinePolicy()
	}
	return c
}

// Deps are what a Runner uses.
type Deps struct {
	// Host admits candidates: the same host, cache and memory budget as
	// the live rules.
	Host *sandbox.Host
	// Tape is what replays run on; nil or empty: replays are refused.
	Tape *Tape
	// Busy reports whether completed traces wait for a live evaluation
	// worker; a replay pauses while it does. Nil: never.
	Busy   func() bool
	Now    func() time.Time
	Logger *slog.Logger
}

// Errors callers branch on.
var (
	// ErrBusy: a replay is running on this instance already.
	ErrBusy = errors.New("a replay is already running on this instance; try again when it has answered")
	// ErrNoTape: the tape is off (BETRACE_TAPE_BYTES=0).
	ErrNoTape = errors.New("the tape of recent traces is off on this instance (BETRACE_TAPE_BYTES=0): send traces to POST /v1/rules/test instead")
	// ErrTooMany: a test carries more traces than Config.MaxTraces.
	ErrTooMany = errors.New("too many traces")
)

// Runner runs candidates. It is safe for concurrent use.
type Runner struct {
	cfg       Config
	deps      Deps
	replaying chan struct{} // holds a token while a replay runs
	testing   chan struct{} // a token per test running
}

// concurrentTests is how many tests run at once per instance; more wait.
// Two: a rule's CI need not queue behind another's, and with the replay
// at most three candidate calls run beside live evaluation.
const concurrentTests = 2

// NewRunner returns a Runner.
func NewRunner(cfg Config, deps Deps) *Runner {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg.withDefaults(), deps: deps, replaying: make(chan struct{}, 1), testing: make(chan struct{}, concurrentTests)}
}

// Config returns the runner's settings with defaults filled in.
func (r *Runner) Config() Config { return r.cfg }

// Tape returns the tape replays run on.
func (r *Runner) Tape() *Tape { return r.deps.Tape }

// Candidate is a module to try with the limits it would run under live
// (zero: the defaults, as for an upload).
type Candidate struct {
	Module      []byte
	Fuel        uint64
	MemoryPages uint32
}

// Load admits a candidate exactly as an upload is admitted, on one
// instance: a trial never takes more than one sandbox instance, so it
// never holds more of the memory budget than one. Close the sandbox after.
func (r *Runner) Load(ctx context.Context, c Candidate) (*sandbox.Sandbox, error) {
	lim := sandbox.Limits{Fuel: c.Fuel, MemoryPages: c.MemoryPages, Instances: 1}
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	sb, err := r.deps.Host.Load(ctx, c.Module, lim)
	if err != nil {
		return nil, fmt.Errorf("admit the candidate: %w", err)
	}
	return sb, nil
}

// Input is one trace to test: spans from the request, or a trace from the
// tape.
type Input struct {
	Spans []traces.Span
	Entry *Entry
}

// Result is one rule's verdict on one trace.
type Result struct {
	TraceID string `json:"traceId"`
	Spans   int    `json:"spans"`
	// Verdict is violation, pass or error (the call faulted).
	Verdict    string      `json:"verdict"`
	Violations []Violation `json:"violations"`
	FuelUsed   uint64      `json:"fuelUsed"`
	Fault      *Fault      `json:"fault,omitempty"`
}

// Verdicts.
const (
	VerdictViolation = "violation"
	VerdictPass      = "pass"
	VerdictError     = "error"
)

// Violation is one violation a candidate reported, with its span.
type Violation struct {
	SpanID     string            `json:"spanId"`
	SpanName   string            `json:"spanName"`
	Service    string            `json:"service"`
	Message    string            `json:"message"`
	Attributes map[string]string `json:"attributes"`
}

// Fault is why an evaluation did not complete.
type Fault struct {
	Reason   string `json:"reason"` // fuel, memory, trap, abi, deadline, memory_budget
	Error    string `json:"error"`
	FuelUsed uint64 `json:"fuelUsed"`
}

// TestResult is what a test found: one Result per trace run, in order.
type TestResult struct {
	Results []Result
	// Stopped says why the test ended before its last trace: the fuel
	// budget of a replay was spent, or its faults would have quarantined
	// the rule live. Empty when every trace ran.
	Stopped string
}

// Test runs sb on every input, in order, after waiting for one of the
// few test slots. It fails only when ctx ends or the sandbox is closed; a
// fault is a verdict. Like a replay it stops early at the replay fuel
// budget or once its faults would quarantine the rule live: a thousand
// runaway traces would otherwise take a worker's worth of CPU for seconds.
func (r *Runner) Test(ctx context.Context, sb *sandbox.Sandbox, inputs []Input) (TestResult, error) {
	if len(inputs) > r.cfg.MaxTraces {
		return TestResult{}, fmt.Errorf("%w: %d, at most %d in one test", ErrTooMany, len(inputs), r.cfg.MaxTraces)
	}
	select {
	case r.testing <- struct{}{}:
		defer func() { <-r.testing }()
	case <-ctx.Done():
		return TestResult{}, fmt.Errorf("wait for a test slot: %w", ctx.Err())
	}
	enc := abi.NewEncoder()
	var scratch []abi.Violation
	out := TestResult{Results: make([]Result, 0, len(inputs))}
	stop := r.newStopper()
	for _, in := range inputs {
		var (
			id      [16]byte
			encoded []byte
			n       uint32
			span    func(uint32) (*traces.Span, error)
		)
		switch {
		case in.Entry != nil:
			id, encoded, n, span = in.Entry.TraceID, in.Entry.Encoded, in.Entry.Spans, decodedSpans(in.Entry)
		default:
			spans := in.Spans
			if len(spans) == 0 {
				continue
			}
			// Flags 0: a test trace is whole, like a trace completed on the
			// instance that owns it.
			id, encoded, n = spans[0].TraceID, enc.Encode(spans, 0), uint32(len(spans))
			span = func(i uint32) (*traces.Span, error) { return &spans[enc.SpanAt(i)], nil }
		}
		res, v, err := evaluate(ctx, sb, id, encoded, n, span, scratch[:0])
		if err != nil {
			return TestResult{}, err
		}
		scratch = v
		out.Results = append(out.Results, res)
		if out.Stopped = stop.after(res, len(out.Results), len(inputs)); out.Stopped != "" {
			break
		}
	}
	return out, nil
}

// stopper ends a test or replay early: at the fuel budget, or once the
// candidate's faults would quarantine it live.
type stopper struct {
	r       *Runner
	strikes *rules.Strikes
	spent   uint64
}

func (r *Runner) newStopper() *stopper {
	return &stopper{r: r, strikes: rules.NewStrikes(r.cfg.Quarantine, r.deps.Now)}
}

// after counts one evaluation and says why to stop, or "".
func (s *stopper) after(res Result, done, total int) string {
	s.spent += res.FuelUsed
	if res.Fault == nil {
		s.strikes.Evaluated(s.r.deps.Now())
	} else if strikeOutcome(res.Fault.Reason) {
		if q, tripped := s.strikes.Record(rules.Strike{Reason: res.Fault.Reason, Err: res.Fault.Error, FuelUsed: res.FuelUsed, TraceID: res.TraceID}); tripped && done < total {
			return fmt.Sprintf("stopped after %d faults in %d of %d traces, as live evaluation would quarantine the rule: %s on trace %s: %s",
				q.Strikes, done, total, q.Reason, q.TraceID, q.LastError)
		}
	}
	if s.spent >= s.r.cfg.ReplayFuel && done < total {
		return fmt.Sprintf("the fuel budget of %d was spent after %d of %d traces", s.r.cfg.ReplayFuel, done, total)
	}
	return ""
}

// decodedSpans reads a tape entry's spans back once, when a violation
// needs one.
func decodedSpans(e *Entry) func(uint32) (*traces.Span, error) {
	var spans []traces.Span
	return func(i uint32) (*traces.Span, error) {
		if spans == nil {
			var err error
			if spans, err = abi.Decode(e.Encoded); err != nil {
				return nil, fmt.Errorf("read trace %x back from the tape: %w", e.TraceID, err)
			}
		}
		if int(i) >= len(spans) {
			return nil, fmt.Errorf("span %d of trace %x: %w", i, e.TraceID, abi.ErrMalformedSpans)
		}
		return &spans[i], nil
	}
}

// evaluate runs one encoded trace. Span lookups happen only for
// violations, so a passing trace from the tape is never decoded.
func evaluate(ctx context.Context, sb *sandbox.Sandbox, traceID [16]byte, encoded []byte, n uint32, span func(uint32) (*traces.Span, error), dst []abi.Violation) (Result, []abi.Violation, error) {
	res, err := sb.Evaluate(ctx, encoded, n, dst)
	out := Result{TraceID: hex.EncodeToString(traceID[:]), Spans: int(n), Violations: []Violation{}}
	if err != nil {
		var f *sandbox.Fault
		if !errors.As(err, &f) || f.Outcome == sandbox.OutcomeCanceled {
			return out, res.Violations, fmt.Errorf("evaluate trace %s: %w", out.TraceID, err)
		}
		out.Verdict, out.FuelUsed = VerdictError, f.FuelUsed
		out.Fault = &Fault{Reason: f.Outcome.String(), Error: f.Error(), FuelUsed: f.FuelUsed}
		return out, res.Violations, nil
	}
	out.FuelUsed = res.FuelUsed
	out.Verdict = VerdictPass
	if len(res.Violations) > 0 {
		out.Verdict = VerdictViolation
	}
	for _, v := range res.Violations {
		s, err := span(v.SpanIndex)
		if err != nil {
			return out, res.Violations, err
		}
		attrs := make(map[string]string, len(v.Attrs))
		for _, kv := range v.Attrs {
			attrs[kv.Key] = kv.Value
		}
		out.Violations = append(out.Violations, Violation{SpanID: hex.EncodeToString(s.SpanID[:]), SpanName: s.Name, Service: s.Service, Message: v.Message, Attributes: attrs})
	}
	return out, res.Violations, nil
}

// ReplayOptions is what to replay and what to compare it with.
type ReplayOptions struct {
	Candidate *sandbox.Sandbox
	// Baseline is the version running live, replayed on the same traces
	// (deterministically: fuel makes a verdict a function of module and
	// trace); nil when the candidate is not a version of a stored rule.
	Baseline *sandbox.Sandbox
	// RuleID and Version name the baseline in the answer.
	RuleID  string
	Version int
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	// Traces is how many traces the tape held when the replay began;
	// Evaluated how many it ran (fewer when it was stopped).
	Traces    int `json:"traces"`
	Evaluated int `json:"evaluated"`
	// Shed counts traces that left the tape before the replay reached
	// them (newer traffic overwrote them while it paused).
	Shed    int `json:"shed"`
	Flagged int `json:"flagged"`
	Passed  int `json:"passed"`
	Errors  int `json:"errors"`
	// FlaggedTraces lists the flagged traces (ListLimit at most).
	FlaggedTraces []string  `json:"flaggedTraces"`
	Diff          *Diff     `json:"diff,omitempty"`
	Fuel          FuelStats `json:"fuel"`
	Faults        Faults    `json:"faults"`
	// Stopped says why the replay ended before the end of the tape.
	Stopped string   `json:"stopped,omitempty"`
	Tape    TapeInfo `json:"tape"`
}

// Diff compares the candidate's verdicts with the live version's on the
// same traces: New are flagged by the candidate only, Gone by the live
// version only, Unchanged by both.
type Diff struct {
	RuleID    string `json:"ruleId"`
	Version   int    `json:"version"`
	New       Group  `json:"new"`
	Gone      Group  `json:"gone"`
	Unchanged Group  `json:"unchanged"`
	// BaselineErrors counts traces on which the live version faulted.
	BaselineErrors int `json:"baselineErrors"`
}

// Group is a count of traces and the first of their IDs.
type Group struct {
	Count    int      `json:"count"`
	TraceIDs []string `json:"traceIds"`
}

func (g *Group) add(id string, limit int) {
	g.Count++
	if len(g.TraceIDs) < limit {
		g.TraceIDs = append(g.TraceIDs, id)
	}
}

// FuelStats are the candidate's fuel per trace.
type FuelStats struct {
	P50 uint64 `json:"p50"`
	P99 uint64 `json:"p99"`
	Max uint64 `json:"max"`
}

// Faults are the candidate's faults, by reason, with the first few.
type Faults struct {
	Count    int            `json:"count"`
	ByReason map[string]int `json:"byReason"`
	Examples []TraceFault   `json:"examples"`
}

// TraceFault is one fault and its trace.
type TraceFault struct {
	TraceID string `json:"traceId"`
	Fault
}

// TapeInfo describes the tape at the start of a replay.
type TapeInfo struct {
	Traces   int   `json:"traces"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"maxBytes"`
}

const maxFaultExamples = 10

// Replay runs the candidate (and the baseline, when given) over every trace
// on the tape, oldest first, one trace at a time and only while no live
// trace waits for a worker. It returns ErrBusy when another replay runs.
func (r *Runner) Replay(ctx context.Context, opt ReplayOptions) (ReplayResult, error) {
	tape := r.deps.Tape
	if !tape.Enabled() {
		return ReplayResult{}, ErrNoTape
	}
	select {
	case r.replaying <- struct{}{}:
		defer func() { <-r.replaying }()
	default:
		return ReplayResult{}, ErrBusy
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ReplayTimeout)
	defer cancel()

	entries := tape.Refs()
	_, held := tape.Len()
	out := ReplayResult{Traces: len(entries), FlaggedTraces: []string{}, Faults: Faults{ByReason: map[string]int{}, Examples: []TraceFault{}},
		Tape: TapeInfo{Traces: len(entries), Bytes: held, MaxBytes: tape.MaxBytes()}}
	if opt.Baseline != nil {
		out.Diff = &Diff{RuleID: opt.RuleID, Version: opt.Version, New: Group{TraceIDs: []string{}}, Gone: Group{TraceIDs: []string{}}, Unchanged: Group{TraceIDs: []string{}}}
	}
	stop := r.newStopper()
	fuel := make([]uint64, 0, len(entries))
	var scratch []abi.Violation
	started := r.deps.Now()
	var buf []byte // one trace's bytes, copied out of the tape
	for _, ref := range entries {
		if err := r.waitSpare(ctx); err != nil {
			out.Stopped = stoppedBy(err, r.cfg.ReplayTimeout, out.Evaluated, len(entries))
			break
		}
		entry, ok := tape.Read(ref, buf)
		if !ok {
			out.Shed++ // live traffic went past it while the replay paused
			continue
		}
		buf = entry.Encoded
		e := &entry
		res, v, err := evaluate(ctx, opt.Candidate, e.TraceID, e.Encoded, e.Spans, decodedSpans(e), scratch[:0])
		scratch = v
		if err != nil {
			if ctx.Err() != nil {
				out.Stopped = stoppedBy(ctx.Err(), r.cfg.ReplayTimeout, out.Evaluated, len(entries))
				break
			}
			return out, err
		}
		id := res.TraceID
		out.Evaluated++
		fuel = append(fuel, res.FuelUsed)
		switch res.Verdict {
		case VerdictViolation:
			out.Flagged++
			if len(out.FlaggedTraces) < r.cfg.ListLimit {
				out.FlaggedTraces = append(out.FlaggedTraces, id)
			}
		case VerdictPass:
			out.Passed++
		case VerdictError:
			out.Errors++
			out.Faults.Count++
			out.Faults.ByReason[res.Fault.Reason]++
			if len(out.Faults.Examples) < maxFaultExamples {
				out.Faults.Examples = append(out.Faults.Examples, TraceFault{TraceID: id, Fault: *res.Fault})
			}
		}
		if opt.Baseline != nil {
			base, v, err := evaluate(ctx, opt.Baseline, e.TraceID, e.Encoded, e.Spans, decodedSpans(e), scratch[:0])
			scratch = v
			if err != nil {
				if ctx.Err() != nil {
					out.Stopped = stoppedBy(ctx.Err(), r.cfg.ReplayTimeout, out.Evaluated, len(entries))
					break
				}
				return out, err
			}
			stop.spent += base.FuelUsed // the baseline's fuel counts, its faults are not the candidate's
			r.compare(out.Diff, id, res.Verdict, base.Verdict)
		}
		// After three runaway traces the rest of the tape has nothing to say.
		if out.Stopped = stop.after(res, out.Evaluated+out.Shed, len(entries)); out.Stopped != "" {
			break
		}
	}
	out.Fuel = percentiles(fuel)
	r.deps.Logger.Info("replay finished", "traces", out.Traces, "evaluated", out.Evaluated, "flagged", out.Flagged, "errors", out.Errors,
		"stopped", out.Stopped, "took", r.deps.Now().Sub(started).String(), "rule_id", opt.RuleID)
	return out, nil
}

// strikeOutcome reports whether a fault reason counts as a strike live.
func strikeOutcome(reason string) bool {
	return reason != sandbox.OutcomeCanceled.String() && reason != sandbox.OutcomeMemoryBudget.String()
}

func stoppedBy(err error, timeout time.Duration, done, total int) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("the replay's time limit of %s ran out after %d of %d traces (it pauses while live traces wait for a worker)", timeout, done, total)
	}
	return fmt.Sprintf("the request ended after %d of %d traces: %v", done, total, err)
}

func (r *Runner) compare(d *Diff, id, candidate, base string) {
	if base == VerdictError {
		d.BaselineErrors++
	}
	switch c, b := candidate == VerdictViolation, base == VerdictViolation; {
	case c && b:
		d.Unchanged.add(id, r.cfg.ListLimit)
	case c:
		d.New.add(id, r.cfg.ListLimit)
	case b:
		d.Gone.add(id, r.cfg.ListLimit)
	}
}

// spareStep is how long a replay waits before looking again whether live
// traces still wait for a worker.
const spareStep = 2 * time.Millisecond

// waitSpare returns once no completed trace waits for a live worker.
func (r *Runner) waitSpare(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.deps.Busy == nil || !r.deps.Busy() {
		return nil
	}
	t := time.NewTimer(spareStep)
	defer t.Stop()
	for r.deps.Busy() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			t.Reset(spareStep)
		}
	}
	return nil
}

func percentiles(fuel []uint64) FuelStats {
	if len(fuel) == 0 {
		return FuelStats{}
	}
	slices.Sort(fuel)
	at := func(q float64) uint64 { return fuel[min(len(fuel)-1, int(q*float64(len(fuel))))] }
	return FuelStats{P50: at(0.5), P99: at(0.99), Max: fuel[len(fuel)-1]}
}
