package embedded

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/violations"
)

type refKey struct {
	ts int64
	id string
}

func cmpRef(a, b refKey) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func checkIndex(t *testing.T, x *index, ref []refKey) {
	t.Helper()
	var got []refKey
	for c, ch := range x.chunks {
		if ch.len() == 0 || ch.len() > chunkMax {
			t.Fatalf("chunk %d has %d entries", c, ch.len())
		}
		for i := 0; i < ch.len(); i++ {
			got = append(got, refKey{ch.ts[i], string(ch.id(i))})
		}
	}
	if x.n != len(ref) || len(got) != len(ref) {
		t.Fatalf("index has n=%d, %d entries; want %d", x.n, len(got), len(ref))
	}
	for i := range ref {
		if got[i] != ref[i] {
			t.Fatalf("entry %d is %v, want %v", i, got[i], ref[i])
		}
	}
}

// TestIndexModel drives the index with random out-of-order inserts,
// duplicates and front removals, against a sorted slice.
func TestIndexModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	x := &index{}
	var ref []refKey
	for step := 0; step < 40_000; step++ {
		switch op := r.IntN(100); {
		case op < 1 && len(ref) > 0:
			n := r.IntN(min(len(ref), 100)) + 1
			removed := x.removeFront(n)
			for i, e := range removed {
				if (refKey{e.ts, string(e.id)}) != ref[i] {
					t.Fatalf("removed %d is %v, want %v", i, e, ref[i])
				}
			}
			ref = ref[n:]
		default:
			var k refKey
			if op < 60 {
				k = refKey{int64(step), fmt.Sprintf("id%d", r.IntN(3))} // in order
			} else {
				k = refKey{int64(r.IntN(step + 1)), fmt.Sprintf("id%d", r.IntN(3))} // out of order, with ties and repeats
			}
			e := x.makeEntry(k.ts, []byte(k.id), "HIGH", "r", "")
			x.upsert(&e)
			i, found := slices.BinarySearchFunc(ref, k, cmpRef)
			if !found {
				ref = slices.Insert(ref, i, k)
			}
		}
	}
	checkIndex(t, x, ref)
	if len(x.chunks) < 5 {
		t.Fatalf("only %d chunks: the test does not reach splits", len(x.chunks))
	}
	for probe := 0; probe < 2000; probe++ {
		k := refKey{int64(r.IntN(40_010)) - 5, fmt.Sprintf("id%d", r.IntN(4))}
		want, found := slices.BinarySearchFunc(ref, k, cmpRef)
		if got := x.ord(x.search(k.ts, []byte(k.id))); got != want {
			t.Fatalf("search %v: ord %d, want %d", k, got, want)
		}
		if x.has(k.ts, []byte(k.id)) != found {
			t.Fatalf("has %v: %v", k, !found)
		}
	}
	x.removeFront(x.n)
	checkIndex(t, x, nil)
	if x.ord(x.search(5, nil)) != 0 || x.end() != (pos{}) {
		t.Fatal("empty index positions")
	}
}

// TestQueryModel checks queries over enough out-of-order violations to
// split chunks against a filter applied to the whole set.
func TestQueryModel(t *testing.T) {
	s := openT(t, Config{}, nil)
	r := rand.New(rand.NewPCG(5, 5))
	base := time.Now().UTC().Add(-time.Hour)
	traces := []string{"0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736", "odd trace"}
	var all []violations.Violation
	for i := 0; i < 9000; i++ {
		v := viol(fmt.Sprintf("v%05d", i), base.Add(time.Duration(r.IntN(600_000))*time.Millisecond))
		v.RuleID = fmt.Sprintf("rule-%d", r.IntN(7))
		v.Severity = []string{"HIGH", "LOW", "INFO"}[r.IntN(3)]
		v.TraceID = traces[r.IntN(3)]
		all = append(all, v)
	}
	for i := 0; i < len(all); i += 1500 {
		if err := s.AppendViolations(bg, all[i:min(i+1500, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.idx.chunks) < 3 {
		t.Fatalf("%d chunks", len(s.idx.chunks))
	}
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	for _, q := range []violations.Query{
		{},
		{RuleID: "rule-3"},
		{Severity: "LOW"},
		{TraceID: traces[1]},
		{TraceID: traces[2]},
		{Start: at(100_000), End: at(300_000)},
		{Start: at(100_000), End: at(300_000), RuleID: "rule-1", Severity: "INFO"},
		{End: at(50_000), TraceID: traces[0]},
	} {
		var want []violations.Violation
		for _, v := range all {
			if (q.Start.IsZero() || !v.Timestamp.Before(q.Start)) && (q.End.IsZero() || !v.Timestamp.After(q.End)) &&
				(q.RuleID == "" || q.RuleID == v.RuleID) && (q.Severity == "" || q.Severity == v.Severity) &&
				(q.TraceID == "" || q.TraceID == v.TraceID) {
				want = append(want, v)
			}
		}
		slices.SortFunc(want, func(a, b violations.Violation) int {
			return -cmp.Or(a.Timestamp.Compare(b.Timestamp), strings.Compare(a.ID, b.ID))
		})
		q.Limit = 777
		var got []string
		for {
			p, err := s.QueryViolations(bg, q)
			if err != nil {
				t.Fatal(err)
			}
			if p.TotalCount != len(want) {
				t.Fatalf("%+v: TotalCount %d, want %d", q, p.TotalCount, len(want))
			}
			for _, v := range p.Violations {
				got = append(got, v.ID)
			}
			if p.NextCursor == "" {
				break
			}
			q.Cursor = p.NextCursor
		}
		if len(got) != len(want) {
			t.Fatalf("%+v: %d results, want %d", q, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i].ID {
				t.Fatalf("%+v: result %d is %s, want %s", q, i, got[i], want[i].ID)
			}
		}
	}
}

func TestCodec(t *testing.T) {
	for _, ts := range []int64{-1 << 63, -1, 0, 1, 1<<63 - 1} {
		k := makeKey(ts, []byte("id"))
		got, id, ok := splitKey(k)
		if !ok || got != ts || string(id) != "id" {
			t.Fatalf("key %d round trip: %d %q", ts, got, id)
		}
		c := encodeCursor(ts, []byte("id"))
		got, id, err := decodeCursor(c)
		if err != nil || got != ts || string(id) != "id" {
			t.Fatalf("cursor %d round trip: %d %q %v", ts, got, id, err)
		}
	}
	if bytes.Compare(makeKey(-5, nil), makeKey(3, nil)) >= 0 {
		t.Fatal("keys do not sort by time across zero")
	}
	if _, err := decodeHeader([]byte{valueFormat, 5, 'a'}); err == nil {
		t.Fatal("truncated header accepted")
	}
}
