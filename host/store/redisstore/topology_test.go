package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		url, want string // want: kind and addresses, or the error's words
		err       bool
	}{
		{url: "redis://h:6379/0", want: "standalone h:6379"},
		{url: "unix:///run/redis.sock", want: "standalone /run/redis.sock"},
		{url: "redis+sentinel://s1:26379,s2:26379,s3/mymaster", want: "sentinel mymaster s1:26379,s2:26379,s3:26379 db0"},
		{url: "redis+sentinel://:pw@s1,s2/mymaster/3?sentinel_password=spw", want: "sentinel mymaster s1:26379,s2:26379 db3 pw spw"},
		{url: "rediss+sentinel://s1/m", want: "sentinel m s1:26379 db0 tls"},
		{url: "redis+cluster://n1:7000,n2:7001", want: "cluster n1:7000,n2:7001"},
		{url: "redis+cluster://u:p%40ss@n1,[::1]:7001?dial_timeout=3s", want: "cluster n1:6379,[::1]:7001 u p@ss"},
		{url: "rediss+cluster://n1:7000", want: "cluster n1:7000 tls"},
		{url: "redis://h1:6379,h2:6379/0", want: "redis+sentinel://", err: true},
		{url: "redis+sentinel://s1:26379", want: "names the monitored primary", err: true},
		{url: "redis+sentinel://s1/m/0/1", want: "names the monitored primary", err: true},
		{url: "redis+sentinel://s1/m?bogus=1", want: "bogus", err: true},
		{url: "redis+cluster://n1/2", want: "only database 0", err: true},
		{url: "redis+cluster://", want: "no address", err: true},
		{url: "redis+cluster://n1?nope=1", want: "nope", err: true},
		{url: "mongodb://h", want: "unknown scheme", err: true},
		{url: "h:6379", want: "not a URL", err: true},
	} {
		tg, err := parseTarget(c.url)
		if c.err {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want an error saying %q", c.url, err, c.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		var got string
		switch tg.kind {
		case standalone:
			got = "standalone " + tg.single.Addr
		case sentinel:
			o := tg.failover
			got = fmt.Sprintf("sentinel %s %s db%d", o.MasterName, strings.Join(o.SentinelAddrs, ","), o.DB)
			if o.Password != "" {
				got += " " + o.Password + " " + o.SentinelPassword
			}
			if o.TLSConfig != nil {
				got += " tls"
			}
		case redisCluster:
			o := tg.cluster
			got = "cluster " + strings.Join(o.Addrs, ",")
			if o.Username != "" {
				got += " " + o.Username + " " + o.Password
			}
			if o.TLSConfig != nil {
				got += " tls"
			}
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.url, got, c.want)
		}
		if strings.Contains(tg.where, "pw") || strings.Contains(tg.where, "p@ss") {
			t.Errorf("%s: %q names the password", c.url, tg.where)
		}
	}
	if err := (Config{URL: "redis+cluster://n1", WaitReplicas: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "WAIT_REPLICAS") {
		t.Errorf("WaitReplicas on a cluster: %v", err)
	}
	if err := (Config{URL: "redis://h", Prefix: "{x}:"}).Validate(); err == nil || !strings.Contains(err.Error(), "brace") {
		t.Errorf("a prefix with braces: %v", err)
	}
}

// TestOpenWrongMode: a redis:// URL at a Cluster node or a Sentinel is
// refused at once with the URL form that fits, not left to fail later
// with MOVED or "unknown command".
func TestOpenWrongMode(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	_, err := Open(bg, Config{URL: cl.Nodes[0].URL()}, nil)
	if err == nil || !strings.Contains(err.Error(), "Redis Cluster node") || !strings.Contains(err.Error(), "redis+cluster://") {
		t.Errorf("redis:// at a cluster node: %v", err)
	}
	g := redistest.StartSentinels(t)
	_, err = Open(bg, Config{URL: "redis://" + g.Sentinels[0].Addr()}, nil)
	if err == nil || !strings.Contains(err.Error(), "is a Sentinel") || !strings.Contains(err.Error(), "redis+sentinel://") {
		t.Errorf("redis:// at a Sentinel: %v", err)
	}
	// And the other way round: a cluster URL at a plain server.
	plain := redistest.Start(t)
	_, err = Open(bg, Config{URL: "redis+cluster://" + plain.Addr(), Timeout: time.Second}, nil)
	if err == nil {
		t.Errorf("redis+cluster:// at a plain server opened")
	}
}

