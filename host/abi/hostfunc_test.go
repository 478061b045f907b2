package abi

import (
	"math"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
)

func TestParseNumber(t *testing.T) {
	for _, tt := range []struct {
		in   string
		kind int
		i    int64
		f    float64
	}{
		{"1000", abiv1.NumberInt, 1000, 1000},
		{" -7\t", abiv1.NumberInt, -7, -7},
		{"\u00a042\u3000", abiv1.NumberInt, 42, 42}, // Unicode white space is trimmed
		{"+20", abiv1.NumberInt, 20, 20},
		{"9223372036854775807", abiv1.NumberInt, math.MaxInt64, math.MaxInt64},
		{"9223372036854775808", abiv1.NumberDouble, 0, 9223372036854775808},
		{"12.50", abiv1.NumberDouble, 0, 12.5},
		{"1e3", abiv1.NumberDouble, 0, 1000},
		{".5", abiv1.NumberDouble, 0, 0.5},
		{"0.30000000000000000001", abiv1.NumberDouble, 0, 0.3},
		{"4.9e-324", abiv1.NumberDouble, 0, 5e-324},
		{"1e-400", abiv1.NumberDouble, 0, 0},
		{"1e400", abiv1.NumberNone, 0, 0},
		{"0x10", abiv1.NumberNone, 0, 0},
		{"1_000", abiv1.NumberNone, 0, 0},
		{"Inf", abiv1.NumberNone, 0, 0},
		{"NaN", abiv1.NumberNone, 0, 0},
		{"", abiv1.NumberNone, 0, 0},
		{"12 apples", abiv1.NumberNone, 0, 0},
	} {
		kind, i, f := ParseNumber(tt.in)
		if kind != tt.kind || i != tt.i || f != tt.f {
			t.Errorf("ParseNumber(%q) = %d, %d, %g; want %d, %d, %g", tt.in, kind, i, f, tt.kind, tt.i, tt.f)
		}
	}
}

func TestAppendValueText(t *testing.T) {
	for _, tt := range []struct {
		typ  uint8
		bits uint64
		want string
		ok   bool
	}{
		{abiv1.ValueBool, 1, "true", true},
		{abiv1.ValueBool, 0, "false", true},
		{abiv1.ValueInt, uint64(1<<64 - 15), "-15", true},
		{abiv1.ValueDouble, math.Float64bits(12.5), "12.5", true},
		{abiv1.ValueDouble, math.Float64bits(1e21), "1e+21", true},
		{abiv1.ValueDouble, math.Float64bits(math.Copysign(0, -1)), "-0", true},
		{abiv1.ValueDouble, math.Float64bits(math.Inf(1)), "+Inf", true},
		{abiv1.ValueString, 0, "", false},
		{abiv1.ValueEmpty, 0, "", false},
	} {
		got, ok := AppendValueText(nil, tt.typ, tt.bits)
		if string(got) != tt.want || ok != tt.ok {
			t.Errorf("AppendValueText(type %d, %#x) = %q, %v; want %q, %v", tt.typ, tt.bits, got, ok, tt.want, tt.ok)
		}
	}
}

func TestCompileRegex(t *testing.T) {
	re, err := CompileRegex(`^/api/v[0-9]+/admin/`)
	if err != nil {
		t.Fatal(err)
	}
	if !re.MatchString("/api/v2/admin/users") || re.MatchString("/api/v2/users") || !re.Match([]byte("/api/v1/admin/")) {
		t.Error("wrong match results")
	}
	if unanchored, _ := CompileRegex("admin"); !unanchored.MatchString("/api/admin/x") {
		t.Error("matching must be unanchored")
	}
	// cost: call + 16 per (byte + 1) per instruction, growing linearly
	if d1, d2 := re.Fuel(10)-re.Fuel(0), re.Fuel(20)-re.Fuel(10); d1 != d2 || d1%(10*abiv1.FuelRegexStep) != 0 || re.Fuel(0) <= abiv1.FuelHostCall {
		t.Errorf("fuel %d, %d, %d is not 100 + 16 × (len + 1) × program size", re.Fuel(0), re.Fuel(10), re.Fuel(20))
	}
	for _, tt := range []struct{ pattern, says string }{
		{"(", "missing closing )"},
		{`(\1)`, "invalid escape"},
		{strings.Repeat("a", abiv1.MaxRegexBytes+1), "more than the 1024 allowed"},
		{strings.Repeat("[a-z]{1000}", 11), "instructions, more than the 10000 allowed"},
	} {
		if _, err := CompileRegex(tt.pattern); err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("CompileRegex(%.20q…) = %v, want an error mentioning %q", tt.pattern, err, tt.says)
		}
	}
}

func TestContainsAndParseFuel(t *testing.T) {
	if got := ContainsFuel(10, 3); got != abiv1.FuelHostCall+abiv1.FuelPerByte*13 {
		t.Errorf("ContainsFuel(10, 3) = %d", got)
	}
	if got := ParseNumberFuel(8); got != abiv1.FuelHostCall+abiv1.FuelPerByte*8 {
		t.Errorf("ParseNumberFuel(8) = %d", got)
	}
}
