package redisstore

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// BETRACE_REDIS_URL names one of three deployments, by its scheme:
//
//	redis://[user:password@]host:6379[/db]            one server (or a managed endpoint)
//	rediss://…                                        the same over TLS
//	unix:///run/redis.sock[?db=N]                     one server on a Unix socket
//	redis+sentinel://[user:password@]s1:26379,s2:26379,s3:26379/mymaster[/db]
//	                                                  the primary Sentinel reports for mymaster
//	redis+cluster://[user:password@]n1:6379,n2:6379   a Redis Cluster, from any of its nodes
//
// and rediss+sentinel:// and rediss+cluster:// for TLS. The user and
// password are those of the data nodes; Sentinels that need their own
// take sentinel_username and sentinel_password query parameters. Other
// query parameters are go-redis's (dial_timeout=3s, pool_size=20, …);
// an unknown one is an error, so a typo is not silently ignored.
//
// A target is parsed once, by Validate as by Open, so what --validate
// accepts is what start-up dials.

// topology is the kind of deployment a URL names.
type topology int

const (
	standalone topology = iota
	sentinel
	redisCluster
)

// target is a parsed BETRACE_REDIS_URL.
type target struct {
	kind     topology
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
	// where names the deployment in messages, never with a password.
	where string
}

const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

func parseTarget(raw string) (target, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return target{}, fmt.Errorf("%q is not a URL: use redis://host:6379/0, redis+sentinel://host:26379/mymaster or redis+cluster://host:6379", redact(raw))
	}
	switch scheme {
	case "redis", "rediss", "unix":
		opt, err := parseURL(raw)
		if err != nil {
			return target{}, err
		}
		return target{kind: standalone, single: opt, where: "Redis at " + opt.Addr}, nil
	case "redis+sentinel", "rediss+sentinel":
		return parseSentinel(raw, strings.TrimSuffix(scheme, "+sentinel"))
	case "redis+cluster", "rediss+cluster":
		return parseCluster(raw, strings.TrimSuffix(scheme, "+cluster"))
	}
	return target{}, fmt.Errorf("unknown scheme %q: use redis://, rediss://, unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://", scheme)
}

// hostList splits the host part of a URL into host:port pairs, adding
// the default port where one is missing.
func hostList(hosts, defPort string) ([]string, error) {
	var out []string
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil { // no port: "host" or "[::1]"
			host, port = strings.Trim(h, "[]"), defPort
		}
		if host == "" || strings.ContainsAny(host, "/;@ ") {
			return nil, fmt.Errorf("address %q is not host:port", h)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no address: give at least one host:port")
	}
	return out, nil
}

// splitURL parses what url.Parse cannot take as one host: a comma-separated
// address list. It returns the user info, the addresses, the path and the
// query.
func splitURL(raw string) (user *url.Userinfo, hosts string, u *url.URL, err error) {
	_, rest, _ := strings.Cut(raw, "://")
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		// Parse the user info on a placeholder host, so url.Parse unescapes it.
		p, perr := url.Parse("x://" + authority[:i+1] + "h" + tail)
		if perr != nil {
			return nil, "", nil, fmt.Errorf("user or password: %v", redactErr(perr))
		}
		user, hosts, u = p.User, authority[i+1:], p
	} else {
		p, perr := url.Parse("x://h" + tail)
		if perr != nil {
			return nil, "", nil, fmt.Errorf("path or query: %v", perr)
		}
		hosts, u = authority, p
	}
	return user, hosts, u, nil
}

func parseSentinel(raw, scheme string) (target, error) {
	user, hosts, u, err := splitURL(raw)
	if err != nil {
		return target{}, err
	}
	addrs, err := hostList(hosts, defaultSentinelPort)
	if err != nil {
		return target{}, fmt.Errorf("sentinel %w", err)
	}
	parts := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' })
	if len(parts) == 0 || len(parts) > 2 {
		return target{}, fmt.Errorf("path %q: a Sentinel URL names the monitored primary, and optionally a database: redis+sentinel://host:26379,host2:26379/mymaster/0", u.Path)
	}
	q := u.Query()
	sentUser, sentPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	q.Set("master_name", parts[0])
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	path := ""
	if len(parts) == 2 {
		path = "/" + parts[1]
	}
	opt, err := redis.ParseFailoverURL(scheme + "://" + addrs[0] + path + "?" + q.Encode())
	if err != nil {
		return target{}, err
	}
	if user != nil {
		opt.Username = user.Username()
		opt.Password, _ = user.Password()
	}
	opt.SentinelUsername, opt.SentinelPassword = sentUser, sentPass
	return target{kind: sentinel, failover: opt,
		where: fmt.Sprintf("Redis primary %q of the Sentinels at %s", parts[0], strings.Join(addrs, ","))}, nil
}

func parseCluster(raw, scheme string) (target, error) {
	user, hosts, u, err := splitURL(raw)
	if err != nil {
		return target{}, err
	}
	addrs, err := hostList(hosts, defaultRedisPort)
	if err != nil {
		return target{}, fmt.Errorf("cluster %w", err)
	}
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return target{}, fmt.Errorf("path %q: Redis Cluster has only database 0: give the nodes only, redis+cluster://host:6379,host2:6379", u.Path)
	}
	q := u.Query()
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	opt, err := redis.ParseClusterURL(scheme + "://" + addrs[0] + "?" + q.Encode())
	if err != nil {
		return target{}, err
	}
	if user != nil {
		opt.Username = user.Username()
		opt.Password, _ = user.Password()
	}
	return target{kind: redisCluster, cluster: opt,
		where: "the Redis Cluster at " + strings.Join(addrs, ",")}, nil
}

// client builds the go-redis client for t. Every call runs under a
// context that expires after timeout, and go-redis honours it for dials,
// reads, writes and retries; socket timeouts the URL does not set follow
// timeout too. A refused connection fails the attempt at once: the
// command's retries (MaxRetries, with backoff) dial again, so go-redis's
// own five dial attempts per command would only make a down Redis slower
// to report.
func (t target) client(timeout time.Duration) redis.UniversalClient {
	tune := func(ctxTimeout *bool, dialerRetries *int, name *string, ds ...*time.Duration) {
		*ctxTimeout = true
		for _, d := range ds {
			if *d == 0 {
				*d = timeout
			}
		}
		if *dialerRetries == 0 {
			*dialerRetries = 1
		}
		if *name == "" {
			*name = "betrace"
		}
	}
	switch t.kind {
	case sentinel:
		o := *t.failover
		tune(&o.ContextTimeoutEnabled, &o.DialerRetries, &o.ClientName, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout)
		return redis.NewFailoverClient(&o)
	case redisCluster:
		o := *t.cluster
		tune(&o.ContextTimeoutEnabled, &o.DialerRetries, &o.ClientName, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout)
		return redis.NewClusterClient(&o)
	default:
		o := *t.single
		tune(&o.ContextTimeoutEnabled, &o.DialerRetries, &o.ClientName, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout)
		return redis.NewClient(&o)
	}
}

// redact hides the password of a URL-like string for messages.
func redact(raw string) string {
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "…@" + raw[i+1:]
		}
	}
	return raw
}

// redactErr keeps url.Parse's reason without the text it quotes.
func redactErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
