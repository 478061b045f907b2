package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// topologyTimeout bounds how long a Cluster or Sentinel group may take to
// form, and a failover to finish.
const topologyTimeout = 30 * time.Second

// Cluster is a Redis Cluster of real redis-server processes, masters only,
// formed with redis-cli --cluster create.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
}

// StartCluster starts masters cluster-enabled servers (at least 3, as
// redis-cli requires), joins them into one cluster with every slot
// assigned, and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is not installed: run `apt-get install redis-tools` (it comes with redis-server)")
	}
	c := &Cluster{t: t}
	args := []string{"--cluster", "create"}
	for i := 0; i < masters; i++ {
		n := StartWith(t, Options{Args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
		}})
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK()
	return c
}

// waitOK waits until every node says the cluster is ok and knows every
// other node.
func (c *Cluster) waitOK() {
	c.t.Helper()
	poll(c.t, "the cluster to form", func() (bool, string) {
		for _, n := range c.Nodes {
			info, err := n.Client().ClusterInfo(context.Background()).Result()
			if err != nil {
				return false, err.Error()
			}
			if field(info, "cluster_state") != "ok" || field(info, "cluster_known_nodes") != strconv.Itoa(len(c.Nodes)) {
				return false, n.Addr() + ": " + strings.ReplaceAll(info, "\r\n", " ")
			}
		}
		return true, ""
	})
}

// URL is a redis+cluster:// URL listing every node.
func (c *Cluster) URL() string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return "redis+cluster://" + strings.Join(addrs, ",")
}

// Owner is the node that serves slot.
func (c *Cluster) Owner(slot int) *Server {
	c.t.Helper()
	for _, n := range c.Nodes {
		id := nodeID(c.t, n)
		slots, err := n.Client().ClusterSlots(context.Background()).Result()
		if err != nil {
			c.t.Fatalf("redistest: CLUSTER SLOTS: %v", err)
		}
		for _, r := range slots {
			if slot >= int(r.Start) && slot <= int(r.End) && len(r.Nodes) > 0 && r.Nodes[0].ID == id {
				return n
			}
		}
	}
	c.t.Fatalf("redistest: no node serves slot %d", slot)
	return nil
}

// MigrateSlot moves slot, with its keys, to node to while clients keep
// using it, the way redis-cli --cluster reshard does: mark the slot
// importing on to and migrating on its owner, MIGRATE its keys in
// batches, then assign it to to on every node. Clients meet ASK and
// TRYAGAIN meanwhile, and MOVED after.
func (c *Cluster) MigrateSlot(slot int, to *Server) {
	c.t.Helper()
	ctx := context.Background()
	from := c.Owner(slot)
	if from == to {
		c.t.Fatalf("redistest: slot %d is on %s already", slot, to.Addr())
	}
	fromID, toID := nodeID(c.t, from), nodeID(c.t, to)
	must := func(what string, err error) {
		if err != nil {
			c.t.Fatalf("redistest: migrate slot %d: %s: %v", slot, what, err)
		}
	}
	must("importing", to.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must("migrating", from.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	for {
		ks, err := from.Client().ClusterGetKeysInSlot(ctx, slot, 10).Result()
		must("keys", err)
		if len(ks) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port(), "", 0, 5000, "KEYS"}
		for _, k := range ks {
			args = append(args, k)
		}
		must("MIGRATE", from.Client().Do(ctx, args...).Err())
		// Keys go a few at a time, so writers meet the slot half moved.
		time.Sleep(2 * time.Millisecond)
	}
	for _, n := range []*Server{to, from} {
		must("assign", n.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
	}
	for _, n := range c.Nodes {
		if n != to && n != from {
			must("assign", n.Client().Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
		}
	}
	poll(c.t, fmt.Sprintf("slot %d to be served by %s", slot, to.Addr()), func() (bool, string) {
		o := c.Owner(slot)
		return o == to, "served by " + o.Addr()
	})
}

func nodeID(t testing.TB, n *Server) string {
	t.Helper()
	id, err := n.Client().Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatalf("redistest: CLUSTER MYID on %s: %v", n.Addr(), err)
	}
	return id
}

// Sentinels is a primary, one replica and three Sentinels monitoring the
// primary under the name Master, with a quorum of two, as a small
// production deployment has.
type Sentinels struct {
	t         testing.TB
	Master    string
	Primary   *Server // the primary at start; after a failover, the replica
	Replica   *Server
	Sentinels []*Server
}

// StartSentinels starts the group and waits until every Sentinel sees
// the replica and the other Sentinels, so that a failover can be agreed.
// Sentinels declare a primary down after 1s without an answer.
func StartSentinels(t testing.TB) *Sentinels {
	t.Helper()
	g := &Sentinels{t: t, Master: "betrace-primary"}
	g.Primary = Start(t)
	g.Replica = StartWith(t, Options{Args: []string{"--replicaof", "127.0.0.1", strconv.Itoa(g.Primary.Port())}})
	poll(t, "the replica to sync", func() (bool, string) {
		info, err := g.Replica.Client().Info(context.Background(), "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		return field(info, "master_link_status") == "up", info
	})
	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 10000\n"+
		"sentinel parallel-syncs %[1]s 1\n", g.Master, g.Primary.Port())
	for i := 0; i < 3; i++ {
		g.Sentinels = append(g.Sentinels, StartWith(t, Options{SentinelConfig: conf}))
	}
	poll(t, "the Sentinels to find the replica and each other", func() (bool, string) {
		for _, s := range g.Sentinels {
			m, err := s.Client().Do(context.Background(), "SENTINEL", "MASTER", g.Master).Result()
			if err != nil {
				return false, err.Error()
			}
			kv := map[string]string{}
			switch m := m.(type) {
			case map[any]any: // RESP3
				for k, v := range m {
					kv[fmt.Sprint(k)] = fmt.Sprint(v)
				}
			case []any:
				for i := 0; i+1 < len(m); i += 2 {
					kv[fmt.Sprint(m[i])] = fmt.Sprint(m[i+1])
				}
			}
			if kv["num-slaves"] != "1" || kv["num-other-sentinels"] != "2" {
				return false, fmt.Sprintf("%s sees %s replicas and %s other Sentinels", s.Addr(), kv["num-slaves"], kv["num-other-sentinels"])
			}
		}
		return true, ""
	})
	return g
}

// URL is a redis+sentinel:// URL listing the Sentinels.
func (g *Sentinels) URL() string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr()
	}
	return "redis+sentinel://" + strings.Join(addrs, ",") + "/" + g.Master
}

