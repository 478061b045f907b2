package redisstore

import "github.com/redis/go-redis/v9"

// Every write is one Lua script, so Redis runs it atomically: no other
// client's command runs between its reads and its writes, and a retried
// script sees what the first attempt did. Scripts take every key they touch
// in KEYS except the members of sorted sets, and call only deterministic
// commands. Lua string comparison follows the server's locale, so the
// scripts never compare strings by order, only for equality.

// Rule scripts answer {status, version}: status "ok" (version is the new
// rules version), "same" (the stored record already is this one: a retry),
// "exists", "missing", "conflict" (version is the stored revision),
// "corrupt" or "reset" (the generation is not the caller's: Redis lost its
// data, or another instance put the rules back, since the caller last read
// them; nothing was written). Each takes KEYS rules, version, generation,
// deleted, and its last three ARGV are the generation the caller read, the
// channel to publish on and the current Unix time in milliseconds.
//
// The generation is a random value that exists as long as the rules do: a
// read creates it when it is missing, and every write must name it. Redis
// that lost its data loses it with the rules, so a write into an emptied
// Redis is refused however soon after the loss it comes, instead of
// starting a rule set that other instances would take for the whole one.

// luaBump increments the rules version and publishes it. A version that
// does not exist yet starts at the current time in milliseconds, so that
// versions keep growing even when Redis loses its data.
const luaBump = `
local function bump()
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[#ARGV]) end
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[#ARGV - 1], v)
  return v
end
`

// luaRuleWrite is luaBump and the generation check every rule write
// starts with.
const luaRuleWrite = luaBump + `
if redis.call('GET', KEYS[3]) ~= ARGV[#ARGV - 2] then return {'reset', 0} end
`

// scriptCreateRule: ARGV id, record.
var scriptCreateRule = redis.NewScript(luaRuleWrite + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[2] then return {'same', 0} end
  return {'exists', 0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[1])
return {'ok', bump()}
`)

// scriptUpdateRule: ARGV id, record, the revision the stored record must
// have.
var scriptUpdateRule = redis.NewScript(luaRuleWrite + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {'missing', 0} end
if cur == ARGV[2] then return {'same', 0} end
local ok, rec = pcall(cjson.decode, cur)
if not ok or type(rec) ~= 'table' then return {'corrupt', 0} end
local rev = rec['revision']
if rev == nil then rev = 0 end
if type(rev) ~= 'number' then return {'corrupt', 0} end
if rev ~= tonumber(ARGV[3]) then return {'conflict', rev} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'ok', bump()}
`)

// scriptDeleteRule: ARGV id. The ID is remembered as deleted, so that an
// instance putting back rules after a data loss does not bring back one
// deleted since.
var scriptDeleteRule = redis.NewScript(luaRuleWrite + `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return {'missing', 0} end
redis.call('SADD', KEYS[4], ARGV[1])
return {'ok', bump()}
`)

// luaGeneration reads the generation (KEYS[3]), creating it as ARGV[1]
// when it is missing.
const luaGeneration = `
local gen = redis.call('GET', KEYS[3])
if not gen then
  gen = ARGV[1]
  redis.call('SET', KEYS[3], gen)
end
`

// scriptRulesSnapshot: KEYS rules, version, generation; ARGV a new
// generation. Answers {version, generation, id, record, id, record, ...}
// from one instant.
var scriptRulesSnapshot = redis.NewScript(luaGeneration + `
local out = {tonumber(redis.call('GET', KEYS[2]) or '0'), gen}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
`)

// scriptRulesVersion: KEYS rules, version, generation; ARGV a new
// generation. Answers {version, generation}.
var scriptRulesVersion = redis.NewScript(luaGeneration + `
return {tonumber(redis.call('GET', KEYS[2]) or '0'), gen}
`)

