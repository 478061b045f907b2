package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/internal/bearer"
	"github.com/betracehq/betrace/host/traces"
)

// ForwardPath is where an instance accepts spans forwarded by its peers.
const ForwardPath = "/internal/v1/spans"

const (
	// MaxForwardBody is the largest forwarded request an instance reads.
	// Decoded, a body takes at most abi.DecodedBytes of it (about 3×).
	MaxForwardBody = 32 << 20
	// splitForwardBody is where a sender halves a batch, well under
	// MaxForwardBody so that a batch of large spans still goes through.
	splitForwardBody = MaxForwardBody / 2
	// forwardDecodes is how many forwarded bodies one instance reads and
	// decodes at once; more wait their sender's retry (429). With
	// MaxForwardBody it bounds what forwarding can hold in memory to about
	// forwardDecodes × 4 × MaxForwardBody, whoever sends.
	forwardDecodes = 4
)

// ForwardConfig bounds forwarding.
type ForwardConfig struct {
	// QueueSpans is how many spans may wait for one peer. Default 200,000.
	QueueSpans int
	// BatchSpans is the most spans in one forwarded request. Default 2,000.
	BatchSpans int
	// Token authenticates instances to each other (SetToken changes it).
	// Required: the zero Token refuses every forwarded request.
	Token bearer.Token
	// Timeout bounds one forwarded request. Default 5s.
	Timeout time.Duration
	// RetryBackoff is the first wait before retrying a peer that is still
	// a member; it doubles with each failure up to MaxBackoff. Defaults 50ms
	// and 1s, below any sensible idle timeout. A view change ends any wait.
	RetryBackoff, MaxBackoff time.Duration
	// IdleTimeout is the assembler's: spans queued for a member that died
	// more than this after it was first found gone cannot belong to a trace
	// it held spans of. Zero: every such span is taken to.
	IdleTimeout time.Duration
}

// Router sends each span to the instance that owns its trace: its own
// assembler, or a bounded queue per peer drained by one sender per peer.
// It never calls Redis: ownership comes from the Membership view.
type Router struct {
	cfg     ForwardConfig
	members *Membership
	local   traces.Sink
	frags   traces.Sink // local, for spans whose traces are fragments
	client  *http.Client
	logger  *slog.Logger
	metrics *forwardMetrics

	decodes chan struct{} // forwardDecodes slots for incoming bodies
	token   atomic.Pointer[bearer.Token]

	mu     sync.Mutex
	peers  map[Member]*peer // a restarted instance is a new member
	closed bool
	wg     sync.WaitGroup
}

type peer struct {
	member Member
	mu     sync.Mutex
	queue  []traces.Span
	at     []int64 // when each queued span was queued, Unix ms
	epoch  uint64  // the view the queued spans were last routed by (send only)
	wake   chan struct{}
	stop   chan struct{}
}

// NewRouter returns a Router; local is normally the assembler's Add.
func NewRouter(cfg ForwardConfig, members *Membership, local traces.Sink, logger *slog.Logger, reg prometheus.Registerer) *Router {
	if cfg.QueueSpans == 0 {
		cfg.QueueSpans = 200_000
	}
	if cfg.BatchSpans == 0 {
		cfg.BatchSpans = 2000
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = time.Second
	}
	r := &Router{cfg: cfg, members: members, local: local, logger: logger, metrics: newForwardMetrics(reg),
		client: &http.Client{Timeout: cfg.Timeout}, peers: map[Member]*peer{}, decodes: make(chan struct{}, forwardDecodes)}
	r.frags = local
	r.SetToken(cfg.Token)
	return r
}

// SetFragmentSink sets where this instance takes spans whose traces are
// known to be fragments (normally the assembler's AddFragments); until
// then they go to the local sink. Call it before routing starts.
func (r *Router) SetFragmentSink(s traces.Sink) { r.frags = s }

// SetToken changes the cluster token the router sends and accepts, when
// the one shared through Redis changed (Redis lost its data and another
// instance stored a new one first).
func (r *Router) SetToken(t bearer.Token) { r.token.Store(&t) }

