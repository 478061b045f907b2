package embedded

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/store/storetest"
	"github.com/betracehq/betrace/host/violations"
)

var bg = context.Background()

func openT(t testing.TB, cfg Config, now func() time.Time) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg, now)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(Config{Dir: t.TempDir()}, nil)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

func TestRetentionConformance(t *testing.T) {
	storetest.RunRetention(t, func(t *testing.T, c storetest.Caps) store.Store {
		s, err := Open(Config{Dir: t.TempDir(), MaxViolations: c.MaxViolations, MaxViolationsPerRule: c.MaxViolationsPerRule}, nil)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

// clock is a settable clock for retention tests.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }
func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }

func viol(id string, at time.Time) violations.Violation {
	return storetest.Violation(id, at, "rule-"+id[:1], "HIGH", "0af7651916cd43dd8448eb211c80319c")
}

func allIDs(t testing.TB, s store.Store, q violations.Query) []string {
	t.Helper()
	q.Limit = MaxLimit
	var out []string
	for {
		p, err := s.QueryViolations(bg, q)
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		for _, v := range p.Violations {
			out = append(out, v.ID)
		}
		if p.NextCursor == "" {
			return out
		}
		q.Cursor = p.NextCursor
	}
}

func TestConfig(t *testing.T) {
	d := DefaultConfig()
	if d.MaxViolations != 1_000_000 || d.MaxViolationAge != 7*24*time.Hour {
		t.Fatalf("defaults %+v", d)
	}
	if err := d.Validate(); err == nil {
		t.Error("a config without Dir validated")
	}
	for _, c := range []Config{{Dir: "x", MaxViolations: -1}, {Dir: "x", MaxViolationAge: -time.Second}} {
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "embedded: config: ") {
			t.Errorf("%+v: %v", c, err)
		}
	}
	if _, err := Open(Config{}, nil); err == nil {
		t.Error("Open without Dir succeeded")
	}
	s := openT(t, Config{Dir: filepath.Join(t.TempDir(), "a", "b")}, nil)
	if s.cfg.MaxViolations != DefaultMaxViolations || s.cfg.MaxViolationAge != DefaultMaxViolationAge {
		t.Errorf("zero values did not take the defaults: %+v", s.cfg)
	}
	if fi, err := os.Stat(s.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file: %v, %v", fi, err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir}, nil)
	for _, id := range []string{"b", "a"} {
		if err := s.CreateRule(bg, storetest.Rule(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UpdateRule(bg, storetest.Rule("a", 2)); err != nil {
		t.Fatal(err)
	}
	mod := []byte("module")
	if err := s.PutModule(bg, storetest.Digest(mod), mod); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var vs []violations.Violation
	for i := 0; i < 50; i++ {
		vs = append(vs, viol(fmt.Sprintf("%c%02d", 'a'+i%3, i), now.Add(-time.Duration(i)*time.Minute)))
	}
	if err := s.AppendViolations(bg, vs); err != nil {
		t.Fatal(err)
	}
	before := allIDs(t, s, violations.Query{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, Config{Dir: dir}, nil)
	list, err := s.ListRules(bg)
	if err != nil || len(list) != 2 || list[0].ID != "a" || list[0].Revision != 2 || list[1].ID != "b" {
		t.Fatalf("rules after reopen: %+v, %v", list, err)
	}
	if got, err := s.Module(bg, storetest.Digest(mod)); err != nil || string(got) != "module" {
		t.Fatalf("module after reopen: %q, %v", got, err)
	}
	after := allIDs(t, s, violations.Query{})
	if strings.Join(after, ",") != strings.Join(before, ",") || len(after) != 50 {
		t.Fatalf("violations after reopen:\n%v\nwant\n%v", after, before)
	}
	p, err := s.QueryViolations(bg, violations.Query{RuleID: "rule-b", Limit: 5})
	if err != nil || p.TotalCount != 17 || len(p.Violations) != 5 {
		t.Fatalf("rebuilt index: total %d, %d on page, %v", p.TotalCount, len(p.Violations), err)
	}
	if s.ViolationCount() != 50 || s.Trimmed() != 0 {
		t.Fatalf("count %d, trimmed %d", s.ViolationCount(), s.Trimmed())
	}
}

func TestCorruptModule(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir}, nil)
	mod := []byte("\x00asm good module")
	sha := storetest.Digest(mod)
	if err := s.PutModule(bg, sha, mod); err != nil {
		t.Fatal(err)
	}
	s.Close()

	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModules).Put([]byte(sha), []byte("\x00asm evil module"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s = openT(t, Config{Dir: dir}, nil)
	_, err = s.Module(bg, sha)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("corrupt module: %v, want ErrCorrupt", err)
	}
	if !strings.HasPrefix(err.Error(), "embedded: get module "+sha+": ") {
		t.Errorf("error does not name the digest: %v", err)
	}
	// Upper case finds the same module.
	if _, err := s.Module(bg, strings.ToUpper(sha)); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("upper-case digest: %v", err)
	}
	// Putting the right bytes again repairs it.
	if err := s.PutModule(bg, sha, mod); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Module(bg, sha); err != nil || string(got) != string(mod) {
		t.Fatalf("after repair: %q, %v", got, err)
	}
}

func TestRetentionByCount(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, MaxViolations: 10}, nil)
	now := time.Now().UTC()
	var all []violations.Violation
	for i := 0; i < 25; i++ {
		all = append(all, viol(fmt.Sprintf("a%02d", i), now.Add(time.Duration(i)*time.Second)))
	}
	// Out of order, in batches of 3; never more than 10 stored.
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(all))
	for i := 0; i < len(order); i += 3 {
		var batch []violations.Violation
		for _, j := range order[i:min(i+3, len(order))] {
			batch = append(batch, all[j])
		}
		if err := s.AppendViolations(bg, batch); err != nil {
			t.Fatal(err)
		}
		if n := s.ViolationCount(); n > 10 {
			t.Fatalf("%d stored, max 10", n)
		}
	}
	if err := s.Trim(bg); err != nil {
		t.Fatal(err)
	}
	got := allIDs(t, s, violations.Query{})
	if len(got) != 10 || s.Trimmed() != 15 {
		t.Fatalf("kept %v, trimmed %d; want 10 kept, 15 trimmed", got, s.Trimmed())
	}
	// Oldest first, whatever order they came in.
	if strings.Join(got, ",") != "a24,a23,a22,a21,a20,a19,a18,a17,a16,a15" {
		t.Fatalf("kept %v", got)
	}
	s.Close()

	// A smaller limit applies at Open.
	s = openT(t, Config{Dir: dir, MaxViolations: 4}, nil)
	if got := allIDs(t, s, violations.Query{}); len(got) != 4 || s.Trimmed() != 6 {
		t.Fatalf("after reopen with max 4: %v, trimmed %d", got, s.Trimmed())
	}
}

