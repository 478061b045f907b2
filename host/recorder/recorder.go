package recorder

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

var (
	// ErrFull is returned by Record when the buffer cannot take the
	// violations (they were dropped and counted), and wrapped by Accepting
	// when the buffer is too full to take more traces.
	ErrFull = errors.New("violation buffer is full")
	// ErrStopped is returned by Record after Shutdown began.
	ErrStopped = errors.New("recorder stopped")
)

// WriteFunc stores a batch of violations; nil means durable. Errors
// wrapping store.ErrFull or store.ErrUnavailable are retried.
type WriteFunc func(ctx context.Context, vs []violations.Violation) error

// ExportFunc hands stored violations to the exporters; it must not block.
type ExportFunc func(vs []violations.Violation)

// CountFunc stores tallies of violations that were only counted; a call
// retried with the same token must count nothing more (see
// store.Violations.CountViolations).
type CountFunc func(ctx context.Context, token string, ts []violations.Tally) error

// tallyInterval is how often tallies are written while violations are
// sampled: a summary lags by at most this much, and the store sees one
// small write a second rather than one per batch.
const tallyInterval = time.Second

// maxTallies bounds the counters held for the store (one per rule,
// severity and minute); past it a violation that would only be counted is
// kept instead, in the buffer bounded by bytes.
const maxTallies = 100_000

// writeTimeout bounds one write, so a hung store is retried (and seen as
// failing) rather than holding the flusher forever.
const writeTimeout = 10 * time.Second

// dropLogEvery rate-limits the log line about drops: they are counted one
// by one, logged at most this often.
const dropLogEvery = time.Minute

// entry is one trace's violations.
type entry struct {
	vs        []violations.Violation
	bytes     int64
	completed time.Time
	added     time.Time // when Record took it, for the flush interval
}

// Recorder buffers violations between evaluation and the store. Build it
// with New, run it with Start, stop it with Shutdown.
type Recorder struct {
	cfg     Config
	write   WriteFunc
	export  ExportFunc
	count   CountFunc
	log     *slog.Logger
	now     func() time.Time
	m       *metrics
	kick    chan struct{} // wakes the flusher; capacity 1
	closing chan struct{} // closed by Shutdown: drain and stop
	abort   chan struct{} // closed when the shutdown deadline passed
	done    chan struct{} // closed when the flusher returned

	mu       sync.Mutex
	queue    []entry // oldest first; only the flusher removes
	held     int64   // bytes in queue
	failing  error   // the last retryable write error; nil while writes succeed
	failedAt time.Time
	stopping bool
	started  bool
	lastDrop time.Time // last drop log line

	// Sampling; sample is nil when every violation is kept.
	sample       *sampler
	tallies      map[tallyKey]int64 // counted, not yet handed to the store
	inflight     []violations.Tally // handed to the store, not yet acknowledged
	token        string             // inflight's token: the same on a retry
	tallyAt      time.Time          // when tallies are next written
	tallyFailing bool

	shutOnce  sync.Once
	abortOnce sync.Once
}

// New returns a recorder that writes with write and, once a write
// succeeded, exports with export (nil exports nothing).
func New(cfg Config, write WriteFunc, export ExportFunc, set Settings) (*Recorder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new recorder: %w", err)
	}
	if write == nil {
		return nil, errors.New("new recorder: write is nil")
	}
	if export == nil {
		export = func([]violations.Violation) {}
	}
	if set.Logger == nil {
		set.Logger = slog.New(slog.DiscardHandler)
	}
	if set.Now == nil {
		set.Now = time.Now
	}
	m, err := newMetrics(set.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new recorder: %w", err)
	}
	r := &Recorder{cfg: cfg.withDefaults(), write: write, export: export, count: set.Count, log: set.Logger, now: set.Now, m: m,
		kick: make(chan struct{}, 1), closing: make(chan struct{}), abort: make(chan struct{}), done: make(chan struct{}),
		tallies: map[tallyKey]int64{}}
	if r.count != nil && r.cfg.SampleRate >= 0 {
		r.sample = newSampler(r.cfg.SampleRate, r.cfg.SampleEvery)
	}
	return r, nil
}

// Start runs the flusher; it returns at once.
func (r *Recorder) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopping {
		return errors.New("start recorder: already started or shut down")
	}
	r.started = true
	go r.run()
	rate := r.cfg.SampleRate
	if r.sample == nil {
		rate = -1
	}
	r.log.Info("recorder started", "max_bytes", r.cfg.MaxBytes, "batch_bytes", r.cfg.BatchBytes,
		"flush_interval", r.cfg.FlushInterval.String(), "retry_max", r.cfg.RetryMax.String(),
		"sample_rate_per_minute", rate, "sample_every", r.cfg.SampleEvery)
	return nil
}