// Route delivers spans: peers' shares are queued first (refused whole with
// traces.ErrFull when a queue is full, so the client retries), then this
// instance's share goes to the local sink.
func (r *Router) Route(ctx context.Context, spans []traces.Span) error {
	v := r.members.View()
	if len(v.Members) == 1 && v.Self == 0 {
		return r.local(ctx, spans)
	}
	local, err := r.split(v, spans, "")
	if err != nil {
		return err
	}
	if len(local) > 0 {
		return r.local(ctx, local)
	}
	return nil
}

// split queues the spans v gives to a peer other than keep and returns the
// rest, this instance's own share and keep's.
func (r *Router) split(v *View, spans []traces.Span, keep string) ([]traces.Span, error) {
	groups := make([][]traces.Span, len(v.Members))
	for i := range spans {
		idx := v.owners[Partition(spans[i].TraceID)]
		groups[idx] = append(groups[idx], spans[i])
	}
	var local []traces.Span
	for i, g := range groups {
		if len(g) == 0 {
			continue
		}
		if i == v.Self || v.Members[i].ID == keep {
			local = append(local, g...)
			continue
		}
		if err := r.enqueue(v.Members[i], g); err != nil {
			return nil, err
		}
	}
	return local, nil
}

// HandOff delivers spans this instance held for partitions it no longer
// owns, waiting for room rather than dropping them.
func (r *Router) HandOff(spans []traces.Span) {
	r.metrics.handedOff.Add(float64(len(spans)))
	r.reroute(spans)
}

// HandOffFragments is HandOff for spans of traces known to be fragments:
// they stay fragments at their owner.
func (r *Router) HandOffFragments(spans []traces.Span) {
	r.metrics.handedOff.Add(float64(len(spans)))
	r.rerouteFragments(spans)
}

func (r *Router) enqueue(m Member, spans []traces.Span) error {
	// The queue is found and appended to under r.mu, so that a sender that
	// retires its peer (see send) cannot leave spans behind in it.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("%w: forwarding stopped", traces.ErrUnavailable)
	}
	p := r.peers[m]
	if p == nil {
		p = &peer{member: m, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		r.peers[m] = p
		r.wg.Add(1)
		go r.send(p)
	}
	p.mu.Lock()
	if len(p.queue)+len(spans) > r.cfg.QueueSpans {
		p.mu.Unlock()
		r.mu.Unlock()
		r.metrics.errors.WithLabelValues("queue_full").Add(float64(len(spans)))
		return fmt.Errorf("%w: the forwarding queue to %s is full", traces.ErrFull, m.ID)
	}
	p.queue = append(p.queue, spans...)
	now := r.members.now().UnixMilli()
	for range spans {
		p.at = append(p.at, now)
	}
	p.mu.Unlock()
	r.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// retire removes p, whose member left the view, once its queue is empty;
// it reports whether it did.
func (r *Router) retire(p *peer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) > 0 || r.closed {
		return false
	}
	delete(r.peers, p.member)
	return true
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
		if !r.isMember(p.member) {
			r.rerouteQueue(p)
			if r.retire(p) {
				return
			}
			continue
		}
		changed := r.members.Changed()
		if v := r.members.View(); v.Epoch != p.epoch {
			r.requeueMoved(p, v)
			continue
		}
		err := r.postEpoch(p.member, batch, p.epoch)
		if err == nil {
			attempt = 0
			r.metrics.forwarded.Add(float64(n))
			p.mu.Lock()
			p.queue, p.at = p.queue[n:], p.at[n:]
			p.mu.Unlock()
			continue
		}
		r.metrics.errors.WithLabelValues("send").Add(float64(n))
		if errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing listens at its address: the process is gone, with
			// what it held. A timeout or an answer proves nothing of it.
			r.members.Unreachable(p.member)
		}
		if !r.isMember(p.member) {
			r.rerouteQueue(p)
			continue
		}
		attempt++
		if attempt == 1 {
			r.logger.Warn("forwarding spans to a peer failed; retrying", "member", p.member.ID, "err", err)
		}
		// A dead peer is dropped by a view change, which every instance
		// adopts at once: wake then, whatever the backoff, so that spans
		// queued for it reach the new owner together with the rest of
		// their traces.
		backoff := min(time.Duration(1<<min(attempt-1, 6))*r.cfg.RetryBackoff, r.cfg.MaxBackoff)
		select {
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		case <-changed:
		case <-p.stop:
			return
		}
	}
}

// errPeerAnswered is a forwarding failure the peer answered with.
var errPeerAnswered = errors.New("cluster: forwarding refused")

