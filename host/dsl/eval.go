package dsl

import (
	"errors"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/traces"
)

// Verdict is the outcome of evaluating one rule on one trace.
type Verdict struct {
	Fired bool
	// SpanIndex is the index in the input slice of the span the violation is
	// reported on: the first span by start time that satisfied the `when`
	// clause. It is -1 when the rule did not fire.
	SpanIndex int
	// Message names the clause that failed, e.g.
	// "payment.charge without fraud.check".
	Message string
}

// Evaluate runs the reference interpreter on a whole trace: the rule fires
// when `when` holds and the `always` condition does not, or the `never`
// condition does. A rule is immutable after Parse, so Evaluate may run
// concurrently on one rule.
func Evaluate(r *Rule, spans []traces.Span) (Verdict, error) {
	return EvaluateTrace(r, spans, 0)
}

// EvaluateTrace is Evaluate with the trace flags of the ABI header. On a
// fragment (abiv1.TraceFlagFragment: spans of the trace may be missing)
// only a verdict that every completion of the trace would share is
// reported: `never` holding where `when` and `never` are both FragmentSafe.
// An `always` that fails may fail only for want of a span held elsewhere,
// and so is never reported on a fragment.
func EvaluateTrace(r *Rule, spans []traces.Span, flags uint32) (Verdict, error) {
	none := Verdict{SpanIndex: -1}
	if r == nil || r.When == nil || (r.Always == nil && r.Never == nil) {
		return none, errors.New("dsl: rule needs a when clause and an always or never clause")
	}
	fragment := flags&abiv1.TraceFlagFragment != 0
	if fragment && !r.fragmentSafe() {
		return none, nil
	}
	if len(spans) == 0 || !evalCond(r.When, spans) {
		return none, nil
	}
	alwaysFailed := !fragment && r.Always != nil && !evalCond(r.Always, spans)
	neverHeld := r.Never != nil && evalCond(r.Never, spans)
	if !alwaysFailed && !neverHeld {
		return none, nil
	}
	return Verdict{Fired: true, SpanIndex: reportSpan(r.When, spans), Message: message(r, alwaysFailed, neverHeld)}, nil
}

// fragmentSafe says whether the rule's `never` verdict can be reported on a
// fragment: it has one, and both it and `when` are FragmentSafe.
func (r *Rule) fragmentSafe() bool {
	return r.Never != nil && FragmentSafe(r.When) && FragmentSafe(r.Never)
}

// FragmentSafe reports whether e, once true on some spans of a trace, stays
// true on the whole trace: built from span patterns, `and`, `or` and counts
// that must reach a number, with no `not` and no count bounded above or
// compared with another count. A `.where(…)` filter judges one span, which
// arrives whole, so anything may appear inside it.
func FragmentSafe(e Expr) bool {
	switch n := e.(type) {
	case *And:
		return !slices.ContainsFunc(n.Terms, func(t Expr) bool { return !FragmentSafe(t) })
	case *Or:
		return !slices.ContainsFunc(n.Terms, func(t Expr) bool { return !FragmentSafe(t) })
	case *Exists:
		return true
	case *Count:
		return n.Right == nil && (n.Op == OpGt || n.Op == OpGe)
	}
	return false
}

// message names what failed: "W without A", "W with N" or "W without A and
// with N", cut at a character boundary to fit abiv1.MaxMessageBytes.
func message(r *Rule, alwaysFailed, neverHeld bool) string {
	msg := ExprString(r.When)
	if alwaysFailed {
		msg += " without " + ExprString(r.Always)
	}
	if neverHeld {
		if alwaysFailed {
			msg += " and"
		}
		msg += " with " + ExprString(r.Never)
	}
	if len(msg) <= abiv1.MaxMessageBytes {
		return msg
	}
	const ellipsis = "…"
	cut := abiv1.MaxMessageBytes - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + ellipsis
}

