package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/betracehq/betrace/host/violations"
)

// Backoff between attempts at one batch: the wait doubles from
// backoffBase up to backoffMax, and each wait is drawn at random from its
// upper half.
const (
	backoffBase = time.Second
	backoffMax  = 30 * time.Second
)

// queueFullLogEvery spaces the warnings about a full queue.
const queueFullLogEvery = time.Minute

// Exporter sends violations to an OTLP/HTTP collector as spans. Export may
// be called from any goroutine; one background goroutine, started by Start,
// batches and sends.
type Exporter struct {
	cfg      Config
	url      string // where requests go; "" when export is disabled
	endpoint string // Endpoint as logged: password hidden
	log      *slog.Logger
	m        *metrics
	client   *http.Client
	tr       *http.Transport
	queue    chan violations.Violation // nil when export is disabled

	mu       sync.RWMutex // guards started and closed; Export holds it shared
	started  bool
	closed   bool
	stopping chan struct{} // closed by Shutdown: drain, send, return
	done     chan struct{} // closed when the sender has returned
	ctx      context.Context
	cancel   context.CancelFunc // aborts the sender when Shutdown gives up

	lastFullLog atomic.Int64 // unix nanoseconds of the last queue-full warning

	// Set by New and replaced only by tests, before Start.
	now         func() time.Time
	sleep       func(ctx context.Context, d time.Duration) error
	backoffBase time.Duration
	backoffMax  time.Duration

	// Owned by the sender goroutine; read by Shutdown after done is closed.
	failing      bool      // the last batch did not fully arrive
	failingSince time.Time // when failing became true
	lost         int       // spans not delivered since failing became true
	abandoned    int       // spans given up because Shutdown's deadline passed
}

// New returns an Exporter ready to Start, or the configuration's problems.
// With an empty Endpoint it is disabled: Export does nothing and nothing is
// counted. The logger is used as given (the caller tags it with its
// component); nil discards. A nil reg leaves the metrics unregistered.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Exporter{
		cfg:         cfg,
		endpoint:    redact(cfg.Endpoint),
		log:         logger,
		stopping:    make(chan struct{}),
		done:        make(chan struct{}),
		ctx:         ctx,
		cancel:      cancel,
		now:         time.Now,
		sleep:       sleepContext,
		backoffBase: backoffBase,
		backoffMax:  backoffMax,
	}
	if cfg.Endpoint != "" {
		u, err := tracesURL(cfg.Endpoint)
		if err != nil {
			cancel()
			return nil, err
		}
		e.url = u.String()
		e.queue = make(chan violations.Violation, cfg.QueueSize)
		// A transport of our own, so that Shutdown can close its idle
		// connections and leave no goroutine behind.
		e.tr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          4,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		e.client = &http.Client{Transport: e.tr}
	}
	m, err := newMetrics(reg, func() int { return len(e.queue) })
	if err != nil {
		cancel()
		return nil, err
	}
	e.m = m
	return e, nil
}

// Export queues violations to be sent and returns at once; it never waits
// for the network or for room in the queue. Violations that do not fit are
// dropped (the newest go: those already queued keep their place) and
// counted in betrace_compliance_span_emissions_failed_total with reason
// queue_full; after Shutdown, all are dropped with reason shutdown.
//
// The Exporter reads the violations, including their Attributes maps, until
// they are sent: the caller must not change them afterwards.
func (e *Exporter) Export(vs []violations.Violation) {
	if e.queue == nil || len(vs) == 0 {
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.m.failed[reasonShutdown].Add(float64(len(vs)))
		return
	}
	for i := range vs {
		select {
		case e.queue <- vs[i]:
		default:
			e.queueFull(len(vs) - i)
			return
		}
	}
}

// queueFull counts n dropped violations and warns, at most once a minute.
func (e *Exporter) queueFull(n int) {
	e.m.failed[reasonQueueFull].Add(float64(n))
	now := time.Now().UnixNano()
	last := e.lastFullLog.Load()
	if now-last >= int64(queueFullLogEvery) && e.lastFullLog.CompareAndSwap(last, now) {
		e.log.Warn("export queue full, dropping new violations",
			"queue_size", e.cfg.QueueSize, "endpoint", e.endpoint)
	}
}

// Start starts the background sender and returns at once. The context is
// not kept: the sender runs until Shutdown. Starting twice does nothing;
// starting after Shutdown is an error.
func (e *Exporter) Start(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("export: start after shutdown")
	}
	if e.started {
		return nil
	}
	e.started = true
	if e.queue == nil {
		e.log.Info("export disabled: no endpoint")
		close(e.done)
		return nil
	}
	e.log.Info("export started", "endpoint", e.endpoint,
		"queue_size", e.cfg.QueueSize, "batch_size", e.cfg.BatchSize,
		"flush_interval", e.cfg.FlushInterval, "timeout", e.cfg.Timeout,
		"max_retry_time", e.cfg.MaxRetryTime)
	go e.run(e.ctx)
	return nil
}

// Shutdown stops intake and sends what is queued, retrying as usual, until
// ctx is done. Then it aborts the request in flight, counts what is left as
// failed (reason shutdown) and returns ctx's error. It may be called
// without Start (it still sends what Export queued) and more than once.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	first := !e.closed
	if first {
		e.closed = true
		close(e.stopping)
		if !e.started {
			// Not started: a sender that drains at once sends what
			// Export queued.
			e.started = true
			if e.queue == nil {
				close(e.done)
			} else {
				go e.run(e.ctx)
			}
		}
	}
	e.mu.Unlock()

	var err error
	select {
	case <-e.done:
	case <-ctx.Done():
		e.cancel()
		<-e.done // prompt: every wait in the sender watches e.ctx
		err = ctx.Err()
	}
	e.cancel()
	if e.tr != nil {
		e.tr.CloseIdleConnections()
	}
	switch {
	case e.queue == nil:
		return nil
	case err != nil:
		return fmt.Errorf("export: shutdown gave up on %d violations: %w", e.abandoned, err)
	case first:
		e.log.Info("export stopped")
	}
	return nil
}

