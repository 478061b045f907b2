package rule_test

import (
	"math"
	"testing"
	"time"

	"github.com/betracehq/betrace/guest-sdk/rule"
)

func TestDurationMatchesTime(t *testing.T) {
	values := []int64{0, 1, 999, 1000, 1001, 1500, 999_999, 1_000_000, 1_234_567, 370_000_000, 999_999_999,
		1e9, 1_420_000_000, 59_999_999_999, 60e9, 61_500_000_000, 3600e9, 3_661_000_000_001, 100 * 3600e9,
		math.MaxInt64, math.MinInt64, -1, -1500, -61_500_000_000}
	for v := int64(1); v > 0 && v < math.MaxInt64/7; v = v*7 + 3 {
		values = append(values, v, -v)
	}
	for _, v := range values {
		if got, want := rule.Duration(v).String(), time.Duration(v).String(); got != want {
			t.Errorf("Duration(%d).String() = %q, want %q", v, got, want)
		}
	}
	d := 1500 * rule.Millisecond
	if d.Milliseconds() != 1500 || d.Microseconds() != 1_500_000 || d.Seconds() != 1.5 {
		t.Errorf("conversions of %v wrong", d)
	}
	if rule.Hour != rule.Duration(time.Hour) || rule.Second != rule.Duration(time.Second) {
		t.Error("constants differ from package time")
	}
}
