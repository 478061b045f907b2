package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // registers the gzip compressor with gRPC

	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/traces"
)

// Receiver serves OTLP/HTTP, OTLP/gRPC and the legacy /v1/spans endpoint,
// turning every request into []traces.Span for its Sink.
type Receiver struct {
	cfg   Config
	sink  traces.Sink
	log   *slog.Logger
	m     *metrics
	slots chan struct{} // MaxConcurrentRequests
	// buffered counts the capacity of HTTP body buffers (MaxBufferedBytes).
	buffered *budget
	token    bearer.Token
	open     bool // no token configured

	closed atomic.Bool // set by Shutdown: requests get 503
	pools  pools

	mu       sync.Mutex
	lis      net.Listener // set before Start by tests that bring their own
	grpc     *grpc.Server
	serveErr chan error
	started  bool
	shut     bool
}

// New returns a Receiver that hands spans to sink.
func New(cfg Config, sink traces.Sink, set Settings) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new ingest receiver: %w", err)
	}
	if sink == nil {
		return nil, errors.New("new ingest receiver: sink is nil")
	}
	buffered := &budget{max: cfg.MaxBufferedBytes}
	m, err := newMetrics(set.Registerer, buffered)
	if err != nil {
		return nil, fmt.Errorf("new ingest receiver: %w", err)
	}
	r := &Receiver{
		cfg:      cfg,
		sink:     sink,
		log:      set.Logger,
		m:        m,
		slots:    make(chan struct{}, cfg.MaxConcurrentRequests),
		buffered: buffered,
		open:     cfg.Token == "",
	}
	if !r.open {
		if r.token, err = bearer.Parse("BETRACE_INGEST_TOKEN", cfg.Token); err != nil {
			return nil, fmt.Errorf("new ingest receiver: %w", err)
		}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// Start listens for OTLP/gRPC on Config.GRPCAddr, unless disabled, and
// returns once the listener is bound. The HTTP handlers need no Start.
func (r *Receiver) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.shut {
		return errors.New("start ingest receiver: already started or shut down")
	}
	r.started = true
	if r.lis == nil && r.cfg.grpcEnabled() {
		var lc net.ListenConfig
		lis, err := lc.Listen(ctx, "tcp", r.cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("start ingest receiver: listen for OTLP/gRPC on %s: %w", r.cfg.GRPCAddr, err)
		}
		r.lis = lis
	}
	if r.lis != nil {
		r.grpc = r.newGRPCServer()
		r.serveErr = make(chan error, 1)
		go func(s *grpc.Server, lis net.Listener) { r.serveErr <- s.Serve(lis) }(r.grpc, r.lis)
	}
	r.log.InfoContext(ctx, "ingest receiver started", "grpc_addr", r.grpcAddr(),
		"max_request_bytes", r.cfg.MaxRequestBytes, "max_span_attributes", r.cfg.MaxSpanAttributes,
		"max_resource_attributes", r.cfg.MaxResourceAttributes, "max_concurrent_requests", r.cfg.MaxConcurrentRequests,
		"max_buffered_bytes", r.cfg.MaxBufferedBytes, "min_read_rate", r.cfg.MinReadRate, "read_grace", r.cfg.ReadGrace.String(),
		"auth", !r.open)
	return nil
}

// GRPCAddr returns the address the gRPC receiver listens on, or "" when it
// is not listening.
func (r *Receiver) GRPCAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.grpcAddr()
}

func (r *Receiver) grpcAddr() string {
	if r.lis == nil {
		return ""
	}
	return r.lis.Addr().String()
}

// Shutdown stops the gRPC server gracefully (in-flight calls finish) until
// ctx ends, then forcibly. From then on the HTTP handlers answer 503 with
// Retry-After. It works without Start and is safe to call more than once.
func (r *Receiver) Shutdown(ctx context.Context) error {
	r.closed.Store(true)
	r.mu.Lock()
	s, serveErr, first := r.grpc, r.serveErr, !r.shut
	r.shut = true
	r.grpc = nil
	r.mu.Unlock()
	if s == nil {
		return nil
	}
	stopped := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(stopped)
	}()
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		s.Stop()
		<-stopped
		err = fmt.Errorf("shut down ingest receiver: %w", ctx.Err())
	}
	if e := <-serveErr; e != nil && !errors.Is(e, grpc.ErrServerStopped) && err == nil {
		err = fmt.Errorf("shut down ingest receiver: serve OTLP/gRPC: %w", e)
	}
	if first {
		r.log.Info("ingest receiver stopped")
	}
	return err
}