// Record takes one trace's violations and returns at once; it is a
// violations.Sink. It copies the slice vs (not the maps inside each
// Violation, which the caller must no longer change). Past the sampling
// rate of their rule, violations are only counted (see Config.SampleRate).
// It returns an error only when it dropped vs, which it has counted.
func (r *Recorder) Record(_ context.Context, completed time.Time, vs []violations.Violation) error {
	if len(vs) == 0 {
		return nil
	}
	e := entry{vs: slices.Clone(vs), completed: completed, added: time.Now()}
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		r.dropped(ReasonShutdown, len(vs), nil)
		return ErrStopped
	}
	if r.sample != nil {
		e.vs = slices.DeleteFunc(e.vs, func(v violations.Violation) bool {
			if r.sample.keep(&v) || len(r.tallies) >= maxTallies {
				return false
			}
			if len(r.tallies) == 0 && r.inflight == nil {
				r.tallyAt = time.Now().Add(tallyInterval)
			}
			addTally(r.tallies, &v)
			r.m.sampled.WithLabelValues(v.RuleID).Inc()
			return true
		})
		if len(e.vs) == 0 {
			r.mu.Unlock()
			r.wake()
			return nil
		}
		// The trace's evidence stays with whichever violation is kept.
		if ev := vs[0].Evidence; ev != nil && e.vs[0].Evidence == nil {
			e.vs[0].Evidence = ev
		}
	}
	e.bytes = sizeOf(e.vs)
	if r.held+e.bytes > r.cfg.MaxBytes {
		reason, cause := r.dropReasonLocked()
		r.mu.Unlock()
		r.dropped(reason, len(e.vs), cause)
		return fmt.Errorf("record %d violations of trace %s: %w (%d bytes held)", len(e.vs), vs[0].TraceID, ErrFull, r.cfg.MaxBytes)
	}
	r.queue = append(r.queue, e)
	r.held += e.bytes
	r.m.held.Set(float64(r.held))
	r.mu.Unlock()
	r.wake()
	return nil
}

// wake tells the flusher there is work.
func (r *Recorder) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// dropReasonLocked names why the buffer is full: the store's failure, or
// its slowness.
func (r *Recorder) dropReasonLocked() (string, error) {
	switch {
	case r.failing == nil:
		return ReasonBufferFull, nil
	case errors.Is(r.failing, store.ErrFull):
		return ReasonDiskFull, r.failing
	default:
		return ReasonStoreUnavailable, r.failing
	}
}

// dropped counts n lost violations and logs, at most once a minute.
func (r *Recorder) dropped(reason string, n int, cause error) {
	r.m.dropped[reason].Add(float64(n))
	r.mu.Lock()
	now := time.Now()
	logIt := now.Sub(r.lastDrop) >= dropLogEvery
	if logIt {
		r.lastDrop = now
	}
	r.mu.Unlock()
	if logIt {
		attrs := []any{"reason", reason, "violations", n, "max_bytes", r.cfg.MaxBytes}
		if cause != nil {
			attrs = append(attrs, "err", cause)
		}
		r.log.Error("violations dropped: see betrace_violations_dropped_total for the count (logged at most once a minute)", attrs...)
	}
}

// Accepting reports whether ingest should take more traces: nil, or why
// not (the store cannot write, wrapping its error, or the buffer is three
// quarters full, wrapping ErrFull). Either way a sender should retry later.
func (r *Recorder) Accepting() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing != nil {
		return fmt.Errorf("violations cannot be stored, %d bytes held for retry: %w", r.held, r.failing)
	}
	if r.held >= r.cfg.MaxBytes/4*3 {
		return fmt.Errorf("%w: %d of %d bytes held while the store catches up", ErrFull, r.held, r.cfg.MaxBytes)
	}
	return nil
}

// Check is the readiness check: it fails while Accepting refuses, with the
// same reason ("disk full …" when the disk is).
func (r *Recorder) Check(context.Context) error { return r.Accepting() }

// Held returns the bytes and violations the recorder holds now.
func (r *Recorder) Held() (bytes int64, count int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.queue {
		count += len(e.vs)
	}
	return r.held, count
}