// requeueMoved routes again the spans queued for p that v gives to another
// owner: queued before v took effect, they would otherwise reach an old
// owner that has handed their traces over.
func (r *Router) requeueMoved(p *peer, v *View) {
	var moved []traces.Span
	p.mu.Lock()
	kept, at := p.queue[:0:0], p.at[:0:0]
	for i := range p.queue {
		if v.Members[v.owners[Partition(p.queue[i].TraceID)]] == p.member {
			kept, at = append(kept, p.queue[i]), append(at, p.at[i])
		} else {
			moved = append(moved, p.queue[i])
		}
	}
	p.queue, p.at, p.epoch = kept, at, v.Epoch
	p.mu.Unlock()
	if len(moved) > 0 {
		r.metrics.rerouted.Add(float64(len(moved)))
		r.reroute(moved)
	}
}

// rerouteQueue routes again what is queued for a peer that is no longer a
// member. Spans queued before it could have been known dead by an idle
// timeout may belong to a trace it held spans of, which died with it: they
// go as fragments. The rest belong to traces it never saw.
func (r *Router) rerouteQueue(p *peer) {
	p.mu.Lock()
	orphans, at := p.queue, p.at
	p.queue, p.at = nil, nil
	p.mu.Unlock()
	if len(orphans) == 0 {
		return
	}
	cut := r.members.suspectUntil(p.member, r.cfg.IdleTimeout)
	var suspect, clean []traces.Span
	for i := range orphans {
		if at[i] <= cut {
			suspect = append(suspect, orphans[i])
		} else {
			clean = append(clean, orphans[i])
		}
	}
	r.logger.Warn("peer left with spans queued for it; routing them to the new owners", "member", p.member.ID, "spans", len(orphans), "fragments", len(suspect))
	r.metrics.rerouted.Add(float64(len(orphans)))
	r.reroute(clean)
	r.rerouteFragments(suspect)
}

