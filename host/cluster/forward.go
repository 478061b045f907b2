package cluster

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/traces"
)

// ForwardPath is where an instance accepts spans forwarded by its peers.
const ForwardPath = "/internal/v1/spans"

// Sink takes spans into this instance's assembler.
type Sink func(ctx context.Context, spans []traces.Span) error

// ForwardConfig bounds forwarding.
type ForwardConfig struct {
	// QueueSpans is how many spans may wait for one peer. Default 200,000.
	QueueSpans int
	// BatchSpans is the most spans in one forwarded request. Default 2,000.
	BatchSpans int
	// Token authenticates forwarded requests (the ingest token); empty: open.
	Token string
	// Timeout bounds one forwarded request. Default 5s.
	Timeout time.Duration
}

// Router sends each span to the instance that owns its trace: its own
// assembler, or a bounded queue per peer drained by one sender per peer.
// It never calls Redis: ownership comes from the Membership view.
type Router struct {
	cfg     ForwardConfig
	members *Membership
	local   Sink
	client  *http.Client
	logger  *slog.Logger
	metrics *forwardMetrics

	mu     sync.Mutex
	peers  map[string]*peer // by member ID
	closed bool
	wg     sync.WaitGroup
}

type peer struct {
	member Member
	mu     sync.Mutex
	queue  []traces.Span
	wake   chan struct{}
	stop   chan struct{}
}