// Shutdown stops intake and writes everything held, retrying a failing
// store until ctx ends; what is still held then is dropped, counted with
// reason shutdown, and reported. It is idempotent and works without Start.
func (r *Recorder) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	started := r.started
	r.stopping = true
	r.mu.Unlock()
	r.shutOnce.Do(func() { close(r.closing) })
	if started {
		select {
		case <-r.done:
		case <-ctx.Done():
			r.abortOnce.Do(func() { close(r.abort) })
			<-r.done
		}
	}
	r.mu.Lock()
	lost, cause := 0, r.failing
	for _, e := range r.queue {
		lost += len(e.vs)
	}
	r.queue, r.held = nil, 0
	r.m.held.Set(0)
	r.mu.Unlock()
	if lost > 0 {
		r.m.dropped[ReasonShutdown].Add(float64(lost))
		if cause == nil {
			cause = ctx.Err()
		}
		return fmt.Errorf("recorder: %d violations could not be stored before the shutdown deadline (raise BETRACE_SHUTDOWN_TIMEOUT, or free the store): %w", lost, cause)
	}
	return nil
}

// run is the flusher.
func (r *Recorder) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.abort:
			cancel() // ends a write in flight at the shutdown deadline
		case <-ctx.Done():
		}
	}()
	backoff := time.Duration(0)
	for {
		n, ok := r.next()
		if !ok {
			r.writeTallies(ctx, true)
			return
		}
		if n == 0 { // only tallies are due
			r.writeTallies(ctx, false)
			continue
		}
		if r.flush(ctx, n) {
			backoff = 0
			r.writeTallies(ctx, false)
			continue
		}
		// Retryable failure: wait, then write the same batch again.
		backoff = min(max(backoff*2, r.cfg.RetryMin), r.cfg.RetryMax)
		wait := backoff/2 + mrand.N(backoff/2+1) // jitter: instances sharing a disk or Redis do not retry in step
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.abort:
			t.Stop()
			return
		}
	}
}

// next waits until a batch or tallies are due and returns how many
// entries, from the head of the queue, the batch holds (0: only tallies);
// ok is false once the queue is empty after Shutdown began, or at the
// shutdown deadline.
func (r *Recorder) next() (n int, ok bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		r.mu.Lock()
		stopping := r.stopping
		var due time.Duration
		if len(r.queue) > 0 {
			n, full := r.batchLocked()
			if full || stopping {
				r.mu.Unlock()
				return n, true
			}
			if due = r.cfg.FlushInterval - time.Since(r.queue[0].added); due <= 0 {
				r.mu.Unlock()
				return n, true
			}
		} else if stopping {
			r.mu.Unlock()
			return 0, false
		}
		if len(r.tallies) > 0 || r.inflight != nil {
			tdue := time.Until(r.tallyAt)
			if tdue <= 0 && len(r.queue) == 0 {
				r.mu.Unlock()
				return 0, true
			}
			if due <= 0 || (tdue > 0 && tdue < due) {
				due = max(tdue, time.Millisecond)
			}
		}
		r.mu.Unlock()
		var tick <-chan time.Time
		if due > 0 {
			if timer == nil {
				timer = time.NewTimer(due)
			} else {
				timer.Reset(due)
			}
			tick = timer.C
		}
		select {
		case <-r.kick:
		case <-tick:
		case <-r.closing:
			select {
			case <-r.abort:
				return 0, false
			default:
			}
		case <-r.abort:
			return 0, false
		}
		if timer != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// batchLocked counts the head entries of the next batch (at least one)
// and reports whether they fill it.
func (r *Recorder) batchLocked() (n int, full bool) {
	var b int64
	for n < len(r.queue) {
		if n > 0 && b+r.queue[n].bytes > r.cfg.BatchBytes {
			return n, true
		}
		b += r.queue[n].bytes
		n++
	}
	return n, b >= r.cfg.BatchBytes
}

// flush writes the first n entries as one batch. It reports false when the
// write failed with a retryable error and the entries were kept.
func (r *Recorder) flush(ctx context.Context, n int) bool {
	r.mu.Lock()
	batch := slices.Clone(r.queue[:n]) // the queue's backing array moves as Record appends
	r.mu.Unlock()
	count := 0
	for _, e := range batch {
		count += len(e.vs)
	}
	vs := make([]violations.Violation, 0, count)
	for _, e := range batch {
		vs = append(vs, e.vs...)
	}
	err := r.writeOnce(ctx, vs)
	switch {
	case err == nil:
		r.stored(batch, vs)
		r.remove(n)
		return true
	case retryable(err):
		r.m.writes.WithLabelValues("retry").Inc()
		r.setFailing(err)
		return false
	}
	// Refused: a bad violation refuses its whole batch, so write trace by
	// trace and drop only what is refused on its own.
	r.m.writes.WithLabelValues("refused").Inc()
	if len(batch) == 1 {
		r.dropped(ReasonStoreError, count, err)
		r.remove(1)
		return true
	}
	for i, e := range batch {
		err := r.writeOnce(ctx, e.vs)
		switch {
		case err == nil:
			r.stored(batch[i:i+1], e.vs)
		case retryable(err):
			r.m.writes.WithLabelValues("retry").Inc()
			r.remove(i) // the ones before are settled; retry from this one
			r.setFailing(err)
			return false
		default:
			r.m.writes.WithLabelValues("refused").Inc()
			r.dropped(ReasonStoreError, len(e.vs), err)
		}
	}
	r.remove(n)
	return true
}

func (r *Recorder) writeOnce(ctx context.Context, vs []violations.Violation) error {
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return r.write(wctx, vs)
}

// stored exports a written batch, measures it and clears a failure.
func (r *Recorder) stored(batch []entry, vs []violations.Violation) {
	r.m.writes.WithLabelValues("ok").Inc()
	now := r.now()
	for _, e := range batch {
		if !e.completed.IsZero() {
			r.m.latency.Observe(now.Sub(e.completed).Seconds())
		}
	}
	r.export(vs)
	r.mu.Lock()
	was, since := r.failing, r.failedAt
	r.failing = nil
	held := r.held
	r.mu.Unlock()
	if was != nil {
		r.m.writable.Set(1)
		r.log.Warn("violations are stored again: the store accepts writes", "failed_for", time.Since(since).Round(time.Millisecond).String(), "held_bytes", held)
	}
}

// writeTallies hands the counted-only violations to the store when they
// are due (or now, with force). A failed write keeps them, with the same
// token, for the next attempt a tallyInterval later, so that a retry of a
// write that landed counts nothing twice.
func (r *Recorder) writeTallies(ctx context.Context, force bool) {
	r.mu.Lock()
	if !force && time.Now().Before(r.tallyAt) {
		r.mu.Unlock()
		return
	}
	if r.inflight == nil && len(r.tallies) > 0 {
		r.inflight, r.token = tallies(r.tallies), rand.Text()
		clear(r.tallies)
	}
	batch, token := r.inflight, r.token
	r.tallyAt = time.Now().Add(tallyInterval)
	r.mu.Unlock()
	if batch == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, writeTimeout)
	err := r.count(wctx, token, batch)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err == nil:
		r.inflight = nil
		if r.tallyFailing {
			r.tallyFailing = false
			r.log.Warn("counts of sampled violations are stored again")
		}
	case retryable(err):
		if !r.tallyFailing {
			r.tallyFailing = true
			r.log.Error("counts of sampled violations cannot be stored: holding them and retrying every second", "err", err)
		}
	default:
		r.inflight = nil
		r.log.Error("the store refused counts of sampled violations: they are lost; betrace_violations_sampled_total still has them", "tallies", len(batch), "err", err)
	}
}