// TestTopologyConformance runs the shared store suite on a Redis Cluster
// and on a Sentinel group: every script's keys must share a slot, and
// every write must be confirmed by the replica.
func TestTopologyConformance(t *testing.T) {
	for name, url := range map[string]func(t *testing.T) string{
		"cluster":  func(t *testing.T) string { return redistest.StartCluster(t, 3).URL() },
		"sentinel": func(t *testing.T) string { return redistest.StartSentinels(t).URL() },
	} {
		t.Run(name, func(t *testing.T) {
			u := url(t)
			storetest.Run(t, func(t *testing.T) store.Store {
				s, err := Open(bg, Config{URL: u, Prefix: newPrefix(), DedupTTL: -1}, nil)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				return s
			})
			storetest.RunRetention(t, func(t *testing.T, c storetest.Caps) store.Store {
				s, err := Open(bg, Config{URL: u, Prefix: newPrefix(), DedupTTL: -1,
					MaxViolations: c.MaxViolations, MaxViolationsPerRule: c.MaxViolationsPerRule}, nil)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				return s
			})
		})
	}
}

// writer appends violations one batch at a time, as the spool does: a
// batch that fails is sent again until it is acknowledged. Every
// acknowledged violation must be found afterwards.
type writer struct {
	s     *Store
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	fails int
	// gaps are the longest time between two acknowledged batches.
	gap time.Duration
}

func startWriter(s *Store) *writer {
	w := &writer{s: s, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := time.Now()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			at := time.Now()
			batch := make([]violations.Violation, 5)
			for j := range batch {
				id := fmt.Sprintf("w%06d-%d", i, j)
				batch[j] = storetest.Violation(id, at, fmt.Sprintf("rule-%d", j), "HIGH", fmt.Sprintf("%032x", i))
			}
			for {
				err := s.AppendViolations(bg, batch)
				if err == nil {
					break
				}
				if !errors.Is(err, store.ErrUnavailable) {
					panic(fmt.Sprintf("append: %v is not a retryable error", err))
				}
				w.mu.Lock()
				w.fails++
				w.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
			now := time.Now()
			w.mu.Lock()
			for _, v := range batch {
				w.acked = append(w.acked, v.ID)
			}
			w.gap = max(w.gap, now.Sub(last))
			w.mu.Unlock()
			last = now
		}
	}()
	return w
}

