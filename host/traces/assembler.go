package traces

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors Add returns. Callers branch on them with errors.Is.
var (
	// ErrFull means the buffer cannot take the batch now; nothing of it was
	// kept. It is retryable: ingest answers HTTP 429 or RESOURCE_EXHAUSTED
	// with a retry delay.
	ErrFull = errors.New("trace buffer is full")
	// ErrUnavailable means the assembler is shut down (or, for other sinks,
	// cannot take spans for a while). It is retryable, on another instance
	// if need be: ingest answers HTTP 503 or UNAVAILABLE.
	ErrUnavailable = errors.New("trace assembler is unavailable")
	// ErrBatchTooLarge means the batch alone is larger than the whole buffer
	// (Config.MaxBytes). Retrying cannot help; send smaller batches.
	ErrBatchTooLarge = errors.New("span batch is larger than the whole trace buffer")
)

// numShards is the number of independently locked parts of the buffer. A
// power of two; 64 keeps lock contention negligible well past the core
// counts BeTrace runs on, at about 4 KiB of fixed memory.
const numShards = 64

// Settings are the developer-set dependencies of an Assembler.
type Settings struct {
	// Logger receives lifecycle lines only; the caller tags it with its
	// component. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the assembler's metrics. Nil keeps them private.
	Registerer prometheus.Registerer
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
}

// Assembler groups spans by trace ID and hands each trace to its consumer
// once complete. See the package documentation.
type Assembler struct {
	cfg     Config
	consume func(*Trace)
	log     *slog.Logger
	now     func() time.Time
	m       *metrics

	// Deadlines in nanoseconds, from cfg.
	settle, idle, maxAge, lateWindow int64
	lateCap                          int // per shard and generation

	shards [numShards]shard

	used   atomic.Int64 // bytes buffered or handed over and not yet released
	active atomic.Int64 // traces being assembled

	// gate is held shared by Add and Sweep, and exclusively by Shutdown
	// while it closes intake, so that no span slips in after the final flush.
	gate   sync.RWMutex
	closed bool

	q queue

	life     sync.Mutex
	started  bool
	shutOnce sync.Once
	stopTick chan struct{} // closed by Shutdown to stop the ticker
	abort    chan struct{} // closed when Shutdown gives up handing traces over
	finished chan struct{} // closed when the dispatcher has returned
	bg       sync.WaitGroup
}

// New returns an assembler that calls consume with every completed trace,
// from a single goroutine, in completion order. consume may block: while it
// does, completed traces wait (still counted in bytes) and once the buffer is
// full Add refuses batches with ErrFull. The consumer must call
// Trace.Release when it is done with a trace.
func New(cfg Config, consume func(*Trace), set Settings) (*Assembler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new trace assembler: %w", err)
	}
	if consume == nil {
		return nil, errors.New("new trace assembler: consume is nil")
	}
	a := &Assembler{
		cfg:        cfg,
		consume:    consume,
		log:        set.Logger,
		now:        set.Now,
		settle:     int64(cfg.Settle),
		idle:       int64(cfg.IdleTimeout),
		maxAge:     int64(cfg.MaxAge),
		lateWindow: int64(cfg.LateWindow),
		lateCap:    max(1, cfg.LateMaxTraces/(2*numShards)),
		stopTick:   make(chan struct{}),
		abort:      make(chan struct{}),
		finished:   make(chan struct{}),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	m, err := newMetrics(set.Registerer, a)
	if err != nil {
		return nil, fmt.Errorf("new trace assembler: %w", err)
	}
	a.m = m
	a.q.wake = make(chan struct{}, 1)
	start := a.now().UnixNano()
	for i := range a.shards {
		sh := &a.shards[i]
		sh.traces = make(map[[16]byte]*pending)
		sh.lateCur = make(map[[16]byte]struct{})
		sh.latePrev = make(map[[16]byte]struct{})
		sh.lateSince = start
		sh.lateCap = a.lateCap
	}
	return a, nil
}

