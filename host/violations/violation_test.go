package violations

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestCheckStorable(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	for _, tt := range []struct {
		v    Violation
		says string // "" for storable
	}{
		{Violation{ID: "v1", Timestamp: at}, ""},
		{Violation{Timestamp: at}, "id is empty"},
		{Violation{ID: strings.Repeat("x", MaxIDBytes+1), Timestamp: at}, "513 bytes, more than 512"},
		{Violation{ID: "v1"}, "timestamp is not set"},
		{Violation{ID: "v1", Timestamp: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}, "out of range"},
	} {
		err := tt.v.CheckStorable()
		if (tt.says == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.says)) {
			t.Errorf("CheckStorable(%.20q, %s) = %v, want %q", tt.v.ID, tt.v.Timestamp, err, tt.says)
		}
	}
}

func TestUnixNano(t *testing.T) {
	for _, tt := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(0, 42), 42},
		{time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
		{time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64},
	} {
		if got := UnixNano(tt.t); got != tt.want {
			t.Errorf("UnixNano(%s) = %d, want %d", tt.t, got, tt.want)
		}
	}
}
