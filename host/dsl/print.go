package dsl

import (
	"strconv"
	"strings"
)

// String renders the rule as canonical source: one clause per line, always
// before never, minimal parentheses, shorthand comparisons as .where(...).
func (r *Rule) String() string {
	var b strings.Builder
	b.WriteString("when { " + ExprString(r.When) + " }")
	if r.Always != nil {
		b.WriteString("\nalways { " + ExprString(r.Always) + " }")
	}
	if r.Never != nil {
		b.WriteString("\nnever { " + ExprString(r.Never) + " }")
	}
	return b.String()
}

// ExprString renders a condition or predicate as canonical source.
func ExprString(e Expr) string {
	var b strings.Builder
	writeExpr(&b, e)
	return b.String()
}

func writeTerms(b *strings.Builder, terms []Expr, sep string, parenIf func(Expr) bool) {
	for i, t := range terms {
		if i > 0 {
			b.WriteString(sep)
		}
		if parenIf(t) {
			b.WriteByte('(')
			writeExpr(b, t)
			b.WriteByte(')')
		} else {
			writeExpr(b, t)
		}
	}
}

func writeExpr(b *strings.Builder, e Expr) {
	switch n := e.(type) {
	case *Or:
		writeTerms(b, n.Terms, " or ", func(t Expr) bool { _, ok := t.(*Or); return ok })
	case *And:
		writeTerms(b, n.Terms, " and ", func(t Expr) bool {
			switch t.(type) {
			case *Or, *And:
				return true
			}
			return false
		})
	case *Not:
		b.WriteString("not ")
		switch n.X.(type) {
		case *Or, *And:
			b.WriteByte('(')
			writeExpr(b, n.X)
			b.WriteByte(')')
		default:
			writeExpr(b, n.X)
		}
	case *Exists:
		writePattern(b, n.Pattern)
	case *Count:
		b.WriteString("count(")
		writePattern(b, n.Left)
		b.WriteString(") " + n.Op.String() + " ")
		if n.Right != nil {
			b.WriteString("count(")
			writePattern(b, n.Right)
			b.WriteString(")")
		} else {
			b.WriteString(strconv.FormatInt(n.N, 10))
		}
	case *Compare:
		writeAttr(b, n.Attr)
		b.WriteString(" " + n.Op.String() + " ")
		if n.Op == OpMatches || n.Op == OpContains {
			b.WriteString(quote(n.Value.Str))
		} else {
			writeValue(b, n.Value)
		}
	case *Truthy:
		writeAttr(b, n.Attr)
	}
}

func isIdent(s string) bool {
	if s == "" || !isLetter(rune(s[0])) {
		return false
	}
	for _, r := range s {
		if !isIdentRune(r) {
			return false
		}
	}
	return true
}

// dottedOK reports whether name can be written unquoted as a dotted name.
func dottedOK(name string) bool {
	segs := strings.Split(name, ".")
	if keywords[segs[0]] {
		return false
	}
	for _, s := range segs {
		if !isIdent(s) || s == "where" {
			return false
		}
	}
	return true
}

func writePattern(b *strings.Builder, p *Pattern) {
	if dottedOK(p.Name) && !strings.HasSuffix(p.Name, ".has") {
		b.WriteString(p.Name)
	} else {
		b.WriteString(quote(p.Name))
	}
	for _, f := range p.Filters {
		b.WriteString(".where(")
		writeExpr(b, f)
		b.WriteString(")")
	}
}

func writeAttr(b *strings.Builder, a Attr) {
	switch a.Kind {
	case AttrIntrinsic:
		b.WriteString("span." + a.Key)
	case AttrResource:
		b.WriteString("resource." + a.Key)
	default:
		first, _, _ := strings.Cut(a.Key, ".")
		segs := strings.Split(a.Key, ".")
		if dottedOK(a.Key) && first != "span" && first != "resource" && segs[len(segs)-1] != "attributes" &&
			!strings.HasSuffix(a.Key, ".has") {
			b.WriteString(a.Key)
		} else {
			b.WriteString(quote(a.Key))
		}
	}
}

func writeValue(b *strings.Builder, v Value) {
	switch v.Kind {
	case ValString:
		if isIdent(v.Str) && !keywords[v.Str] {
			b.WriteString(v.Str)
		} else {
			b.WriteString(quote(v.Str))
		}
	case ValNumber:
		if v.IsInt {
			b.WriteString(strconv.FormatInt(v.Int, 10))
		} else {
			s := strconv.FormatFloat(v.Float, 'g', -1, 64)
			if !strings.ContainsAny(s, ".e") {
				s += ".0"
			}
			b.WriteString(s)
		}
	case ValBool:
		b.WriteString(strconv.FormatBool(v.Bool))
	case ValDuration:
		b.WriteString(formatDuration(v.Int))
	case ValList:
		b.WriteByte('[')
		for i, it := range v.List {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, it)
		}
		b.WriteByte(']')
	}
}

func formatDuration(ns int64) string {
	for i := len(durationUnits) - 1; i >= 0; i-- {
		u := durationUnits[i]
		if u.name == "µs" {
			continue
		}
		if ns%u.ns == 0 && (ns != 0 || u.name == "s") {
			return strconv.FormatInt(ns/u.ns, 10) + u.name
		}
	}
	return strconv.FormatInt(ns, 10) + "ns"
}