// Start starts the deadline ticker and the goroutine that hands completed
// traces to the consumer. It returns at once; ctx is not retained.
func (a *Assembler) Start(ctx context.Context) error {
	a.life.Lock()
	defer a.life.Unlock()
	if a.started {
		return errors.New("start trace assembler: already started")
	}
	select {
	case <-a.stopTick:
		return errors.New("start trace assembler: already shut down")
	default:
	}
	a.started = true
	a.bg.Add(2)
	go a.tick()
	go a.dispatch()
	a.log.InfoContext(ctx, "trace assembler started",
		"settle", a.cfg.Settle.String(), "idle_timeout", a.cfg.IdleTimeout.String(), "max_age", a.cfg.MaxAge.String(),
		"max_spans", a.cfg.MaxSpans, "max_bytes", a.cfg.MaxBytes, "late_window", a.cfg.LateWindow.String())
	return nil
}

// Shutdown stops intake (Add then returns ErrUnavailable), completes every
// trace still being assembled with CompletionShutdown and hands all completed
// traces to the consumer. It works without Start and is safe to call more
// than once. If ctx ends first, the traces not yet handed over are dropped
// (their bytes released) and ctx's error is returned.
func (a *Assembler) Shutdown(ctx context.Context) error {
	a.shutOnce.Do(func() {
		a.gate.Lock()
		a.closed = true
		a.gate.Unlock()

		a.life.Lock()
		close(a.stopTick)
		if !a.started {
			a.bg.Add(1)
			go a.dispatch()
		}
		a.started = true
		a.life.Unlock()

		n := a.flush()
		a.q.close()
		a.log.Info("trace assembler stopping", "flushed_traces", n)
	})
	select {
	case <-a.finished:
		a.bg.Wait()
		return nil
	case <-ctx.Done():
	}
	a.life.Lock()
	select {
	case <-a.abort:
	default:
		close(a.abort)
	}
	a.life.Unlock()
	if n := a.q.dropAll(); n > 0 {
		a.log.Warn("trace assembler shutdown deadline passed; traces not handed over", "dropped_traces", n)
	}
	return fmt.Errorf("shut down trace assembler: %w", ctx.Err())
}

// Add buffers spans, grouped by trace ID. The batch is taken whole or not at
// all: if it does not fit in Config.MaxBytes, Add returns an error wrapping
// ErrFull and keeps nothing. Spans of a trace completed within
// Config.LateWindow are counted as late and dropped; the rest of the batch is
// kept. After Shutdown, Add returns ErrUnavailable. Add never waits: ctx
// only makes it refuse a batch whose request is already gone. Its signature
// is a Sink, so it can be handed to the receivers as is.
//
// Add keeps the spans' strings and attribute slices: the caller must not
// modify them afterwards. It is safe for concurrent use.
func (a *Assembler) Add(ctx context.Context, spans []Span) error {
	return a.add(ctx, spans, false)
}

// AddFragments is Add for spans whose traces are known to be incomplete:
// each trace they join is completed as a fragment (Trace.Fragment).
func (a *Assembler) AddFragments(ctx context.Context, spans []Span) error {
	return a.add(ctx, spans, true)
}

