package service

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/trial"
)

// tape makes the tape of recent traces and returns what the evaluation
// workers feed it with; nil when it is off, so they do not even encode a
// trace no rule ran on.
func (s *Service) tape(reg prometheus.Registerer) evaluation.Tape {
	s.trialTape = trial.NewTape(s.cfg.TapeBytes, reg)
	if !s.trialTape.Enabled() {
		return nil
	}
	return s.trialTape.Add
}

// newTrial returns the runner of rule tests and replays: the live rules'
// sandbox host (so its memory budget), their quarantine settings and span
// limit, and the pool's queue to yield to.
func (s *Service) newTrial(logger *slog.Logger) *trial.Runner {
	return trial.NewRunner(trial.Config{MaxSpans: s.cfg.Traces.MaxSpans, Quarantine: s.cfg.Quarantine}, trial.Deps{
		Host: s.host, Tape: s.trialTape,
		Busy:   func() bool { return s.pool.Waiting() > 0 },
		Now:    time.Now,
		Logger: logger.With("component", "trial"),
	})
}