// NewRouter returns a Router; local is normally the assembler's Add.
func NewRouter(cfg ForwardConfig, members *Membership, local Sink, logger *slog.Logger, reg prometheus.Registerer) *Router {
	if cfg.QueueSpans == 0 {
		cfg.QueueSpans = 200_000
	}
	if cfg.BatchSpans == 0 {
		cfg.BatchSpans = 2000
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Router{cfg: cfg, members: members, local: local, logger: logger, metrics: newForwardMetrics(reg),
		client: &http.Client{Timeout: cfg.Timeout}, peers: map[string]*peer{}}
}

// Route delivers spans: peers' shares are queued first (refused whole with
// traces.ErrFull when a queue is full, so the client retries), then this
// instance's share goes to the local sink.
func (r *Router) Route(ctx context.Context, spans []traces.Span) error {
	v := r.members.View()
	if len(v.Members) == 1 {
		return r.local(ctx, spans)
	}
	groups := make([][]traces.Span, len(v.Members))
	for i := range spans {
		idx := v.owners[Partition(spans[i].TraceID)]
		groups[idx] = append(groups[idx], spans[i])
	}
	for i, g := range groups {
		if i == v.Self || len(g) == 0 {
			continue
		}
		if err := r.enqueue(v.Members[i], g); err != nil {
			return err
		}
	}
	if g := groups[v.Self]; len(g) > 0 {
		return r.local(ctx, g)
	}
	return nil
}

func (r *Router) enqueue(m Member, spans []traces.Span) error {
	p, err := r.peer(m)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if len(p.queue)+len(spans) > r.cfg.QueueSpans {
		p.mu.Unlock()
		r.metrics.errors.WithLabelValues("queue_full").Add(float64(len(spans)))
		return fmt.Errorf("%w: the forwarding queue to %s is full", traces.ErrFull, m.ID)
	}
	p.queue = append(p.queue, spans...)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

func (r *Router) peer(m Member) (*peer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("%w: forwarding stopped", traces.ErrUnavailable)
	}
	p := r.peers[m.ID]
	if p == nil || p.member.Addr != m.Addr {
		if p != nil {
			close(p.stop)
		}
		p = &peer{member: m, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		r.peers[m.ID] = p
		r.wg.Add(1)
		go r.send(p)
	}
	return p, nil
}

// send drains one peer's queue. A failed request is retried with backoff
// while the peer is a member; once it has left, its spans are routed again
// to the partitions' new owners.
func (r *Router) send(p *peer) {
	defer r.wg.Done()
	attempt := 0
	for {
		p.mu.Lock()
		n := min(len(p.queue), r.cfg.BatchSpans)
		batch := p.queue[:n:n]
		p.mu.Unlock()
		if n == 0 {
			select {
			case <-p.wake:
				continue
			case <-p.stop:
				return
			}
		}
		err := r.post(p.member, batch)
		if err == nil {
			attempt = 0
			r.metrics.forwarded.Add(float64(n))
			p.mu.Lock()
			p.queue = p.queue[n:]
			p.mu.Unlock()
			continue
		}
		r.metrics.errors.WithLabelValues("send").Add(float64(n))
		if !r.isMember(p.member) {
			r.logger.Warn("peer left with spans queued for it; routing them to the new owners", "member", p.member.ID, "spans", len(p.queue))
			p.mu.Lock()
			orphans := p.queue
			p.queue = nil
			p.mu.Unlock()
			r.reroute(orphans)
			continue
		}
		attempt++
		if attempt == 1 {
			r.logger.Warn("forwarding spans to a peer failed; retrying", "member", p.member.ID, "err", err)
		}
		backoff := min(time.Duration(1<<min(attempt, 6))*50*time.Millisecond, 3*time.Second)
		select {
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		case <-p.stop:
			return
		}
	}
}

func (r *Router) isMember(m Member) bool {
	for _, x := range r.members.View().Members {
		if x == m {
			return true
		}
	}
	return false
}

// reroute delivers orphaned spans, waiting for room rather than dropping
// them: they were acknowledged to the client already.
func (r *Router) reroute(spans []traces.Span) {
	for tries := 0; len(spans) > 0; tries++ {
		err := r.Route(context.Background(), spans)
		if err == nil {
			return
		}
		if tries == 100 {
			r.metrics.errors.WithLabelValues("dropped").Add(float64(len(spans)))
			r.logger.Error("spans of a departed peer could not be delivered and were dropped", "spans", len(spans), "err", err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *Router) post(m Member, spans []traces.Span) error {
	body := abi.NewEncoder().Encode(spans, 0)
	req, err := http.NewRequest(http.MethodPost, "http://"+m.Addr+ForwardPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-betrace-spans")
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peer %s answered %d: %s", m.ID, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// Handler accepts spans a peer forwarded. They go straight to the local
// sink: the sender already decided this instance owns them, and routing
// them again could bounce spans between instances whose views differ.
func (r *Router) Handler() http.Handler {
	want := []byte("Bearer " + r.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if r.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(req.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 64<<20))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		spans, err := abi.Decode(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := r.local(req.Context(), spans); err != nil {
			status := http.StatusServiceUnavailable
			if errors.Is(err, traces.ErrFull) {
				status = http.StatusTooManyRequests
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// Shutdown sends what is queued, within ctx's deadline, then stops.
func (r *Router) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	peers := make([]*peer, 0, len(r.peers))
	for _, p := range r.peers {
		peers = append(peers, p)
	}
	r.mu.Unlock()
	for {
		left := 0
		for _, p := range peers {
			p.mu.Lock()
			left += len(p.queue)
			p.mu.Unlock()
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			r.metrics.errors.WithLabelValues("dropped").Add(float64(left))
			for _, p := range peers {
				close(p.stop)
			}
			r.wg.Wait()
			return fmt.Errorf("cluster: %d forwarded spans still queued at the shutdown deadline: %w", left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, p := range peers {
		close(p.stop)
	}
	r.wg.Wait()
	return nil
}

type forwardMetrics struct {
	forwarded prometheus.Counter
	errors    *prometheus.CounterVec
}

func newForwardMetrics(reg prometheus.Registerer) *forwardMetrics {
	m := &forwardMetrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_spans_forwarded_total", Help: "Spans sent to the instance that owns their trace."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_forward_errors_total",
			Help: "Spans whose forwarding failed, by reason: queue_full (refused to the client), send (will be retried), dropped."}, []string{"reason"}),
	}
	reg.MustRegister(m.forwarded, m.errors)
	return m
}
