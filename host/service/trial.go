package service

import (
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/betracehq/betrace/host/evaluation"
	"github.com/betracehq/betrace/host/recorder"
	"github.com/betracehq/betrace/host/trial"
	"github.com/betracehq/betrace/host/violations"
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

// exportLive exports what the versions in force found, never what a
// version in shadow found: a shadow must not reach a collector, and through
// it anyone's pager. Batches without shadow violations go as they are.
func exportLive(export recorder.ExportFunc) recorder.ExportFunc {
	return func(vs []violations.Violation) {
		if !slices.ContainsFunc(vs, func(v violations.Violation) bool { return v.Shadow }) {
			export(vs)
			return
		}
		live := slices.DeleteFunc(slices.Clone(vs), func(v violations.Violation) bool { return v.Shadow })
		if len(live) > 0 {
			export(live)
		}
	}
}
