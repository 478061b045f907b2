package deploytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// expression is one PromQL expression of a deployment file.
type expression struct {
	where string // file and rule or panel, for messages
	expr  string
}

// ruleFile is what the tests need of a Prometheus rule file.
type ruleFile struct {
	exprs    []expression
	recorded []string          // names defined by `record:` rules
	runbooks map[string]string // alert name -> runbook_url
}

var (
	ruleKeyRe = regexp.MustCompile(`^(\s*(?:-\s+)?)(alert|record|expr|runbook_url):(?:\s+(.*))?$`)
	blockRe   = regexp.MustCompile(`^[|>][-+0-9]*\s*(#.*)?$`)
)

// parseRuleFile reads the rules of a Prometheus rule file without a YAML
// library: it understands the keys alert, record, expr and runbook_url with
// plain, quoted or block (| or >) values, which is how rule files are
// written. Every alert or record must have exactly one expr.
func parseRuleFile(name, src string) (*ruleFile, error) {
	rf := &ruleFile{runbooks: map[string]string{}}
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	rule, exprs := "", 0
	closeRule := func(line int) error {
		if rule != "" && exprs != 1 {
			return fmt.Errorf("%s: rule %s (before line %d) has %d expr keys, want 1", name, rule, line, exprs)
		}
		return nil
	}
	for i := 0; i < len(lines); i++ {
		m := ruleKeyRe.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, key, raw := len(m[1]), m[2], strings.TrimSpace(m[3])
		// The value and its continuation lines: every following line that
		// is blank or indented deeper than the key (whose column counts a
		// leading "- ").
		var cont []string
		for i+1 < len(lines) {
			next := lines[i+1]
			if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
				break
			}
			cont = append(cont, next)
			i++
		}
		value, err := yamlScalar(raw, cont)
		if err != nil {
			return nil, fmt.Errorf("%s: line %d: %v", name, i+1, err)
		}
		switch key {
		case "alert", "record":
			if err := closeRule(i + 1); err != nil {
				return nil, err
			}
			rule, exprs = value, 0
			if key == "record" {
				rf.recorded = append(rf.recorded, value)
			}
		case "expr":
			if rule == "" {
				return nil, fmt.Errorf("%s: line %d: expr outside a rule", name, i+1)
			}
			exprs++
			rf.exprs = append(rf.exprs, expression{where: name + " " + rule, expr: value})
		case "runbook_url":
			if rule != "" {
				rf.runbooks[rule] = value
			}
		}
	}
	if err := closeRule(len(lines)); err != nil {
		return nil, err
	}
	return rf, nil
}

