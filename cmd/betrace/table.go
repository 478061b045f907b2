package main

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// writeTable writes rows under header as aligned columns, two spaces apart.
// Cells are made single-line so that one row stays one line; an empty
// cell shows as "-" unless it is the last of its row.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 8, 2, ' ', 0)
	writeRow := func(cells []string, dash bool) {
		for i, c := range cells {
			if i > 0 {
				io.WriteString(tw, "\t")
			}
			if c == "" && dash && i < len(cells)-1 {
				c = "-"
			}
			io.WriteString(tw, cell(c))
		}
		io.WriteString(tw, "\n")
	}
	writeRow(header, false)
	for _, r := range rows {
		writeRow(r, true)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// An empty last cell leaves the padding of the column before it.
	var out strings.Builder
	for line := range strings.Lines(buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// cell makes s safe inside a table or a labelled line: no tabs, no line
// breaks, no other control characters.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// truncate shortens s to at most max characters, ending in "…" when cut.
func truncate(s string, max int) string {
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return s
	}
	if max == 1 {
		return "…"
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return strings.TrimRight(s[:i], " ") + "…"
		}
		n++
	}
	return s
}

// Column widths of the human output.
const (
	nameWidth = 40
)

var rulesHeader = []string{"ID", "STATE", "SEVERITY", "VERSION", "EVALS", "VIOLATIONS", "ERRORS", "FUEL P99", "NAME"}

func ruleRow(r ruleJSON) []string {
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	return []string{r.ID, r.State, r.Severity, strconv.Itoa(r.Version), u(r.Stats.Evaluations), u(r.Stats.Violations),
		u(r.Stats.Errors), u(r.Stats.FuelP99), truncate(r.Name, nameWidth)}
}

func writeRulesTable(w io.Writer, rules []ruleJSON) error {
	rows := make([][]string, len(rules))
	for i, r := range rules {
		rows[i] = ruleRow(r)
	}
	return writeTable(w, rulesHeader, rows)
}

var violationsHeader = []string{"TIME", "SEVERITY", "RULE", "TRACE", "SPAN", "MESSAGE"}

func violationRow(v violationJSON) []string {
	return []string{formatTime(v.Timestamp), v.Severity, v.RuleID, v.TraceID, v.SpanID, strings.Join(strings.Fields(v.Message), " ")} // last column, whole: it explains the violation
}

func writeViolationsTable(w io.Writer, vs []violationJSON) error {
	rows := make([][]string, len(vs))
	for i, v := range vs {
		rows[i] = violationRow(v)
	}
	return writeTable(w, violationsHeader, rows)
}

// formatTime shows a time in UTC to the second, so that output compares
// across machines and with server logs.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// formatBytes shows a size in B, KiB or MiB.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// progress reports a batch (rules push of several files) on stderr: a bar
// redrawn in place on a terminal, otherwise one line per item.
type progress struct {
	w     io.Writer
	tty   bool
	total int
	drawn bool
}

const barWidth = 24

// renderBar draws done of total as [#####.....] done/total.
func renderBar(done, total, width int) string {
	if total <= 0 {
		total = 1
	}
	done = min(max(done, 0), total)
	filled := done * width / total
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "] " + strconv.Itoa(done) + "/" + strconv.Itoa(total)
}

// step announces item i (0-based) before it is sent.
func (p *progress) step(i int, name string) {
	if p == nil {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s %s", renderBar(i, p.total, barWidth), truncate(filepath.Base(name), 40))
		p.drawn = true
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] pushing %s\n", i+1, p.total, name)
}

// clear removes the bar so that a result line can be written.
func (p *progress) clear() {
	if p != nil && p.tty && p.drawn {
		io.WriteString(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// finish draws the full bar once and ends its line.
func (p *progress) finish() {
	if p != nil && p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s\n", renderBar(p.total, p.total, barWidth))
		p.drawn = false
	}
}
