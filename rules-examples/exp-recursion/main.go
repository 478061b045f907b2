// Command exp-recursion is an adversarial BeTrace rule for isolation tests:
// a loop-free call tree that doubles at each of 60 levels (2^60 calls), so
// only a limit on work done, not one on loops, can stop it.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "exp-recursion",
		Name:        "Adversarial: exponential recursion",
		Severity:    rule.SeverityLow,
		Description: "Test rule whose recursion tree doubles at each of 60 levels; the sandbox must interrupt it.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

// depth is a variable, not a constant, so the compiler cannot fold the call
// tree; result keeps its value alive.
var (
	depth  = 60
	result uint64
)

func check(t *rule.Trace) {
	result = f(depth + t.Len()%1)
	if result == 0 && t.Len() > 0 {
		t.Report(t.Span(0), "unreachable")
	}
}

// f(n) calls f(n-1) twice: 2^n calls in all.
//
//go:noinline
func f(n int) uint64 {
	if n <= 0 {
		return 1
	}
	return f(n-1) + f(n-1)
}

func main() {}
