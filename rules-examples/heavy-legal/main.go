// Command heavy-legal is an adversarial BeTrace rule for isolation tests:
// it never faults, but spends most of its fuel budget on every trace (about
// 19,000,000 of the default 25,000,000), as a thorough but expensive rule
// would. The host must keep it from taking the workers from other rules.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "heavy-legal",
		Name:        "Adversarial: heavy but legal",
		Severity:    rule.SeverityLow,
		Description: "Test rule that burns about three quarters of its fuel budget on every trace and reports nothing.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

// rounds is how many loop iterations one evaluation runs; each costs about
// 23 units of fuel (the SDK's own work is some 20,000), the whole about 19M.
const rounds = 820_000

// state is written on every iteration, so the loop has an observable effect
// and cannot be removed.
var state uint64

func check(t *rule.Trace) {
	x := uint64(t.Len()) | 1
	for range rounds {
		x = x*6364136223846793005 + 1442695040888963407
		state = x
	}
}

func main() {}
