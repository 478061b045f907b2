package dsl

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits that bound parsing work.
const (
	MaxSourceBytes = 65536 // rule text
	MaxDepth       = 64    // nesting of (, not and .where(
)

// Error is a parse error at a line and column. Hint, when set, shows the
// equivalent in this language of a construct from an older dialect.
type Error struct {
	Line, Column int
	Message      string
	Hint         string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Message)
	if e.Hint != "" {
		s += " (hint: " + e.Hint + ")"
	}
	return s
}

func errAt(p Pos, hint, format string, args ...any) *Error {
	return &Error{Line: p.Line, Column: p.Column, Message: fmt.Sprintf(format, args...), Hint: hint}
}

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tString
	tNumber
	tDuration
	tOp
	tLBrace
	tRBrace
	tLParen
	tRParen
	tLBrack
	tRBrack
	tComma
	tDot
)

type token struct {
	kind tokKind
	pos  Pos
	text string // identifier, operator or source text of a literal
	val  Value  // for tString, tNumber, tDuration
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of rule"
	case tString:
		return "string " + quote(t.val.Str)
	case tIdent:
		if keywords[t.text] {
			return "keyword `" + t.text + "`"
		}
		return "`" + t.text + "`"
	}
	return "`" + t.text + "`"
}

var keywords = map[string]bool{"when": true, "always": true, "never": true, "and": true, "or": true,
	"not": true, "count": true, "in": true, "matches": true, "contains": true, "true": true, "false": true}

type lexer struct {
	src  string
	i    int
	line int
	col  int
}

func (l *lexer) pos() Pos { return Pos{l.line, l.col} }

func (l *lexer) peekRune(off int) rune {
	j := l.i
	for ; off > 0 && j < len(l.src); off-- {
		_, n := utf8.DecodeRuneInString(l.src[j:])
		j += n
	}
	if j >= len(l.src) {
		return 0
	}
	r, _ := utf8.DecodeRuneInString(l.src[j:])
	return r
}

func (l *lexer) advance() rune {
	r, n := utf8.DecodeRuneInString(l.src[l.i:])
	l.i += n
	if r == '\n' {
		l.line++
		l.col = 1
	} else {
		l.col++
	}
	return r
}

func isLetter(r rune) bool { return r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') }
func isDigit(r rune) bool  { return r >= '0' && r <= '9' }
func isIdentRune(r rune) bool {
	return isLetter(r) || isDigit(r) || r == '-'
}

func lex(src string) ([]token, *Error) {
	if len(src) > MaxSourceBytes {
		return nil, &Error{Line: 1, Column: 1, Message: fmt.Sprintf("rule is %d bytes; the limit is %d", len(src), MaxSourceBytes)}
	}
	if !utf8.ValidString(src) {
		return nil, &Error{Line: 1, Column: 1, Message: "rule text is not valid UTF-8"}
	}
	l := &lexer{src: src, line: 1, col: 1}
	var toks []token
	for {
		// skip blanks and // comments
		for l.i < len(l.src) {
			r := l.peekRune(0)
			if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
				l.advance()
			} else if r == '/' && l.peekRune(1) == '/' {
				for l.i < len(l.src) && l.peekRune(0) != '\n' {
					l.advance()
				}
			} else {
				break
			}
		}
		p := l.pos()
		if l.i >= len(l.src) {
			return append(toks, token{kind: tEOF, pos: p}), nil
		}
		r := l.peekRune(0)
		r1 := l.peekRune(1)
		simple := func(k tokKind, n int) {
			start := l.i
			for ; n > 0; n-- {
				l.advance()
			}
			toks = append(toks, token{kind: k, pos: p, text: l.src[start:l.i]})
		}
		switch {
		case isLetter(r):
			start := l.i
			for l.i < len(l.src) && isIdentRune(l.peekRune(0)) {
				l.advance()
			}
			toks = append(toks, token{kind: tIdent, pos: p, text: l.src[start:l.i]})
		case isDigit(r) || (r == '-' && isDigit(r1)):
			t, err := l.number(p)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
		case r == '"':
			t, err := l.str(p)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
		case r == '=' && r1 == '=', r == '!' && r1 == '=', r == '<' && r1 == '=', r == '>' && r1 == '=':
			simple(tOp, 2)
		case r == '<' || r == '>':
			simple(tOp, 1)
		case r == '{':
			simple(tLBrace, 1)
		case r == '}':
			simple(tRBrace, 1)
		case r == '(':
			simple(tLParen, 1)
		case r == ')':
			simple(tRParen, 1)
		case r == '[':
			simple(tLBrack, 1)
		case r == ']':
			simple(tRBrack, 1)
		case r == ',':
			simple(tComma, 1)
		case r == '.':
			simple(tDot, 1)
		case r == '&' && r1 == '&':
			return nil, errAt(p, "write `and`: `a && b` is `a and b`", "unexpected `&&`")
		case r == '|' && r1 == '|':
			return nil, errAt(p, "write `or`: `a || b` is `a or b`", "unexpected `||`")
		case r == '!':
			return nil, errAt(p, "write `not`: `!a` is `not a`", "unexpected `!`")
		case r == '=':
			return nil, errAt(p, "equality is `==`", "unexpected `=`")
		case r == '\'':
			return nil, errAt(p, "strings use double quotes: \"text\"", "unexpected `'`")
		default:
			return nil, errAt(p, "", "unexpected character %q", r)
		}
	}
}

