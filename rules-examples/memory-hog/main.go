// Command memory-hog is an adversarial BeTrace rule for isolation tests:
// each evaluation allocates 64 MiB more, 8 MiB at a time, and keeps all of
// it, so a single call outgrows the default 32 MiB cap (a rule cannot dodge
// the cap by staying under the instance recycling mark). It reports nothing.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "memory-hog",
		Name:        "Adversarial: memory hog",
		Severity:    rule.SeverityLow,
		Description: "Test rule that retains 64 MiB more on every trace; the sandbox's memory cap must stop it.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

const (
	chunk   = 8 << 20
	perCall = 8 // chunks per evaluation
)

// hoard is package state, so everything appended to it stays reachable.
var hoard [][]byte

func check(t *rule.Trace) {
	for range perCall {
		b := make([]byte, chunk)
		// Touch every page so the memory is really used.
		for i := 0; i < len(b); i += 4096 {
			b[i] = byte(i>>12) | 1
		}
		hoard = append(hoard, b)
	}
}

func main() {}
