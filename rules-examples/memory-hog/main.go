// Command memory-hog is an adversarial BeTrace rule for isolation tests:
// each evaluation allocates 8 MiB more and keeps it, so the module's memory
// grows until the sandbox's memory cap stops it. It reports nothing.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "memory-hog",
		Name:        "Adversarial: memory hog",
		Severity:    rule.SeverityLow,
		Description: "Test rule that retains 8 MiB more on every trace; the sandbox's memory cap must stop it.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

const chunk = 8 << 20

// hoard is package state, so everything appended to it stays reachable.
var hoard [][]byte

func check(t *rule.Trace) {
	b := make([]byte, chunk)
	// Touch every page so the memory is really used.
	for i := 0; i < len(b); i += 4096 {
		b[i] = byte(i>>12) | 1
	}
	hoard = append(hoard, b)
}

func main() {}