// PrimaryAddr is the primary's address as the first Sentinel answering
// reports it.
func (g *Sentinels) PrimaryAddr() string {
	g.t.Helper()
	var last error
	for _, s := range g.Sentinels {
		a, err := s.Client().Do(context.Background(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", g.Master).StringSlice()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1]
		}
		last = err
	}
	g.t.Fatalf("redistest: no Sentinel names the primary: %v", last)
	return ""
}

// Failover makes the Sentinels promote the replica (SENTINEL FAILOVER)
// and waits until they report it as the primary and the old primary
// replicates from it. Primary and Replica are swapped.
func (g *Sentinels) Failover() {
	g.t.Helper()
	if err := g.Sentinels[0].Client().Do(context.Background(), "SENTINEL", "FAILOVER", g.Master).Err(); err != nil {
		g.t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	g.awaitPromotion()
	poll(g.t, "the old primary to replicate from the new one", func() (bool, string) {
		info, err := g.Replica.Client().Info(context.Background(), "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		return field(info, "role") == "slave" && field(info, "master_port") == strconv.Itoa(g.Primary.Port()), info
	})
}

// KillPrimary kills the primary (SIGKILL) and waits until the Sentinels
// have promoted the replica; the killed server stays down until
// Replica.Start, after which the Sentinels make it a replica again.
// Primary and Replica are swapped.
func (g *Sentinels) KillPrimary() {
	g.t.Helper()
	g.Primary.Stop()
	g.awaitPromotion()
}

func (g *Sentinels) awaitPromotion() {
	g.t.Helper()
	want := g.Replica.Addr()
	poll(g.t, "the Sentinels to promote "+want, func() (bool, string) {
		for _, s := range g.Sentinels {
			a, err := s.Client().Do(context.Background(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", g.Master).StringSlice()
			if err != nil || len(a) != 2 || a[0]+":"+a[1] != want {
				return false, fmt.Sprintf("%s names %v (%v)", s.Addr(), a, err)
			}
		}
		info, err := g.Replica.Client().Info(context.Background(), "replication").Result()
		if err != nil || field(info, "role") != "master" {
			return false, fmt.Sprintf("%s is not master yet (%v)", want, err)
		}
		return true, ""
	})
	g.Primary, g.Replica = g.Replica, g.Primary
}

// poll calls f until it reports done, failing the test with f's last
// reason after topologyTimeout.
func poll(t testing.TB, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(topologyTimeout)
	for {
		ok, why := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: waited %s for %s: %s", topologyTimeout, what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// field reads one "name:value" line of an INFO or CLUSTER INFO reply.
func field(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), name+":"); ok {
			return v
		}
	}
	return ""
}

// ClusterClient returns a go-redis cluster client of c, closed when the
// test ends.
func (c *Cluster) ClusterClient() *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	c.t.Cleanup(func() { cc.Close() })
	return cc
}