func (a *Assembler) add(ctx context.Context, spans []Span, fragment bool) error {
	if len(spans) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("add %d spans: %w", len(spans), err)
	}
	size := SpanBytes(spans)
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.closed {
		return fmt.Errorf("add %d spans: %w", len(spans), ErrUnavailable)
	}
	if size > a.cfg.MaxBytes {
		return fmt.Errorf("add %d spans: %d bytes, buffer holds at most %d (MaxBytes): %w", len(spans), size, a.cfg.MaxBytes, ErrBatchTooLarge)
	}
	for {
		used := a.used.Load()
		if used+size > a.cfg.MaxBytes {
			a.m.refused.Add(float64(len(spans)))
			return fmt.Errorf("add %d spans: %d bytes, buffer holds %d of %d (MaxBytes): %w", len(spans), size, used, a.cfg.MaxBytes, ErrFull)
		}
		if a.used.CompareAndSwap(used, used+size) {
			break
		}
	}

	now := a.now().UnixNano()
	var (
		z         sizer
		done      []*Trace
		late      int
		lateBytes int64 // counted for spans not kept, or more than kept
	)
	for i := 0; i < len(spans); {
		sh := a.shardOf(&spans[i].TraceID)
		sh.mu.Lock()
		for ; i < len(spans) && a.shardOf(&spans[i].TraceID) == sh; i++ {
			s := &spans[i]
			b := z.size(s)
			p := sh.traces[s.TraceID]
			if p == nil {
				if sh.isLate(&s.TraceID) {
					late++
					lateBytes += b
					continue
				}
				p = &pending{id: s.TraceID, first: now, last: now}
				p.due, _ = a.deadline(p)
				sh.traces[s.TraceID] = p
				sh.push(p)
				a.active.Add(1)
			}
			if p.n >= a.cfg.MaxSpans {
				done = append(done, a.finish(sh, p, CompletionSpanCap, now))
				late++
				lateBytes += b
				continue
			}
			if cap(p.blob)-len(p.blob) < int(b) {
				// Grow once for this trace's spans in the batch, not
				// span by span: appending doubles, and slack is memory.
				p.blob = slices.Grow(p.blob, int(runBytes(spans[i:], z)))
			}
			before := len(p.blob)
			p.appendSpan(s)
			kept := int64(len(p.blob) - before)
			lateBytes += b - kept
			p.bytes += kept
			p.fragment = p.fragment || fragment
			p.last = now
			if p.root == 0 && s.IsRoot() {
				p.root = now
				if d := now + a.settle; d < p.due {
					p.due = d
					sh.fix(p.idx)
				}
			}
		}
		sh.mu.Unlock()
	}
	if lateBytes > 0 {
		a.used.Add(-lateBytes)
	}
	if late > 0 {
		a.m.late.Add(float64(late))
	}
	a.deliver(done)
	return nil
}

// Sweep completes every trace whose deadline has passed by the clock and
// returns how many it completed. The ticker started by Start calls it every
// Config.TickInterval; tests with an injected clock call it directly. After
// Shutdown it does nothing.
func (a *Assembler) Sweep() int {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.closed {
		return 0 // Shutdown has flushed everything
	}
	now := a.now().UnixNano()
	var done []*Trace
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		if now-sh.lateSince >= a.lateWindow {
			sh.rotate(now)
		}
		for len(sh.due) > 0 && sh.due[0].due <= now {
			p := sh.due[0]
			d, why := a.deadline(p)
			if d > now {
				p.due = d
				sh.fix(0)
				continue
			}
			done = append(done, a.finish(sh, p, why, now))
		}
		sh.mu.Unlock()
	}
	a.deliver(done)
	return len(done)
}

// Extract removes the traces being assembled whose ID moved reports true,
// without completing them, and returns their spans, those of traces known
// to be fragments apart: this instance no longer owns them, and their owner
// assembles them with the spans that reach it directly. Their bytes are
// released; their IDs are not remembered as completed, so a span of one
// that still arrives here is assembled again.
func (a *Assembler) Extract(moved func(traceID [16]byte) bool) (whole, fragments []Span) {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.closed {
		return nil, nil
	}
	var freed int64
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for id, p := range sh.traces {
			if !moved(id) {
				continue
			}
			delete(sh.traces, id)
			sh.remove(p.idx)
			a.active.Add(-1)
			freed += p.bytes
			spans := unpack(p.id, p.blob, p.n, p.attrs)
			if p.fragment {
				fragments = append(fragments, spans...)
			} else {
				whole = append(whole, spans...)
			}
		}
		sh.mu.Unlock()
	}
	a.used.Add(-freed)
	return whole, fragments
}