// reportSpan picks the first span by start time (input order on ties) that
// matches a pattern occurring positively (under an even number of `not`s)
// in the when clause; if there is none, the first span by start time.
func reportSpan(when Expr, spans []traces.Span) int {
	var pats []*Pattern
	var collect func(e Expr, neg bool)
	collect = func(e Expr, neg bool) {
		switch n := e.(type) {
		case *And:
			for _, t := range n.Terms {
				collect(t, neg)
			}
		case *Or:
			for _, t := range n.Terms {
				collect(t, neg)
			}
		case *Not:
			collect(n.X, !neg)
		case *Exists:
			if !neg {
				pats = append(pats, n.Pattern)
			}
		case *Count:
			pats = append(pats, n.Left)
			if n.Right != nil {
				pats = append(pats, n.Right)
			}
		}
	}
	collect(when, false)
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return spans[order[a]].StartUnixNano < spans[order[b]].StartUnixNano })
	for _, i := range order {
		for _, p := range pats {
			if matchPattern(p, &spans[i]) {
				return i
			}
		}
	}
	return order[0]
}

func evalCond(e Expr, spans []traces.Span) bool {
	switch n := e.(type) {
	case *And:
		for _, t := range n.Terms {
			if !evalCond(t, spans) {
				return false
			}
		}
		return true
	case *Or:
		for _, t := range n.Terms {
			if evalCond(t, spans) {
				return true
			}
		}
		return false
	case *Not:
		return !evalCond(n.X, spans)
	case *Exists:
		for i := range spans {
			if matchPattern(n.Pattern, &spans[i]) {
				return true
			}
		}
		return false
	case *Count:
		l := countPattern(n.Left, spans)
		r := n.N
		if n.Right != nil {
			r = countPattern(n.Right, spans)
		}
		return cmpOrder(n.Op, compareInt(l, r))
	}
	return false
}

func countPattern(p *Pattern, spans []traces.Span) int64 {
	var c int64
	for i := range spans {
		if matchPattern(p, &spans[i]) {
			c++
		}
	}
	return c
}

func matchPattern(p *Pattern, s *traces.Span) bool {
	if s.Name != p.Name {
		return false
	}
	for _, f := range p.Filters {
		if !evalPred(f, s) {
			return false
		}
	}
	return true
}

func evalPred(e Expr, s *traces.Span) bool {
	switch n := e.(type) {
	case *And:
		for _, t := range n.Terms {
			if !evalPred(t, s) {
				return false
			}
		}
		return true
	case *Or:
		for _, t := range n.Terms {
			if evalPred(t, s) {
				return true
			}
		}
		return false
	case *Not:
		return !evalPred(n.X, s)
	case *Truthy:
		v, ok := lookup(s, n.Attr)
		return ok && ((v.kind == kBool && v.b) || (v.kind == kString && v.s == "true"))
	case *Compare:
		v, ok := lookup(s, n.Attr)
		if !ok {
			return false // every comparison with a missing attribute is false
		}
		switch n.Op {
		case OpEq:
			return equal(v, n.Value)
		case OpNe:
			return !equal(v, n.Value)
		case OpIn:
			for _, it := range n.Value.List {
				if equal(v, it) {
					return true
				}
			}
			return false
		case OpMatches:
			return n.Re.MatchString(v.text())
		case OpContains:
			return strings.Contains(v.text(), n.Value.Str)
		default:
			c, ok := order(v, n.Value)
			return ok && cmpOrder(n.Op, c)
		}
	}
	return false
}

func cmpOrder(op Op, c int) bool {
	switch op {
	case OpEq:
		return c == 0
	case OpNe:
		return c != 0
	case OpLt:
		return c < 0
	case OpLe:
		return c <= 0
	case OpGt:
		return c > 0
	case OpGe:
		return c >= 0
	}
	return false
}

func compareInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type valKind uint8

const (
	kString valKind = iota
	kBool
	kInt
	kFloat
	kDuration
)

// val is an attribute or intrinsic value read from a span.
type val struct {
	kind valKind
	s    string
	b    bool
	i    int64
	f    float64
}

func (v val) text() string {
	switch v.kind {
	case kBool:
		return strconv.FormatBool(v.b)
	case kInt, kDuration:
		return strconv.FormatInt(v.i, 10)
	case kFloat:
		return strconv.FormatFloat(v.f, 'g', -1, 64)
	}
	return v.s
}

// number reads v as a number: ints and doubles, and strings that parse as
// numbers. isInt reports an exact int64.
type number struct {
	isInt bool
	i     int64
	f     float64
}

func (v val) number() (number, bool) {
	switch v.kind {
	case kInt:
		return number{true, v.i, float64(v.i)}, true
	case kFloat:
		return number{false, 0, v.f}, !math.IsNaN(v.f)
	case kString:
		return parseNumber(v.s)
	}
	return number{}, false
}

