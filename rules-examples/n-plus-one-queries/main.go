// Command n-plus-one-queries is a BeTrace rule: it flags the N+1 query
// pattern.
//
// A span with more than 25 direct children that carry a db.system attribute
// yields one violation on that parent span.
package main

import (
	"strconv"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

const limit = 25

func init() {
	rule.Register(rule.Info{
		ID:          "n-plus-one-queries",
		Name:        "N+1 database queries",
		Severity:    rule.SeverityMedium,
		Description: "A span may not have more than 25 direct child spans that are database calls (db.system set).",
		Tags:        []string{"performance", "database"},
	}, check)
}

func check(t *rule.Trace) {
	for parent := range t.Spans() {
		n := 0
		var first rule.Span
		for c := range parent.Children() {
			if c.HasAttr("db.system") {
				if n == 0 {
					first = c
				}
				n++
			}
		}
		if n <= limit {
			continue
		}
		statement, _ := first.Str("db.statement")
		t.Report(parent, parent.Name()+" made "+strconv.Itoa(n)+" database calls from direct child spans (limit "+
			strconv.Itoa(limit)+"): likely an N+1 query pattern",
			rule.Attr("service", parent.Service()),
			rule.AttrInt("db_calls", int64(n)),
			rule.AttrInt("limit", limit),
			rule.Attr("first_query", first.Name()),
			rule.Attr("first_statement", statement),
		)
	}
}

func main() {}
