package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// parseYAML parses the subset of YAML that api/openapi.yaml is written in:
// block mappings and sequences, flow mappings and sequences, plain, single-
// and double-quoted scalars, literal block scalars (|) and comments. Every
// scalar is a string; a missing value is nil. Anything else is an error.
//
// It is stricter than YAML in one way: a flow mapping entry without a
// value (`{a: b, c}`) is refused, because in this document it only ever
// comes from an unquoted comma inside a description, which silently turns
// the rest of the text into a key.
func parseYAML(src string) (any, error) {
	p := &yamlParser{}
	for i, raw := range strings.Split(src, "\n") {
		raw = strings.TrimRight(raw, "\r")
		if strings.HasPrefix(strings.TrimLeft(raw, " "), "\t") {
			return nil, fmt.Errorf("line %d: tab indentation", i+1)
		}
		text := strings.TrimLeft(raw, " ")
		p.lines = append(p.lines, yamlLine{n: i + 1, indent: len(raw) - len(text), text: text, raw: raw,
			blank: text == "" || strings.HasPrefix(text, "#")})
	}
	l, ok := p.peek()
	if !ok {
		return nil, nil
	}
	v, err := p.block(l.indent)
	if err != nil {
		return nil, err
	}
	if l, ok := p.peek(); ok {
		return nil, fmt.Errorf("line %d: unexpected content %q", l.n, l.text)
	}
	return v, nil
}

type yamlLine struct {
	n, indent int
	text, raw string
	blank     bool
}

type yamlParser struct {
	lines []yamlLine
	i     int
}