// rerouteFragments delivers spans whose traces are fragments, posting them
// itself so that the mark travels with them, and retrying as reroute does.
func (r *Router) rerouteFragments(spans []traces.Span) {
	for tries := 0; len(spans) > 0; tries++ {
		v := r.members.View()
		groups := make([][]traces.Span, len(v.Members))
		for i := range spans {
			idx := v.owners[Partition(spans[i].TraceID)]
			groups[idx] = append(groups[idx], spans[i])
		}
		spans = nil
		for i, g := range groups {
			if len(g) == 0 {
				continue
			}
			var err error
			if i == v.Self {
				err = r.frags(context.Background(), g)
			} else {
				err = r.post(v.Members[i], g, true)
			}
			if err != nil {
				spans = append(spans, g...)
			}
		}
		if len(spans) == 0 {
			return
		}
		if tries == 100 {
			r.metrics.errors.WithLabelValues("dropped").Add(float64(len(spans)))
			r.logger.Error("spans of a departed peer could not be delivered and were dropped", "spans", len(spans))
			return
		}
		time.Sleep(100 * time.Millisecond)
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

// post sends spans to a peer, halving a batch whose encoding is too large
// for the peer to take (a few thousand very large spans).
func (r *Router) post(m Member, spans []traces.Span, fragments bool) error {
	return r.send1(m, spans, fragments, r.members.View().Epoch)
}

// postEpoch is post for spans routed by the view of that epoch.
func (r *Router) postEpoch(m Member, spans []traces.Span, epoch uint64) error {
	return r.send1(m, spans, false, epoch)
}

func (r *Router) send1(m Member, spans []traces.Span, fragments bool, epoch uint64) error {
	body := abi.NewEncoder().Encode(spans, 0)
	if len(body) > splitForwardBody && len(spans) > 1 {
		half := len(spans) / 2
		if err := r.send1(m, spans[:half], fragments, epoch); err != nil {
			return err
		}
		return r.send1(m, spans[half:], fragments, epoch)
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+m.Addr+ForwardPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-betrace-spans")
	req.Header.Set(fromHeader, r.members.cfg.InstanceID)
	req.Header.Set(incarnationHeader, r.members.incarnation)
	req.Header.Set(epochHeader, strconv.FormatUint(epoch, 10))
	if fragments {
		req.Header.Set(fragmentHeader, "1")
	}
	req.Header.Set("Authorization", r.token.Load().Header())
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: peer %s answered %d: %s", errPeerAnswered, m.ID, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// fromHeader names the sending instance on a forwarded request.
const (
	fromHeader        = "Betrace-From"
	incarnationHeader = "Betrace-Incarnation"
	// fragmentHeader marks spans whose traces are fragments; the receiver
	// keeps them, the sender having routed them by the same view.
	fragmentHeader = "Betrace-Fragments"
	// epochHeader is the view the sender routed the spans by.
	epochHeader = "Betrace-Epoch"
)

// Handler accepts spans a peer forwarded. Spans of partitions this
// instance owns go to the local sink; the others, queued by a peer just
// before a view change or handed over by a peer that left, go on to their
// owner, unless that is the sender: then the two views differ for a moment,
// and keeping them here ends the exchange (Fragment marks such traces).
//
// Only peers holding the cluster token may send: there is no open mode.
// At most forwardDecodes bodies are read at once, each at most
// MaxForwardBody, so a flood of forwarded batches is answered 429 (the
// sender retries) rather than held in memory.
func (r *Router) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if !r.token.Load().Match(req.Header.Get("Authorization")) {
			http.Error(w, "invalid or missing cluster token (BETRACE_CLUSTER_TOKEN, or the one shared through Redis)", http.StatusUnauthorized)
			return
		}
		if req.ContentLength > MaxForwardBody {
			http.Error(w, fmt.Sprintf("forwarded body of %d bytes is over the %d-byte limit", req.ContentLength, MaxForwardBody), http.StatusRequestEntityTooLarge)
			return
		}
		select {
		case r.decodes <- struct{}{}:
			defer func() { <-r.decodes }()
		default:
			http.Error(w, "busy decoding other forwarded batches; retry", http.StatusTooManyRequests)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxForwardBody))
		if err != nil {
			status := http.StatusBadRequest
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				status = http.StatusRequestEntityTooLarge
			}
			http.Error(w, "read body: "+err.Error(), status)
			return
		}
		spans, err := abi.Decode(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		from := req.Header.Get(fromHeader)
		v := r.members.View()
		for _, x := range v.Members {
			if x.ID == from && x.Incarnation == req.Header.Get(incarnationHeader) {
				r.members.Heard(x)
			}
		}
		if req.Header.Get(fragmentHeader) == "1" {
			err = r.frags(req.Context(), spans)
		} else {
			err = r.accept(req.Context(), v, spans, from, req.Header.Get(epochHeader))
		}
		if err != nil {
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

// accept takes forwarded spans that from routed by the view of epoch
// (decimal) into this instance or on to their owner. Routed by an older
// view, they were in flight as the views changed, so this instance's view
// decides, even if that means back to the sender. By a newer one, this
// instance is about to adopt it and the sender knows best. By the same,
// a peer whose owner differs can only be the sender, a moment ahead or
// behind, and keeping them ends the exchange.
func (r *Router) accept(ctx context.Context, v *View, spans []traces.Span, from, epoch string) error {
	keep := from
	if sent, err := strconv.ParseUint(epoch, 10, 64); err == nil {
		switch {
		case sent < v.Epoch:
			keep = ""
		case sent > v.Epoch:
			return r.local(ctx, spans)
		}
	}
	local, err := r.split(v, spans, keep)
	if err == nil && len(local) > 0 {
		err = r.local(ctx, local)
	}
	return err
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
	handedOff prometheus.Counter
	rerouted  prometheus.Counter
	errors    *prometheus.CounterVec
}

func newForwardMetrics(reg prometheus.Registerer) *forwardMetrics {
	m := &forwardMetrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_spans_forwarded_total", Help: "Spans sent to the instance that owns their trace."}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_cluster_handoff_spans_total",
			Help: "Spans of open traces this instance held and handed over to their partition's new owner when a view change took the partition away."}),
		rerouted: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_cluster_rerouted_spans_total",
			Help: "Spans queued for a peer that left the view, routed to the partitions' new owners."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "betrace_forward_errors_total",
			Help: "Spans whose forwarding failed, by reason: queue_full (refused to the client), send (will be retried), dropped."}, []string{"reason"}),
	}
	reg.MustRegister(m.forwarded, m.handedOff, m.rerouted, m.errors)
	return m
}