// scriptRepublish puts back rules an instance holds, in one step, so that
// no reader sees half of them. KEYS rules, version, generation, deleted.
// ARGV: a new generation (used if there is none), the number of rules,
// then per rule its ID, record and revision, then the channel and the
// current Unix time in milliseconds. A rule is written when it is missing
// and was not deleted since the generation began, or when the stored
// record has a lower revision; the version is bumped once if anything was
// written. Answers {written, version, generation}.
var scriptRepublish = redis.NewScript(luaBump + luaGeneration + `
local n, written = tonumber(ARGV[2]), 0
for i = 0, n - 1 do
  local id, rec, rev = ARGV[3 + 3 * i], ARGV[4 + 3 * i], tonumber(ARGV[5 + 3 * i])
  if redis.call('SISMEMBER', KEYS[4], id) == 0 then
    local cur = redis.call('HGET', KEYS[1], id)
    local write = not cur
    if cur and cur ~= rec then
      local ok, r = pcall(cjson.decode, cur)
      local have = ok and type(r) == 'table' and r['revision']
      write = type(have) ~= 'number' or have < rev
    end
    if write then
      redis.call('HSET', KEYS[1], id, rec)
      written = written + 1
    end
  end
end
local v
if written > 0 then v = bump() else v = tonumber(redis.call('GET', KEYS[2]) or '0') end
return {written, v, gen}
`)

// scriptPutModule: KEYS module; ARGV bytes. Writes unless the same bytes
// are stored, so a corrupted copy is repaired; answers 1 if it wrote.
var scriptPutModule = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`)

// luaDrop is shared by the violation scripts. Keys are violation keys;
// each value starts with a format byte and the index prefixes of its
// violation (see encodeValue), which say which index members it has.
const luaDrop = `
local function prefixes(v)
  local out, pos = {}, 2
  for i = 1, 4 do
    local c = string.find(v, ':', pos, true)
    if not c then return nil end
    local n = tonumber(string.sub(v, pos, c - 1))
    if not n then return nil end
    out[i] = string.sub(v, c + 1, c + n)
    pos = c + n + 1
  end
  return out
end

local function index(idx, k, v)
  local ps = prefixes(v)
  if not ps then error('violation ' .. k .. ': bad value header') end
  redis.call('ZADD', idx, 0, ps[1] .. k, 0, ps[2] .. k, 0, ps[3] .. k, 0, ps[4] .. k)
end

-- R names the keys and limits the violation scripts share; see newR.
local R = {}

local function drop(ks)
  for _, k in ipairs(ks) do
    local v = redis.call('HGET', R.data, k)
    local ps = v and prefixes(v)
    if ps then
      redis.call('ZREM', R.idx, ps[1] .. k, ps[2] .. k, ps[3] .. k, ps[4] .. k)
      if tonumber(redis.call('ZINCRBY', R.rules, -1, ps[2])) <= 0 then redis.call('ZREM', R.rules, ps[2]) end
    end
    redis.call('HDEL', R.data, k)
    redis.call('ZREM', R.main, k)
  end
  return #ks
end

