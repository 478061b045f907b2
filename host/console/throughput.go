package console

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Throughput keeps an hour of this instance's spans per second, sampled
// from its own metrics every SampleInterval, for the overview's chart: a
// page opened during an incident shows the hour before it.
type Throughput struct {
	gatherer prometheus.Gatherer
	every    time.Duration
	now      func() time.Time

	mu      sync.Mutex
	points  []point // oldest first, at most an hour of them
	last    float64
	lastAt  time.Time
	stop    chan struct{}
	stopped chan struct{}
}

type point struct {
	At    time.Time `json:"at"`
	Spans float64   `json:"spansPerSecond"`
}

// SampleInterval is how often Throughput samples the span counter.
const SampleInterval = 10 * time.Second

const spansMetric = "betrace_spans_received_total"

// NewThroughput samples gatherer's betrace_spans_received_total.
func NewThroughput(gatherer prometheus.Gatherer, now func() time.Time) *Throughput {
	if now == nil {
		now = time.Now
	}
	return &Throughput{gatherer: gatherer, every: SampleInterval, now: now}
}

// Start samples until Shutdown.
func (t *Throughput) Start(context.Context) error {
	t.stop, t.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(t.stopped)
		tick := time.NewTicker(t.every)
		defer tick.Stop()
		t.Sample()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				t.Sample()
			}
		}
	}()
	return nil
}

// Shutdown stops sampling.
func (t *Throughput) Shutdown(ctx context.Context) error {
	if t.stop == nil {
		return nil
	}
	close(t.stop)
	select {
	case <-t.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sample records the rate since the previous sample.
func (t *Throughput) Sample() {
	total, ok := t.read()
	if !ok {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.lastAt.IsZero() && total >= t.last {
		if d := now.Sub(t.lastAt).Seconds(); d > 0 {
			t.points = append(t.points, point{At: now.UTC(), Spans: (total - t.last) / d})
		}
	}
	for len(t.points) > 0 && now.Sub(t.points[0].At) > time.Hour {
		t.points = t.points[1:]
	}
	t.last, t.lastAt = total, now
}

func (t *Throughput) read() (float64, bool) {
	mfs, err := t.gatherer.Gather()
	if err != nil {
		return 0, false
	}
	for _, mf := range mfs {
		if mf.GetName() != spansMetric {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
		return sum, true
	}
	return 0, false
}

// serve answers GET /ui/throughput.
func (t *Throughput) serve(w http.ResponseWriter, _ *http.Request) {
	t.mu.Lock()
	pts := append([]point{}, t.points...)
	t.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"intervalSeconds": t.every.Seconds(), "points": pts})
}