// waitFor lets the writer acknowledge n more batches.
func (w *writer) waitFor(t *testing.T, n int) {
	t.Helper()
	w.mu.Lock()
	want := len(w.acked) + 5*n
	w.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		got := len(w.acked)
		w.mu.Unlock()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer acknowledged %d of %d violations in 30s", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish stops the writer and checks that every acknowledged violation is
// stored.
func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	stored := map[string]bool{}
	for _, id := range allIDs(t, w.s, violations.Query{}) {
		stored[id] = true
	}
	var lost []string
	for _, id := range w.acked {
		if !stored[id] {
			lost = append(lost, id)
		}
	}
	t.Logf("%d violations acknowledged, %d lost; %d failed attempts retried; longest gap between acknowledged batches %s",
		len(w.acked), len(lost), w.fails, w.gap.Round(time.Millisecond))
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged violations lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

// TestSentinelFailover: the store follows a Sentinel failover, forced and
// after the primary is killed, under a steady stream of writes, without
// being reopened; nothing it acknowledged is lost, and rules written
// before either failover are still there.
func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinels(t)
	s, err := Open(bg, Config{URL: g.URL(), Prefix: newPrefix(), DedupTTL: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.wait != 1 {
		t.Fatalf("a Sentinel store waits for %d replicas, want 1 by default", s.wait)
	}
	if err := s.CreateRule(bg, storetest.Rule("before", 1)); err != nil {
		t.Fatal(err)
	}
	w := startWriter(s)
	w.waitFor(t, 20)

	began := time.Now()
	g.Failover()
	w.waitFor(t, 20)
	t.Logf("SENTINEL FAILOVER: writes acknowledged again %s after it was asked", time.Since(began).Round(time.Millisecond))

	began = time.Now()
	g.KillPrimary()
	// With no replica left, writes cannot be confirmed: they fail as
	// unavailable (retryable), never as done.
	// (The client may first meet the dead primary's address: poll until
	// it reaches the new one.)
	for deadline := time.Now().Add(15 * time.Second); ; {
		err = s.AppendViolations(bg, []violations.Violation{viol("lonely", time.Now(), "r", traceA)})
		if errors.Is(err, store.ErrUnavailable) && strings.Contains(err.Error(), "replicas") {
			break
		}
		if err == nil || !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("append with no replica: %v, want unavailable naming the replicas", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.Replica.Start() // the old primary comes back and is made a replica
	w.waitFor(t, 20)
	t.Logf("primary killed and restarted: writes acknowledged again %s after the kill", time.Since(began).Round(time.Millisecond))
	if err := s.CreateRule(bg, storetest.Rule("after", 1)); err != nil {
		t.Fatalf("create a rule after the failover: %v", err)
	}
	w.finish(t)
	for _, id := range []string{"before", "after"} {
		if _, err := s.Rule(bg, id); err != nil {
			t.Errorf("rule %s after the failovers: %v", id, err)
		}
	}
}

// TestClusterSlotMigration: the slot holding the violations moves to
// another node while violations and rules are written; nothing
// acknowledged is lost and the store is never reopened.
func TestClusterSlotMigration(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	prefix := newPrefix()
	s, err := Open(bg, Config{URL: cl.URL(), Prefix: prefix, DedupTTL: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	slot, err := cl.Nodes[0].Client().ClusterKeySlot(bg, s.k.data).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{s.k.violations, s.k.index, s.k.minutes, s.k.counts(60), s.k.dedup("r", traceA)} {
		if n, _ := cl.Nodes[0].Client().ClusterKeySlot(bg, k).Result(); n != slot {
			t.Fatalf("%s is in slot %d, %s in %d: one script cannot touch both", k, n, s.k.data, slot)
		}
	}
	w := startWriter(s)
	w.waitFor(t, 20)
	from := cl.Owner(int(slot))
	to := cl.Nodes[0]
	if to == from {
		to = cl.Nodes[1]
	}
	ruleDone := make(chan error, 1)
	go func() {
		for i := 0; i < 20; i++ {
			if err := s.CreateRule(bg, storetest.Rule(fmt.Sprintf("during-%d", i), 1)); err != nil && !errors.Is(err, store.ErrUnavailable) {
				ruleDone <- err
				return
			}
		}
		ruleDone <- nil
	}()
	cl.MigrateSlot(int(slot), to)
	w.waitFor(t, 20)
	if err := <-ruleDone; err != nil {
		t.Fatalf("create a rule during the migration: %v", err)
	}
	w.finish(t)
	if got := cl.Owner(int(slot)); got != to {
		t.Fatalf("slot %d is on %s, want %s", slot, got.Addr(), to.Addr())
	}
	// The rules' own slot is untouched; every rule created is there.
	list, err := s.ListRules(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 20 {
		t.Errorf("%d rules after the migration, want 20", len(list))
	}
	// Hints reach a subscriber through the cluster.
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	hints, stop := s.Subscribe(ctx)
	defer stop()
	<-hints // the version at subscription
	if err := s.CreateRule(bg, storetest.Rule("hinted", 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hints:
	case <-ctx.Done():
		t.Fatal("no rule-change hint through the cluster")
	}
}

// TestMigrateLayout: rules and violations kept under the key names used
// before hash tags are found by a store opened on them.
func TestMigrateLayout(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix()
	a := openT(t, srv, Config{Prefix: prefix, DedupTTL: -1}, nil)
	if err := a.CreateRule(bg, storetest.Rule("kept", 1)); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := a.AppendViolations(bg, []violations.Violation{viol("v1", at, "kept", traceA), viol("v2", at, "kept", traceA)}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	// Put every key back under its old name, as an earlier version left it.
	c := srv.Client()
	ks, err := c.Keys(bg, "{"+prefix+"*").Result()
	if err != nil || len(ks) == 0 {
		t.Fatalf("keys: %v %v", ks, err)
	}
	old := strings.NewReplacer("{"+prefix+"rules}", prefix+"rules", "{"+prefix+"violations}", prefix+"violations")
	for _, k := range ks {
		if err := c.Rename(bg, k, old.Replace(k)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b := openT(t, srv, Config{Prefix: prefix, DedupTTL: -1}, nil)
	if _, err := b.Rule(bg, "kept"); err != nil {
		t.Fatalf("rule after the layout moved: %v", err)
	}
	if got := allIDs(t, b, violations.Query{}); len(got) != 2 {
		t.Fatalf("violations after the layout moved: %v", got)
	}
	rows, err := b.SummarizeViolations(bg, violations.SummaryQuery{Start: at.Add(-time.Hour), End: at.Add(time.Hour), Bucket: time.Hour})
	var kept int64
	for _, r := range rows {
		kept += r.Kept
	}
	if err != nil || kept != 2 {
		t.Fatalf("summary after the layout moved: %+v, %v", rows, err)
	}
	if left, _ := c.Keys(bg, prefix+"violations*").Result(); len(left) != 0 {
		t.Errorf("old keys left: %v", left)
	}
}
