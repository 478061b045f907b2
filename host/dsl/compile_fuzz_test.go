package dsl

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

// ruleGen turns fuzz bytes into a rule of the compiled subset and a trace.
type ruleGen struct {
	b []byte
	i int
}

func (g *ruleGen) next(n int) int {
	if g.i >= len(g.b) {
		return 0
	}
	v := int(g.b[g.i]) % n
	g.i++
	return v
}

func (g *ruleGen) pick(opts ...string) string { return opts[g.next(len(opts))] }

var (
	genNames    = []string{"a", "b", "c"}
	genKeys     = []string{"x", "y", "resource.x"}
	genLiterals = []string{`"1000"`, `1000`, `20.5`, `-3`, `true`, `false`, `"USD"`, `USD`, `"NaN"`, `"true"`,
		`1e3`, `"12.50"`, `0`, `"-0"`, `9007199254740993`, `" 7 "`}
	genOps = []string{"==", "!=", "<", "<=", ">", ">="}
	// genTextTests reach every kind of value text: numbers (1e+21 style
	// doubles, -0), booleans, JSON, empty strings and case.
	genTextTests = []string{`matches "^1"`, `matches "0$"`, `matches "^-?[0-9]+$"`, `matches "(?i)usd"`, `matches "e\\+|NaN|Inf"`,
		`matches ""`, `matches "^$"`, `matches "\\."`, `matches "^(true|ok|server)$"`, `contains "1"`, `contains "00"`,
		`contains "US"`, `contains ""`, `contains "rue"`, `contains "."`, `contains "-"`}
)

func (g *ruleGen) pred(depth int) string {
	k := g.next(8)
	if depth > 2 {
		k %= 2
	}
	switch k {
	case 0:
		return g.pick(genKeys...) + " " + g.pick(genOps...) + " " + g.pick(genLiterals...)
	case 7:
		return g.pick(genKeys...) + " " + g.pick(genTextTests...)
	case 3:
		return g.intrinsic()
	case 6:
		return g.pick(genKeys...) + " in [" + g.pick(genLiterals...) + ", " + g.pick(genLiterals...) + "]"
	case 1:
		return g.pick(genKeys...)
	case 2:
		return "not (" + g.pred(depth+1) + ")"
	case 4:
		return "(" + g.pred(depth+1) + " and " + g.pred(depth+1) + ")"
	default:
		return "(" + g.pred(depth+1) + " or " + g.pred(depth+1) + ")"
	}
}

func (g *ruleGen) intrinsic() string {
	switch g.next(6) {
	case 0:
		return "span.duration " + g.pick(genOps...) + " " + g.pick("1ms", "2ms", "0ns", "5s")
	case 4:
		return g.pick("span.name", "span.service") + " " + g.pick(genTextTests...)
	case 1:
		if g.next(2) == 0 {
			return "span.status in [" + g.pick("ok", "error", "unset") + ", " + g.pick("ok", "error", "unset") + "]"
		}
		return "span.status " + g.pick("==", "!=") + " " + g.pick("ok", "error", "unset")
	case 2:
		return "span.kind " + g.pick("==", "!=") + " " + g.pick("server", "client", "internal", "unspecified")
	default:
		return g.pick("span.name", "span.service") + " " + g.pick(genOps...) + " " + g.pick(append(genLiterals, "a", "checkout")...)
	}
}

func (g *ruleGen) pattern() string {
	p := g.pick(genNames...)
	for n := g.next(3); n > 0; n-- {
		p += ".where(" + g.pred(0) + ")"
	}
	return p
}

func (g *ruleGen) cond(depth int) string {
	k := g.next(6)
	if depth > 2 {
		k %= 2
	}
	switch k {
	case 0, 5:
		return g.pattern()
	case 1:
		rhs := []string{"0", "1", "2", "3"}[g.next(4)]
		if g.next(3) == 0 {
			rhs = "count(" + g.pattern() + ")"
		}
		return "count(" + g.pattern() + ") " + g.pick(genOps...) + " " + rhs
	case 2:
		return "not (" + g.cond(depth+1) + ")"
	case 3:
		return "(" + g.cond(depth+1) + " and " + g.cond(depth+1) + ")"
	default:
		return "(" + g.cond(depth+1) + " or " + g.cond(depth+1) + ")"
	}
}

func (g *ruleGen) rule() string {
	src := "when { " + g.cond(0) + " }"
	switch g.next(3) {
	case 0:
		src += " always { " + g.cond(0) + " }"
	case 1:
		src += " never { " + g.cond(0) + " }"
	default:
		src += " always { " + g.cond(0) + " } never { " + g.cond(0) + " }"
	}
	return src
}

