package rules

import (
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestStrikes(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		offsets []time.Duration // when each strike lands
		tripAt  int             // index of the strike that quarantines, -1 for none
	}{
		{"three quick strikes", []time.Duration{0, time.Second, 2 * time.Second}, 2},
		{"spread past the window", []time.Duration{0, 40 * time.Second, 80 * time.Second}, -1},
		{"window slides", []time.Duration{0, 50 * time.Second, 70 * time.Second, 75 * time.Second}, 3},
		{"two strikes only", []time.Duration{0, time.Second}, -1},
		{"just inside the window", []time.Duration{0, 30 * time.Second, 59 * time.Second}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: base}
			s := NewStrikes(DefaultQuarantinePolicy(), c.now)
			got := -1
			for i, off := range tt.offsets {
				c.t = base.Add(off)
				q, tripped := s.Record(Strike{Reason: "fuel", Err: "fuel budget exhausted", FuelUsed: 7, TraceID: "abc"})
				if tripped {
					if got != -1 {
						t.Fatalf("tripped twice: at %d and %d", got, i)
					}
					got = i
					if q.Reason != "fuel" || q.FuelUsed != 7 || q.TraceID != "abc" || !q.At.Equal(c.t) || q.Strikes != 3 {
						t.Fatalf("record = %+v", q)
					}
				}
			}
			if got != tt.tripAt {
				t.Fatalf("tripped at strike %d, want %d", got, tt.tripAt)
			}
			_, q := s.Quarantined()
			if q != (tt.tripAt >= 0) {
				t.Fatalf("Quarantined() = %v", q)
			}
		})
	}
}

// TestStrikesFaultRate: the count alone does not quarantine; the faults
// must also be at least the configured share of the evaluations.
func TestStrikesFaultRate(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		pattern string // per evaluation: 'f' a fault, '.' a pass
		tripAt  int    // index in pattern of the quarantining fault, -1 none
	}{
		{"every evaluation faults", "fff", 2},
		{"one fault in ten", "f.........f.........f.........f.........", -1},
		{"faults on half", ".f.f.f", 5},
		{"faults on a third", "..f..f..f..f..f", -1},
		{"a healthy rule turns broken", "..........ffffffffffff", 19},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: base}
			s := NewStrikes(DefaultQuarantinePolicy(), c.now)
			got := -1
			for i, e := range tc.pattern {
				c.t = c.t.Add(100 * time.Millisecond)
				if e == '.' {
					s.Evaluated(c.t)
					continue
				}
				if _, tripped := s.Record(Strike{Reason: "fuel"}); tripped && got == -1 {
					got = i
				}
			}
			if got != tc.tripAt {
				t.Fatalf("quarantined at %d, want %d", got, tc.tripAt)
			}
		})
	}
}

// Evaluations leave the window as time passes, like faults.
func TestWindowSlides(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := NewWindow(time.Minute)
	for i := range 120 {
		w.Add(base.Add(time.Duration(i)*time.Second), i%2 == 0)
	}
	end := base.Add(119 * time.Second)
	faults, evals := w.Counts(end)
	if evals < 58 || evals > 61 || faults < 29 || faults > 31 {
		t.Fatalf("window of a minute at one evaluation a second holds %d evaluations, %d faults", evals, faults)
	}
	if f, e := w.Counts(end.Add(2 * time.Minute)); f != 0 || e != 0 {
		t.Fatalf("two minutes later the window still holds %d evaluations, %d faults", e, f)
	}
}

func TestStrikesClear(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	s := NewStrikes(QuarantinePolicy{Strikes: 2, Window: time.Minute}, c.now)
	s.Record(Strike{Reason: "trap"})
	if _, tripped := s.Record(Strike{Reason: "trap"}); !tripped {
		t.Fatal("second strike did not quarantine")
	}
	if _, tripped := s.Record(Strike{Reason: "trap"}); tripped {
		t.Fatal("a quarantined rule tripped again")
	}
	s.Clear()
	if _, ok := s.Quarantined(); ok {
		t.Fatal("still quarantined after Clear")
	}
	if _, tripped := s.Record(Strike{Reason: "trap"}); tripped {
		t.Fatal("Clear kept old strikes")
	}
}

func TestStrikesConcurrent(t *testing.T) {
	s := NewStrikes(QuarantinePolicy{Strikes: 5, Window: time.Hour}, time.Now)
	var wg sync.WaitGroup
	trips := make(chan struct{}, 100)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, tripped := s.Record(Strike{Reason: "abi"}); tripped {
					trips <- struct{}{}
				}
			}
		}()
	}
	wg.Wait()
	if len(trips) != 1 {
		t.Fatalf("%d quarantines, want exactly 1", len(trips))
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultQuarantinePolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []QuarantinePolicy{{Strikes: 0, Window: time.Minute}, {Strikes: 3, Window: -1}, {Strikes: 3, FaultRate: 1.5, Window: time.Minute}, {Strikes: 3, FaultRate: -0.1, Window: time.Minute}} {
		if err := c.Validate(); err == nil {
			t.Errorf("bad config %+v accepted", c)
		}
	}
}
