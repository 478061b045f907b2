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
		{"exactly the window", []time.Duration{0, 30 * time.Second, time.Minute}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: base}
			s := NewStrikes(DefaultConfig(), c.now)
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

func TestStrikesClear(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	s := NewStrikes(Config{Strikes: 2, Window: time.Minute}, c.now)
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
	s := NewStrikes(Config{Strikes: 5, Window: time.Hour}, time.Now)
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
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Strikes: 0, Window: -1}).Validate(); err == nil {
		t.Fatal("bad config accepted")
	}
}
