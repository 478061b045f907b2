package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/betracehq/betrace/host/internal/redistest"
)

// ruleWatch polls, until stopped, every live member's rule list and the
// rules hash in Redis, and records every sight of a rule set that lost one
// of the rules that existed before Redis lost its data: on a member, one
// missing from its list; in Redis, a set holding some of them but not all,
// which is what a peer syncing a half-written republish would take for
// the whole.
type ruleWatch struct {
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	bad    []string
	rounds int
}

func watchRules(t *testing.T, c *testCluster, before []string) *ruleWatch {
	w := &ruleWatch{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		rdb := c.redis.Client()
		for !w.stop.Load() {
			for _, i := range c.live() {
				have, err := listRuleIDs(c.nodes[i])
				if err != nil {
					continue // a failed poll shows nothing either way
				}
				for _, id := range before {
					if !slices.Contains(have, id) {
						w.note(fmt.Sprintf("%s listed %v, without %s", c.ids[i], have, id))
					}
				}
			}
			if stored, err := rdb.HKeys(context.Background(), "{"+c.prefix+"rules}").Result(); err == nil && len(stored) > 0 {
				for _, id := range before {
					if !slices.Contains(stored, id) {
						w.note(fmt.Sprintf("Redis held %v, without %s", stored, id))
					}
				}
			}
			w.mu.Lock()
			w.rounds++
			w.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

// listRuleIDs is GET /v1/rules without a testing.TB, for the watcher's
// goroutine.
func listRuleIDs(s *server) ([]string, error) {
	req, err := http.NewRequest(http.MethodGet, s.base+"/v1/rules", nil)
	if err != nil {
		return nil, err
	}
	if s.opts.APIToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.APIToken)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var list struct {
		Rules []struct {
			ID string `json:"id"`
		} `json:"rules"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range list.Rules {
		ids = append(ids, r.ID)
	}
	return ids, nil
}

func (w *ruleWatch) note(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) < 10 {
		w.bad = append(w.bad, s)
	}
}

func (w *ruleWatch) check(t *testing.T, what string) {
	t.Helper()
	w.stop.Store(true)
	w.wg.Wait()
	if len(w.bad) > 0 {
		t.Errorf("%s: a rule set without rules that existed was seen: %s", what, strings.Join(w.bad, "; "))
	}
	t.Logf("%s: %d rounds of watching every member and Redis", what, w.rounds)
}

// everyMemberHas waits until every live member lists exactly want, and
// Redis holds it too.
func (c *testCluster) everyMemberHas(t *testing.T, want []string) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("every member and Redis hold %v", want), func() (bool, string) {
		for _, i := range c.live() {
			if got := ruleIDs(t, c.nodes[i].get(t, "/v1/rules")); !slices.Equal(got, want) {
				return false, fmt.Sprintf("%s lists %v", c.ids[i], got)
			}
		}
		stored, err := c.redis.Client().HKeys(context.Background(), "{"+c.prefix+"rules}").Result()
		slices.Sort(stored)
		if err != nil || !slices.Equal(stored, want) {
			return false, fmt.Sprintf("Redis holds %v (%v)", stored, err)
		}
		return true, ""
	})
}

// createSoon uploads a rule, retrying while the member answers 503 (its
// connections to a restarted Redis are still being made), for at most 10 s.
func createSoon(t *testing.T, s *server, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.uploadWasm(t, module(t, id), map[string][]string{"id": {id}})
		if r.Status == http.StatusCreated {
			return
		}
		if r.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("create %s: status %d: %s", id, r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterRedisFlushThenCreate: FLUSHALL, then at once a rule created
// through one member, before any member has polled. Every member keeps
// every rule, Redis gets them all back, and nobody ever sees part of the
// old set.
func TestClusterRedisFlushThenCreate(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOptions{Size: 3})
	before := []string{"payment-fraud-check", "pii-access-audit"}
	for _, id := range before {
		c.nodes[0].loadRule(t, id)
	}
	c.everyMemberHas(t, before)
	w := watchRules(t, c, before)
	if err := c.redis.Client().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	c.nodes[1].loadRule(t, "checkout-slow-db")
	want := []string{"checkout-slow-db", "payment-fraud-check", "pii-access-audit"}
	c.everyMemberHas(t, want)
	time.Sleep(2500 * time.Millisecond) // two more polls: nothing goes missing later either
	w.check(t, "after FLUSHALL and a create")
	c.everyMemberHas(t, want)
	if n := c.sum(t, "betrace_rules_republished_total", nil, c.live()...); n < 2 {
		t.Errorf("betrace_rules_republished_total sums to %v over the members, want at least the 2 rules put back", n)
	}
	for _, id := range want {
		c.waitRule(t, id, "active", func(r map[string]any) bool { return str(r, "state") == "active" && r["pending"] == false })
	}
}

// TestClusterRedisEmptyRestartThenCreate: the same through a redis-server
// restarted without persistence, with the create sent as soon as it
// answers.
func TestClusterRedisEmptyRestartThenCreate(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOptions{Size: 2})
	// Four rules: putting them back one by one, as a peer could sync in
	// between, would be seen.
	before := []string{"ai-tool-approval", "n-plus-one-queries", "payment-fraud-check", "pii-access-audit"}
	for _, id := range before {
		c.nodes[0].loadRule(t, id)
	}
	c.everyMemberHas(t, before)
	w := watchRules(t, c, before)
	c.redis.Stop()
	c.redis.Start()
	began := time.Now()
	createSoon(t, c.nodes[1], "checkout-slow-db")
	t.Logf("the create was answered %v after Redis answered again", time.Since(began).Round(time.Millisecond))
	want := []string{"ai-tool-approval", "checkout-slow-db", "n-plus-one-queries", "payment-fraud-check", "pii-access-audit"}
	c.everyMemberHas(t, want)
	time.Sleep(2500 * time.Millisecond)
	w.check(t, "after an empty restart and a create")
	c.everyMemberHas(t, want)
}

// TestClusterQuarantineDuringOutage: a rule quarantined on one member
// while Redis is down is pending there (and not running), active on the
// other; once Redis is back the quarantine reaches every member, and an
// enable on the other member then clears it everywhere.
func TestClusterQuarantineDuringOutage(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOptions{Size: 2, AppendOnly: true, Env: map[string]string{
		"BETRACE_QUARANTINE_STRIKES": "1",
		"BETRACE_QUARANTINE_WINDOW":  "1m",
	}})
	all := c.live()
	const rule = "runaway-loop"
	c.nodes[0].loadRule(t, rule)
	c.waitRule(t, rule, "active", func(r map[string]any) bool { return str(r, "state") == "active" })

	c.redis.Stop()
	p := c.ownedPayment(t, true, 0, all)
	if err := c.nodes[0].offer(p.td); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the rule quarantined and pending on "+c.ids[0], func() (bool, string) {
		r := c.nodes[0].rule(t, rule)
		return str(r, "state") == "quarantined" && r["pending"] == true, fmt.Sprintf("state %v pending %v", r["state"], r["pending"])
	})
	if r := c.nodes[1].rule(t, rule); str(r, "state") != "active" || r["pending"] != false {
		t.Fatalf("%s during the outage: state %v pending %v; want active, not pending (it cannot know yet)", c.ids[1], r["state"], r["pending"])
	}
	if n := c.nodes[0].value(t, "betrace_rule_changes_pending", nil); n != 1 {
		t.Errorf("betrace_rule_changes_pending %v on %s, want 1", n, c.ids[0])
	}

	c.redis.Start()
	c.waitRule(t, rule, "quarantined, not pending", func(r map[string]any) bool {
		q := obj(r, "quarantine")
		return str(r, "state") == "quarantined" && r["pending"] == false && q != nil && str(q, "reason") == "fuel"
	})
	c.nodes[1].mustJSON(t, http.MethodPost, "/v1/rules/"+rule+"/enable", nil, http.StatusOK)
	c.waitRule(t, rule, "active again", func(r map[string]any) bool {
		return str(r, "state") == "active" && r["pending"] == false && r["quarantine"] == nil
	})
	// And it stays so: nothing queued comes back over the enable.
	time.Sleep(2500 * time.Millisecond)
	c.waitRule(t, rule, "still active", func(r map[string]any) bool { return str(r, "state") == "active" })
	if n := c.nodes[0].value(t, "betrace_rule_changes_pending", nil); n != 0 {
		t.Errorf("betrace_rule_changes_pending %v on %s after Redis came back, want 0", n, c.ids[0])
	}
}

// TestServeExitsOnAStoreError: a start-up error after Redis answered (here
// a string where the rules hash belongs) ends `betrace serve` at once, with
// a non-zero status and the reason, instead of hanging on the way out.
func TestServeExitsOnAStoreError(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const prefix = "betrace-wrongtype:"
	if err := srv.Client().Set(context.Background(), prefix+"rules", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	r := runBetrace(t, []string{
		"BETRACE_REDIS_URL=" + srv.URL(), "BETRACE_REDIS_PREFIX=" + prefix,
		"BETRACE_DATA_DIR=" + t.TempDir(), "BETRACE_PORT_BACKEND=" + mustFreePort(t),
	}, "serve")
	took := time.Since(began)
	r.want(t, 1, nil, "betrace could not start", "WRONGTYPE", "BETRACE_REDIS_PREFIX")
	if took > 5*time.Second {
		t.Errorf("betrace serve took %v to exit after a start-up error, want a few seconds at most", took)
	}
}

// TestValidateRedisURLAsStartUp: --validate refuses a Redis URL that
// start-up could not dial (a list of addresses), names the URL forms that
// take several, and accepts one it can.
func TestValidateRedisURLAsStartUp(t *testing.T) {
	t.Parallel()
	runBetrace(t, []string{"BETRACE_REDIS_URL=redis://h1:6379,h2:6379/0"}, "serve", "--validate").
		want(t, 1, nil, "several addresses", "redis+sentinel://", "redis+cluster://")
	runBetrace(t, []string{"BETRACE_REDIS_URL=redis://h1:6379/0"}, "serve", "--validate").want(t, 0, nil)
}