func (g *ruleGen) attr(key string) traces.Attr {
	switch g.next(6) {
	case 0:
		return iAttr(key, []int64{1000, -3, 0, 20, 9007199254740993, math.MaxInt64}[g.next(6)])
	case 1:
		return fAttr(key, []float64{1000, 20.5, -3, math.NaN(), math.Inf(-1), 12.5, 1e21, math.Copysign(0, -1)}[g.next(8)])
	case 2:
		return bAttr(key, g.next(2) == 0)
	case 3:
		return traces.Attr{Key: key, Type: []uint8{abiv1.ValueEmpty, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap}[g.next(4)],
			Str: g.pick("true", `["USD",1000]`, `{"a":"1e+21"}`)}
	default:
		return sAttr(key, []string{"1000", " 1000 ", "USD", "true", "1e3", "abc", "12.50", "-3", "", "NaN", "-0", "7", "+20.5", "usd.1", "1e400"}[g.next(15)])
	}
}

func (g *ruleGen) trace() []traces.Span {
	spans := make([]traces.Span, g.next(6))
	var res []traces.Attr
	if g.next(2) == 0 {
		res = []traces.Attr{g.attr("x")}
	}
	for i := range spans {
		s := sp(g.pick(genNames...), uint64(g.next(4)))
		s.Kind, s.StatusCode = uint8(g.next(7)), uint8(g.next(4))
		s.Service = g.pick("checkout", "", "1000", "a")
		s.EndUnixNano = s.StartUnixNano + []uint64{1e6, 0, 2e6, 5e9}[g.next(4)]
		if g.next(8) == 0 {
			s.EndUnixNano = 0
		}
		for _, k := range []string{"x", "y"} {
			if g.next(3) != 0 {
				s.Attrs = append(s.Attrs, g.attr(k))
			}
		}
		if g.next(2) == 0 {
			s.ResourceAttrs = res
		}
		spans[i] = s
	}
	return spans
}

// FuzzCompile checks that the compiled rule and the interpreter agree on
// generated rules of the compiled subset and generated traces.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{1, 0, 2, 5, 3, 1, 0, 0, 0, 4, 4, 9, 1, 3, 3, 3, 2, 1})
	f.Add([]byte("\x03\x00\x01\x00\x02\x05\x00\x09\x03\x01\x00\x04\x05\x04\x03\x02\x01\x00\x07\x07\x07\x02\x02"))
	f.Add([]byte(strings.Repeat("\x05\x03\x00\x02\x01\x04", 12)))
	f.Add([]byte(strings.Repeat("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f", 8)))
	h := testHost(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &ruleGen{b: data}
		src := g.rule()
		r, err := Parse(src)
		if err != nil {
			t.Fatalf("generated rule does not parse: %s: %v", src, err)
		}
		mod, err := Compile(r, Meta{})
		if err != nil {
			t.Fatalf("compile %s: %v", src, err)
		}
		s, err := h.Load(context.Background(), mod, sandbox.Limits{})
		if err != nil {
			t.Fatalf("load %s: %v", src, err)
		}
		defer s.Close(context.Background())
		for n := 0; n < 4; n++ {
			checkSame(t, r, s, g.trace())
		}
	})
}

// FuzzCompileNumbers checks the compiled run-time number parser (wasm for
// the common cases, the host's parse_number for the rest) against
// parseNumber through rules that compare a string attribute with numbers.
func FuzzCompileNumbers(f *testing.F) {
	for _, s := range []string{"1000", " 1000 ", "1e3", "-0", "+20.5", "12.50", ".5", "5.", "1_000", "0x10", "inf", "NaN",
		"9223372036854775807", "-9223372036854775808", "9223372036854775808", "1e22", "1e23", "0.000001", "00012",
		"1.5e-3", "1e", "e5", "-", "+.e1", "\t7\n", "1e-22", "123456789012345678", "0.1e+2", "20.5000000000000000000000",
		"1e400", "4.9e-324", "1e-400", "123456789012345678901234567890", "0.30000000000000000001", "\u00a01000\u3000", "1000\u2009", "0 \u2009", "7\t\u00a0 ", "1 é"} {
		f.Add(s)
	}
	h := testHost(f)
	lits := []string{"1000", "20.5", "-3", "0", "12.5", "1e-3", "9007199254740993", "9223372036854775807"}
	type loaded struct {
		r *Rule
		s *sandbox.Sandbox
	}
	var rules []loaded
	for _, l := range lits {
		for _, op := range genOps {
			r, s, _ := compileLoad(f, h, "when { a.where(x "+op+" "+l+") } always { b }")
			rules = append(rules, loaded{r, s})
		}
	}
	f.Fuzz(func(t *testing.T, str string) {
		spans := []traces.Span{sp("a", 1, sAttr("x", str))}
		buf := abi.NewEncoder().Encode(spans, 0)
		for _, l := range rules {
			want, _ := Evaluate(l.r, spans)
			res, err := l.s.Evaluate(context.Background(), buf, 1, nil)
			if err != nil {
				t.Fatalf("%s on %q: %v", l.r, str, err)
			}
			if got := len(res.Violations) == 1; got != want.Fired {
				t.Fatalf("%s on %q: compiled fired=%v, interpreted %v", l.r, str, got, want.Fired)
			}
		}
	})
}
