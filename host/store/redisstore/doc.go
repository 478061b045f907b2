// Package redisstore is BeTrace's shared store: rules, modules and
// violations in one Redis server (BETRACE_REDIS_URL), used by every
// instance of a cluster at once. It implements store.Store, so it passes
// the same conformance suite (store/storetest) as the embedded store, and
// adds what a cluster needs: a rules version with change hints for
// keeping rule caches in sync, and de-duplication of violations per
// (rule, trace).
//
// It needs Redis 6.2 or later (ZMSCORE): one server (or a managed
// endpoint), the primary of a Sentinel group, or a Redis Cluster, each
// through go-redis's own client for it (see url.go for the URL forms).
// Every key lives under Config.Prefix, so several BeTrace deployments, or
// other applications, can share a server.
//
// # Key layout
//
// Every BeTrace key in Redis, this package's and the cluster's, with the
// default prefix "betrace:". Keys one script touches together share a
// hash tag, the part in braces, so that Redis Cluster keeps them in one
// slot; on one server the braces are only part of the name.
//
//	key                                  type     holds
//	{betrace:rules}                      hash     rule ID → rules.Record as JSON
//	{betrace:rules}:version              string   counter, +1 on every rule change
//	{betrace:rules}:generation           string   random; exists as long as the rules do (see Losing the data)
//	{betrace:rules}:deleted              set      IDs of rules deleted, so a republish does not bring them back
//	betrace:rules:changed                channel  the new version, after each change (pub/sub, not a key)
//	betrace:module:<sha256>              string   module bytes, under their lower-case hex digest
//	{betrace:violations}                 zset     every violation's key (all scores 0, ordered by key)
//	{betrace:violations}:data            hash     violation key → value (index prefixes, then JSON)
//	{betrace:violations}:index           zset     filter prefix + violation key, 4 per violation
//	{betrace:violations}:rules           zset     rule index prefix "r:<len>:<rule>:" → its violations stored (retention per rule, largest rule)
//	{betrace:violations}:counts:<min>    hash     "k|"/"c|" + "rs:<len>:<rule>:<len>:<severity>:" → kept/counted in minute <min> (Unix s); expires with the minute's violations
//	{betrace:violations}:minutes         zset     minutes that have counts, scored by Unix seconds (for summaries)
//	{betrace:violations}:tally:<token>   string   a CountViolations call already counted; TTL 1h
//	{betrace:violations}:dedup:<r>:<t>   string   token of the evaluation that recorded the pair (rule r, trace t); TTL DedupTTL
//	{betrace:cluster}:members            zset     live instances, scored by when they expire (package cluster)
//	{betrace:cluster}:views              list     the latest membership views, newest first (package cluster)
//	betrace:strikes:<rule>               zset     faults of a rule in the quarantine window, shared (package cluster)
//	betrace:cluster:token                string   bearer token instances forward spans with (package cluster), when BETRACE_CLUSTER_TOKEN is unset
//
// All violations of a deployment live in one slot, so Redis Cluster gives
// them failover, not more memory than one node has: size that node for
// MaxViolations. Before the hash tags the same keys had plain names
// ("betrace:rules", "betrace:violations:data", …); Open renames them on one
// server (not the dedup and tally keys, which expire), so the rules and
// violations an earlier version kept are found after an upgrade. Stop
// every instance before upgrading: one still running the earlier version
// writes where the others no longer read.
//
// A violation's key is its timestamp (Unix nanoseconds, sign bit flipped,
// as 20 decimal digits), ':' and its ID, so byte order, which Redis uses
// for members of equal score, is time order then ID order, and a time
// range is a key range (ZRANGEBYLEX, ZLEXCOUNT). The index holds each
// violation four times, behind the prefixes "s:<len>:<severity>:",
// "r:<len>:<rule>:", "t:<len>:<trace>:" and "rs:<len>:<rule>:<len>:<severity>:",
// so a filter is a key range too. The lengths make prefixes unambiguous
// whatever a value holds. Rule IDs cannot contain ':' (rules.ValidateID),
// so dedup keys are unambiguous as well.
//
// # Why sorted sets and not a stream
//
// A stream's entry IDs must grow: XADD refuses an ID below the last one.
// Violations arrive out of timestamp order, from several workers and
// instances (each stamps its own clock before its append reaches Redis),
// and queries must list them newest first by timestamp with ties by ID,
// filter by nanosecond bounds and page with stable cursors. A stream would
// have to clamp IDs to arrival order, which lists violations in the wrong
// order and makes time filters approximate; the shared conformance suite,
// which appends shuffled batches, fails. Sorted sets keep exact order
// whatever the arrival order, count any range in O(log n), and make a
// retried append idempotent (ZADD of an existing member changes nothing).
// Trimming is exact, not approximate.
//
// # Queries
//
// One script reads the count, the page and the page's values, so they
// agree. A query with no filter, one filter, or rule and severity
// together (their own index) costs O(log n) plus the page: ZLEXCOUNT for
// TotalCount, one ZREVRANGEBYLEX for the page, HMGET for the values. A
// query that combines a trace with other filters walks that trace's
// violations (the smallest of the filters, by count in the window) and
// checks each in the other filters with ZMSCORE: a trace holds few
// violations, so this stays small. BenchmarkStore100k has the figures. A
// cursor is the base64url of the last key returned; it continues strictly
// after that violation whatever has been appended since. Queries never
// return a violation older than MaxViolationAge, trimmed yet or not.
//
// # De-duplication
//
// A trace is evaluated once, by the instance that owns it. When cluster
// membership changes, ownership moves, and a trace may be evaluated twice,
// in part on each owner. So that this does not record the same finding
// twice, the first batch that records violations of a (rule, trace) pair
// claims it: AppendViolations sets betrace:dedup:<rule>:<trace> (SET with
// a TTL of DedupTTL, default 1h) to a token of that batch, the smallest
// violation ID among the batch's violations of the pair. For DedupTTL
// after that:
//
//   - every violation of the pair in the claiming batch is kept: a rule
//     that fires several times on one trace in one evaluation records
//     each violation;
//   - the same batch sent again (a retry after a timeout, by the same or
//     another instance, in any order) finds its own token and is written
//     again; violation keys are (timestamp, ID), so nothing is doubled and
//     nothing is lost if the first attempt never arrived;
//   - another batch with violations of the pair (a second evaluation: its
//     violation IDs differ) finds another token, and those violations are
//     skipped; the batch's other pairs are stored. Duplicates counts what
//     was skipped.
//
// The check, the claim, the writes and the trim are one script, so two
// instances racing with the same pair cannot both win. After DedupTTL the
// pair can be recorded again. A negative DedupTTL turns de-duplication
// off, and AppendViolations then stores every violation it is given, as
// the embedded store does (the conformance suite runs so: it appends the
// same pairs in many batches).
//
// # Consistency
//
// Every write is one Lua script, which Redis runs atomically, so a rule
// update, a batch of violations and its trimming either happen whole or
// not at all, and no reader sees half of one. UpdateRule compares the
// stored Revision with r.Revision-1 inside its script, so of several
// instances updating one rule from the same revision exactly one wins and
// the others get store.ErrConflict. Each rule change increments
// betrace:rules:version in the same script and publishes the new version
// on betrace:rules:changed.
//
// A rule cache elsewhere (the cluster's sync loop) keeps itself current by
// snapshot, hint and poll: RulesSnapshot reads every rule and the version
// they are at in one script; Subscribe delivers hints, the published
// versions plus the current version each time its subscription is
// (re)established; and since pub/sub loses what is published while a
// connection is down, the loop also polls RulesVersion, and reloads when
// either shows a version above its own.
//
// # Losing the data
//
// Redis without persistence that restarts, or a FLUSHALL, empties the
// rules while every instance still holds them. Taking the empty hash, or
// the one rule written into it since, for the rule set would delete every
// other rule everywhere. So the rules carry a generation: a random value
// that a read creates when it is missing and that each Store remembers
// from its first read. Every rule write names it and the script refuses
// (store.ErrReset, nothing written) when Redis holds another or none; reads
// that find another answer store.ErrReset too, however soon after the loss
// and whatever was written since. The caller then puts back what it holds
// with RepublishRules: one script, so a reader sees all of it or none of
// it and the version moves once. It writes a rule only when it is missing
// (and not in betrace:rules:deleted) or stored at a lower revision, so
// instances republishing in any order converge on the union of what they
// held, less what was deleted since, and adopts the generation it found or
// started.
//
// Durability is Redis's: a write that returns nil is in Redis's memory,
// and survives a Redis restart only as far as its persistence (AOF with
// appendfsync everysec loses up to a second) and replication allow.
// Writes are made idempotent where a retry could otherwise misreport:
// creating or updating a rule with a record identical to the stored one
// succeeds without a change (so a retried call whose first attempt landed
// does not report ErrExists or ErrConflict), PutModule writes only bytes
// that differ from those stored, and appends are idempotent as above.
// DeleteRule is not: a retry after a delete that landed reports
// store.ErrNotFound.
//
// # Retention
//
// Every append trims in its script: first violations older than
// MaxViolationAge (default 7 days), then each rule's oldest beyond
// MaxViolationsPerRule (default 25,000), then, while the total is beyond
// MaxViolations (default 250,000), the oldest of the rule holding the most
// (betrace:violations:rules says which), at most 10,000 per script so a
// large trim does not stall Redis; Trim finishes one. A storming rule so
// evicts its own history, never a quiet rule's.
//
// # Counts
//
// The append script adds every violation it stores for the first time to
// its minute's counts hash as kept and counted; CountViolations adds
// tallies of violations the recorder only counted as counted, once per
// token (SET NX). Counts live in Redis, so every instance serves the same
// summary, and cost one HINCRBY per (rule, severity, minute) of a batch,
// never a call per span. SummarizeViolations reads the minutes of its
// window (ZRANGEBYSCORE) and one HGETALL each, pipelined. Data written
// before betrace:violations:rules existed is not in it: retention by rule
// sees only violations appended since. Each violation costs Redis about 2 KB
// (TestMemoryPerViolation measured 1,949 bytes of used_memory for 450
// bytes of JSON: its key six times, the index and hash overhead, and 136
// bytes of (rule, trace) dedup keys, which expire after DedupTTL), so the
// default retention of 250,000 needs about 500 MB; lower MaxViolations to
// fit the server's maxmemory.
//
// # Sentinel and Cluster
//
// With redis+sentinel:// the client asks the Sentinels for the primary,
// follows them when they fail over (their +switch-master message closes
// the connections to the old one) and retries commands that meet a
// demoted primary (READONLY) or a restarted one (LOADING) with backoff,
// within Timeout. Redis replicates asynchronously, so each write also
// waits, on its connection, for WaitReplicas replicas to hold it (default
// 1 with Sentinel): a write a failover could lose fails instead, and is
// retried or spooled (see replicas.go). With redis+cluster:// the client
// follows MOVED and ASK during a slot migration and retries TRYAGAIN and
// CLUSTERDOWN; scripts are loaded on whichever node owns their slot. Pub/sub
// hints reach subscribers on any node of both. Every failure that outlasts
// Timeout is store.ErrUnavailable like an outage, and the same Store works
// again once the new primary answers: nothing needs a restart.
//
// # Timeouts and outages
//
// Every call runs under Config.Timeout (default 2s), retries included;
// go-redis honours it for dials, reads and writes. When Redis is down,
// refuses, hangs or is loading, every call returns an error wrapping
// store.ErrUnavailable within about Timeout (at once when connections
// are refused), whose message starts with "redisstore: ", names the
// operation and the address and says what to check; the API answers 503,
// and the cluster layer spools violations and serves cached rules. The
// same Store works again once Redis is back: go-redis redials (it probes
// once a second after repeated dial failures) and Subscribe re-subscribes
// by itself. Open pings once and fails, naming the address, if Redis does
// not answer. A reply that is not about availability (WRONGTYPE when
// another application uses the prefix) is an error of its own.
//
// go-redis logs failed dials through its own logger (redis.SetLogger),
// which is the main package's to route.
package redisstore
