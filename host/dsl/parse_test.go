package dsl

import (
	"errors"
	"github.com/betracehq/betrace/host/traces"
	"strings"
	"testing"
)

// Every construct parses and prints canonically; the canonical text parses to
// the same AST.
func TestParseCanonical(t *testing.T) {
	cases := []struct{ src, want string }{
		{"when { payment.charge } always { fraud.check }", "when { payment.charge }\nalways { fraud.check }"},
		{"when{a}never{b}always{c}", "when { a }\nalways { c }\nnever { b }"},
		{`when { "GET /api/users" } never { "x y" }`, "when { \"GET /api/users\" }\nnever { \"x y\" }"},
		{`when { "payment.charge" } always { b }`, "when { payment.charge }\nalways { b }"},
		{"when { a and b or c and not d } always { e }", "when { a and b or c and not d }\nalways { e }"},
		{"when { a and (b or c) } always { not (d and e) }", "when { a and (b or c) }\nalways { not (d and e) }"},
		{"when { (a and b) and c } always { (a or b) or c }", "when { (a and b) and c }\nalways { (a or b) or c }"},
		{"when { not not a } always { ((b)) }", "when { not not a }\nalways { b }"},
		{"when { a.where(x > 1).where(y) } always { b }", "when { a.where(x > 1).where(y) }\nalways { b }"},
		{"when { payment.amount > 1000 } always { b }", "when { payment.where(amount > 1000) }\nalways { b }"},
		{"when { http.request.status_code in [500, 503] } always { b }", "when { http.request.where(status_code in [500, 503]) }\nalways { b }"},
		{"when { count(http.retry) > 3 } always { alert }", "when { count(http.retry) > 3 }\nalways { alert }"},
		{"when { count(a.where(x)) != count(b) } always { c }", "when { count(a.where(x)) != count(b) }\nalways { c }"},
		{`when { a.where(currency == USD and x != "two words" and y == -1.5 and z >= 0 and w == true and v == false) } always { b }`,
			`when { a.where(currency == USD and x != "two words" and y == -1.5 and z >= 0 and w == true and v == false) }` + "\nalways { b }"},
		{`when { a.where(p in ["stripe", square] and q matches "^v[0-9]+$" and r contains "x\"y\\z\n") } always { b }`,
			`when { a.where(p in [stripe, square] and q matches "^v[0-9]+$" and r contains "x\"y\\z\n") }` + "\nalways { b }"},
		{`when { a.where(data.contains_pii == true and "http.method" == POST and "span.name" == x) } always { b }`,
			`when { a.where(data.contains_pii == true and http.method == POST and "span.name" == x) }` + "\nalways { b }"},
		{"when { a.where(span.duration > 1500ms and span.duration <= 2s) } always { b }", "when { a.where(span.duration > 1500ms and span.duration <= 2s) }\nalways { b }"},
		{"when { a.where(span.status == error or span.kind in [server, client]) } always { b }", "when { a.where(span.status == error or span.kind in [server, client]) }\nalways { b }"},
		{"when { a.where(span.name == a and span.service != \"svc-1\" and resource.deployment.environment == prod) } always { b }",
			"when { a.where(span.name == a and span.service != svc-1 and resource.deployment.environment == prod) }\nalways { b }"},
		{"when { a.where(not (x or y)) } always { b }", "when { a.where(not (x or y)) }\nalways { b }"},
		{"when { a.where(x == 1e3 and y == 2.0 and z in []) } always { b }", "when { a.where(x == 1000.0 and y == 2.0 and z in []) }\nalways { b }"},
		{"// comment\nwhen { http-request } // trailing\nalways { b }", "when { http-request }\nalways { b }"},
		{"when { a.where(x == \"\\u00e9\\t\") } always { b }", "when { a.where(x == \"é\\t\") }\nalways { b }"},
	}
	for _, c := range cases {
		r, err := Parse(c.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.src, err)
			continue
		}
		if got := r.String(); got != c.want {
			t.Errorf("Parse(%q).String() =\n%s\nwant\n%s", c.src, got, c.want)
		}
		r2, err := Parse(r.String())
		if err != nil {
			t.Errorf("reparse %q: %v", r.String(), err)
			continue
		}
		if !sameAST(r, r2) {
			t.Errorf("round trip of %q changed the AST", c.src)
		}
	}
}

