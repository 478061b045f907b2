// Command checkout-slow-db is a BeTrace rule: database calls in the
// checkout flow must be fast.
//
// In a trace whose root span is named checkout, every span with a db.system
// attribute that lasts longer than one second is a violation.
package main

import "github.com/betracehq/betrace/guest-sdk/rule"

const limit = rule.Second

func init() {
	rule.Register(rule.Info{
		ID:          "checkout-slow-db",
		Name:        "Slow database call during checkout",
		Severity:    rule.SeverityMedium,
		Description: "In a checkout trace, no database span (db.system set) may last longer than 1s.",
		Tags:        []string{"performance", "database", "checkout"},
	}, check)
}

func check(t *rule.Trace) {
	root, ok := t.Root()
	if !ok || root.Name() != "checkout" {
		return
	}
	for s := range t.Spans() {
		system, ok := s.Attr("db.system")
		if !ok {
			continue
		}
		d := s.Duration()
		if d <= limit {
			continue
		}
		t.Report(s, "database span "+s.Name()+" took "+d.String()+" during checkout (limit "+limit.String()+")",
			rule.Attr("db.system", system.String()),
			rule.Attr("service", s.Service()),
			rule.AttrInt("duration_ms", d.Milliseconds()),
			rule.AttrInt("limit_ms", limit.Milliseconds()),
		)
	}
}

func main() {}
