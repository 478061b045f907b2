package dsl

import (
	"sync"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

func mustParse(t *testing.T, src string) *Rule {
	t.Helper()
	r, err := Parse(src)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return r
}

// TestPredicates checks every operator and typing rule on one span: the
// rule `when { s.where(P) } never { s }` fires exactly when P holds.
func TestPredicates(t *testing.T) {
	span := traces.Span{Name: "s", Service: "checkout", Kind: abiv1.KindServer, StatusCode: abiv1.StatusError,
		StartUnixNano: 1e9, EndUnixNano: 1e9 + 300e6,
		Attrs: []traces.Attr{
			sAttr("str", "hello world"), sAttr("numstr", "1500"), sAttr("fstr", "2.5"), sAttr("word", "USD"),
			iAttr("int", 1500), iAttr("neg", -3), fAttr("dbl", 0.7), bAttr("yes", true), bAttr("no", false),
			sAttr("strtrue", "true"), sAttr("data.contains_pii", "true"), sAttr("span.name", "attr-not-intrinsic"),
			sAttr("path", "/api/v1/admin/users"), {Key: "arr", Type: abiv1.ValueArray, Str: `["a","b"]`},
			{Key: "empty", Type: abiv1.ValueEmpty}, iAttr("big", 1<<62), sAttr("dup", "first"), sAttr("dup", "second"),
		},
		ResourceAttrs: []traces.Attr{sAttr("deployment.environment", "prod"), iAttr("shard", 4)},
	}
	cases := []struct {
		pred string
		want bool
	}{
		// numbers with int, double and numeric-string attributes
		{"int > 1000", true}, {"int >= 1500", true}, {"int < 1500", false}, {"int <= 1500", true},
		{"int == 1500", true}, {"int != 1500", false}, {"int == 1500.0", true}, {"int > 1499.5", true},
		{"neg < 0", true}, {"neg == -3", true}, {"dbl > 0.3", true}, {"dbl == 0.7", true}, {"dbl < 0.5", false},
		{"numstr > 1000", true}, {"numstr == 1500", true}, {"fstr < 3", true}, {"fstr == 2.5", true},
		{`int == "1500"`, true}, {`numstr > "999"`, true}, {"big > 4611686018427387903", true}, {"big == 4611686018427387904", true},
		// non-numeric strings never order; no lexicographic comparison
		{"str > 1000", false}, {"str < 1000", false}, {`str > "a"`, false}, {"word > 5", false},
		// missing attributes: every comparison is false, its negation true
		{"missing < 1000", false}, {"missing == 0", false}, {"missing != 7", false}, {`missing == ""`, false},
		{"missing in [a]", false}, {`missing matches ".*"`, false}, {`missing contains ""`, false},
		{"not (missing == 1)", true}, {"not missing", true}, {"empty == 0", false}, {"not (empty != 0)", true},
		// strings, bare words, escapes
		{"word == USD", true}, {`word == "USD"`, true}, {"word != EUR", true}, {"word == usd", false},
		{`str == "hello world"`, true}, {`str contains "lo wo"`, true}, {`str contains "xyz"`, false},
		// booleans: bool attributes, "true" strings, bare attribute
		{"yes", true}, {"no", false}, {"strtrue", true}, {"str", false}, {"int", false}, {"missing", false},
		{"yes == true", true}, {"no == false", true}, {"yes != false", true}, {"strtrue == true", true},
		{"yes == 1", false}, {`yes == "true"`, true},
		// dotted attribute names unquoted and quoted, quoted intrinsic-like names
		{"data.contains_pii == true", true}, {`"data.contains_pii"`, true}, {`"span.name" == attr-not-intrinsic`, true},
		// lists: quoted and bare items, numbers
		{`word in ["EUR", "USD"]`, true}, {"word in [EUR, USD]", true}, {"word in [EUR]", false}, {"int in [1, 1500]", true},
		{"numstr in [1500]", true}, {"word in []", false},
		// regex: RE2, unanchored
		{`path matches "/api/v[0-9]+/admin/.*"`, true}, {`path matches "admin"`, true}, {`path matches "^admin"`, false},
		{`path matches "^/api/v1/admin/users$"`, true}, {`int matches "^15"`, true}, {`arr contains "\"b\""`, true},
		// intrinsics
		{"span.name == s", true}, {`span.service == "checkout"`, true}, {"span.kind == server", true},
		{"span.kind in [client, producer]", false}, {"span.status == error", true}, {"span.status != ok", true},
		{"span.duration > 250ms", true}, {"span.duration > 300ms", false}, {"span.duration == 300ms", true},
		{"span.duration < 1s", true}, {"span.duration >= 0.3s", true}, {`span.name matches "^s$"`, true},
		// resource attributes
		{"resource.deployment.environment == prod", true}, {"resource.shard > 3", true}, {"resource.missing == x", false},
		// first attribute of a duplicated key wins
		{"dup == first", true},
		// and / or / not / parentheses
		{"int > 1000 and word == USD", true}, {"int > 2000 or word == USD", true}, {"not (int > 2000 or no)", true},
		{"(yes and no) or (yes and not no)", true}, {"yes and no or no", false},
	}
	for _, c := range cases {
		r := mustParse(t, "when { s.where("+c.pred+") } never { s }")
		v, err := Evaluate(r, []traces.Span{span})
		if err != nil {
			t.Fatal(err)
		}
		if v.Fired != c.want {
			t.Errorf("%s: got %v want %v", c.pred, v.Fired, c.want)
		}
	}
}

func TestRules(t *testing.T) {
	trace := []traces.Span{
		sp("payment.charge", 30, iAttr("amount", 1500), sAttr("currency", "USD")),
		sp("payment.charge", 10, iAttr("amount", 50)),
		sp("http.retry", 20), sp("http.retry", 21), sp("http.retry", 22), sp("http.retry", 23),
		sp("GET /api/users", 5, sAttr("user", "u1")),
		sp("http.request", 1), sp("http.request", 2), sp("http.response", 3),
		sp("payment", 40, iAttr("amount", 2000)),
	}
	cases := []struct {
		rule  string
		fired bool
		index int
		msg   string
	}{
		{"when { payment.charge } always { fraud.check }", true, 1, "payment.charge without fraud.check"},
		{"when { payment.charge } always { http.retry }", false, -1, ""},
		{"when { payment.charge } never { http.retry }", true, 1, "payment.charge with http.retry"},
		{"when { payment.charge } always { fraud.check } never { http.retry }", true, 1, "payment.charge without fraud.check and with http.retry"},
		{"when { payment.charge } never { fraud.check }", false, -1, ""},
		{"when { fraud.check } always { payment.charge }", false, -1, ""},
		// shorthand reads the attribute of the span named by the prefix; reported on the matching span
		{"when { payment.amount > 3000 } always { fraud.check }", false, -1, ""},
		{"when { payment.amount > 1000 } always { fraud.check }", true, 10, "payment.where(amount > 1000) without fraud.check"},
		{"when { payment.charge.amount > 1000 } always { fraud.check }", true, 0, "payment.charge.where(amount > 1000) without fraud.check"},
		{"when { payment.charge.amount > 5000 } always { fraud.check }", false, -1, ""},
		{"when { payment.charge.where(amount > 1000).where(currency == USD) } always { x }", true, 0, ""},
		// filters must hold on the same span
		{"when { payment.charge.where(amount < 100).where(currency == USD) } always { x }", false, -1, ""},
		{"when { payment.charge.where(amount < 100 or currency == USD) } always { x }", true, 1, ""},
		{`when { "GET /api/users".where(user == u1) } always { auth }`, true, 6, `"GET /api/users".where(user == u1) without auth`},
		{"when { count(http.retry) > 3 } always { alert }", true, 2, "count(http.retry) > 3 without alert"},
		{"when { count(http.retry) > 4 } always { alert }", false, -1, ""},
		{"when { count(http.retry) == 4 and count(nothing) == 0 } always { alert }", true, 2, ""},
		{"when { count(http.request) != count(http.response) } always { alert }", true, 7, ""},
		{"when { count(http.request) <= count(http.response) } always { alert }", false, -1, ""},
		{"when { count(payment.charge.where(amount >= 50)) >= 2 } always { alert }", true, 1, ""},
		// first span by start time, ignoring negated patterns
		{"when { http.retry and not fraud.check } always { alert }", true, 2, ""},
		{"when { not fraud.check } always { alert }", true, 7, "not fraud.check without alert"},
		{"when { fraud.check or http.response } always { alert }", true, 9, ""},
		{"when { (payment.charge or x) and (http.request and not y) } always { alert }", true, 7, ""},
	}
	for _, c := range cases {
		v, err := Evaluate(mustParse(t, c.rule), trace)
		if err != nil {
			t.Fatal(err)
		}
		if v.Fired != c.fired || v.SpanIndex != c.index || (c.msg != "" && v.Message != c.msg) {
			t.Errorf("%s:\n got %+v\nwant fired=%v index=%d msg=%q", c.rule, v, c.fired, c.index, c.msg)
		}
	}
	if v, err := Evaluate(mustParse(t, "when { not a } always { b }"), nil); err != nil || v.Fired || v.SpanIndex != -1 {
		t.Errorf("empty trace: %+v %v", v, err)
	}
	if _, err := Evaluate(nil, trace); err == nil {
		t.Error("nil rule: want error")
	}
	if _, err := Evaluate(&Rule{When: &Exists{Pattern: &Pattern{Name: "a"}}}, trace); err == nil {
		t.Error("rule without always/never: want error")
	}
}

// The compiled regexp lives in the AST and is shared read-only: concurrent
// evaluation of one rule is race-free (run with -race).
func TestConcurrentEvaluate(t *testing.T) {
	r := mustParse(t, `when { api.request.where(endpoint matches "/api/v[0-9]+/admin/.*") } always { auth.check_admin }`)
	trace := []traces.Span{sp("api.request", 1, sAttr("endpoint", "/api/v1/admin/users"))}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if v, err := Evaluate(r, trace); err != nil || !v.Fired {
					t.Errorf("got %+v %v", v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