// Bytes returns the estimated bytes buffered, including completed traces not
// yet released.
func (a *Assembler) Bytes() int64 { return a.used.Load() }

// Active returns the number of traces being assembled.
func (a *Assembler) Active() int { return int(a.active.Load()) }

// deadline returns when p completes if no other span arrives, and why. On a
// tie the more specific reason wins: root, then idle, then max_age.
func (a *Assembler) deadline(p *pending) (int64, Completion) {
	d, why := p.first+a.maxAge, CompletionMaxAge
	if t := p.last + a.idle; t <= d {
		d, why = t, CompletionIdle
	}
	if p.root != 0 {
		if t := p.root + a.settle; t <= d {
			d, why = t, CompletionRoot
		}
	}
	return d, why
}

// finish removes p from sh (locked) and returns it as a completed trace.
func (a *Assembler) finish(sh *shard, p *pending, why Completion, now int64) *Trace {
	delete(sh.traces, p.id)
	sh.remove(p.idx)
	sh.remember(&p.id, now)
	a.active.Add(-1)
	t := &Trace{
		ID:         p.id,
		packed:     p,
		Completion: why,
		FirstSeen:  time.Unix(0, p.first),
		LastSeen:   time.Unix(0, p.last),
		Completed:  time.Unix(0, now),
		Fragment:   p.fragment,
		owner:      a,
	}
	t.bytes.Store(p.bytes)
	return t
}

// flush completes every trace being assembled with CompletionShutdown.
func (a *Assembler) flush() int {
	now := a.now().UnixNano()
	var done []*Trace
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for len(sh.due) > 0 {
			done = append(done, a.finish(sh, sh.due[0], CompletionShutdown, now))
		}
		sh.mu.Unlock()
	}
	a.deliver(done)
	return len(done)
}

func (a *Assembler) deliver(done []*Trace) {
	for _, t := range done {
		// Unpacked here, outside the shard's lock.
		if p := t.packed; p != nil {
			t.Spans, t.packed = unpack(t.ID, p.blob, p.n, p.attrs), nil
		}
		a.m.completed[t.Completion].Inc()
	}
	if len(done) > 0 {
		a.q.push(done)
	}
}

func (a *Assembler) tick() {
	defer a.bg.Done()
	t := time.NewTicker(a.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stopTick:
			return
		case <-t.C:
			a.Sweep()
		}
	}
}

// dispatch hands completed traces to the consumer until the queue is closed
// and empty, or Shutdown aborts.
func (a *Assembler) dispatch() {
	defer a.bg.Done()
	defer close(a.finished)
	for {
		t, closed := a.q.pop()
		if t != nil {
			a.consume(t)
			select {
			case <-a.abort:
				return
			default:
			}
			continue
		}
		if closed {
			return
		}
		select {
		case <-a.q.wake:
		case <-a.abort:
			return
		}
	}
}

