// Command runaway-loop is an adversarial BeTrace rule for isolation tests:
// it never returns from an evaluation. The host must stop it (fuel or
// deadline) without harm to other rules.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "runaway-loop",
		Name:        "Adversarial: runaway loop",
		Severity:    rule.SeverityLow,
		Description: "Test rule that loops forever on every trace; the sandbox must interrupt it.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

// state is written on every iteration, so the loop has an observable effect
// and cannot be removed.
var state uint64

func check(t *rule.Trace) {
	x := uint64(t.Len()) | 1
	for {
		x = x*6364136223846793005 + 1442695040888963407
		state = x
	}
}

func main() {}
