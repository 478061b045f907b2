// Command pii-access-audit is a BeTrace rule: personal data may only be
// touched inside an authenticated request.
//
// A span whose attribute data.contains_pii is true (the bool true, or the
// string "true") must have an ancestor span named auth.check; each such span
// without one is a violation. In a trace fragment, a span whose chain of
// ancestors is cut short is skipped: the auth.check may be in the missing
// part.
package main

import (
	"strings"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

func init() {
	rule.Register(rule.Info{
		ID:          "pii-access-audit",
		Name:        "PII accessed without authentication",
		Severity:    rule.SeverityHigh,
		Description: "A span with data.contains_pii=true must run under an auth.check ancestor span.",
		Tags:        []string{"security", "privacy", "compliance"},
	}, check)
}

func check(t *rule.Trace) {
	for s := range t.Spans() {
		if !containsPII(s) || s.HasAncestorNamed("auth.check") {
			continue
		}
		if t.Fragment() && !s.Root().IsRoot() {
			continue
		}
		t.Report(s, "span handling PII (data.contains_pii) has no auth.check ancestor",
			rule.Attr("service", s.Service()),
			rule.Attr("span", s.Name()),
			rule.Attr("root_span", s.Root().Name()),
		)
	}
}

func containsPII(s rule.Span) bool {
	v, ok := s.Attr("data.contains_pii")
	if !ok {
		return false
	}
	if b, ok := v.Bool(); ok {
		return b
	}
	str, ok := v.Str()
	return ok && strings.EqualFold(str, "true")
}

func main() {}
