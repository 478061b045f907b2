package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRulesTable(t *testing.T) {
	var a, b ruleJSON
	a.ID, a.State, a.Severity, a.Version, a.Name = "payment-fraud-check", "active", "CRITICAL", 2, "Payment charged without a fraud check"
	a.Stats.Evaluations, a.Stats.Violations, a.Stats.Errors, a.Stats.FuelP99 = 1200, 31, 0, 40186
	b.ID, b.State, b.Severity, b.Version, b.Name = "loop", "quarantined", "LOW", 1, "Runaway\tloop\nwith breaks"
	b.Stats.Evaluations, b.Stats.Errors, b.Stats.FuelP99 = 3, 3, 25000000
	var out bytes.Buffer
	if err := writeRulesTable(&out, []ruleJSON{a, b}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID                   STATE        SEVERITY  VERSION  EVALS  VIOLATIONS  ERRORS  FUEL P99  NAME\n" +
		"payment-fraud-check  active       CRITICAL  2        1200   31          0       40186     Payment charged without a fraud check\n" +
		"loop                 quarantined  LOW       1        3      0           3       25000000  Runaway loop with breaks\n"
	if out.String() != want {
		t.Errorf("rules table:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestViolationsTable(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 30, 45, 999, time.FixedZone("CET", 3600))
	long := strings.Repeat("é", 100)
	vs := []violationJSON{
		{Timestamp: at, Severity: "CRITICAL", RuleID: "payment-fraud-check", TraceID: "0123456789abcdef0123456789abcdef", SpanID: "0123456789abcdef", Message: "payment.charge without\tfraud.check\n"},
		{Timestamp: at, Severity: "LOW", RuleID: "r", TraceID: "ffffffffffffffffffffffffffffffff", Message: long},
	}
	var out bytes.Buffer
	if err := writeViolationsTable(&out, vs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	if lines[0] != "TIME                  SEVERITY  RULE                 TRACE                             SPAN              MESSAGE" {
		t.Errorf("header %q", lines[0])
	}
	if lines[1] != "2026-03-01T11:30:45Z  CRITICAL  payment-fraud-check  0123456789abcdef0123456789abcdef  0123456789abcdef  payment.charge without fraud.check" {
		t.Errorf("row %q", lines[1])
	}
	// An empty span shows as "-"; a long message is shown whole: its end
	// is often what explains the violation.
	msg := lines[2][strings.Index(lines[0], "MESSAGE"):]
	if !strings.Contains(lines[2], "ffffffffffffffffffffffffffffffff  -  ") && !strings.Contains(lines[2], "ffffffffffffffffffffffffffffffff  -   ") {
		t.Errorf("empty span not shown as -: %q", lines[2])
	}
	if utf8.RuneCountInString(msg) != 100 || strings.HasSuffix(msg, "…") || !utf8.ValidString(msg) {
		t.Errorf("long message shown as %q (%d runes)", msg, utf8.RuneCountInString(msg))
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"eleven chars", 10, "eleven ch…"},
		{"word  break here", 7, "word…"},
		{"ééééé", 3, "éé…"},
		{"abc", 1, "…"},
		{"abc", 0, "abc"},
	} {
		if got := truncate(tc.in, tc.max); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestRuleDetail(t *testing.T) {
	var r ruleJSON
	r.ID, r.Name, r.State, r.StateReason, r.Severity, r.Version, r.Enabled = "loop", "Loop", "quarantined", "quarantined after 3 strikes: fuel", "LOW", 2, true
	r.Limits.Fuel, r.Limits.MemoryPages = 25000000, 512
	r.Module = moduleJSON{Version: 2, SHA256: "abcdef0123456789", SizeBytes: 2 << 20, ABIVersion: 1, Source: "wasm"}
	r.Versions = []moduleJSON{{Version: 1, SHA256: "1111"}, r.Module}
	r.Quarantine = &quarantineJSON{Reason: "fuel", Strikes: 3, TraceID: "t1", LastError: "out of fuel"}
	var out bytes.Buffer
	if err := writeRuleDetail(&out, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ID:           loop\n",
		"Description:  -\n",
		"State:        quarantined (quarantined after 3 strikes: fuel)\n",
		"Version:      2 (sha256 abcdef012345, 2.0 MiB, ABI 1, wasm, )\n",
		"Limits:       fuel 25000000 per evaluation, 512 memory pages (32.0 MiB)\n",
		"Quarantine:   fuel at  after 3 strikes (trace t1, fuel used 0): out of fuel\n",
		"VERSION  SHA256            SIZE     SOURCE  CREATED\n",
		"2        abcdef0123456789  2.0 MiB  wasm    -        in force\n",
		"1        1111              0 B      -       -\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("rule detail lacks %q:\n%s", want, out.String())
		}
	}
}

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		done, total int
		want        string
	}{
		{0, 3, "[......] 0/3"},
		{1, 3, "[##....] 1/3"},
		{3, 3, "[######] 3/3"},
		{5, 3, "[######] 3/3"},
	} {
		if got := renderBar(tc.done, tc.total, 6); got != tc.want {
			t.Errorf("renderBar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
	var tty bytes.Buffer
	p := &progress{w: &tty, tty: true, total: 2}
	p.step(0, "dir/a.wasm")
	p.clear()
	p.step(1, "dir/b.wasm")
	p.clear()
	p.finish()
	want := "\r\x1b[K[" + strings.Repeat(".", barWidth) + "] 0/2 a.wasm\r\x1b[K" +
		"\r\x1b[K[" + strings.Repeat("#", barWidth/2) + strings.Repeat(".", barWidth/2) + "] 1/2 b.wasm\r\x1b[K" +
		"\r\x1b[K[" + strings.Repeat("#", barWidth) + "] 2/2\n"
	if tty.String() != want {
		t.Errorf("terminal progress %q, want %q", tty.String(), want)
	}
	var log bytes.Buffer
	p = &progress{w: &log, total: 2}
	p.step(0, "dir/a.wasm")
	p.clear()
	p.step(1, "dir/b.wasm")
	p.finish()
	if log.String() != "[1/2] pushing dir/a.wasm\n[2/2] pushing dir/b.wasm\n" {
		t.Errorf("progress without a terminal %q", log.String())
	}
	var nilP *progress
	nilP.step(0, "x") // one file: no progress, no panic
	nilP.clear()
	nilP.finish()
}
