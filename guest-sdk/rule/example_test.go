package rule_test

import (
	"fmt"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

// A rule is a package main that registers itself from init. This file shows
// one, and evaluates it natively the way the host does in wasm.

func init() {
	rule.Register(rule.Info{
		ID:          "payment-fraud-check",
		Name:        "Payment charged without a fraud check",
		Severity:    rule.SeverityCritical,
		Description: "Every trace with a payment.charge span must also contain a fraud.check span.",
	}, checkPayments)
}

func checkPayments(t *rule.Trace) {
	if t.Fragment() {
		return // the fraud.check may be in a part of the trace we cannot see
	}
	if _, ok := t.FindByName("fraud.check"); ok {
		return
	}
	for charge := range t.SpansNamed("payment.charge") {
		amount, _ := charge.Int("payment.amount_cents")
		t.Report(charge, "payment.charge without fraud.check in the same trace",
			rule.Attr("service", charge.Service()),
			rule.AttrInt("amount_cents", amount),
		)
	}
}

func Example() {
	// paymentTrace returns an encoded trace: checkout, cart.load and
	// payment.charge, with no fraud.check.
	result := rule.Evaluate(paymentTrace())

	violations, err := rule.DecodeResult(result)
	if err != nil {
		panic(err)
	}
	for _, v := range violations {
		fmt.Println(v)
	}
	// Output:
	// span 2: payment.charge without fraud.check in the same trace [service=payments amount_cents=4999]
}