func TestRetentionOrderInOrder(t *testing.T) {
	s := openT(t, Config{MaxViolations: 5}, nil)
	now := time.Now().UTC()
	for i := 0; i < 12; i++ {
		if err := s.AppendViolations(bg, []violations.Violation{viol(fmt.Sprintf("a%02d", i), now.Add(time.Duration(i)*time.Second))}); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(allIDs(t, s, violations.Query{}), ","); got != "a11,a10,a09,a08,a07" {
		t.Fatalf("kept %s", got)
	}
	// A batch of the same rule bigger than the limit. (Of several rules,
	// the one holding the most would lose its oldest: see
	// storetest.RunRetention.)
	var big []violations.Violation
	for i := 0; i < 8; i++ {
		v := viol(fmt.Sprintf("b%02d", i), now.Add(time.Minute+time.Duration(i)*time.Second))
		v.RuleID = "rule-a"
		big = append(big, v)
	}
	if err := s.AppendViolations(bg, big); err != nil {
		t.Fatal(err)
	}
	if err := s.Trim(bg); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(allIDs(t, s, violations.Query{}), ","); got != "b07,b06,b05,b04,b03" {
		t.Fatalf("kept %s", got)
	}
	if s.Trimmed() != 15 {
		t.Fatalf("trimmed %d, want 15", s.Trimmed())
	}
}

func TestRetentionByAge(t *testing.T) {
	old := trimInterval
	trimInterval = 20 * time.Millisecond
	t.Cleanup(func() { trimInterval = old })

	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := newClock(start)
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, MaxViolationAge: time.Hour}, clk.now)
	var vs []violations.Violation
	for i := 0; i < 30; i++ { // one every 5 minutes: 00:00 .. 02:25
		vs = append(vs, viol(fmt.Sprintf("a%02d", i), start.Add(time.Duration(i)*5*time.Minute)))
	}
	if err := s.AppendViolations(bg, vs); err != nil {
		t.Fatal(err)
	}
	// At 00:00 nothing is older than an hour.
	if s.ViolationCount() != 30 {
		t.Fatalf("count %d", s.ViolationCount())
	}
	// Explicit trim at 02:00: everything before 01:00 goes (12 of them).
	clk.set(start.Add(2 * time.Hour))
	if err := s.Trim(bg); err != nil {
		t.Fatal(err)
	}
	if got := allIDs(t, s, violations.Query{}); len(got) != 18 || got[len(got)-1] != "a12" || s.Trimmed() != 12 {
		t.Fatalf("after trim at 02:00: %v, trimmed %d", got, s.Trimmed())
	}
	// The background trimmer: at 03:00, everything before 02:00 goes.
	clk.set(start.Add(3 * time.Hour))
	deadline := time.Now().Add(5 * time.Second)
	for s.ViolationCount() != 6 || s.Trimmed() != 24 {
		if time.Now().After(deadline) {
			t.Fatalf("background trim: %d left, %d trimmed; want 6 and 24", s.ViolationCount(), s.Trimmed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	// At Open: at 04:00 all are too old.
	clk.set(start.Add(4 * time.Hour))
	s = openT(t, Config{Dir: dir, MaxViolationAge: time.Hour}, clk.now)
	if s.ViolationCount() != 0 || s.Trimmed() != 6 {
		t.Fatalf("after open at 04:00: %d left, %d trimmed", s.ViolationCount(), s.Trimmed())
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	openT(t, Config{Dir: dir}, nil)
	began := time.Now()
	s2, err := Open(Config{Dir: dir}, nil)
	if err == nil {
		s2.Close()
		t.Fatal("second open of the same directory succeeded")
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "data directory is in use by another betrace process") {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("second open took %v to fail", d)
	}
}

func TestClosed(t *testing.T) {
	s := openT(t, Config{}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	errs := map[string]error{}
	errs["ping"] = s.Ping(bg)
	_, errs["list rules"] = s.ListRules(bg)
	_, errs["get rule"] = s.Rule(bg, "x")
	errs["create rule"] = s.CreateRule(bg, storetest.Rule("x", 1))
	errs["update rule"] = s.UpdateRule(bg, storetest.Rule("x", 2))
	errs["delete rule"] = s.DeleteRule(bg, "x")
	errs["put module"] = s.PutModule(bg, storetest.Digest(nil), nil)
	_, errs["get module"] = s.Module(bg, storetest.Digest(nil))
	errs["append violations"] = s.AppendViolations(bg, []violations.Violation{viol("a", time.Now())})
	_, errs["query violations"] = s.QueryViolations(bg, violations.Query{})
	errs["trim violations"] = s.Trim(bg)
	for op, err := range errs {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "embedded: "+op) {
			t.Errorf("%s after close: %v", op, err)
		}
	}
}

func TestErrors(t *testing.T) {
	s := openT(t, Config{}, nil)
	if err := s.CreateRule(bg, storetest.Rule("x", 1)); err != nil {
		t.Fatal(err)
	}
	err := s.UpdateRule(bg, storetest.Rule("x", 1))
	if !errors.Is(err, store.ErrConflict) || !strings.HasPrefix(err.Error(), `embedded: update rule "x": concurrent update`) {
		t.Errorf("conflict: %v", err)
	}
	err = s.CreateRule(bg, storetest.Rule("x", 1))
	if !errors.Is(err, store.ErrExists) || err.Error() != `embedded: create rule "x": already exists` {
		t.Errorf("exists: %v", err)
	}
	err = s.DeleteRule(bg, "y")
	if !errors.Is(err, store.ErrNotFound) || err.Error() != `embedded: delete rule "y": not found` {
		t.Errorf("not found: %v", err)
	}
	if err := s.CreateRule(bg, storetest.Rule("bad id/", 1)); err == nil {
		t.Errorf("invalid rule id accepted")
	}
	mod := []byte("m")
	err = s.PutModule(bg, storetest.Digest([]byte("n")), mod)
	if err == nil || !strings.Contains(err.Error(), "digest mismatch: the bytes hash to "+storetest.Digest(mod)) {
		t.Errorf("mismatch: %v", err)
	}
	cancelled, cancel := context.WithCancel(bg)
	cancel()
	if err := s.CreateRule(cancelled, storetest.Rule("z", 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

func TestBadCursor(t *testing.T) {
	s := openT(t, Config{}, nil)
	now := time.Now()
	for i := 0; i < 5; i++ {
		if err := s.AppendViolations(bg, []violations.Violation{viol(fmt.Sprintf("a%d", i), now.Add(time.Duration(i)))}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.QueryViolations(bg, violations.Query{Limit: 2})
	if err != nil || p.NextCursor == "" {
		t.Fatal(p, err)
	}
	for name, c := range map[string]string{
		"not base64":     "not a cursor!",
		"padded":         p.NextCursor + "==",
		"too short":      "AQID",
		"unknown format": base64.RawURLEncoding.EncodeToString([]byte("\x02123456789")),
		"truncated":      p.NextCursor[:len(p.NextCursor)-len(p.NextCursor)/2+1],
	} {
		_, err := s.QueryViolations(bg, violations.Query{Limit: 2, Cursor: c})
		if !errors.Is(err, ErrBadCursor) || !strings.HasPrefix(err.Error(), "embedded: query violations: bad cursor: ") {
			t.Errorf("%s (%q): %v", name, c, err)
		}
	}
	// A cursor past everything is a valid, empty page.
	p, err = s.QueryViolations(bg, violations.Query{Limit: 2, Cursor: encodeCursor(0, []byte("a"))})
	if err != nil || len(p.Violations) != 0 || p.TotalCount != 5 {
		t.Fatalf("cursor older than everything: %+v, %v", p, err)
	}
}

func TestAppendValidation(t *testing.T) {
	s := openT(t, Config{}, nil)
	now := time.Now()
	good := viol("a1", now)
	for name, bad := range map[string]violations.Violation{
		"empty id":  viol("a", now),
		"zero time": viol("a2", time.Time{}),
		"long id":   viol(strings.Repeat("a", violations.MaxIDBytes+1), now),
		"far past":  viol("a3", time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)),
	} {
		if name == "empty id" {
			bad.ID = ""
		}
		err := s.AppendViolations(bg, []violations.Violation{good, bad})
		if err == nil || !strings.HasPrefix(err.Error(), "embedded: append violations: violation 1 ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if s.ViolationCount() != 0 {
		t.Fatalf("a rejected batch stored %d", s.ViolationCount())
	}
	// The same violation twice is one row.
	for i := 0; i < 2; i++ {
		if err := s.AppendViolations(bg, []violations.Violation{good, good}); err != nil {
			t.Fatal(err)
		}
	}
	if s.ViolationCount() != 1 {
		t.Fatalf("retried append stored %d rows", s.ViolationCount())
	}
	// A non-canonical trace ID is matched exactly.
	odd := viol("a9", now)
	odd.TraceID = "Not-Hex"
	if err := s.AppendViolations(bg, []violations.Violation{odd}); err != nil {
		t.Fatal(err)
	}
	for trace, n := range map[string]int{"Not-Hex": 1, "not-hex": 0, good.TraceID: 1} {
		p, err := s.QueryViolations(bg, violations.Query{TraceID: trace})
		if err != nil || p.TotalCount != n {
			t.Errorf("trace %q: %d, %v; want %d", trace, p.TotalCount, err, n)
		}
	}
}

// TestHammer runs appends, queries, rule updates and trimming at once;
// run it with -race.
func TestHammer(t *testing.T) {
	s := openT(t, Config{MaxViolations: 300}, nil)
	if err := s.CreateRule(bg, storetest.Rule("counter", 1)); err != nil {
		t.Fatal(err)
	}
	const appenders, batches, perBatch = 4, 60, 3
	const updaters, updates = 3, 15
	now := time.Now().UTC()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 100)
	for w := 0; w < appenders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; i < batches; i++ {
				var vs []violations.Violation
				for k := 0; k < perBatch; k++ {
					v := viol(fmt.Sprintf("%c-%d-%d-%d", 'a'+w, w, i, k), now.Add(time.Duration(r.IntN(100_000))*time.Millisecond))
					vs = append(vs, v)
				}
				if err := s.AppendViolations(bg, vs); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for u := 0; u < updaters; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < updates; {
				r, err := s.Rule(bg, "counter")
				if err != nil {
					errc <- err
					return
				}
				r.Revision++
				r.Description = fmt.Sprint(r.Revision)
				switch err := s.UpdateRule(bg, r); {
				case err == nil:
					done++
				case errors.Is(err, store.ErrConflict):
				default:
					errc <- err
					return
				}
			}
		}()
	}
	var qwg sync.WaitGroup
	for q := 0; q < 2; q++ {
		qwg.Add(1)
		go func() {
			defer qwg.Done()
			qs := []violations.Query{{Limit: 7}, {RuleID: "rule-b", Limit: 5}, {Start: now.Add(30 * time.Second), Limit: 50}}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				q := qs[i%len(qs)]
				seen := map[string]bool{}
				for pages := 0; pages < 20; pages++ {
					p, err := s.QueryViolations(bg, q)
					if err != nil {
						errc <- err
						return
					}
					for _, v := range p.Violations {
						if seen[v.ID] {
							errc <- fmt.Errorf("%s twice in one paging", v.ID)
							return
						}
						seen[v.ID] = true
					}
					if p.NextCursor == "" {
						break
					}
					q.Cursor = p.NextCursor
				}
				if _, err := s.ListRules(bg); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	qwg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	r, err := s.Rule(bg, "counter")
	if err != nil || r.Revision != 1+updaters*updates {
		t.Fatalf("counter revision %d, %v; want %d", r.Revision, err, 1+updaters*updates)
	}
	if err := s.Trim(bg); err != nil {
		t.Fatal(err)
	}
	total := appenders * batches * perBatch
	if n := s.ViolationCount(); n != 300 || uint64(n)+s.Trimmed() != uint64(total) {
		t.Fatalf("stored %d + trimmed %d, want 300 + %d", n, s.Trimmed(), total-300)
	}
	if got := allIDs(t, s, violations.Query{}); len(got) != 300 {
		t.Fatalf("query finds %d", len(got))
	}
}

const crashEnv = "BETRACE_EMBEDDED_CRASH_DIR"

// TestHelperProcess is the child of TestCrash: it writes until killed,
// printing each acknowledged item as soon as its call returns.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	round := os.Getenv(crashEnv + "_ROUND")
	s, err := Open(Config{Dir: dir}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for w := 0; w < 4; w++ {
		go func() {
			for i := 0; ; i++ {
				if i%5 == 0 {
					id := fmt.Sprintf("r%s-%d-%d", round, w, i)
					if err := s.CreateRule(bg, storetest.Rule(id, 1)); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(3)
					}
					os.Stdout.WriteString("ack rule " + id + "\n")
					continue
				}
				var vs []violations.Violation
				line := "ack violations"
				for k := 0; k < 3; k++ {
					id := fmt.Sprintf("v%s-%d-%d-%d", round, w, i, k)
					vs = append(vs, viol(id, time.Now()))
					line += " " + id
				}
				if err := s.AppendViolations(bg, vs); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				os.Stdout.WriteString(line + "\n")
			}
		}()
	}
	select {}
}

// TestCrash kills a writing process with SIGKILL and checks that every
// write it acknowledged is there.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	wantRules := map[string]bool{}
	wantViols := map[string]bool{}
	r := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("%s_ROUND=%d", crashEnv, round))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 100 + r.IntN(300)
		timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
		acks := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 3 || f[0] != "ack" {
				continue
			}
			for _, id := range f[2:] {
				if f[1] == "rule" {
					wantRules[id] = true
				} else {
					wantViols[id] = true
				}
			}
			acks++
			if acks == killAfter {
				cmd.Process.Kill() // SIGKILL, mid-stream
			}
		}
		timer.Stop()
		err = cmd.Wait()
		if acks < killAfter {
			t.Fatalf("round %d: child stopped after %d acks: %v\n%s", round, acks, err, stderr.String())
		}
		if got := cmd.ProcessState.String(); got != "signal: killed" {
			t.Fatalf("round %d: child ended with %q, not by SIGKILL", round, got)
		}
		t.Logf("round %d: killed after %d acks (%d more read from the pipe after the kill)", round, killAfter, acks-killAfter)
	}

	s := openT(t, Config{Dir: dir}, nil)
	got := map[string]bool{}
	for _, id := range allIDs(t, s, violations.Query{}) {
		got[id] = true
	}
	for id := range wantViols {
		if !got[id] {
			t.Errorf("acknowledged violation %s is missing", id)
		}
	}
	rs, err := s.ListRules(bg)
	if err != nil {
		t.Fatal(err)
	}
	gotRules := map[string]bool{}
	for _, r := range rs {
		gotRules[r.ID] = true
	}
	for id := range wantRules {
		if !gotRules[id] {
			t.Errorf("acknowledged rule %s is missing", id)
		}
	}
	t.Logf("%d acknowledged violations and %d rules all present (%d and %d stored)", len(wantViols), len(wantRules), len(got), len(rs))
}
