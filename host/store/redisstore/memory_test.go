package redisstore

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

// documentedBytesPerViolation is the Redis memory a violation costs as the
// package doc, the README and the deployment notes state it; the default
// retention (DefaultMaxViolations) is sized with it.
const documentedBytesPerViolation = 2048

// TestMemoryPerViolation measures what a violation costs Redis: 10,000
// violations as the service records them (two per trace, 50 rules, a
// message, attributes and metadata), appended in batches, with
// de-duplication on as deployed. It fails if the documented figure is
// below what Redis uses, so the figure and the default it sizes stay true.
//
//	go test -run TestMemoryPerViolation -v ./host/store/redisstore/
func TestMemoryPerViolation(t *testing.T) {
	const n = 10_000
	srv := redistest.Start(t)
	c := srv.Client()
	used := func() int64 {
		info, err := c.Info(bg, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatal("no used_memory in INFO")
		return 0
	}
	s := openT(t, srv, Config{}, nil)
	if _, err := s.QueryViolations(bg, violations.Query{Limit: 1}); err != nil { // scripts loaded, connections made
		t.Fatal(err)
	}
	mem0 := used()
	now := time.Now().UTC()
	vs := make([]violations.Violation, 0, 500)
	for i := range n {
		vs = append(vs, storetest.BenchViolation(i, now.Add(-time.Duration(n-i)*time.Second)))
		if len(vs) == cap(vs) {
			if err := s.AppendViolations(bg, vs); err != nil {
				t.Fatal(err)
			}
			vs = vs[:0]
		}
	}
	total := used() - mem0
	keys, err := c.Keys(bg, s.k.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	tagged, err := c.Keys(bg, "{"+s.k.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, tagged...)
	untag := strings.NewReplacer("{"+s.k.prefix, "", "}", "")
	byKind := map[string]int64{}
	for _, k := range keys {
		u, err := c.MemoryUsage(bg, k, 0).Result()
		if err != nil {
			t.Fatal(err)
		}
		kind := untag.Replace(strings.TrimPrefix(k, s.k.prefix))
		for _, p := range []string{"violations:dedup:", "violations:counts:"} {
			if strings.HasPrefix(kind, p) {
				kind = p + "*"
			}
		}
		byKind[kind] += u
	}
	for k, u := range byKind {
		t.Logf("%-22s %6d bytes a violation (MEMORY USAGE)", k, u/n)
	}
	per := total / n
	dedup := byKind["violations:dedup:*"] / n
	t.Logf("used_memory +%d bytes for %d violations: %d bytes a violation, %d of them the (rule, trace) dedup keys that expire after DedupTTL", total, n, per, dedup)
	if per > documentedBytesPerViolation {
		t.Errorf("a violation costs Redis %d bytes, above the documented %d: update the figure (package doc, README, deploy/) and the default retention it sizes", per, documentedBytesPerViolation)
	}
	if per < documentedBytesPerViolation*3/4 {
		t.Errorf("a violation costs Redis %d bytes, well below the documented %d: the figure overstates it; update it", per, documentedBytesPerViolation)
	}
}
