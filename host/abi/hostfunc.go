package abi

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/betracehq/betrace/api/abiv1"
)

// This file is the meaning of the host functions of api/abi-v1.md §2: the
// sandbox serves them with it and the DSL interpreter, the oracle of
// compiled rules, evaluates `matches`, `contains` and numeric text with it,
// so the two cannot drift apart.

// AppendValueText appends the text of a bool, int or double value (bits in
// the attribute encoding): "true" or "false", the decimal integer, and the
// shortest decimal that reads back as the same double ('g' format: 1e+21,
// NaN, +Inf). ok is false for the other types, whose value is not text.
func AppendValueText(dst []byte, typ uint8, bits uint64) (_ []byte, ok bool) {
	switch typ {
	case abiv1.ValueBool:
		return strconv.AppendBool(dst, bits != 0), true
	case abiv1.ValueInt:
		return strconv.AppendInt(dst, int64(bits), 10), true
	case abiv1.ValueDouble:
		return strconv.AppendFloat(dst, math.Float64frombits(bits), 'g', -1, 64), true
	}
	return dst, false
}

// ParseNumber reads s, with leading and trailing Unicode white space
// ignored, as a decimal number: an optionally signed integer that fits an
// int64 is NumberInt; other decimal notation (a fraction, an exponent, an
// integer too large for int64) is NumberDouble, rounded to nearest; hex,
// underscores, "Inf", "NaN" and anything beyond ±MaxFloat64 are NumberNone.
func ParseNumber(s string) (kind int, i int64, f float64) {
	s = strings.TrimSpace(s)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return abiv1.NumberInt, i, float64(i)
	}
	if s == "" || strings.ContainsAny(s, "xXpP_nNiI") {
		return abiv1.NumberNone, 0, 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return abiv1.NumberNone, 0, 0
	}
	return abiv1.NumberDouble, 0, f
}

// ParseNumberFuel is what a parse_number call over n bytes costs.
func ParseNumberFuel(n int) uint64 { return abiv1.FuelHostCall + abiv1.FuelPerByte*uint64(n) }

// ContainsFuel is what a text_contains call costs.
func ContainsFuel(textLen, needleLen int) uint64 {
	return abiv1.FuelHostCall + abiv1.FuelPerByte*(uint64(textLen)+uint64(needleLen))
}

// ErrRegexTooLarge reports a pattern beyond the limits of regex_match.
var ErrRegexTooLarge = errors.New("regular expression too large")

// Regex is a pattern compiled for regex_match, with the size its fuel is
// charged by. It is safe for concurrent use.
type Regex struct {
	re   *regexp.Regexp
	prog uint64 // instructions of the compiled program
}

// CompileRegex compiles an RE2 pattern (Go regexp syntax, Perl flags) within
// the limits of ABI v1.
func CompileRegex(pattern string) (*Regex, error) {
	if len(pattern) > abiv1.MaxRegexBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d allowed", ErrRegexTooLarge, len(pattern), abiv1.MaxRegexBytes)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("regular expression %q: %w", pattern, err)
	}
	// regexp keeps its program private; compile it again the same way to
	// learn its size.
	parsed, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("regular expression %q: %w", pattern, err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, fmt.Errorf("regular expression %q: %w", pattern, err)
	}
	if len(prog.Inst) > abiv1.MaxRegexProgram {
		return nil, fmt.Errorf("%w: %q compiles to %d instructions, more than the %d allowed; simplify it (large counted repetitions such as {1000} multiply its size)", ErrRegexTooLarge, pattern, len(prog.Inst), abiv1.MaxRegexProgram)
	}
	return &Regex{re: re, prog: uint64(len(prog.Inst))}, nil
}

// Match reports whether the pattern matches anywhere in text.
func (r *Regex) Match(text []byte) bool { return r.re.Match(text) }

// MatchString is Match for a string.
func (r *Regex) MatchString(text string) bool { return r.re.MatchString(text) }

// String returns the pattern.
func (r *Regex) String() string { return r.re.String() }

// Fuel is what a regex_match call over textLen bytes costs.
func (r *Regex) Fuel(textLen int) uint64 {
	return abiv1.FuelHostCall + abiv1.FuelRegexStep*(uint64(textLen)+1)*r.prog
}
