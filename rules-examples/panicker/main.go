// Command panicker is an adversarial BeTrace rule for isolation tests: it
// panics on every trace. In wasm a Go panic ends the module (the host sees a
// trap or exit), and the panic message is written to stderr.
package main

import (
	"strconv"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

func init() {
	rule.Register(rule.Info{
		ID:          "panicker",
		Name:        "Adversarial: panicker",
		Severity:    rule.SeverityLow,
		Description: "Test rule that panics on every trace; the host must contain the failure.",
		Tags:        []string{"adversarial", "test"},
	}, check)
}

// Message starts every panic message of this rule.
const Message = "betrace panicker: deliberate panic"

func check(t *rule.Trace) {
	panic(Message + " (trace of " + strconv.Itoa(t.Len()) + " spans)")
}

func main() {}
