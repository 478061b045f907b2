// Command payment-fraud-check is a BeTrace rule: a trace that charges a
// payment must also run a fraud check.
//
// A trace with one or more spans named payment.charge and no span named
// fraud.check yields one violation on each payment.charge span. Trace
// fragments are skipped, since the fraud.check may be in the part of the
// trace evaluated elsewhere.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

func init() {
	rule.Register(rule.Info{
		ID:          "payment-fraud-check",
		Name:        "Payment charged without a fraud check",
		Severity:    rule.SeverityCritical,
		Description: "Every trace with a payment.charge span must also contain a fraud.check span.",
		Tags:        []string{"payments", "fraud", "compliance"},
	}, check)
}

func check(t *rule.Trace) {
	if t.Fragment() {
		return
	}
	if _, ok := t.FindByName("fraud.check"); ok {
		return
	}
	for charge := range t.SpansNamed("payment.charge") {
		t.Report(charge, "payment.charge without fraud.check in the same trace",
			rule.Attr("service", charge.Service()),
			rule.Attr("span_id", charge.SpanID()),
		)
	}
}

func main() {}
