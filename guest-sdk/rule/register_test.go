package rule_test

import (
	"encoding/binary"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/guest-sdk/rule"
)

func TestRegisterAndDescribe(t *testing.T) {
	defer rule.ClearRegistration()()
	if _, ok := rule.Registered(); ok {
		t.Fatal("registered after ClearRegistration")
	}
	mustPanic(t, "no rule registered", func() { rule.Describe() })
	mustPanic(t, "no rule registered", func() { rule.Evaluate(encode(fixture())) })

	info := rule.Info{
		ID:          "payment-fraud-check",
		Severity:    rule.SeverityCritical,
		Description: "Every payment.charge needs a fraud.check in the same trace.",
		Tags:        []string{"payments", "compliance"},
	}
	rule.Register(info, func(tr *rule.Trace) { tr.Report(tr.Span(0), "found") })
	got, ok := rule.Registered()
	if !ok || got.Name != "payment-fraud-check" {
		t.Errorf("Registered = %+v, %v (Name should default to ID)", got, ok)
	}

	rec := rule.Describe()
	le := func(s string) string { return string(binary.LittleEndian.AppendUint32(nil, uint32(len(s)))) + s }
	want := string(binary.LittleEndian.AppendUint32(nil, 5)) +
		le("id") + le("payment-fraud-check") +
		le("name") + le("payment-fraud-check") +
		le("severity") + le("CRITICAL") +
		le("description") + le(info.Description) +
		le("tags") + le("payments,compliance")
	if string(rec) != want {
		t.Errorf("Describe()\n got %q\nwant %q", rec, want)
	}
	back, err := rule.DecodeDescription(rec)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != info.ID || back.Name != info.ID || back.Severity != info.Severity ||
		back.Description != info.Description || !slices.Equal(back.Tags, info.Tags) {
		t.Errorf("DecodeDescription = %+v", back)
	}

	vs, err := rule.DecodeResult(rule.Evaluate(encode(fixture())))
	if err != nil || len(vs) != 1 || vs[0].Message != "found" {
		t.Errorf("Evaluate = %v, %v", vs, err)
	}

	mustPanic(t, "more than once", func() { rule.Register(info, func(*rule.Trace) {}) })
}

func TestDescribeNoTags(t *testing.T) {
	defer rule.ClearRegistration()()
	rule.Register(rule.Info{ID: "x", Name: "X", Severity: rule.SeverityLow}, func(*rule.Trace) {})
	back, err := rule.DecodeDescription(rule.Describe())
	if err != nil || back.Tags != nil || back.Name != "X" || back.Description != "" {
		t.Errorf("DecodeDescription = %+v, %v", back, err)
	}
}

func TestRegisterInvalid(t *testing.T) {
	check := func(*rule.Trace) {}
	for _, tc := range []struct {
		want  string
		info  rule.Info
		check rule.Check
	}{
		{"nil check", rule.Info{ID: "a", Severity: rule.SeverityLow}, nil},
		{"empty Info.ID", rule.Info{Severity: rule.SeverityLow}, check},
		{"unknown severity", rule.Info{ID: "a", Severity: "urgent"}, check},
		{"unknown severity", rule.Info{ID: "a"}, check},
		{"comma", rule.Info{ID: "a", Severity: rule.SeverityLow, Tags: []string{"a,b"}}, check},
		{"comma", rule.Info{ID: "a", Severity: rule.SeverityLow, Tags: []string{""}}, check},
		{"longer than the ABI allows", rule.Info{ID: "a", Severity: rule.SeverityLow, Description: strings.Repeat("d", abiv1.MaxValueBytes+1)}, check},
	} {
		func() {
			defer rule.ClearRegistration()()
			mustPanic(t, tc.want, func() { rule.Register(tc.info, tc.check) })
			if _, ok := rule.Registered(); ok {
				t.Errorf("%s: registered anyway", tc.want)
			}
		}()
	}
}

func TestDecodeDescriptionErrors(t *testing.T) {
	for _, rec := range []string{"\x01\x00", "\x01\x00\x00\x00\x02\x00\x00\x00id", "\x00\x00\x00\x00x"} {
		if _, err := rule.DecodeDescription([]byte(rec)); err == nil {
			t.Errorf("%q: no error", rec)
		}
	}
}

// The export names in wasm.go are literals (go:wasmexport takes no
// constants): check them against the contract.
func TestWasmExportNames(t *testing.T) {
	src, err := os.ReadFile("wasm.go")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^//go:wasmexport (\S+)$`).FindAllStringSubmatch(string(src), -1) {
		got = append(got, m[1])
	}
	want := []string{abiv1.ExportABIVersion, abiv1.ExportInput, abiv1.ExportEvaluate, abiv1.ExportDescribe}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("wasm.go exports %q, want %q", got, want)
	}
	if !strings.HasPrefix(string(src), "//go:build wasip1\n") {
		t.Error("wasm.go lacks its wasip1 build constraint")
	}
}
