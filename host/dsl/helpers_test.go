package dsl

import (
	"math"
	"reflect"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/traces"
)

func sAttr(k, v string) traces.Attr { return traces.Attr{Key: k, Type: abiv1.ValueString, Str: v} }
func iAttr(k string, v int64) traces.Attr {
	return traces.Attr{Key: k, Type: abiv1.ValueInt, Num: uint64(v)}
}
func fAttr(k string, v float64) traces.Attr {
	return traces.Attr{Key: k, Type: abiv1.ValueDouble, Num: math.Float64bits(v)}
}
func bAttr(k string, v bool) traces.Attr {
	n := uint64(0)
	if v {
		n = 1
	}
	return traces.Attr{Key: k, Type: abiv1.ValueBool, Num: n}
}

// sp builds a span starting at start (ns) lasting 1ms unless changed.
func sp(name string, start uint64, attrs ...traces.Attr) traces.Span {
	return traces.Span{Name: name, StartUnixNano: start, EndUnixNano: start + 1e6, Attrs: attrs}
}

// stripPos returns a copy-free normalisation of r for structural comparison:
// positions zeroed and compiled regexps dropped (their source stays in Value).
func stripPos(r *Rule) *Rule {
	out := &Rule{When: stripExpr(r.When), Always: stripExpr(r.Always), Never: stripExpr(r.Never)}
	return out
}

func stripPattern(p *Pattern) *Pattern {
	if p == nil {
		return nil
	}
	q := &Pattern{Name: p.Name}
	for _, f := range p.Filters {
		q.Filters = append(q.Filters, stripExpr(f))
	}
	return q
}

func stripValue(v Value) Value {
	v.Pos = Pos{}
	if v.List != nil {
		l := make([]Value, len(v.List))
		for i, it := range v.List {
			l[i] = stripValue(it)
		}
		v.List = l
	}
	return v
}

func stripExpr(e Expr) Expr {
	switch n := e.(type) {
	case nil:
		return nil
	case *And:
		o := &And{}
		for _, t := range n.Terms {
			o.Terms = append(o.Terms, stripExpr(t))
		}
		return o
	case *Or:
		o := &Or{}
		for _, t := range n.Terms {
			o.Terms = append(o.Terms, stripExpr(t))
		}
		return o
	case *Not:
		return &Not{X: stripExpr(n.X)}
	case *Exists:
		return &Exists{Pattern: stripPattern(n.Pattern)}
	case *Count:
		return &Count{Left: stripPattern(n.Left), Op: n.Op, Right: stripPattern(n.Right), N: n.N}
	case *Compare:
		return &Compare{Attr: Attr{Kind: n.Attr.Kind, Key: n.Attr.Key}, Op: n.Op, Value: stripValue(n.Value)}
	case *Truthy:
		return &Truthy{Attr: Attr{Kind: n.Attr.Kind, Key: n.Attr.Key}}
	}
	panic("unknown node")
}

func sameAST(a, b *Rule) bool { return reflect.DeepEqual(stripPos(a), stripPos(b)) }
