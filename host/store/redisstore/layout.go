package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// keys are the names this store uses, all under Config.Prefix. Keys that
// one script touches together share a hash tag (the part in braces), so
// that Redis Cluster keeps them in one slot: the rules and their version,
// generation and deleted set in "{<prefix>rules}", and every violation
// key, its counts, dedup and tally keys in "{<prefix>violations}". A
// module is read and written alone and needs no tag. On one server the
// tags are just part of the names.
type keys struct {
	prefix       string
	rules        string // hash: rule ID → record JSON
	rulesVersion string // counter, bumped by every rule change
	rulesChanged string // pub/sub channel (not a key): the new rules version
	generation   string // string: random, exists as long as the rules do
	deleted      string // set: IDs of rules deleted in this generation
	violations   string // sorted set: violation keys
	data         string // hash: violation key → value
	index        string // sorted set: filter prefix + violation key
	ruleCounts   string // sorted set: rule index prefix, scored by its violations stored
	minutes      string // sorted set: minutes that have counts, scored by Unix seconds
}

func newKeys(prefix string) keys {
	r, v := "{"+prefix+"rules}", "{"+prefix+"violations}"
	return keys{
		prefix:       prefix,
		rules:        r,
		rulesVersion: r + ":version",
		rulesChanged: prefix + "rules:changed",
		generation:   r + ":generation",
		deleted:      r + ":deleted",
		violations:   v,
		data:         v + ":data",
		index:        v + ":index",
		ruleCounts:   v + ":rules",
		minutes:      v + ":minutes",
	}
}

func (k keys) module(sha string) string { return k.prefix + "module:" + sha }

// counts is the hash of one minute's counts (Unix seconds).
func (k keys) counts(minute int64) string {
	return k.violations + ":counts:" + strconv.FormatInt(minute, 10)
}

func (k keys) tally(token string) string { return k.violations + ":tally:" + token }

func (k keys) dedup(ruleID, traceID string) string {
	return k.violations + ":dedup:" + ruleID + ":" + traceID
}

// scriptMigrate renames the keys of the layout before hash tags
// ("<prefix>rules", "<prefix>violations:data", …) to their tagged names,
// where the old exists and the new does not, so an upgraded instance finds
// the rules and violations its predecessor kept. KEYS: old and new name
// pairs, the new minutes key last. ARGV: the old and new prefix of a
// minute's counts hash. It touches keys it does not declare (the counts
// hashes, named by the minutes it reads), which only a single server
// allows; Redis Cluster never held the old layout. Answers how many keys
// it renamed.
var scriptMigrate = redis.NewScript(`
local moved = 0
local function mv(o, n)
  if redis.call('EXISTS', o) == 1 and redis.call('EXISTS', n) == 0 then
    redis.call('RENAME', o, n)
    moved = moved + 1
  end
end
for i = 1, #KEYS - 1, 2 do mv(KEYS[i], KEYS[i + 1]) end
for _, m in ipairs(redis.call('ZRANGE', KEYS[#KEYS], 0, -1)) do mv(ARGV[1] .. m, ARGV[2] .. m) end
return moved
`)

// migrateLayout moves data kept under the old key names to the tagged
// ones (scriptMigrate). Dedup and tally keys are not moved: they expire
// within DedupTTL and an hour, and their loss can at worst let a trace
// evaluated again within that time record its violations twice. Every
// instance of a cluster must be upgraded together: one still running the
// old layout writes where the others no longer read.
func (s *Store) migrateLayout(ctx context.Context) error {
	p, k := s.cfg.Prefix, s.k
	pairs := []string{
		p + "rules", k.rules,
		p + "rules:version", k.rulesVersion,
		p + "rules:generation", k.generation,
		p + "rules:deleted", k.deleted,
		p + "violations", k.violations,
		p + "violations:data", k.data,
		p + "violations:index", k.index,
		p + "violations:rules", k.ruleCounts,
		p + "violations:minutes", k.minutes,
	}
	keys := append(pairs, k.minutes)
	err := scriptMigrate.Run(ctx, s.rdb, keys, p+"violations:counts:", k.violations+":counts:").Err()
	return s.fail(ctx, "move keys to the hash-tagged layout", err)
}

// checkMode refuses a redis:// URL that points at a Cluster node or a
// Sentinel, naming the URL form that fits, instead of failing later with
// MOVED or "unknown command". A server that does not answer INFO (some
// managed services rename it) is taken as it is.
func (s *Store) checkMode(ctx context.Context) error {
	if s.kind != standalone {
		return nil
	}
	info, err := s.rdb.Info(ctx, "server").Result()
	if err != nil {
		return nil
	}
	switch infoField(info, "redis_mode") {
	case "cluster":
		return fmt.Errorf("redisstore: open: %s is a Redis Cluster node: use redis+cluster://host:port[,host:port...] in BETRACE_REDIS_URL", s.where)
	case "sentinel":
		return fmt.Errorf("redisstore: open: %s is a Sentinel, not a data server: use redis+sentinel://host:26379[,host:26379...]/<primary name> in BETRACE_REDIS_URL", s.where)
	}
	return nil
}

// infoField reads one "name:value" line of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), name+":"); ok {
			return v
		}
	}
	return ""
}
