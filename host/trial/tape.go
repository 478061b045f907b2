package trial

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTapeBytes is the tape's default bound (BETRACE_TAPE_BYTES).
const DefaultTapeBytes = 64 << 20

// entryOverhead is what one held trace costs beside its encoded bytes (the
// Entry and the slice header), counted so that a tape of tiny traces stays
// within its bound too.
const entryOverhead = 64

// Entry is one trace on the tape. Encoded is never modified once on the
// tape, so entries may be read without a lock after Snapshot.
type Entry struct {
	TraceID     [16]byte
	Spans       uint32
	Encoded     []byte // ABI v1 layout, flags included
	CompletedAt time.Time
}

func (e *Entry) size() int64 { return int64(len(e.Encoded)) + entryOverhead }

// Tape holds the most recent completed traces, oldest first, within a bound
// in bytes. A nil *Tape, or one of 0 bytes, holds nothing.
type Tape struct {
	max int64

	mu      sync.Mutex
	entries []Entry // entries[head:] are held, oldest first
	head    int
	bytes   int64

	metrics *tapeMetrics
}

// NewTape returns a tape of at most maxBytes; 0 turns it off. reg may be
// nil.
func NewTape(maxBytes int64, reg prometheus.Registerer) *Tape {
	t := &Tape{max: max(maxBytes, 0), metrics: newTapeMetrics(reg)}
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "betrace_tape_bytes", Help: "Bytes of recent traces held on the replay tape (BETRACE_TAPE_BYTES bounds it)."},
			func() float64 { _, b := t.Len(); return float64(b) }))
	}
	return t
}

// Enabled reports whether the tape keeps anything.
func (t *Tape) Enabled() bool { return t != nil && t.max > 0 }

// MaxBytes is the tape's bound.
func (t *Tape) MaxBytes() int64 {
	if t == nil {
		return 0
	}
	return t.max
}

// Add copies one encoded trace onto the tape, shedding the oldest traces
// until it fits. A trace larger than the whole tape is not kept. The copy
// is made before the lock is taken, so an evaluation worker holds the lock
// only to append and shed.
func (t *Tape) Add(traceID [16]byte, encoded []byte, spans uint32, completedAt time.Time) {
	if !t.Enabled() {
		return
	}
	if int64(len(encoded))+entryOverhead > t.max {
		t.metrics.refused.Inc()
		return
	}
	e := Entry{TraceID: traceID, Spans: spans, Encoded: append([]byte(nil), encoded...), CompletedAt: completedAt}
	shed := 0
	t.mu.Lock()
	for t.bytes+e.size() > t.max {
		old := &t.entries[t.head]
		t.bytes -= old.size()
		*old = Entry{} // let the bytes go
		t.head++
		shed++
	}
	// Compact once half the slice is shed entries, so memory held by the
	// slice itself stays proportional to what the tape holds.
	if t.head > 64 && t.head*2 > len(t.entries) {
		n := copy(t.entries, t.entries[t.head:])
		clear(t.entries[n:])
		t.entries, t.head = t.entries[:n], 0
	}
	t.entries = append(t.entries, e)
	t.bytes += e.size()
	t.mu.Unlock()
	t.metrics.added.Inc()
	if shed > 0 {
		t.metrics.shed.Add(float64(shed))
	}
}

// Len returns how many traces the tape holds and their bytes.
func (t *Tape) Len() (int, int64) {
	if t == nil {
		return 0, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries) - t.head, t.bytes
}

// Snapshot returns the traces held now, oldest first. The entries share
// their bytes with the tape, which never changes them.
func (t *Tape) Snapshot() []Entry {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Entry(nil), t.entries[t.head:]...)
}

// Find returns the most recent trace on the tape with the given ID.
func (t *Tape) Find(traceID [16]byte) (Entry, bool) {
	if t == nil {
		return Entry{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.entries) - 1; i >= t.head; i-- {
		if t.entries[i].TraceID == traceID {
			return t.entries[i], true
		}
	}
	return Entry{}, false
}

type tapeMetrics struct {
	added, shed, refused prometheus.Counter
}

func newTapeMetrics(reg prometheus.Registerer) *tapeMetrics {
	m := &tapeMetrics{
		added: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_tape_traces_added_total", Help: "Completed traces copied onto the replay tape."}),
		shed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_tape_traces_shed_total", Help: "Traces dropped from the replay tape, oldest first, to make room."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_tape_traces_refused_total",
			Help: "Traces not kept on the replay tape because one alone is larger than the tape."}),
	}
	if reg != nil {
		reg.MustRegister(m.added, m.shed, m.refused)
	}
	return m
}
