package evaluation

import (
	"context"
	"encoding/hex"
	"errors"
	"time"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/registry"
	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

// Verdict is what one rule said about one trace.
type Verdict struct {
	Rule       *registry.Rule
	Violations []abi.Violation // valid only during the callback
	FuelUsed   uint64
	Duration   time.Duration
	// Fault is set when the call failed; Quarantine is set when that
	// fault was the strike that quarantined the rule.
	Fault      *sandbox.Fault
	Quarantine *rules.Quarantine
	// Skipped is the reason the rule was not run on this trace
	// (SkipOverShare, SkipFragment); the verdict has nothing else.
	Skipped string
}

// Evaluator runs traces through rules. It is not safe for concurrent use.
type Evaluator struct {
	enc        *abi.Encoder
	violations []abi.Violation
	now        func() time.Time
	share      *Share // nil: no rule is throttled
	encoded    []byte // the last Encode's bytes, for Pool.tape
}

// New returns an Evaluator; now is the clock used for durations.
func New(now func() time.Time) *Evaluator {
	return &Evaluator{enc: abi.NewEncoder(), now: now}
}

// Evaluate encodes spans once and runs them through each rule that is not
// quarantined, calling report with each rule's verdict in order. Violation
// span indexes refer to Evaluator.SpanAt.
func (e *Evaluator) Evaluate(ctx context.Context, spans []traces.Span, flags uint32, rs []*registry.Rule, report func(Verdict)) {
	encoded := e.enc.Encode(spans, flags)
	e.encoded = encoded
	n := uint32(len(spans))
	// One clock reading per rule: a rule's end is the next one's start
	// when its verdict was a plain pass (reporting that takes nanoseconds;
	// reading the clock twice a rule was a visible share of the CPU at
	// saturation).
	now := e.now()
	for _, r := range rs {
		if _, q := r.Strikes.Quarantined(); q {
			continue
		}
		start := now
		if e.share.over(r, len(rs), start) {
			r.Stats.Skip(start, e.share.Window())
			report(Verdict{Rule: r, Skipped: SkipOverShare})
			continue
		}
		res, err := r.Sandbox.Evaluate(ctx, encoded, n, e.violations[:0])
		if errors.Is(err, sandbox.ErrClosed) {
			continue // replaced or deleted while this trace was in flight
		}
		if res.NotRun {
			report(Verdict{Rule: r, Skipped: SkipFragment})
			continue
		}
		end := e.now()
		now = end
		v := Verdict{Rule: r, Violations: res.Violations, FuelUsed: res.FuelUsed, Duration: end.Sub(start)}
		e.share.spent(r, start, v.Duration)
		r.Stats.Record(len(res.Violations), err != nil, res.FuelUsed)
		e.violations = res.Violations[:0]
		if err == nil {
			r.Strikes.Evaluated(end)
		} else {
			var f *sandbox.Fault
			if !errors.As(err, &f) {
				f = &sandbox.Fault{Outcome: sandbox.OutcomeTrap, Err: err}
			}
			v.Fault, v.FuelUsed = f, f.FuelUsed
			if f.Outcome.Strikes() && len(spans) > 0 {
				if q, tripped := r.Strikes.Record(rules.Strike{Reason: f.Outcome.String(), Err: f.Error(), FuelUsed: f.FuelUsed, TraceID: hex.EncodeToString(spans[0].TraceID[:])}); tripped {
					v.Quarantine = &q
				}
			}
		}
		report(v)
		if v.Fault != nil || len(v.Violations) > 0 {
			now = e.now() // reporting those did work the next rule must not pay for
		}
	}
}

// BrokenLinks is how many parent links the last Evaluate cut because they
// closed a cycle (abi.Encoder.BrokenLinks): rules always get a forest.
func (e *Evaluator) BrokenLinks() int { return e.enc.BrokenLinks() }

// SpanAt maps a violation's span index from the last Evaluate back to the
// index of that span in the slice that was evaluated.
func (e *Evaluator) SpanAt(index uint32) int { return e.enc.SpanAt(index) }
