package registry

import (
	"time"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/sandbox"
)

// Rule is one loaded rule as the evaluator sees it: an immutable snapshot of
// its metadata with the sandbox, strikes and counters that outlive it.
// Active publishes them; package evaluation runs them.
type Rule struct {
	ID       string
	Name     string
	Severity string
	Version  int // module version
	Sandbox  *sandbox.Sandbox
	Strikes  Striker
	Stats    *Stats
	// Share is the rule's own share of the workers (evaluation.ShareConfig.Share);
	// 0 means the pool's.
	Share float64
	// Shadow marks a version installed in shadow beside the rule's
	// version in force (see evaluation.Pool).
	Shadow bool
}

// Striker counts a rule's faults and evaluations and decides when faults
// quarantine it (rules.QuarantinePolicy): rules.Strikes on one instance, or
// a cluster-wide counter shared through Redis.
type Striker interface {
	// Evaluated counts an evaluation that did not fault, at now (the
	// caller's clock, read once per call on the hot path).
	Evaluated(now time.Time)
	Record(rules.Strike) (rules.Quarantine, bool)
	Quarantined() (rules.Quarantine, bool)
	Clear()
}