var durationUnits = []struct {
	name string
	ns   int64
}{{"ns", 1}, {"us", 1e3}, {"µs", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}}

func (l *lexer) number(p Pos) (token, *Error) {
	start := l.i
	if l.peekRune(0) == '-' {
		l.advance()
	}
	for isDigit(l.peekRune(0)) {
		l.advance()
	}
	isInt := true
	if l.peekRune(0) == '.' && isDigit(l.peekRune(1)) {
		isInt = false
		l.advance()
		for isDigit(l.peekRune(0)) {
			l.advance()
		}
	}
	numEnd := l.i
	// exponent
	if r := l.peekRune(0); r == 'e' || r == 'E' {
		r1 := l.peekRune(1)
		if isDigit(r1) || ((r1 == '+' || r1 == '-') && isDigit(l.peekRune(2))) {
			isInt = false
			l.advance()
			if r1 == '+' || r1 == '-' {
				l.advance()
			}
			for isDigit(l.peekRune(0)) {
				l.advance()
			}
			numEnd = l.i
		}
	}
	num := l.src[start:numEnd]
	// a unit suffix makes a duration
	unitStart := l.i
	for isLetter(l.peekRune(0)) || l.peekRune(0) == 'µ' {
		l.advance()
	}
	unit := l.src[unitStart:l.i]
	if isIdentRune(l.peekRune(0)) {
		return token{}, errAt(p, "", "malformed number %q", l.src[start:l.i+1])
	}
	if unit != "" {
		var mult int64
		for _, u := range durationUnits {
			if u.name == unit {
				mult = u.ns
			}
		}
		if mult == 0 {
			return token{}, errAt(p, "duration units are ns, us, ms, s, m, h", "unknown unit %q in %q", unit, l.src[start:l.i])
		}
		if num[0] == '-' {
			return token{}, errAt(p, "", "durations cannot be negative")
		}
		if strings.ContainsAny(num, "eE") {
			return token{}, errAt(p, "", "durations are written without exponents: %q", l.src[start:l.i])
		}
		ns, ok := durationNanos(num, mult)
		if !ok {
			return token{}, errAt(p, "use a smaller unit", "duration %q is out of range or not a whole number of nanoseconds", l.src[start:l.i])
		}
		return token{kind: tDuration, pos: p, text: l.src[start:l.i], val: Value{Pos: p, Kind: ValDuration, Int: ns}}, nil
	}
	v := Value{Pos: p, Kind: ValNumber}
	if isInt {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return token{}, errAt(p, "", "integer %s is out of range", num)
		}
		v.Int, v.IsInt, v.Float = n, true, float64(n)
	} else {
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || math.IsInf(f, 0) {
			return token{}, errAt(p, "", "number %s is out of range", num)
		}
		v.Float = f
	}
	return token{kind: tNumber, pos: p, text: num, val: v}, nil
}

// durationNanos computes whole * mult exactly from a decimal text.
func durationNanos(num string, mult int64) (int64, bool) {
	whole, frac, _ := strings.Cut(num, ".")
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/mult {
		return 0, false
	}
	ns := w * mult
	scale := mult
	for _, d := range frac {
		if scale%10 != 0 {
			if d != '0' {
				return 0, false
			}
			continue
		}
		scale /= 10
		add := int64(d-'0') * scale
		if ns > math.MaxInt64-add {
			return 0, false
		}
		ns += add
	}
	return ns, true
}

func (l *lexer) str(p Pos) (token, *Error) {
	start := l.i
	l.advance() // opening quote
	var b strings.Builder
	for {
		if l.i >= len(l.src) {
			return token{}, errAt(p, "", "unterminated string")
		}
		ep := l.pos()
		r := l.advance()
		switch r {
		case '"':
			return token{kind: tString, pos: p, text: l.src[start:l.i], val: Value{Pos: p, Kind: ValString, Str: b.String()}}, nil
		case '\n':
			return token{}, errAt(p, "write \\n for a newline inside a string", "unterminated string (strings end on their line)")
		case '\\':
			if l.i >= len(l.src) {
				return token{}, errAt(p, "", "unterminated string")
			}
			e := l.advance()
			switch e {
			case '"', '\\', '/':
				b.WriteRune(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'u':
				if l.i+4 > len(l.src) {
					return token{}, errAt(ep, "", "\\u needs four hex digits")
				}
				n, err := strconv.ParseUint(l.src[l.i:l.i+4], 16, 32)
				if err != nil || (n >= 0xD800 && n < 0xE000) {
					return token{}, errAt(ep, "", "\\u needs four hex digits naming a character")
				}
				for k := 0; k < 4; k++ {
					l.advance()
				}
				b.WriteRune(rune(n))
			default:
				return token{}, errAt(ep, "escapes are \\\" \\\\ \\/ \\n \\t \\r \\uXXXX", "unknown escape \\%c", e)
			}
		default:
			b.WriteRune(r)
		}
	}
}

// quote renders s as a string literal of the language.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