// remove drops the first n entries, which are settled.
func (r *Recorder) remove(n int) {
	r.mu.Lock()
	for _, e := range r.queue[:n] {
		r.held -= e.bytes
	}
	clear(r.queue[:n]) // release the violations to the collector
	r.queue = r.queue[n:]
	if len(r.queue) == 0 {
		r.queue = nil // let the backing array go
	}
	r.m.held.Set(float64(r.held))
	r.mu.Unlock()
}

// setFailing records a retryable failure, logging only when the store
// starts failing or fails for a new kind of reason.
func (r *Recorder) setFailing(err error) {
	r.mu.Lock()
	was := r.failing
	r.failing = err
	if was == nil {
		r.failedAt = time.Now()
	}
	held := r.held
	r.mu.Unlock()
	if was == nil || errors.Is(was, store.ErrFull) != errors.Is(err, store.ErrFull) {
		r.m.writable.Set(0)
		r.log.Error("violations cannot be stored: holding them in memory, retrying, and refusing traces until the store writes again",
			"reason", failReason(err), "held_bytes", held, "max_bytes", r.cfg.MaxBytes, "err", err)
	}
}

func failReason(err error) string {
	if errors.Is(err, store.ErrFull) {
		return ReasonDiskFull
	}
	return ReasonStoreUnavailable
}

// retryable reports whether the same write may succeed later.
func retryable(err error) bool {
	return errors.Is(err, store.ErrFull) || errors.Is(err, store.ErrUnavailable) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// sizeOf estimates the memory vs holds: the strings and maps, plus a fixed
// cost per violation for the struct, map headers and the copy in a batch.
func sizeOf(vs []violations.Violation) int64 {
	const perViolation, perEntry = 320, 48
	var n int64
	for i := range vs {
		v := &vs[i]
		n += perViolation + int64(len(v.ID)+len(v.RuleID)+len(v.RuleName)+len(v.Severity)+len(v.TraceID)+len(v.SpanID)+len(v.Message)+len(v.Trigger))
		for k, s := range v.Attributes {
			n += perEntry + int64(len(k)+len(s))
		}
		for k, s := range v.Metadata {
			n += perEntry + int64(len(k)+len(s))
		}
		n += int64(v.Evidence.Bytes())
	}
	return n
}