func TestParsePositions(t *testing.T) {
	r, err := Parse("when {\n  a.where(x > 1)\n} always { b }")
	if err != nil {
		t.Fatal(err)
	}
	ex := r.When.(*Exists)
	if ex.Pos != (Pos{2, 3}) {
		t.Errorf("exists at %v", ex.Pos)
	}
	cmp := ex.Pattern.Filters[0].(*Compare)
	if cmp.Attr.Pos != (Pos{2, 11}) || cmp.Value.Pos != (Pos{2, 15}) {
		t.Errorf("compare attr %v value %v", cmp.Attr.Pos, cmp.Value.Pos)
	}
	if cmp.Value.Kind != ValNumber || !cmp.Value.IsInt || cmp.Value.Int != 1 {
		t.Errorf("value %+v", cmp.Value)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		src       string
		line, col int
		msg, hint string
	}{
		{"", 1, 1, "empty rule", "when {"},
		{"when { a }", 1, 11, "expected `always` or `never`", "always"},
		{"WHEN { a } always { b }", 1, 1, "expected `when`", "lower case"},
		{"always { a }", 1, 1, "expected `when` before `always`", ""},
		{"when { a } always { b } always { c }", 1, 25, "second `always`", ""},
		{"when { a } never { b } never { c }", 1, 24, "second `never`", ""},
		{"when { a }\nalways {\n  b and\n}", 4, 1, "expected a span name", ""},
		{"when { a } always { }", 1, 21, "empty `always` clause", ""},
		{"when { a } always { b ", 1, 23, "expected `}`", ""},
		{"when { trace.has(a).where(x > 1) } always { b }", 1, 8, "older dialect", "a.where(x > 1)"},
		{`when { a.where(span.attributes["http.method"] == "POST") } always { b }`, 1, 16, "older dialect", `.where("http.method" == POST)`},
		{`when { span.attributes["k"] == "v" } always { b }`, 1, 8, "older dialect", `"k"`},
		{"when { a && b } always { c }", 1, 10, "`&&`", "and"},
		{"when { a || b } always { c }", 1, 10, "`||`", "or"},
		{"when { !a } always { c }", 1, 8, "`!`", "not"},
		{"when { a.where(x = 1) } always { c }", 1, 18, "`=`", "=="},
		{"when { a.where(x == 'v') } always { c }", 1, 21, "`'`", "double quotes"},
		{`span.status == "ERROR"`, 1, 1, "expected `when`", "older expression dialect"},
		{"when { a.where(span.duration > 1000000000) } always { b }", 1, 32, "compared with a duration", "1s"},
		{"when { a.where(x > 2s) } always { b }", 1, 20, "durations compare only", ""},
		{`when { a.where(span.status == "ERROR") } always { b }`, 1, 31, "one of ok, error or unset", "`error`"},
		{"when { a.where(span.kind == sever) } always { b }", 1, 29, "span.kind", ""},
		{"when { a.where(span.status > ok) } always { b }", 1, 16, "supports ==, != and in", ""},
		{"when { a.where(span.foo == 1) } always { b }", 1, 16, "unknown intrinsic", `"span.foo"`},
		{"when { a.where(span.status) } always { b }", 1, 16, "not a boolean", ""},
		{`when { a.where(x matches "(") } always { b }`, 1, 26, "invalid regular expression", "RE2"},
		{`when { a.where(x matches "` + strings.Repeat("x{1000}", 11) + `") } always { b }`, 1, 26, "11002 instructions, more than the 10000 allowed", ""},
		{`when { a.where(x matches "` + strings.Repeat("a", 1025) + `") } always { b }`, 1, 26, "1025 bytes, more than the 1024 allowed", ""},
		{`when { a.where(x matches y) } always { b }`, 1, 26, "quoted string", ""},
		{"when { a.where(depth > max.capacity) } always { b }", 1, 24, "expected a value", "comparing two attributes"},
		{"when { a.where(x == [1]) } always { b }", 1, 21, "a list needs `in`", ""},
		{"when { a.where(x in [1 2]) } always { b }", 1, 24, "`,` or `]`", ""},
		{"when { a.where(count > 5) } always { b }", 1, 16, "expected an attribute name", `"count"`},
		{"when { amount > 5 } always { b }", 1, 15, "needs a span name and an attribute", ""},
		{"when { span.duration > 5s } always { b }", 1, 8, "cannot be compared outside", "name.where(span.duration"},
		{`when { "a b" > 5 } always { b }`, 1, 14, "quoted span name cannot be compared", ""},
		{"when { a.where(x).y > 5 } always { b }", 1, 18, "expected `}`", ""},
		{"when { a.where(x) > 5 } always { b }", 1, 19, "after `.where(…)`", "inside the filter"},
		{"when { a.where() } always { b }", 1, 16, "empty `.where()`", ""},
		{"when { count(a) > b } always { c }", 1, 19, "whole number", ""},
		{"when { count(a) > -1 } always { c }", 1, 19, "whole number", ""},
		{"when { count(a) } always { c }", 1, 17, "after `count(…)`", "count(http.retry) > 3"},
		{"when { foo(a) } always { c }", 1, 11, "unexpected `(`", "count"},
		{`when { "unterminated } always { c }`, 1, 8, "unterminated string", ""},
		{`when { a.where(x == "\q") } always { c }`, 1, 22, "unknown escape", ""},
		{"when { a.where(x == 12abc) } always { c }", 1, 21, "unknown unit", ""},
		{"when { a.where(x == 99999999999999999999) } always { c }", 1, 21, "out of range", ""},
		{"when { a.where(span.duration > 1.5ns) } always { c }", 1, 32, "whole number of nanoseconds", ""},
		{"when { a AND b } always { c }", 1, 10, "expected `}`", ""},
		{"when { a } when { b }", 1, 12, "second `when`", ""},
		{"when { a } always { b } extra", 1, 25, "expected `always`, `never` or end", ""},
		{"when { a } Always { b }", 1, 12, "expected `always`", "lower case"},
		{"when { a @ b } always { c }", 1, 10, "unexpected character", ""},
	}
	for _, c := range cases {
		_, err := Parse(c.src)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q): want *Error, got %v", c.src, err)
			continue
		}
		if e.Line != c.line || e.Column != c.col || !strings.Contains(e.Message, c.msg) || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("Parse(%q) = %d:%d %q hint %q; want %d:%d containing %q, hint containing %q",
				c.src, e.Line, e.Column, e.Message, e.Hint, c.line, c.col, c.msg, c.hint)
		}
	}
}

