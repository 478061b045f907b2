package cluster

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

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// Spool keeps violations in memory while the shared store is unreachable
// and writes them, oldest first, when it answers again. It is bounded: past
// MaxViolations the oldest spooled violations are dropped and counted, so an
// outage costs at most that much memory (a batch dropped while a replay was
// already writing it may still be stored). Evaluation never waits on it.
type Spool struct {
	write   func(context.Context, []violations.Violation) error
	max     int
	logger  *slog.Logger
	metrics *spoolMetrics

	mu      sync.Mutex
	batches [][]violations.Violation
	n       int
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool

	// Group commit: writes from every evaluation worker within one
	// linger window go to Redis as one call, so round trips grow with
	// time, not with violating traces.
	gmu     sync.Mutex
	group   []violations.Violation
	waiters []chan error
}

// commitLinger is how long the first violation of a group waits for
// others: a bound on added latency, far below the 100 ms target.
const commitLinger = 2 * time.Millisecond

// DefaultSpoolViolations bounds the spool.
const DefaultSpoolViolations = 100_000

// NewSpool returns a spool in front of write (the store's append).
func NewSpool(write func(context.Context, []violations.Violation) error, max int, logger *slog.Logger, reg prometheus.Registerer) *Spool {
	if max <= 0 {
		max = DefaultSpoolViolations
	}
	return &Spool{write: write, max: max, logger: logger, metrics: newSpoolMetrics(reg),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Record writes vs, or spools them when the store is unavailable. Only an
// error other than unavailability is returned.
func (s *Spool) Record(ctx context.Context, vs []violations.Violation) error {
	s.mu.Lock()
	queued := s.n > 0
	s.mu.Unlock()
	if queued {
		s.push(vs) // keep order behind what is already waiting
		return nil
	}
	done := make(chan error, 1)
	s.gmu.Lock()
	s.group = append(s.group, vs...)
	s.waiters = append(s.waiters, done)
	if len(s.waiters) == 1 {
		time.AfterFunc(commitLinger, s.commitGroup)
	}
	s.gmu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitGroup writes every violation recorded in the last linger window in
// one call; if the store is unavailable they go to the spool instead.
func (s *Spool) commitGroup() {
	s.gmu.Lock()
	group, waiters := s.group, s.waiters
	s.group, s.waiters = nil, nil
	s.gmu.Unlock()
	if len(waiters) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := s.write(ctx, group)
	cancel()
	if err != nil && errors.Is(err, store.ErrUnavailable) {
		s.push(group)
		err = nil
	}
	for _, w := range waiters {
		w <- err
	}
}

func (s *Spool) push(vs []violations.Violation) {
	if len(vs) == 0 {
		return
	}
	s.mu.Lock()
	if s.n == 0 {
		s.logger.Warn("shared store unreachable: spooling violations in memory until it answers", "limit", s.max)
	}
	// The caller may reuse vs once Record returns (the evaluation pool
	// does): keep a copy.
	s.batches = append(s.batches, slices.Clone(vs))
	s.n += len(vs)
	for s.n > s.max && len(s.batches) > 0 {
		s.n -= len(s.batches[0])
		s.metrics.dropped.Add(float64(len(s.batches[0])))
		s.batches = s.batches[1:]
	}
	s.metrics.spooled.Set(float64(s.n))
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Start runs the replay loop.
func (s *Spool) Start(context.Context) error {
	s.started.Store(true)
	go s.loop()
	return nil
}

func (s *Spool) loop() {
	defer close(s.done)
	wait := 250 * time.Millisecond
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-time.After(wait):
		}
		if s.flush(context.Background()) {
			wait = 250 * time.Millisecond
		} else {
			wait = min(wait*2, 5*time.Second)
		}
	}
}

// flush writes spooled batches in order; it reports whether the spool is
// empty afterwards.
func (s *Spool) flush(ctx context.Context) bool {
	for {
		s.mu.Lock()
		if len(s.batches) == 0 {
			s.mu.Unlock()
			return true
		}
		b := s.batches[0]
		s.mu.Unlock()
		if err := s.write(ctx, b); err != nil {
			if !errors.Is(err, store.ErrUnavailable) {
				s.logger.Error("a spooled violation batch was refused by the store and dropped", "violations", len(b), "err", err)
				s.metrics.dropped.Add(float64(len(b)))
			} else {
				return false
			}
		}
		s.mu.Lock()
		if len(s.batches) > 0 && &s.batches[0][0] == &b[0] {
			s.batches = s.batches[1:]
			s.n -= len(b)
		}
		s.metrics.spooled.Set(float64(s.n))
		empty := s.n == 0
		s.mu.Unlock()
		if empty {
			s.logger.Info("shared store reachable again: spooled violations written")
			return true
		}
	}
}

// Len returns how many violations are spooled.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Shutdown tries once more to write what is spooled, within ctx.
func (s *Spool) Shutdown(ctx context.Context) error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		if s.started.Load() { // a start-up that failed earlier never ran the loop
			<-s.done
		}
	}
	if !s.flush(ctx) {
		n := s.Len()
		s.metrics.dropped.Add(float64(n))
		return fmt.Errorf("cluster: shared store still unreachable at shutdown; %d spooled violations lost", n)
	}
	return nil
}

type spoolMetrics struct {
	spooled prometheus.Gauge
	dropped prometheus.Counter
}

func newSpoolMetrics(reg prometheus.Registerer) *spoolMetrics {
	m := &spoolMetrics{
		spooled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "betrace_violations_spooled", Help: "Violations held in memory while the shared store is unreachable."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "betrace_violations_spool_dropped_total", Help: "Spooled violations lost: the spool was full, or the store refused them."}),
	}
	reg.MustRegister(m.spooled, m.dropped)
	return m
}
