// Package health answers the two questions an orchestrator asks: is the
// process alive (it serves HTTP at all), and is it ready (every subsystem
// that registered a check says so). It has no dependencies so any package
// can register a check without import cycles.
package health

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Check reports whether one subsystem is ready; nil means ready.
type Check func(ctx context.Context) error

// Reporter collects readiness checks. It is safe for concurrent use.
type Reporter struct {
	mu       sync.Mutex
	checks   map[string]Check
	degrades map[string]bool // checks whose failure degrades rather than fails readiness
	// Timeout bounds each check so /ready never hangs on a dependency.
	timeout time.Duration
}

// New returns a Reporter whose checks each get timeout to answer.
func New(timeout time.Duration) *Reporter {
	return &Reporter{checks: map[string]Check{}, degrades: map[string]bool{}, timeout: timeout}
}

// Register adds or replaces the check called name.
func (r *Reporter) Register(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = c
}

// RegisterDegraded adds a check whose failure leaves the instance ready but
// degraded: it still serves, with less than it normally has (for example,
// evaluating on cached rules while Redis is down). Taking such an instance
// out of a load balancer would only make things worse.
func (r *Reporter) RegisterDegraded(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = c
	r.degrades[name] = true
}

// Result is the outcome of every check by name: "ok" or what is wrong.
type Result struct {
	Ready    bool
	Degraded bool
	Checks   map[string]string
}

// Ready runs every check concurrently, each bounded by the timeout.
func (r *Reporter) Ready(ctx context.Context) Result {
	r.mu.Lock()
	names := make([]string, 0, len(r.checks))
	for n := range r.checks {
		names = append(names, n)
	}
	checks := make([]Check, len(names))
	degrades := make([]bool, len(names))
	sort.Strings(names)
	for i, n := range names {
		checks[i], degrades[i] = r.checks[n], r.degrades[n]
	}
	r.mu.Unlock()

	res := Result{Ready: true, Checks: make(map[string]string, len(names))}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c(cctx) }()
			select {
			case errs[i] = <-done:
			case <-cctx.Done():
				errs[i] = cctx.Err()
			}
		}()
	}
	wg.Wait()
	for i, n := range names {
		if errs[i] != nil {
			if degrades[i] {
				res.Degraded = true
			} else {
				res.Ready = false
			}
			res.Checks[n] = errs[i].Error()
		} else {
			res.Checks[n] = "ok"
		}
	}
	return res
}