func parseNumber(s string) (number, bool) {
	switch kind, i, f := abi.ParseNumber(s); kind {
	case abiv1.NumberInt:
		return number{true, i, f}, true
	case abiv1.NumberDouble:
		return number{false, 0, f}, true
	}
	return number{}, false
}

func literalNumber(l Value) (number, bool) {
	switch l.Kind {
	case ValNumber:
		return number{l.IsInt, l.Int, l.Float}, true
	case ValString:
		return parseNumber(l.Str)
	}
	return number{}, false
}

func compareNumbers(a, b number) int {
	if a.isInt && b.isInt {
		return compareInt(a.i, b.i)
	}
	return compareFloat(a.f, b.f)
}

// equal is the `==` of the typing table in api/dsl.md.
func equal(v val, l Value) bool {
	switch l.Kind {
	case ValBool:
		return (v.kind == kBool && v.b == l.Bool) || (v.kind == kString && v.s == strconv.FormatBool(l.Bool))
	case ValDuration:
		return v.kind == kDuration && v.i == l.Int
	case ValNumber:
		a, ok := v.number()
		return ok && compareNumbers(a, number{l.IsInt, l.Int, l.Float}) == 0
	case ValString:
		if v.kind == kInt || v.kind == kFloat {
			if b, ok := parseNumber(l.Str); ok {
				a, _ := v.number()
				return compareNumbers(a, b) == 0
			}
		}
		return v.text() == l.Str
	}
	return false
}

// order compares v with l for < <= > >=; ok is false when either side is not
// a number (or both durations).
func order(v val, l Value) (int, bool) {
	if l.Kind == ValDuration {
		if v.kind != kDuration {
			return 0, false
		}
		return compareInt(v.i, l.Int), true
	}
	a, ok := v.number()
	if !ok {
		return 0, false
	}
	b, ok := literalNumber(l)
	if !ok {
		return 0, false
	}
	return compareNumbers(a, b), true
}

var kindNames = map[uint8]string{abiv1.KindUnspecified: "unspecified", abiv1.KindInternal: "internal",
	abiv1.KindServer: "server", abiv1.KindClient: "client", abiv1.KindProducer: "producer", abiv1.KindConsumer: "consumer"}
var statusNames = map[uint8]string{abiv1.StatusUnset: "unset", abiv1.StatusOK: "ok", abiv1.StatusError: "error"}

func lookup(s *traces.Span, a Attr) (val, bool) {
	switch a.Kind {
	case AttrIntrinsic:
		switch a.Key {
		case IntrinsicName:
			return val{kind: kString, s: s.Name}, true
		case IntrinsicService:
			return val{kind: kString, s: s.Service}, true
		case IntrinsicKind:
			n, ok := kindNames[s.Kind]
			return val{kind: kString, s: n}, ok
		case IntrinsicStatus:
			n, ok := statusNames[s.StatusCode]
			return val{kind: kString, s: n}, ok
		case IntrinsicDuration:
			if s.EndUnixNano < s.StartUnixNano || s.EndUnixNano-s.StartUnixNano > math.MaxInt64 {
				return val{}, false
			}
			return val{kind: kDuration, i: int64(s.EndUnixNano - s.StartUnixNano)}, true
		}
		return val{}, false
	case AttrResource:
		return attrValue(s.ResourceAttrs, a.Key)
	}
	return attrValue(s.Attrs, a.Key)
}

func attrValue(attrs []traces.Attr, key string) (val, bool) {
	for i := range attrs {
		at := &attrs[i]
		if at.Key != key {
			continue
		}
		switch at.Type {
		case abiv1.ValueString, abiv1.ValueBytes, abiv1.ValueArray, abiv1.ValueMap:
			return val{kind: kString, s: at.Str}, true
		case abiv1.ValueBool:
			return val{kind: kBool, b: at.Num != 0}, true
		case abiv1.ValueInt:
			return val{kind: kInt, i: int64(at.Num)}, true
		case abiv1.ValueDouble:
			return val{kind: kFloat, f: math.Float64frombits(at.Num)}, true
		}
		return val{}, false // ValueEmpty: treated as missing
	}
	return val{}, false
}
