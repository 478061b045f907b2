package dsl

import (
	"errors"
	"strings"

	"github.com/betracehq/betrace/host/abi"
)

// Parse parses one rule. The error, if any, is an *Error.
func Parse(src string) (*Rule, error) {
	r, err := parse(src)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func parse(src string) (*Rule, *Error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	return p.rule()
}

type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) peekAt(k int) token {
	if p.i+k < len(p.toks) {
		return p.toks[p.i+k]
	}
	return p.toks[len(p.toks)-1]
}
func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}
func (p *parser) isKw(t token, kw string) bool { return t.kind == tIdent && t.text == kw }

func (p *parser) expect(k tokKind, what string) (token, *Error) {
	t := p.peek()
	if t.kind != k {
		return t, errAt(t.pos, "", "expected %s, found %s", what, describe(t))
	}
	return p.next(), nil
}

func (p *parser) enter(at Pos) *Error {
	p.depth++
	if p.depth > MaxDepth {
		return errAt(at, "", "nesting is deeper than %d levels", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

func (p *parser) rule() (*Rule, *Error) {
	t := p.peek()
	if !p.isKw(t, "when") {
		switch {
		case t.kind == tEOF:
			return nil, errAt(t.pos, "a rule looks like `when { payment.charge } always { fraud.check }`", "empty rule: expected `when`")
		case t.kind == tIdent && strings.EqualFold(t.text, "when"):
			return nil, errAt(t.pos, "keywords are lower case: `when`", "expected `when`, found %s", describe(t))
		case p.isKw(t, "always") || p.isKw(t, "never"):
			return nil, errAt(t.pos, "start with the triggering condition: `when { … } "+t.text+" { … }`", "expected `when` before `%s`", t.text)
		case t.kind == tIdent && (t.text == "trace" || t.text == "span"):
			return nil, errAt(t.pos, "the older expression dialect is written as a rule: `span.status == \"ERROR\"` becomes `when { op.where(span.status == error) } never { … }`", "expected `when`, found %s", describe(t))
		}
		return nil, errAt(t.pos, "a rule looks like `when { payment.charge } always { fraud.check }`", "expected `when`, found %s", describe(t))
	}
	r := &Rule{Pos: t.pos}
	p.next()
	var err *Error
	if r.When, err = p.block("when"); err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		switch {
		case p.isKw(t, "always"):
			if r.Always != nil {
				return nil, errAt(t.pos, "combine the conditions with `and`", "second `always` clause")
			}
			p.next()
			if r.Always, err = p.block("always"); err != nil {
				return nil, err
			}
		case p.isKw(t, "never"):
			if r.Never != nil {
				return nil, errAt(t.pos, "combine the conditions with `or`", "second `never` clause")
			}
			p.next()
			if r.Never, err = p.block("never"); err != nil {
				return nil, err
			}
		case t.kind == tEOF:
			if r.Always == nil && r.Never == nil {
				return nil, errAt(t.pos, "add `always { … }` (what must happen) or `never { … }` (what must not)", "expected `always` or `never` after the `when` clause")
			}
			return r, nil
		case p.isKw(t, "when"):
			return nil, errAt(t.pos, "a rule has one `when`; combine conditions with `and`/`or`", "second `when` clause")
		case t.kind == tIdent && (strings.EqualFold(t.text, "always") || strings.EqualFold(t.text, "never")):
			return nil, errAt(t.pos, "keywords are lower case: `"+strings.ToLower(t.text)+"`", "expected `always`, `never` or end of rule, found %s", describe(t))
		default:
			return nil, errAt(t.pos, "", "expected `always`, `never` or end of rule, found %s", describe(t))
		}
	}
}

func (p *parser) block(clause string) (Expr, *Error) {
	if _, err := p.expect(tLBrace, "`{` after `"+clause+"`"); err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind == tRBrace {
		return nil, errAt(t.pos, "", "empty `%s` clause: expected a condition", clause)
	}
	e, err := p.cond(false)
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(tRBrace, "`}` closing the `"+clause+"` clause (or `and`, `or`)"); err != nil {
		return nil, err
	}
	return e, nil
}

// cond parses an or/and/not expression; pred selects predicate atoms (inside
// .where) instead of condition atoms.
func (p *parser) cond(pred bool) (Expr, *Error) {
	first := p.peek().pos
	terms := []Expr{}
	for {
		e, err := p.and(pred)
		if err != nil {
			return nil, err
		}
		terms = append(terms, e)
		if !p.isKw(p.peek(), "or") {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return &Or{Pos: first, Terms: terms}, nil
}

func (p *parser) and(pred bool) (Expr, *Error) {
	first := p.peek().pos
	terms := []Expr{}
	for {
		e, err := p.not(pred)
		if err != nil {
			return nil, err
		}
		terms = append(terms, e)
		if !p.isKw(p.peek(), "and") {
			break
		}
		p.next()
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return &And{Pos: first, Terms: terms}, nil
}

func (p *parser) not(pred bool) (Expr, *Error) {
	t := p.peek()
	if !p.isKw(t, "not") {
		if pred {
			return p.predAtom()
		}
		return p.condAtom()
	}
	p.next()
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	defer p.leave()
	x, err := p.not(pred)
	if err != nil {
		return nil, err
	}
	return &Not{Pos: t.pos, X: x}, nil
}

func (p *parser) paren(pred bool) (Expr, *Error) {
	t := p.next()
	if err := p.enter(t.pos); err != nil {
		return nil, err
	}
	defer p.leave()
	e, err := p.cond(pred)
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(tRParen, "`)` (or `and`, `or`)"); err != nil {
		return nil, err
	}
	return e, nil
}

func (p *parser) condAtom() (Expr, *Error) {
	t := p.peek()
	switch {
	case t.kind == tLParen:
		return p.paren(false)
	case p.isKw(t, "count") && p.peekAt(1).kind == tLParen:
		return p.count()
	case t.kind == tString || (t.kind == tIdent && !keywords[t.text]):
		return p.spanCond()
	case t.kind == tIdent && (t.text == "AND" || t.text == "OR" || t.text == "NOT"):
		return nil, errAt(t.pos, "keywords are lower case: `"+strings.ToLower(t.text)+"`", "expected a span name, found %s", describe(t))
	}
	return nil, errAt(t.pos, "", "expected a span name, `count(…)`, `not` or `(`, found %s", describe(t))
}

// dotted reads ident {"." ident}, stopping before ".where(".
func (p *parser) dotted() []string {
	segs := []string{p.next().text}
	for p.peek().kind == tDot && p.peekAt(1).kind == tIdent &&
		!(p.peekAt(1).text == "where" && p.peekAt(2).kind == tLParen) {
		p.next()
		segs = append(segs, p.next().text)
	}
	return segs
}

// legacy recognises constructs of the older dialects right after a dotted name.
func (p *parser) legacy(segs []string, at Pos) *Error {
	name := strings.Join(segs, ".")
	next := p.peek()
	if next.kind == tLParen && (name == "trace.has" || strings.HasSuffix(name, ".has")) {
		return errAt(at, "write the pattern directly: `trace.has(a).where(x > 1) and not trace.has(b)` is `a.where(x > 1) and not b`", "`%s(…)` is the older dialect", name)
	}
	if next.kind == tLBrack && segs[len(segs)-1] == "attributes" {
		key := "key"
		if s := p.peekAt(1); s.kind == tString {
			key = s.val.Str
		}
		return errAt(at, "name the attribute inside a where: `span.attributes[\""+key+"\"] == \"POST\"` is `.where("+quote(key)+" == POST)` on a span pattern", "`%s[…]` is the older dialect", name)
	}
	if next.kind == tLParen {
		return errAt(next.pos, "the only function is `count(…)`; filters are written `name.where(…)`", "unexpected `(` after `%s`", name)
	}
	return nil
}

func (p *parser) pattern() (*Pattern, []string, *Error) {
	t := p.peek()
	pat := &Pattern{Pos: t.pos}
	var segs []string
	switch {
	case t.kind == tString:
		p.next()
		if t.val.Str == "" {
			return nil, nil, errAt(t.pos, "", "empty span name")
		}
		pat.Name = t.val.Str
	case t.kind == tIdent && !keywords[t.text]:
		segs = p.dotted()
		if err := p.legacy(segs, t.pos); err != nil {
			return nil, nil, err
		}
		pat.Name = strings.Join(segs, ".")
	default:
		return nil, nil, errAt(t.pos, "", "expected a span name, found %s", describe(t))
	}
	for p.peek().kind == tDot && p.isKw(p.peekAt(1), "where") && p.peekAt(2).kind == tLParen {
		p.next()
		p.next()
		lp := p.next()
		if err := p.enter(lp.pos); err != nil {
			return nil, nil, err
		}
		if p.peek().kind == tRParen {
			return nil, nil, errAt(p.peek().pos, "", "empty `.where()`: expected a predicate")
		}
		f, err := p.cond(true)
		p.leave()
		if err != nil {
			return nil, nil, err
		}
		if _, err := p.expect(tRParen, "`)` closing `.where(` (or `and`, `or`)"); err != nil {
			return nil, nil, err
		}
		pat.Filters = append(pat.Filters, f)
	}
	return pat, segs, nil
}

func isCompareStart(p *parser, t token) bool {
	return t.kind == tOp || p.isKw(t, "in") || p.isKw(t, "matches") || p.isKw(t, "contains")
}

func (p *parser) spanCond() (Expr, *Error) {
	start := p.peek().pos
	pat, segs, err := p.pattern()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	if !isCompareStart(p, t) {
		return &Exists{Pos: start, Pattern: pat}, nil
	}
	// shorthand: name.attr op value  ==  name.where(attr op value)
	switch {
	case len(pat.Filters) > 0:
		return nil, errAt(t.pos, "put the comparison inside the filter: `.where(attr "+t.text+" …)`", "unexpected %s after `.where(…)`", describe(t))
	case segs == nil:
		return nil, errAt(t.pos, "compare attributes inside a filter: "+quote(pat.Name)+".where(attr "+t.text+" …)", "a quoted span name cannot be compared")
	case segs[0] == "span" || segs[0] == "resource":
		return nil, errAt(start, "intrinsics and resource attributes are read inside a filter: `name.where("+strings.Join(segs, ".")+" "+t.text+" …)`", "`%s` cannot be compared outside `.where(…)`", strings.Join(segs, "."))
	case len(segs) < 2:
		return nil, errAt(t.pos, "write `span_name.attribute "+t.text+" …` or `span_name.where(attribute "+t.text+" …)`", "a comparison outside `.where(…)` needs a span name and an attribute, found only `%s`", segs[0])
	}
	pat.Name = strings.Join(segs[:len(segs)-1], ".")
	attrPos := start // the attribute is the last segment; report at the pattern
	cmp, err := p.comparison(Attr{Pos: attrPos, Kind: AttrSpan, Key: segs[len(segs)-1]}, attrPos)
	if err != nil {
		return nil, err
	}
	pat.Filters = []Expr{cmp}
	return &Exists{Pos: start, Pattern: pat}, nil
}

func (p *parser) count() (Expr, *Error) {
	t := p.next() // count
	p.next()      // (
	left, _, err := p.pattern()
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(tRParen, "`)` closing `count(`"); err != nil {
		return nil, err
	}
	opTok := p.peek()
	if opTok.kind != tOp {
		return nil, errAt(opTok.pos, "for example `count(http.retry) > 3`", "expected a comparison (== != < <= > >=) after `count(…)`, found %s", describe(opTok))
	}
	p.next()
	c := &Count{Pos: t.pos, Left: left, Op: opFromText(opTok.text)}
	v := p.peek()
	switch {
	case p.isKw(v, "count") && p.peekAt(1).kind == tLParen:
		p.next()
		p.next()
		if c.Right, _, err = p.pattern(); err != nil {
			return nil, err
		}
		if _, err := p.expect(tRParen, "`)` closing `count(`"); err != nil {
			return nil, err
		}
	case v.kind == tNumber && v.val.IsInt && v.val.Int >= 0:
		p.next()
		c.N = v.val.Int
	default:
		return nil, errAt(v.pos, "", "expected a whole number ≥ 0 or `count(…)`, found %s", describe(v))
	}
	return c, nil
}

func opFromText(s string) Op {
	for o, t := range opText {
		if t == s {
			return o
		}
	}
	return 0
}

var intrinsics = map[string]bool{IntrinsicName: true, IntrinsicService: true, IntrinsicKind: true, IntrinsicStatus: true, IntrinsicDuration: true}

func (p *parser) predAtom() (Expr, *Error) {
	t := p.peek()
	var a Attr
	switch {
	case t.kind == tLParen:
		return p.paren(true)
	case t.kind == tString:
		p.next()
		if t.val.Str == "" {
			return nil, errAt(t.pos, "", "empty attribute name")
		}
		a = Attr{Pos: t.pos, Kind: AttrSpan, Key: t.val.Str}
	case t.kind == tIdent && !keywords[t.text]:
		segs := p.dotted()
		if err := p.legacy(segs, t.pos); err != nil {
			return nil, err
		}
		if p.peek().kind == tDot && p.isKw(p.peekAt(1), "where") {
			return nil, errAt(p.peek().pos, "filters apply to span patterns, not attributes", "unexpected `.where` inside `.where(…)`")
		}
		a = Attr{Pos: t.pos, Kind: AttrSpan, Key: strings.Join(segs, ".")}
		switch {
		case segs[0] == "span" && len(segs) > 1:
			key := strings.Join(segs[1:], ".")
			if !intrinsics[key] {
				hint := "intrinsics are span.name, span.service, span.kind, span.status, span.duration; quote the name to read an attribute called " + quote(a.Key)
				if segs[1] == "attributes" {
					hint = "read attributes by name: `span.attributes.k` is `k` (or \"k\")"
				}
				return nil, errAt(t.pos, hint, "unknown intrinsic `%s`", a.Key)
			}
			a = Attr{Pos: t.pos, Kind: AttrIntrinsic, Key: key}
		case segs[0] == "resource" && len(segs) > 1:
			a = Attr{Pos: t.pos, Kind: AttrResource, Key: strings.Join(segs[1:], ".")}
		}
	case t.kind == tIdent && keywords[t.text]:
		return nil, errAt(t.pos, "quote an attribute named like a keyword: "+quote(t.text), "expected an attribute name, found %s", describe(t))
	default:
		return nil, errAt(t.pos, "", "expected an attribute name, `not` or `(`, found %s", describe(t))
	}
	if !isCompareStart(p, p.peek()) {
		if a.Kind == AttrIntrinsic {
			return nil, errAt(t.pos, "compare it, e.g. `span.status == error`", "`span.%s` is not a boolean", a.Key)
		}
		return &Truthy{Pos: t.pos, Attr: a}, nil
	}
	return p.comparison(a, t.pos)
}

var statusWords = map[string]bool{"ok": true, "error": true, "unset": true}
var kindWords = map[string]bool{"unspecified": true, "internal": true, "server": true, "client": true, "producer": true, "consumer": true}

// comparison parses `op value` after the attribute a and checks its types.
func (p *parser) comparison(a Attr, at Pos) (*Compare, *Error) {
	opTok := p.next()
	c := &Compare{Pos: at, Attr: a, Op: opFromText(opTok.text)}
	if opTok.kind == tIdent {
		c.Op = map[string]Op{"in": OpIn, "matches": OpMatches, "contains": OpContains}[opTok.text]
	}
	var err *Error
	switch c.Op {
	case OpIn:
		lb, err := p.expect(tLBrack, "`[` after `in`")
		if err != nil {
			return nil, err
		}
		c.Value = Value{Pos: lb.pos, Kind: ValList, List: []Value{}}
		if p.peek().kind != tRBrack {
			for {
				v, err := p.value()
				if err != nil {
					return nil, err
				}
				c.Value.List = append(c.Value.List, v)
				if p.peek().kind != tComma {
					break
				}
				p.next()
			}
		}
		if _, err := p.expect(tRBrack, "`,` or `]` in the list"); err != nil {
			return nil, err
		}
	case OpMatches, OpContains:
		s := p.peek()
		if s.kind != tString {
			return nil, errAt(s.pos, "", "expected a quoted string after `%s`, found %s", opTok.text, describe(s))
		}
		p.next()
		c.Value = s.val
		if c.Op == OpMatches {
			re, rerr := abi.CompileRegex(s.val.Str)
			switch {
			case errors.Is(rerr, abi.ErrRegexTooLarge):
				return nil, errAt(s.pos, "", "%v", rerr)
			case rerr != nil:
				return nil, errAt(s.pos, "the syntax is RE2 (no backreferences or lookaround)", "invalid %v", rerr)
			}
			c.Re = re
		}
	default:
		if c.Value, err = p.value(); err != nil {
			return nil, err
		}
		if c.Value.Kind == ValList {
			return nil, errAt(c.Value.Pos, "use `in [ … ]` to test membership", "a list needs `in`")
		}
	}
	return c, p.checkTypes(c)
}

func (p *parser) value() (Value, *Error) {
	t := p.peek()
	switch {
	case t.kind == tString || t.kind == tNumber || t.kind == tDuration:
		p.next()
		return t.val, nil
	case p.isKw(t, "true") || p.isKw(t, "false"):
		p.next()
		return Value{Pos: t.pos, Kind: ValBool, Bool: t.text == "true"}, nil
	case t.kind == tIdent && !keywords[t.text]:
		p.next()
		if n := p.peek(); n.kind == tDot || n.kind == tLParen || n.kind == tLBrack {
			return Value{}, errAt(t.pos, "comparing two attributes is not supported; quote the text if `"+t.text+"…` is meant as a string", "expected a value, found `%s%s`", t.text, n.text)
		}
		return Value{Pos: t.pos, Kind: ValString, Str: t.text}, nil
	case t.kind == tLBrack:
		return Value{Pos: t.pos, Kind: ValList}, nil // rejected by the caller
	}
	return Value{}, errAt(t.pos, "", "expected a value (string, number, duration, true, false or a bare word), found %s", describe(t))
}

func (p *parser) checkTypes(c *Compare) *Error {
	items := []Value{c.Value}
	if c.Op == OpIn {
		items = c.Value.List
	}
	if c.Attr.Kind == AttrIntrinsic {
		k := c.Attr.Key
		switch k {
		case IntrinsicDuration:
			if c.Op == OpMatches || c.Op == OpContains {
				return errAt(c.Pos, "", "`span.duration` is compared with durations, not `%s`", c.Op)
			}
			for _, v := range items {
				if v.Kind != ValDuration {
					hint := "write a duration literal such as 250ms or 2s"
					if v.Kind == ValNumber && v.IsInt && v.Int >= 0 {
						hint = "write a duration literal: " + formatDuration(v.Int) + " (a bare number would be nanoseconds)"
					}
					return errAt(v.Pos, hint, "`span.duration` is compared with a duration")
				}
			}
		case IntrinsicStatus, IntrinsicKind:
			words := statusWords
			list := "ok, error or unset"
			if k == IntrinsicKind {
				words, list = kindWords, "unspecified, internal, server, client, producer or consumer"
			}
			if c.Op != OpEq && c.Op != OpNe && c.Op != OpIn {
				return errAt(c.Pos, "", "`span.%s` supports ==, != and in", k)
			}
			for _, v := range items {
				if v.Kind != ValString || !words[v.Str] {
					hint := ""
					if v.Kind == ValString {
						w := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(v.Str, "STATUS_CODE_"), "SPAN_KIND_"))
						if words[w] {
							hint = "write `" + w + "`"
						}
					}
					return errAt(v.Pos, hint, "`span.%s` is one of %s", k, list)
				}
			}
		}
		return nil
	}
	for _, v := range items {
		if v.Kind == ValDuration {
			return errAt(v.Pos, "compare attributes with numbers (e.g. duration_ms > 250)", "durations compare only with `span.duration`")
		}
	}
	return nil
}