-- dropOldestOf removes the n oldest violations of the rule whose index
-- prefix is p.
local function dropOldestOf(p, n)
  local ms = redis.call('ZRANGEBYLEX', R.idx, '[' .. p, '(' .. p .. '~', 'LIMIT', 0, n)
  local ks = {}
  for i, m in ipairs(ms) do ks[i] = string.sub(m, #p + 1) end
  return drop(ks)
end

-- trim removes violations older than the cutoff, then the oldest of each
-- rule past the per-rule cap, then, while the total is past its cap, the
-- oldest of the rule holding the most (level with the next, then the
-- level ones together), at most budget in all; it answers how many it
-- removed and whether more are due. Counts of minutes past the cutoff go
-- too.
local function trim()
  redis.call('ZREMRANGEBYSCORE', R.minutes, '-inf', '(' .. R.cutoffMinute)
  local n = drop(redis.call('ZRANGEBYLEX', R.main, '-', '(' .. R.cutoff, 'LIMIT', 0, R.budget))
  local all = redis.call('ZRANGE', R.rules, 0, -1, 'WITHSCORES')
  local loads, total = {}, 0
  for i = 1, #all, 2 do
    local c = tonumber(all[i + 1])
    local l = {p = all[i], c = c, evict = math.max(0, c - R.perRule)}
    loads[#loads + 1] = l
    total = total + c - l.evict
  end
  local over = total - R.max
  while over > 0 do
    local top, nxt, ties = 0, 0, 0
    for _, l in ipairs(loads) do
      local r = l.c - l.evict
      if r > top then top, nxt, ties = r, top, 1
      elseif r == top then ties = ties + 1
      elseif r > nxt then nxt = r end
    end
    if top == 0 then break end
    local each = math.min(top - nxt, math.ceil(over / ties))
    for _, l in ipairs(loads) do
      if l.c - l.evict == top and over > 0 then
        local t = math.min(each, over)
        l.evict, over = l.evict + t, over - t
      end
    end
  end
  for _, l in ipairs(loads) do
    if l.evict > 0 and n < R.budget then
      n = n + dropOldestOf(l.p, math.min(l.evict, R.budget - n))
    end
  end
  local biggest = redis.call('ZREVRANGE', R.rules, 0, 0, 'WITHSCORES')
  local more = redis.call('ZCARD', R.main) > R.max or
    (#biggest == 2 and tonumber(biggest[2]) > R.perRule) or
    #redis.call('ZRANGEBYLEX', R.main, '-', '(' .. R.cutoff, 'LIMIT', 0, 1) > 0
  return n, more
end

-- newR reads KEYS violations, data, index, rules, minutes and ARGV max,
-- max per rule, cutoff key, cutoff minute, budget (from ARGV[a] on).
local function newR(a)
  R.main, R.data, R.idx, R.rules, R.minutes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
  R.max, R.perRule = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  R.cutoff, R.cutoffMinute, R.budget = ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
end

-- count adds n to field f ('k' kept, 'c' counted) of rule and severity
-- prefix rs in the counts hash ck of minute m, which expires at exp (Unix
-- seconds), and lists the minute.
local function count(ck, m, exp, f, rs, n)
  redis.call('HINCRBY', ck, f .. '|' .. rs, n)
  redis.call('EXPIREAT', ck, exp)
  redis.call('ZADD', R.minutes, m, m)
end
`

// scriptAppend stores a batch of violations, de-duplicates it per (rule,
// trace), counts what it stores for the first time, then trims. KEYS:
// violations, data, index, rules, minutes, then one dedup key per group
// when de-duplication is on, then one counts hash per minute of the batch.
// ARGV: the five retention arguments of newR, dedup TTL in ms (0 = off),
// number of groups, number of minutes, then per minute its Unix seconds
// and the Unix seconds its counts expire at, then per group its token and
// its violation count followed by each violation's key, value and minute
// (1-based, in the minutes). Go has validated every value's header.
// Answers {newly stored, skipped as duplicates, trimmed, more to trim (0/1)}.
var scriptAppend = redis.NewScript(luaDrop + `
newR(1)
local ttl, groups, nmin = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local dedupKeys = 0
if ttl > 0 then dedupKeys = groups end
local mins = {}
for i = 1, nmin do
  mins[i] = {k = KEYS[5 + dedupKeys + i], m = ARGV[7 + 2 * i], exp = ARGV[8 + 2 * i]}
end
local a = 9 + 2 * nmin
local stored, skipped = 0, 0
local kept = {} -- minute index -> rs prefix -> newly stored
for g = 1, groups do
  local token, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local write = true
  if ttl > 0 then
    local dk = KEYS[5 + g]
    local cur = redis.call('GET', dk)
    if not cur then
      redis.call('SET', dk, token, 'PX', ttl)
    elseif cur ~= token then
      write = false
    end
  end
  for i = 1, n do
    if write then
      local k, v, mi = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
      local ps = prefixes(v)
      if redis.call('ZADD', R.main, 0, k) == 1 then
        stored = stored + 1
        kept[mi] = kept[mi] or {}
        kept[mi][ps[4]] = (kept[mi][ps[4]] or 0) + 1
      else
        -- Stored before (a retry, or the same key reused): replace it.
        local old = redis.call('HGET', R.data, k)
        local ops = old and prefixes(old)
        if ops then
          redis.call('ZREM', R.idx, ops[1] .. k, ops[2] .. k, ops[3] .. k, ops[4] .. k)
          redis.call('ZINCRBY', R.rules, -1, ops[2])
        end
      end
      redis.call('HSET', R.data, k, v)
      index(R.idx, k, v)
      redis.call('ZINCRBY', R.rules, 1, ps[2])
    else
      skipped = skipped + 1
    end
    a = a + 3
  end
end
for mi, byRS in pairs(kept) do
  local m = mins[mi]
  for rs, c in pairs(byRS) do
    count(m.k, m.m, m.exp, 'k', rs, c)
    count(m.k, m.m, m.exp, 'c', rs, c)
  end
end
local trimmed, more = trim()
return {stored, skipped, trimmed, more and 1 or 0}
`)

// scriptCount adds tallies of violations found but not kept, once per
// token. KEYS: the five of newR, the token key, then one counts hash per
// minute. ARGV: the five retention arguments, the token TTL in ms, number
// of minutes, per minute its Unix seconds and expiry, then per tally its
// minute (1-based), rule and severity prefix and count. Answers 1 if it
// counted, 0 for a token already seen.
var scriptCount = redis.NewScript(luaDrop + `
newR(1)
if not redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[6]) then return 0 end
local nmin = tonumber(ARGV[7])
local a = 8 + 2 * nmin
while a <= #ARGV do
  local mi = tonumber(ARGV[a])
  count(KEYS[6 + mi], ARGV[6 + 2 * mi], ARGV[7 + 2 * mi], 'c', ARGV[a + 1], tonumber(ARGV[a + 2]))
  a = a + 3
end
return 1
`)

// scriptQuery finds one page of violations. KEYS: violations, data, index.
// ARGV: page size, number of sources, then five arguments per source:
// index prefix ("" for the violations set itself), the window's lower and
// upper bounds, the upper bound of the part below the cursor, and the
// lower bound of the part at or above it ("" without a cursor). Bounds are
// in ZRANGEBYLEX syntax. One source is counted with ZLEXCOUNT and paged
// with one ZREVRANGEBYLEX. With several (a trace and another filter), the
// smallest is walked newest first, 500 members at a time, each checked in
// the others with one ZMSCORE per other filter.
// Answers {total, more (0/1), keys, values}.
var scriptQuery = redis.NewScript(`
local main, data, idx = KEYS[1], KEYS[2], KEYS[3]
local limit, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local src = {}
for i = 1, n do
  local b = 3 + (i - 1) * 5
  src[i] = {p = ARGV[b], lo = ARGV[b + 1], hi = ARGV[b + 2], bhi = ARGV[b + 3], alo = ARGV[b + 4]}
end
local total, more, keys = 0, 0, {}
if n == 1 then
  local s = src[1]
  local set = idx
  if s.p == '' then set = main end
  total = redis.call('ZLEXCOUNT', set, s.lo, s.hi)
  local ms = redis.call('ZREVRANGEBYLEX', set, s.bhi, s.lo, 'LIMIT', 0, limit + 1)
  for i, m in ipairs(ms) do
    if i > limit then more = 1 break end
    keys[i] = string.sub(m, #s.p + 1)
  end
else
  local best, bestn = 0, -1
  for i, s in ipairs(src) do
    local c = redis.call('ZLEXCOUNT', idx, s.lo, s.hi)
    if bestn < 0 or c < bestn then best, bestn = i, c end
  end
  if bestn > 0 then
    local s = src[best]
    local others = {}
    for i, o in ipairs(src) do
      if i ~= best then others[#others + 1] = o.p end
    end
    local function walk(maxb, minb, collect)
      while true do
        local ms = redis.call('ZREVRANGEBYLEX', idx, maxb, minb, 'LIMIT', 0, 500)
        if #ms == 0 then return end
        local ks = {}
        for i, m in ipairs(ms) do ks[i] = string.sub(m, #s.p + 1) end
        -- Keep the keys that every other filter has, one ZMSCORE each.
        for _, op in ipairs(others) do
          local probe = {}
          for i, k in ipairs(ks) do probe[i] = op .. k end
          local scores = redis.call('ZMSCORE', idx, unpack(probe))
          local kept = {}
          for i, k in ipairs(ks) do
            if scores[i] then kept[#kept + 1] = k end
          end
          ks = kept
          if #ks == 0 then break end
        end
        total = total + #ks
        if collect then
          for _, k in ipairs(ks) do
            if #keys < limit then keys[#keys + 1] = k else more = 1 end
          end
        end
        if #ms < 500 then return end
        maxb = '(' .. ms[#ms]
      end
    end
    if s.alo ~= '' then walk(s.hi, s.alo, false) end
    walk(s.bhi, s.lo, true)
  end
end
local vals = {}
if #keys > 0 then vals = redis.call('HMGET', data, unpack(keys)) end
return {total, more, keys, vals}
`)

// scriptTrim applies retention. KEYS and ARGV: those of newR. Answers
// {trimmed, more (0/1)}.
var scriptTrim = redis.NewScript(luaDrop + `
newR(1)
local trimmed, more = trim()
return {trimmed, more and 1 or 0}
`)