// yamlScalar is the value of a YAML scalar that starts as raw on the key's
// line and continues on cont.
func yamlScalar(raw string, cont []string) (string, error) {
	switch {
	case blockRe.MatchString(raw):
		return strings.TrimSpace(dedent(cont)), nil
	case strings.HasPrefix(raw, `"`):
		s := strings.TrimSpace(raw + " " + strings.TrimSpace(strings.Join(cont, " ")))
		v, err := strconv.Unquote(s)
		if err != nil {
			return "", fmt.Errorf("double-quoted value %s: %v", s, err)
		}
		return v, nil
	case strings.HasPrefix(raw, "'"):
		s := strings.TrimSpace(raw + " " + strings.TrimSpace(strings.Join(cont, " ")))
		if len(s) < 2 || !strings.HasSuffix(s, "'") {
			return "", fmt.Errorf("unterminated single-quoted value %s", s)
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	}
	// A plain scalar: a comment ends it; continuation lines fold into it.
	if j := strings.Index(raw, " #"); j >= 0 {
		raw = raw[:j]
	}
	parts := []string{raw}
	for _, c := range cont {
		if c = strings.TrimSpace(c); c != "" {
			parts = append(parts, c)
		}
	}
	return strings.TrimSpace(strings.Join(parts, " ")), nil
}

func dedent(lines []string) string {
	least := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if n := len(l) - len(strings.TrimLeft(l, " ")); least < 0 || n < least {
			least = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if least >= 0 && len(l) >= least {
			out[i] = l[least:]
		}
	}
	return strings.Join(out, "\n")
}

// grafanaExprs returns the Prometheus expressions of a Grafana dashboard:
// the expr of every query target and the query of every query variable,
// except those whose datasource names a type other than prometheus.
// Grafana's variable functions are reduced to the PromQL they hold.
func grafanaExprs(name string, src []byte) ([]expression, error) {
	var doc any
	if err := json.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	var out []expression
	var walk func(v any, path string, dsType string)
	walk = func(v any, path string, dsType string) {
		switch v := v.(type) {
		case map[string]any:
			if ds, ok := v["datasource"].(map[string]any); ok {
				if typ, ok := ds["type"].(string); ok && typ != "" {
					dsType = typ
				}
			}
			where := path
			if title, ok := v["title"].(string); ok {
				where = path + " " + strconv.Quote(title)
			}
			promQL := dsType == "" || dsType == "prometheus"
			if e, ok := v["expr"].(string); ok && promQL && strings.TrimSpace(e) != "" {
				out = append(out, expression{where: name + where, expr: e})
			}
			if v["type"] == "query" && promQL {
				q := v["query"]
				if m, ok := q.(map[string]any); ok {
					q = m["query"]
				}
				if s, ok := q.(string); ok {
					if e := variableQuery(s); e != "" {
						out = append(out, expression{where: name + where + " variable " + fmt.Sprint(v["name"]), expr: e})
					}
				}
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				walk(v[k], where+"."+k, dsType)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", path, i), dsType)
			}
		}
	}
	walk(doc, "", "")
	return out, nil
}

var (
	labelValuesRe = regexp.MustCompile(`^\s*label_values\(\s*(.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	queryResultRe = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
	otherVarRe    = regexp.MustCompile(`^\s*(label_values|label_names|metrics)\(`)
)

// variableQuery is the PromQL inside a Grafana variable query, or "".
func variableQuery(q string) string {
	if m := labelValuesRe.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if m := queryResultRe.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if otherVarRe.MatchString(q) {
		return "" // label_values(label), label_names(), metrics(regex): no metric
	}
	return q
}

var (
	stringRe   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	grafVarRe  = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]`)
	commentRe  = regexp.MustCompile(`#[^\n]*`)
	bracesRe   = regexp.MustCompile(`\{[^}]*\}`)
	bracketsRe = regexp.MustCompile(`\[[^\]]*\]`)
	groupingRe = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	offsetRe   = regexp.MustCompile(`(?i)\boffset\s+-?[0-9A-Za-z]+|@\s*-?[0-9.]+`)
	// A token is a number (starting with a digit or a dot: 25e6, 0.8, 5m,
	// 0x1f) or an identifier; numbers are matched so that their tail (e6)
	// is never taken for an identifier.
	tokenRe = regexp.MustCompile(`[0-9.][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
)

// promQLKeywords are identifiers of PromQL that are not metric names
// (case-insensitive).
var promQLKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "atan2": true, "bool": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"offset": true, "inf": true, "nan": true,
}

// metricNames returns the metric names an expression selects, sorted and
// without duplicates: every identifier that is not in a string, a label
// matcher, a range, a grouping clause or a number, is not a keyword and is
// not called as a function.
func metricNames(expr string) []string {
	s := stringRe.ReplaceAllString(expr, `""`)
	s = grafVarRe.ReplaceAllString(s, " ")
	s = commentRe.ReplaceAllString(s, " ")
	s = bracesRe.ReplaceAllString(s, " ")
	s = bracketsRe.ReplaceAllString(s, " ")
	s = groupingRe.ReplaceAllString(s, " ")
	s = offsetRe.ReplaceAllString(s, " ")
	var names []string
	for _, loc := range tokenRe.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if c := tok[0]; c == '.' || (c >= '0' && c <= '9') {
			continue
		}
		if promQLKeywords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		names = append(names, tok)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

var matcherRe = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}`)
var labelNameRe = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')`)

// selectorLabels returns, for each metric selected with label matchers
// (name{label="v", ...}), the label names matched.
func selectorLabels(expr string) map[string][]string {
	out := map[string][]string{}
	for _, m := range matcherRe.FindAllStringSubmatch(expr, -1) {
		for _, l := range labelNameRe.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(out[m[1]], l[1]) {
				out[m[1]] = append(out[m[1]], l[1])
			}
		}
	}
	return out
}

// exposition is a parsed Prometheus text exposition.
type exposition struct {
	families map[string]string // family name -> type, from # TYPE
	samples  []sample
	names    map[string]bool // sample names
}

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleRe = regexp.MustCompile(`^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)`)
var sampleLabelRe = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseExposition(text string) (*exposition, error) {
	e := &exposition{families: map[string]string{}, names: map[string]bool{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(f, " "); ok {
				e.families[name] = typ
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRe.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unparsable line %q", line)
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %v", line, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range sampleLabelRe.FindAllStringSubmatch(m[3], -1) {
			s.labels[l[1]] = l[2]
		}
		e.samples = append(e.samples, s)
		e.names[s.name] = true
	}
	return e, sc.Err()
}

// has reports whether name is exported: a sample name, or a histogram's or
// summary's _bucket, _sum or _count.
func (e *exposition) has(name string) bool {
	if e == nil {
		return false
	}
	if e.names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := e.families[base]; typ == "histogram" || typ == "summary" {
				return true
			}
		}
	}
	return false
}

// labelNames returns the label names seen on the samples of name.
func (e *exposition) labelNames(name string) map[string]bool {
	out := map[string]bool{}
	for _, s := range e.samples {
		if s.name == name {
			for l := range s.labels {
				out[l] = true
			}
		}
	}
	return out
}

// value returns the value of the one sample of name whose labels include
// want; ok is false when there is none.
func (e *exposition) value(name string, want map[string]string) (float64, bool) {
	for _, s := range e.samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// TestMetricNames pins down the extraction the other tests rely on.
func TestMetricNames(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{`up{job="betrace"} == 0 or absent(up{job="betrace"})`, []string{"up"}},
		{`sum by (job, instance) (rate(http_requests_total{job="betrace", status=~"5.."}[5m]))
		  / sum by (job, instance) (rate(http_requests_total{job="betrace"}[5m])) > 0.05`, []string{"http_requests_total"}},
		{`histogram_quantile(0.99, sum by (job, rule_id, le) (rate(betrace_rule_fuel_used_bucket{job="betrace"}[10m]))) > 0.8 * 25e6`,
			[]string{"betrace_rule_fuel_used_bucket"}},
		{`label_replace(rate(betrace_violations_total[5m]), "rule_severity", "$1", "severity", "(.*)") > 1`, []string{"betrace_violations_total"}},
		{`process_resident_memory_bytes / on (instance) group_left (version) go_gc_gomemlimit_bytes > 1.2e+0`,
			[]string{"go_gc_gomemlimit_bytes", "process_resident_memory_bytes"}},
		{`sum without(pod) (rate(a_total[$__rate_interval] offset 1h)) unless ignoring(x) b AND c # d_total`, []string{"a_total", "b", "c"}},
		{`topk(5, sum by(rule_id) (increase(betrace_rule_evaluation_errors_total{instance=~"$instance"}[$__range])))`,
			[]string{"betrace_rule_evaluation_errors_total"}},
		{`betrace_rules{state="quarantined"} @ 1700000000 > bool 0`, []string{"betrace_rules"}},
		{`rate(x_seconds_count[${interval}]) * 1e3 + NaN - Inf`, []string{"x_seconds_count"}},
		{`sum(rate(y[5m:30s]))`, []string{"y"}},
		{`{__name__=~"betrace_.*"}`, nil},
	} {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
	for q, want := range map[string]string{
		`label_values(betrace_rule_evaluation_total{job="betrace"}, rule_id)`: `betrace_rule_evaluation_total{job="betrace"}`,
		`label_values(instance)`:        "",
		`metrics(betrace_.*)`:           "",
		`query_result(sum(up))`:         "sum(up)",
		`sum(betrace_rules) by (state)`: "sum(betrace_rules) by (state)",
	} {
		if got := variableQuery(q); got != want {
			t.Errorf("variableQuery(%q) = %q, want %q", q, got, want)
		}
	}
	got := selectorLabels(`rate(a_total{job="betrace", outcome="full"}[5m]) / b{state=~"x|y"} and c`)
	if want := map[string][]string{"a_total": {"job", "outcome"}, "b": {"state"}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("selectorLabels = %v, want %v", got, want)
	}
}

// TestParseRuleFile checks the rule file reader on the value forms it
// accepts.
func TestParseRuleFile(t *testing.T) {
	src := `groups:
  - name: g
    rules:
      - alert: Block
        expr: |
          a_total
            / b
        annotations:
          runbook_url: https://example.invalid/block.md
      - alert: Plain
        expr: c > 1   # comment
        for: 1m
      - record: job:d:rate5m
        expr: "rate(d_total{job=\"x\"}[5m])"
      - alert: Folded
        expr: >-
          e
          > 2
`
	rf, err := parseRuleFile("test.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rf.exprs {
		got = append(got, e.where+": "+e.expr)
	}
	want := []string{"test.yaml Block: a_total\n  / b", "test.yaml Plain: c > 1", `test.yaml job:d:rate5m: rate(d_total{job="x"}[5m])`, "test.yaml Folded: e\n> 2"}
	if !slices.Equal(got, want) {
		t.Errorf("exprs = %q, want %q", got, want)
	}
	if !slices.Equal(rf.recorded, []string{"job:d:rate5m"}) {
		t.Errorf("recorded = %q", rf.recorded)
	}
	if rf.runbooks["Block"] != "https://example.invalid/block.md" || len(rf.runbooks) != 1 {
		t.Errorf("runbooks = %v", rf.runbooks)
	}
	if _, err := parseRuleFile("bad.yaml", "      - alert: NoExpr\n        for: 1m\n"); err == nil {
		t.Error("a rule without expr was accepted")
	}
}