func TestParseLimits(t *testing.T) {
	deep := "when { " + strings.Repeat("(", MaxDepth+1) + "a" + strings.Repeat(")", MaxDepth+1) + " } always { b }"
	if _, err := Parse(deep); err == nil || !strings.Contains(err.Error(), "nesting is deeper") {
		t.Errorf("deep parens: %v", err)
	}
	nots := "when { " + strings.Repeat("not ", MaxDepth+1) + "a } always { b }"
	if _, err := Parse(nots); err == nil || !strings.Contains(err.Error(), "nesting is deeper") {
		t.Errorf("deep not: %v", err)
	}
	ok := "when { " + strings.Repeat("(", MaxDepth) + "a" + strings.Repeat(")", MaxDepth) + " } always { b }"
	if _, err := Parse(ok); err != nil {
		t.Errorf("depth %d should parse: %v", MaxDepth, err)
	}
	big := "when { a } always { b } //" + strings.Repeat("x", MaxSourceBytes)
	if _, err := Parse(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("big: %v", err)
	}
	if _, err := Parse("when { a } always { \xff }"); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("utf8: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"when { payment.charge } always { fraud.check }",
		`when { a.where(x in ["a", b, 1, -2.5] and not (y or z matches "^a")) } never { count(c) >= count(d) }`,
		"when { a.b > 1 } always { b.where(span.duration > 2s and span.status == error and resource.k == v) }",
		`when { "GET /x".where("k.y" contains "\u0041") } always { b }`,
		"when { trace.has(a) && b } always { c }",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		r, err := Parse(src)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Line < 1 || e.Column < 1 {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		out := r.String()
		r2, err := Parse(out)
		if err != nil {
			t.Fatalf("canonical text %q does not parse: %v", out, err)
		}
		if !sameAST(r, r2) {
			t.Fatalf("round trip changed the AST: %q -> %q", src, out)
		}
		_, _ = Evaluate(r, []traces.Span{sp("a", 1, sAttr("x", "1")), sp("b", 2)})
		if _, err := Compile(r, Meta{}); err != nil {
			t.Fatalf("%q parses but does not compile: %v", src, err)
		}
	})
}
