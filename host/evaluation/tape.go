package evaluation

import "time"

// Tape takes a copy of each completed trace in its encoded form (package
// trial keeps the most recent ones for replays). It is called on the
// evaluation worker after the trace's rules ran, with bytes that stay
// valid only during the call: the tape copies them, once per trace, and
// does no per-span work, so keeping recent traffic costs evaluation one
// copy of bytes it already produced.
type Tape func(traceID [16]byte, encoded []byte, spans uint32, completedAt time.Time)

// tape hands the trace the worker just evaluated to the tape. When no
// rule ran, nothing was encoded yet, and the trace is encoded for the
// tape alone: a rule written afterwards can then still be replayed on it.
func (p *Pool) tape(ev *Evaluator, j Job) {
	if p.deps.Tape == nil {
		return
	}
	if ev.encoded == nil {
		ev.encoded = ev.enc.Encode(j.Spans, j.Flags)
	}
	p.deps.Tape(j.Spans[0].TraceID, ev.encoded, uint32(len(j.Spans)), j.CompletedAt)
	ev.encoded = nil
}

// Waiting is how many completed traces wait for a worker now. A replay
// runs only while it is zero, so that it takes spare capacity only.
func (p *Pool) Waiting() int { return len(p.queue) }