// run is the sender: it batches the queue and sends each batch until
// Shutdown, then drains the queue.
func (e *Exporter) run(ctx context.Context) {
	defer close(e.done)
	batch := make([]violations.Violation, 0, e.cfg.BatchSize)
	flush := time.NewTimer(e.cfg.FlushInterval)
	flush.Stop()
	defer flush.Stop()
	send := func() {
		flush.Stop()
		e.send(ctx, batch)
		clear(batch) // drop references to the sent violations
		batch = batch[:0]
	}
	for {
		// Once Shutdown has begun, drain takes over, so that its rules
		// apply to every batch sent from then on.
		select {
		case <-e.stopping:
			e.drain(ctx, batch)
			return
		default:
		}
		select {
		case v := <-e.queue:
			if len(batch) == 0 {
				flush.Reset(e.cfg.FlushInterval)
			}
			batch = append(batch, v)
			if len(batch) >= e.cfg.BatchSize {
				send()
			}
		case <-flush.C:
			if len(batch) > 0 {
				send()
			}
		case <-e.stopping:
			e.drain(ctx, batch)
			return
		}
	}
}

// drain sends the batch being filled and then everything queued. Once a
// batch has used up its retries, the rest are counted as failed without
// trying: the collector is not coming back before Shutdown's deadline.
func (e *Exporter) drain(ctx context.Context, batch []violations.Violation) {
	gaveUp := false
	for {
	fill:
		for len(batch) < e.cfg.BatchSize {
			select {
			case v := <-e.queue:
				batch = append(batch, v)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		switch {
		case ctx.Err() != nil:
			e.abandon(len(batch))
		case gaveUp:
			e.fail(len(batch), reasonRetriesExhausted)
		default:
			gaveUp = e.send(ctx, batch)
		}
		clear(batch)
		batch = batch[:0]
	}
}

// send delivers one batch, retrying while that can help, and counts the
// outcome. It reports whether it gave up after retrying.
func (e *Exporter) send(ctx context.Context, batch []violations.Violation) (gaveUp bool) {
	n := len(batch)
	start := e.now()
	body, err := ptraceotlp.NewExportRequestFromTraces(toTraces(batch, e.cfg.InstanceID, start)).MarshalProto()
	if err != nil { // not possible with today's pdata, which cannot fail here
		e.failed(&attemptError{err: fmt.Errorf("encode spans: %w", err), permanent: true})
		e.fail(n, reasonRejected)
		return false
	}
	for attempt := 0; ; attempt++ {
		rejected, err := e.post(ctx, body)
		switch {
		case err == nil:
			e.m.emitted.Add(float64(n))
			e.recovered()
			return false
		case ctx.Err() != nil:
			e.abandon(n)
			return false
		case rejected > 0: // partial success
			rejected = min(rejected, int64(n))
			e.m.emitted.Add(float64(n - int(rejected)))
			e.failed(err)
			e.fail(int(rejected), reasonRejected)
			return false
		case errPermanent(err):
			e.failed(err)
			e.fail(n, reasonRejected)
			return false
		}
		e.failed(err)
		var wait time.Duration
		var ae *attemptError
		if errors.As(err, &ae) {
			wait = ae.retryAfter
		}
		// Never sooner than the backoff, so that "Retry-After: 0" cannot
		// make a retry storm.
		wait = max(wait, e.backoff(attempt))
		if e.now().Add(wait).Sub(start) > e.cfg.MaxRetryTime {
			e.fail(n, reasonRetriesExhausted)
			return true
		}
		if e.sleep(ctx, wait) != nil {
			e.abandon(n)
			return false
		}
		e.m.retries.Inc()
	}
}

// backoff returns the wait before retry number attempt+1: exponential,
// capped, with jitter so that many exporters do not retry in step.
func (e *Exporter) backoff(attempt int) time.Duration {
	d := e.backoffMax
	if attempt < 32 {
		if b := e.backoffBase << attempt; b > 0 && b < d {
			d = b
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// failed logs the first failure after a success: one line per outage, not
// one per batch.
func (e *Exporter) failed(err error) {
	if e.failing {
		return
	}
	e.failing = true
	e.failingSince = e.now()
	e.lost = 0
	if errPermanent(err) {
		e.log.Error("export failing: the collector refuses violation spans; they are counted as failed, not retried",
			"endpoint", e.endpoint, "err", err)
		return
	}
	e.log.Warn("export failing: retrying with backoff", "endpoint", e.endpoint, "err", err)
}

// recovered logs the first full success after a failure.
func (e *Exporter) recovered() {
	if !e.failing {
		return
	}
	e.failing = false
	e.log.Info("export recovered", "endpoint", e.endpoint,
		"failing_for", e.now().Sub(e.failingSince).Round(time.Millisecond),
		"failed_spans", e.lost)
}

// fail counts n spans that will not be delivered.
func (e *Exporter) fail(n int, reason string) {
	e.m.failed[reason].Add(float64(n))
	e.lost += n
}

// abandon counts n spans dropped because Shutdown's deadline passed.
func (e *Exporter) abandon(n int) {
	e.fail(n, reasonShutdown)
	e.abandoned += n
}

// sleepContext waits for d or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