func (a *Assembler) shardOf(id *[16]byte) *shard {
	// Mix all 16 bytes: some tracers put a timestamp in the high bytes.
	var lo, hi uint64
	for i := range 8 {
		lo = lo<<8 | uint64(id[i])
		hi = hi<<8 | uint64(id[8+i])
	}
	h := (lo ^ hi*0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9
	return &a.shards[h>>(64-6)]
}

// runBytes is the packed size of spans[0] and the spans of its trace right
// after it, counted as z would count them from here.
func runBytes(spans []Span, z sizer) int64 {
	var n int64
	for i := range spans {
		if spans[i].TraceID != spans[0].TraceID {
			break
		}
		n += z.size(&spans[i])
	}
	return n
}

// pending is a trace being assembled. Times are Unix nanoseconds.
type pending struct {
	id    [16]byte
	blob  []byte // the spans, packed (see packed.go)
	n     int    // spans in blob
	attrs int    // attributes in blob, span and resource blocks
	// lastRes is the resource of the last span packed, whose block
	// starts at lastResAt: spans of one resource share it.
	lastRes   *Attr
	lastResAt int
	bytes     int64
	first     int64
	last      int64
	root      int64 // arrival of the first root span, 0 if none yet
	// fragment: some span came with AddFragments
	fragment bool
	due      int64 // heap key: never later than the true deadline
	idx      int   // position in shard.due
}

// shard is one independently locked part of the buffer.
type shard struct {
	mu     sync.Mutex
	traces map[[16]byte]*pending
	// due is a min-heap on pending.due. A new span may push a trace's
	// deadline later without touching the heap; Sweep re-files a trace whose
	// key turns out early. Only an earlier deadline (a root span) fixes the
	// heap at once.
	due []*pending
	// Completed trace IDs, in two generations swapped every LateWindow (or
	// when lateCur is full), so each is remembered for one to two windows.
	lateCur, latePrev map[[16]byte]struct{}
	lateSince         int64
	lateCap           int
	_                 [64]byte // keep neighbouring shards' locks apart
}

func (sh *shard) isLate(id *[16]byte) bool {
	if _, ok := sh.lateCur[*id]; ok {
		return true
	}
	_, ok := sh.latePrev[*id]
	return ok
}

func (sh *shard) remember(id *[16]byte, now int64) {
	sh.lateCur[*id] = struct{}{}
	if len(sh.lateCur) >= sh.lateCap {
		sh.rotate(now)
	}
}

func (sh *shard) rotate(now int64) {
	clear(sh.latePrev)
	sh.lateCur, sh.latePrev = sh.latePrev, sh.lateCur
	sh.lateSince = now
}

func (sh *shard) push(p *pending) {
	p.idx = len(sh.due)
	sh.due = append(sh.due, p)
	sh.up(p.idx)
}

func (sh *shard) remove(i int) {
	last := len(sh.due) - 1
	if i != last {
		sh.swap(i, last)
	}
	sh.due[last] = nil
	sh.due = sh.due[:last]
	if i != last {
		sh.fix(i)
	}
}

func (sh *shard) fix(i int) {
	if !sh.down(i) {
		sh.up(i)
	}
}

func (sh *shard) swap(i, j int) {
	sh.due[i], sh.due[j] = sh.due[j], sh.due[i]
	sh.due[i].idx = i
	sh.due[j].idx = j
}

func (sh *shard) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if sh.due[parent].due <= sh.due[i].due {
			return
		}
		sh.swap(i, parent)
		i = parent
	}
}

func (sh *shard) down(i int) bool {
	start, n := i, len(sh.due)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && sh.due[r].due < sh.due[l].due {
			j = r
		}
		if sh.due[i].due <= sh.due[j].due {
			break
		}
		sh.swap(i, j)
		i = j
	}
	return i > start
}

// queue holds completed traces until the consumer takes them. It has no
// count limit of its own: every trace in it is counted against MaxBytes.
type queue struct {
	mu     sync.Mutex
	items  []*Trace
	head   int
	closed bool
	wake   chan struct{}
}

func (q *queue) push(ts []*Trace) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		for _, t := range ts {
			t.Release()
		}
		return
	}
	if q.head > 0 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, ts...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop returns the next trace, or nil and whether the queue is closed.
func (q *queue) pop() (*Trace, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		if q.head > 0 {
			q.items, q.head = q.items[:0], 0
		}
		return nil, q.closed
	}
	t := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	return t, false
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// dropAll releases and discards every queued trace.
func (q *queue) dropAll() int {
	q.mu.Lock()
	rest := q.items[q.head:]
	q.items, q.head = nil, 0
	q.mu.Unlock()
	for _, t := range rest {
		t.Release()
	}
	return len(rest)
}
