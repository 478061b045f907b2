package trial

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTapeBytes is the tape's default bound (BETRACE_TAPE_BYTES).
const DefaultTapeBytes = 16 << 20

// Entry is one trace on the tape, as Find and Read copy it out.
type Entry struct {
	TraceID     [16]byte
	Spans       uint32
	Encoded     []byte // ABI v1 layout, flags included
	CompletedAt time.Time
}

// record is where a held trace's bytes are in the ring.
type record struct {
	seq         uint64
	traceID     [16]byte
	spans       uint32
	off, n      int
	completedAt time.Time
}

// Ref names a trace on the tape for Read; it stays valid, and Read says
// when the trace has been shed meanwhile.
type Ref struct{ seq uint64 }

// Tape holds the most recent completed traces, oldest first, in one ring of
// bytes bounded by its size. Adding a trace copies its bytes into the ring
// and sheds the oldest traces it overwrites: no allocation per trace, so
// feeding the tape costs an evaluation worker one copy of bytes it already
// produced and no garbage. Readers copy a trace out, under the lock, since
// the ring reuses the bytes. A nil *Tape, or one of 0 bytes, holds nothing.
type Tape struct {
	max int64

	mu      sync.Mutex
	ring    []byte   // grown as traces arrive, up to max (grow)
	recs    []record // recs[head:] are held, oldest first
	head    int
	w       int    // where the next trace's bytes go
	held    int64  // bytes of the held traces
	nextSeq uint64 // seq of the next trace added

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
// whose bytes it overwrites. A trace larger than the whole tape is not kept.
func (t *Tape) Add(traceID [16]byte, encoded []byte, spans uint32, completedAt time.Time) {
	if !t.Enabled() {
		return
	}
	n := len(encoded)
	if int64(n) > t.max || n == 0 {
		t.metrics.refused.Inc()
		return
	}
	t.mu.Lock()
	if t.w+n > len(t.ring) && int64(len(t.ring)) < t.max {
		t.grow(n)
	}
	shed := 0
	if t.w+n > len(t.ring) {
		// A trace is contiguous: the tail is left unused this lap, and the
		// traces still in it, the oldest (held bytes run from the oldest
		// around the ring to w), go first.
		for t.head < len(t.recs) && t.recs[t.head].off >= t.w {
			t.held -= int64(t.recs[t.head].n)
			t.head++
			shed++
		}
		t.w = 0
	}
	for t.head < len(t.recs) {
		old := &t.recs[t.head]
		// Held traces lie from the oldest's offset forward, around the
		// ring, to w: the oldest is the first the new bytes can reach.
		if old.off < t.w || old.off >= t.w+n {
			break
		}
		t.held -= int64(old.n)
		t.head++
		shed++
	}
	if t.head == len(t.recs) { // empty: start again at the front
		t.recs, t.head = t.recs[:0], 0
	} else if t.head > 64 && t.head*2 > len(t.recs) {
		// Compact the records once half the slice is shed ones.
		k := copy(t.recs, t.recs[t.head:])
		t.recs, t.head = t.recs[:k], 0
	}
	copy(t.ring[t.w:], encoded)
	t.recs = append(t.recs, record{seq: t.nextSeq, traceID: traceID, spans: spans, off: t.w, n: n, completedAt: completedAt})
	t.nextSeq++
	t.w += n
	t.held += int64(n)
	t.mu.Unlock()
	t.metrics.added.Inc()
	if shed > 0 {
		t.metrics.shed.Add(float64(shed))
	}
}

// grow doubles the ring, or more to fit n more bytes, up to the bound, so
// that a quiet instance's tape holds only what it has seen and no worker
// ever zeroes the whole bound at once. Until the ring is at its bound it
// has never wrapped, so every held byte is in ring[:w] and keeps its
// offset. Call with mu held.
func (t *Tape) grow(n int) {
	size := int(min(t.max, int64(max(2*len(t.ring), t.w+n, 64<<10))))
	grown := make([]byte, size)
	copy(grown, t.ring[:t.w])
	t.ring = grown
}

// Len returns how many traces the tape holds and their bytes.
func (t *Tape) Len() (int, int64) {
	if t == nil {
		return 0, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.recs) - t.head, t.held
}

// Refs names the traces held now, oldest first.
func (t *Tape) Refs() []Ref {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Ref, 0, len(t.recs)-t.head)
	for _, r := range t.recs[t.head:] {
		out = append(out, Ref{r.seq})
	}
	return out
}

// Read copies a trace named by Refs into dst (reusing its capacity); false
// when it has been shed since.
func (t *Tape) Read(ref Ref, dst []byte) (Entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head >= len(t.recs) || ref.seq < t.recs[t.head].seq {
		return Entry{}, false
	}
	i := t.head + int(ref.seq-t.recs[t.head].seq) // seqs are consecutive
	if i >= len(t.recs) {
		return Entry{}, false
	}
	return t.copyOut(&t.recs[i], dst), true
}

// Find copies out the most recent trace on the tape with the given ID.
func (t *Tape) Find(traceID [16]byte) (Entry, bool) {
	if t == nil {
		return Entry{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.recs) - 1; i >= t.head; i-- {
		if t.recs[i].traceID == traceID {
			return t.copyOut(&t.recs[i], nil), true
		}
	}
	return Entry{}, false
}

func (t *Tape) copyOut(r *record, dst []byte) Entry {
	return Entry{TraceID: r.traceID, Spans: r.spans, Encoded: append(dst[:0], t.ring[r.off:r.off+r.n]...), CompletedAt: r.completedAt}
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