// acquire takes one of the MaxConcurrentRequests slots, waiting until ctx
// ends. release gives it back.
func (r *Receiver) acquire(ctx context.Context) error {
	select {
	case r.slots <- struct{}{}:
		r.m.inFlight.Inc()
		return nil
	default:
	}
	select {
	case r.slots <- struct{}{}:
		r.m.inFlight.Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Receiver) release() {
	<-r.slots
	r.m.inFlight.Dec()
}

// limits are the per-span bounds of Convert.
func (r *Receiver) limits() Limits {
	return Limits{SpanAttributes: r.cfg.MaxSpanAttributes, ResourceAttributes: r.cfg.MaxResourceAttributes}
}

// authorized reports whether an Authorization value carries the token.
func (r *Receiver) authorized(header string) bool {
	return r.open || r.token.Match(header)
}

// result is what became of one decoded request.
type result struct {
	received int
	accepted int
	rejected []Rejected
}

// deliver counts a converted request and hands its valid spans to the sink.
func (r *Receiver) deliver(ctx context.Context, spans []traces.Span, rejected []Rejected) (result, error) {
	res := result{received: len(spans) + len(rejected), rejected: rejected}
	r.m.received.Add(float64(res.received))
	r.m.reject(rejected)
	if len(spans) == 0 {
		return res, nil
	}
	if r.closed.Load() {
		return res, fmt.Errorf("ingest spans: receiver is shutting down: %w", traces.ErrUnavailable)
	}
	if err := r.sink(ctx, spans); err != nil {
		return res, err
	}
	res.accepted = len(spans)
	r.m.ingested.Add(float64(len(spans)))
	return res, nil
}

// partialMessage names the first few rejected spans for a partial-success
// answer.
func partialMessage(rejected []Rejected) string {
	const show = 3
	var b strings.Builder
	for i, rj := range rejected {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(rejected)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(rj.String())
	}
	return b.String()
}

// failure is how one error is answered on every transport. It is the single
// place where errors become HTTP statuses and gRPC codes.
type failure struct {
	status  int        // HTTP
	code    codes.Code // gRPC, and the code field of HTTP error bodies
	outcome string     // betrace_ingest_requests_total label
	retry   bool       // suggest a retry delay
	msg     string
}

var errTooLarge = errors.New("request too large")

func classify(err error) failure {
	switch {
	case errors.Is(err, traces.ErrFull):
		return failure{http.StatusTooManyRequests, codes.ResourceExhausted, outcomeFull, true, err.Error()}
	case errors.Is(err, traces.ErrUnavailable):
		return failure{http.StatusServiceUnavailable, codes.Unavailable, outcomeUnavailable, true, err.Error()}
	case errors.Is(err, traces.ErrBatchTooLarge), errors.Is(err, errTooLarge):
		return failure{http.StatusRequestEntityTooLarge, codes.ResourceExhausted, outcomeTooLarge, false, err.Error()}
	case errors.Is(err, ErrMalformed):
		return failure{http.StatusBadRequest, codes.InvalidArgument, outcomeMalformed, false, err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return failure{http.StatusServiceUnavailable, codes.Unavailable, outcomeCanceled, true, "ingest spans: " + err.Error()}
	}
	return failure{http.StatusInternalServerError, codes.Internal, outcomeError, false, "ingest spans: " + err.Error()}
}

// retryAfterSeconds is Config.RetryAfter rounded up to whole seconds.
func (r *Receiver) retryAfterSeconds() int64 {
	return int64(math.Ceil(r.cfg.RetryAfter.Seconds()))
}

// outcomeOf is the request outcome after a successful sink call.
func (res result) outcome() string {
	if len(res.rejected) > 0 {
		return outcomePartial
	}
	return outcomeOK
}

func (r *Receiver) observe(transport, outcome string, start time.Time) {
	r.m.requests.WithLabelValues(transport, outcome).Inc()
	r.m.duration.WithLabelValues(transport).Observe(time.Since(start).Seconds())
}