// peek returns the next line with content without consuming it.
func (p *yamlParser) peek() (yamlLine, bool) {
	for p.i < len(p.lines) && p.lines[p.i].blank {
		p.i++
	}
	if p.i == len(p.lines) {
		return yamlLine{}, false
	}
	return p.lines[p.i], true
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

func (p *yamlParser) block(indent int) (any, error) {
	l, _ := p.peek()
	if isSeqItem(l.text) {
		return p.seq(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) mapping(indent int) (map[string]any, error) {
	m := map[string]any{}
	for {
		l, ok := p.peek()
		if !ok || l.indent < indent {
			return m, nil
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.n)
		}
		if isSeqItem(l.text) {
			return nil, fmt.Errorf("line %d: a sequence item where a mapping key was expected", l.n)
		}
		key, rest, err := splitKey(l.text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", l.n, err)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.n, key)
		}
		p.i++
		v, err := p.value(rest, l.n, indent, true)
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
}

func (p *yamlParser) seq(indent int) ([]any, error) {
	var out []any
	for {
		l, ok := p.peek()
		if !ok || l.indent < indent {
			return out, nil
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.n)
		}
		if !isSeqItem(l.text) {
			return out, nil
		}
		content := strings.TrimPrefix(l.text, "-")
		trimmed := strings.TrimLeft(content, " ")
		col := indent + 1 + len(content) - len(trimmed)
		var v any
		var err error
		switch {
		case trimmed == "":
			p.i++
			v, err = p.value("", l.n, indent, false)
		case strings.ContainsAny(trimmed[:1], `{["'|`):
			p.i++
			v, err = p.value(trimmed, l.n, indent, false)
		default:
			if _, _, kerr := splitKey(trimmed); kerr == nil {
				// "- key: value" starts a mapping at the item's column.
				p.lines[p.i] = yamlLine{n: l.n, indent: col, text: trimmed, raw: l.raw}
				v, err = p.mapping(col)
			} else {
				p.i++
				v, err = p.value(trimmed, l.n, indent, false)
			}
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// value parses what follows "key:" (or "- ") on line n of a node indented
// by indent.
func (p *yamlParser) value(rest string, n, indent int, inMapping bool) (any, error) {
	rest = strings.TrimSpace(rest)
	switch {
	case rest == "" || strings.HasPrefix(rest, "#"):
		l, ok := p.peek()
		switch {
		case ok && l.indent > indent:
			return p.block(l.indent)
		case ok && inMapping && l.indent == indent && isSeqItem(l.text):
			return p.seq(indent)
		}
		return nil, nil
	case rest == "|" || rest == "|-":
		var lines []string
		min := -1
		for p.i < len(p.lines) {
			l := p.lines[p.i]
			if strings.TrimSpace(l.raw) != "" && l.indent <= indent {
				break
			}
			if strings.TrimSpace(l.raw) != "" && (min < 0 || l.indent < min) {
				min = l.indent
			}
			lines = append(lines, l.raw)
			p.i++
		}
		for i, l := range lines {
			if len(l) >= min && min >= 0 {
				lines[i] = l[min:]
			} else {
				lines[i] = ""
			}
		}
		s := strings.TrimRight(strings.Join(lines, "\n"), "\n")
		if rest == "|" {
			s += "\n"
		}
		return s, nil
	case rest[0] == '{' || rest[0] == '[':
		text := rest
		for !flowBalanced(text) {
			if p.i == len(p.lines) {
				return nil, fmt.Errorf("line %d: unterminated flow collection", n)
			}
			text += " " + strings.TrimSpace(p.lines[p.i].raw)
			p.i++
		}
		f := &flowParser{s: text, line: n}
		v, err := f.value(false)
		if err != nil {
			return nil, err
		}
		f.space()
		if f.i < len(f.s) && f.s[f.i] != '#' {
			return nil, fmt.Errorf("line %d: unexpected %q after a flow collection", n, f.s[f.i:])
		}
		return v, nil
	case rest[0] == '"' || rest[0] == '\'':
		s, end, err := quoted(rest, 0)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if tail := strings.TrimSpace(rest[end:]); tail != "" && !strings.HasPrefix(tail, "#") {
			return nil, fmt.Errorf("line %d: unexpected %q after a quoted scalar", n, tail)
		}
		return s, nil
	}
	return plainScalar(rest, n)
}

// plainScalar checks an unquoted scalar in block context.
func plainScalar(s string, n int) (string, error) {
	if i := strings.Index(s, " #"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if strings.Contains(s, ": ") || strings.HasSuffix(s, ":") {
		return "", fmt.Errorf("line %d: mapping values are not allowed here: the plain scalar %q contains \": \"; quote it", n, s)
	}
	if s != "" && strings.ContainsAny(s[:1], "&*!%@`>") {
		return "", fmt.Errorf("line %d: %q starts with a YAML indicator this parser does not support", n, s)
	}
	return s, nil
}

// splitKey splits "key: rest" (key plain or quoted).
func splitKey(text string) (key, rest string, err error) {
	if text[0] == '"' || text[0] == '\'' {
		k, end, err := quoted(text, 0)
		if err != nil {
			return "", "", err
		}
		after := text[end:]
		if !strings.HasPrefix(after, ":") || (len(after) > 1 && after[1] != ' ') {
			return "", "", fmt.Errorf("expected ':' after the key %q", k)
		}
		return k, after[1:], nil
	}
	if i := strings.Index(text, ": "); i > 0 {
		return strings.TrimSpace(text[:i]), text[i+2:], nil
	}
	if strings.HasSuffix(text, ":") && len(text) > 1 {
		return strings.TrimSpace(text[:len(text)-1]), "", nil
	}
	return "", "", fmt.Errorf("expected \"key: value\", got %q", text)
}

// quoted reads a quoted scalar starting at s[i]; end is just past it.
func quoted(s string, i int) (val string, end int, err error) {
	q := s[i]
	var b strings.Builder
	for j := i + 1; j < len(s); j++ {
		c := s[j]
		switch {
		case q == '\'' && c == '\'':
			if j+1 < len(s) && s[j+1] == '\'' {
				b.WriteByte('\'')
				j++
				continue
			}
			return b.String(), j + 1, nil
		case q == '"' && c == '"':
			return b.String(), j + 1, nil
		case q == '"' && c == '\\' && j+1 < len(s):
			j++
			switch s[j] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'u':
				if j+4 >= len(s) {
					return "", 0, fmt.Errorf("bad \\u escape")
				}
				r, perr := strconv.ParseUint(s[j+1:j+5], 16, 32)
				if perr != nil {
					return "", 0, fmt.Errorf("bad \\u escape")
				}
				b.WriteRune(rune(r))
				j += 4
			default:
				b.WriteByte(s[j])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated quoted scalar %q", s[i:])
}

// flowBalanced reports whether every bracket outside quotes is closed.
func flowBalanced(s string) bool {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"', '\'':
			if _, end, err := quoted(s, i); err == nil {
				i = end - 1
			} else {
				return false
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return depth <= 0
}

type flowParser struct {
	s    string
	i    int
	line int
}

func (f *flowParser) space() {
	for f.i < len(f.s) && f.s[f.i] == ' ' {
		f.i++
	}
}

func (f *flowParser) errorf(format string, args ...any) error {
	return fmt.Errorf("line %d: "+format, append([]any{f.line}, args...)...)
}

func (f *flowParser) value(key bool) (any, error) {
	f.space()
	if f.i == len(f.s) {
		return nil, f.errorf("unexpected end of a flow collection")
	}
	switch c := f.s[f.i]; c {
	case '{':
		f.i++
		m := map[string]any{}
		for {
			f.space()
			if f.i < len(f.s) && f.s[f.i] == '}' {
				f.i++
				return m, nil
			}
			kv, err := f.value(true)
			if err != nil {
				return nil, err
			}
			k, ok := kv.(string)
			if !ok {
				return nil, f.errorf("a flow mapping key must be a scalar")
			}
			f.space()
			if f.i == len(f.s) || f.s[f.i] != ':' {
				return nil, f.errorf("flow mapping entry %q has no value: is there an unquoted comma in a scalar before it? quote that scalar", k)
			}
			f.i++
			f.space()
			var v any
			if f.i < len(f.s) && f.s[f.i] != ',' && f.s[f.i] != '}' {
				if v, err = f.value(false); err != nil {
					return nil, err
				}
			}
			if _, dup := m[k]; dup {
				return nil, f.errorf("duplicate key %q", k)
			}
			m[k] = v
			f.space()
			if f.i < len(f.s) && f.s[f.i] == ',' {
				f.i++
			} else if f.i == len(f.s) || f.s[f.i] != '}' {
				return nil, f.errorf("expected ',' or '}' in a flow mapping at %q", f.s[f.i:])
			}
		}
	case '[':
		f.i++
		var out []any
		for {
			f.space()
			if f.i < len(f.s) && f.s[f.i] == ']' {
				f.i++
				return out, nil
			}
			v, err := f.value(false)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			f.space()
			if f.i < len(f.s) && f.s[f.i] == ',' {
				f.i++
			} else if f.i == len(f.s) || f.s[f.i] != ']' {
				return nil, f.errorf("expected ',' or ']' in a flow sequence at %q", f.s[f.i:])
			}
		}
	case '"', '\'':
		s, end, err := quoted(f.s, f.i)
		if err != nil {
			return nil, f.errorf("%v", err)
		}
		f.i = end
		return s, nil
	}
	start := f.i
	for f.i < len(f.s) {
		c := f.s[f.i]
		if c == ',' || c == '}' || c == ']' || c == '[' || c == '{' {
			break
		}
		if c == ':' && (f.i+1 == len(f.s) || strings.ContainsRune(" ,}]", rune(f.s[f.i+1]))) {
			if !key {
				return nil, f.errorf("mapping values are not allowed here: %q contains \": \"; quote it", f.s[start:])
			}
			break
		}
		f.i++
	}
	s := strings.TrimSpace(f.s[start:f.i])
	if s == "" {
		return nil, f.errorf("empty scalar at %q", f.s[start:])
	}
	return s, nil
}

func TestParseYAML(t *testing.T) {
	for _, c := range []struct {
		src  string
		want string // fmt %v of the result, or "error"
	}{
		{"a: b\nc:\n  d: e\n  f: [1, 'two', \"3\"]\n", "map[a:b c:map[d:e f:[1 two 3]]]"},
		{"a:\n- x\n- y: z\n  w: v\n", "map[a:[x map[w:v y:z]]]"},
		{"a:\n  - {k: v, l: [m, n]}\n  - plain text\n", "map[a:[map[k:v l:[m n]] plain text]]"},
		{"a: |\n  line one\n\n  line two\nb: c\n", "map[a:line one\n\nline two\n b:c]"},
		{"\"200\": {description: ok}\n# comment\n'x': 'it''s'\n", "map[200:map[description:ok] x:it's]"},
		{"a: {b: {c: d}}  # trailing\n", "map[a:map[b:map[c:d]]]"},
		{"a: {b: c,\n  d: e}\n", "map[a:map[b:c d:e]]"},
		{"a: text (default: x)\n", "error"},
		{"a: {description: one, two}\n", "error"},
		{"a: {description: 'one, two'}\n", "map[a:map[description:one, two]]"},
		{"a: b\na: c\n", "error"},
		{"a:\n    b: c\n  d: e\n", "error"},
		{"a: [b, c\n", "error"},
	} {
		got, err := parseYAML(c.src)
		s := fmt.Sprintf("%v", got)
		if err != nil {
			s = "error"
		}
		if s != c.want {
			t.Errorf("parseYAML(%q) = %q (%v), want %q", c.src, s, err, c.want)
		}
	}
}
