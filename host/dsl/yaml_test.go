package dsl

import (
	"fmt"
	"strconv"
	"strings"
)

// A small reader for the block-style YAML subset of the upstream example
// files: mappings, sequences, plain and quoted scalars (single-quoted ones
// may span lines). Maps are []kv to keep key order.

type kv struct {
	key string
	val any
}

// yscalar is a scalar with whether it was quoted (quoted scalars are strings).
type yscalar struct {
	text   string
	quoted bool
}

type yline struct {
	indent int
	text   string
	no     int
}

func parseYAML(src string) (any, error) {
	var lines []yline
	raw := strings.Split(src, "\n")
	for i := 0; i < len(raw); i++ {
		l := strings.TrimRight(raw[i], " \r")
		t := strings.TrimLeft(l, " ")
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		ind := len(l) - len(t)
		// join a single-quoted scalar that continues over several lines
		if k := strings.Index(t, ": '"); k >= 0 || strings.HasPrefix(t, "- '") {
			v := t[k+2:]
			if k < 0 {
				v = t[2:]
			}
			for !closedSingle(v) && i+1 < len(raw) {
				i++
				next := strings.TrimSpace(raw[i])
				if next == "" {
					v += "\n"
				} else {
					v += " " + next
				}
				t += " " + next
			}
		}
		lines = append(lines, yline{ind, t, i + 1})
	}
	p := &yparser{lines: lines}
	if len(lines) == 0 {
		return nil, nil
	}
	return p.block(lines[0].indent)
}

func closedSingle(v string) bool {
	if !strings.HasPrefix(v, "'") {
		return true
	}
	s := strings.ReplaceAll(v[1:], "''", "")
	return strings.HasSuffix(s, "'")
}

type yparser struct {
	lines []yline
	i     int
}

func (p *yparser) block(indent int) (any, error) {
	if strings.HasPrefix(p.lines[p.i].text, "- ") || p.lines[p.i].text == "-" {
		return p.seq(indent)
	}
	return p.mapping(indent)
}

func (p *yparser) seq(indent int) (any, error) {
	var out []any
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && strings.HasPrefix(p.lines[p.i].text, "- ") {
		rest := p.lines[p.i].text[2:]
		if isMapLine(rest) {
			// "- key: v" opens a mapping indented by two more columns
			p.lines[p.i] = yline{indent + 2, rest, p.lines[p.i].no}
			m, err := p.mapping(indent + 2)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
			continue
		}
		p.i++
		out = append(out, scalar(rest))
	}
	return out, nil
}

func isMapLine(t string) bool {
	if strings.HasPrefix(t, "'") || strings.HasPrefix(t, "\"") {
		return false
	}
	return strings.Contains(t, ": ") || strings.HasSuffix(t, ":")
}

func (p *yparser) mapping(indent int) (any, error) {
	var out []kv
	for p.i < len(p.lines) && p.lines[p.i].indent == indent {
		l := p.lines[p.i]
		if !isMapLine(l.text) {
			return nil, fmt.Errorf("line %d: expected key: value", l.no)
		}
		key, val, _ := strings.Cut(l.text, ":")
		val = strings.TrimSpace(val)
		p.i++
		if val != "" {
			out = append(out, kv{key, scalar(val)})
			continue
		}
		if p.i < len(p.lines) && (p.lines[p.i].indent > indent ||
			(p.lines[p.i].indent == indent && strings.HasPrefix(p.lines[p.i].text, "- "))) {
			v, err := p.block(p.lines[p.i].indent)
			if err != nil {
				return nil, err
			}
			out = append(out, kv{key, v})
		} else {
			out = append(out, kv{key, nil})
		}
	}
	if p.i < len(p.lines) && p.lines[p.i].indent > indent {
		return nil, fmt.Errorf("line %d: unexpected indentation", p.lines[p.i].no)
	}
	return out, nil
}

func scalar(v string) yscalar {
	switch {
	case strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") && len(v) >= 2:
		return yscalar{strings.ReplaceAll(v[1:len(v)-1], "''", "'"), true}
	case strings.HasPrefix(v, "\"") && strings.HasSuffix(v, "\"") && len(v) >= 2:
		if s, err := strconv.Unquote(v); err == nil {
			return yscalar{s, true}
		}
	}
	return yscalar{v, false}
}

func get(m any, key string) any {
	if kvs, ok := m.([]kv); ok {
		for _, e := range kvs {
			if e.key == key {
				return e.val
			}
		}
	}
	return nil
}

func str(v any) string {
	if s, ok := v.(yscalar); ok {
		return s.text
	}
	return ""
}
