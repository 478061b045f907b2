package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// minuteOf is the minute of t in Unix seconds.
func minuteOf(t time.Time) int64 {
	return t.Truncate(violations.CountResolution).Unix()
}

// minuteKeys numbers the distinct minutes of a call, from 1 as Lua does.
type minuteKeys struct {
	list []int64
	at   map[int64]int64
}

func (m *minuteKeys) add(minute int64) int64 {
	if i, ok := m.at[minute]; ok {
		return i
	}
	if m.at == nil {
		m.at = map[int64]int64{}
	}
	m.list = append(m.list, minute)
	m.at[minute] = int64(len(m.list))
	return int64(len(m.list))
}

// retentionKeys are the keys every violation script starts with (newR).
func (s *Store) retentionKeys() []string {
	return []string{s.k.violations, s.k.data, s.k.index, s.k.ruleCounts, s.k.minutes}
}

// retentionArgs appends the arguments of newR.
func (s *Store) retentionArgs(args []any) []any {
	cutoff := s.now().Add(-s.cfg.MaxViolationAge)
	return append(args, s.cfg.MaxViolations, s.cfg.MaxViolationsPerRule, s.cutoffKey(), minuteOf(cutoff), trimBudget)
}

// minuteArgs appends each minute's counts hash to keys and its Unix seconds
// and expiry to args. Counts expire with the violations of their minute.
func (s *Store) minuteArgs(keys []string, args []any, minutes []int64) ([]string, []any) {
	for _, m := range minutes {
		keys = append(keys, s.k.counts(m))
		args = append(args, m, m+int64((violations.CountResolution+s.cfg.MaxViolationAge)/time.Second))
	}
	return keys, args
}

// CountViolations adds tallies of violations that were found but not kept
// (counted, not kept), in one script. A token seen within
// store.TallyTokenTTL counts nothing, so a call retried after a timeout
// whose first attempt landed does not count twice.
func (s *Store) CountViolations(ctx context.Context, token string, ts []violations.Tally) error {
	const op = "count violations"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(ts) == 0 {
		return nil
	}
	if token == "" {
		return fmt.Errorf("redisstore: %s: the token is empty: give each call a unique token", op)
	}
	var mins minuteKeys
	idx := make([]int64, len(ts))
	for i, t := range ts {
		idx[i] = mins.add(minuteOf(t.Minute))
	}
	keys := append(s.retentionKeys(), s.k.tally(token))
	args := append(s.retentionArgs(nil), store.TallyTokenTTL.Milliseconds(), len(mins.list))
	keys, args = s.minuteArgs(keys, args, mins.list)
	for i, t := range ts {
		args = append(args, idx[i], indexPrefix(tagRuleSeverity, t.RuleID, t.Severity), t.Count)
	}
	if err := s.run(c, scriptCount, keys, args...).Err(); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// SummarizeViolations adds up the counts of q's minutes, rules and
// severities into rows of q.Bucket, oldest first: one ZRANGEBYSCORE for
// the minutes that have counts, then one pipelined HGETALL per minute.
// Minutes past MaxViolationAge are not counted, expired yet or not.
func (s *Store) SummarizeViolations(ctx context.Context, q violations.SummaryQuery) ([]violations.SummaryRow, error) {
	const op = "summarize violations"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	lo := minuteOf(s.now().Add(-s.cfg.MaxViolationAge))
	if !q.Start.IsZero() {
		lo = max(lo, minuteOf(q.Start))
	}
	hi := "+inf"
	if !q.End.IsZero() {
		hi = strconv.FormatInt(minuteOf(q.End), 10)
	}
	minutes, err := s.rdb.ZRangeByScore(c, s.k.minutes, &redis.ZRangeBy{Min: strconv.FormatInt(lo, 10), Max: hi}).Result()
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(minutes))
	for i, m := range minutes {
		n, err := strconv.ParseInt(m, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %s: %w: minute %q", op, store.ErrCorrupt, m)
		}
		cmds[i] = pipe.HGetAll(c, s.k.counts(n))
	}
	if len(minutes) > 0 {
		if _, err := pipe.Exec(c); err != nil {
			return nil, s.fail(ctx, op, err)
		}
	}
	type key struct{ minute, rs string }
	at := map[key]int{}
	var rows []violations.SummaryRow
	for i, cmd := range cmds {
		n, _ := strconv.ParseInt(minutes[i], 10, 64)
		for field, val := range cmd.Val() {
			kind, rs, ok := strings.Cut(field, "|")
			rule, sev, ok2 := parseRuleSeverity(rs)
			v, err := strconv.ParseInt(val, 10, 64)
			if !ok || !ok2 || err != nil || (kind != "k" && kind != "c") {
				return nil, fmt.Errorf("redisstore: %s: %w: count %q of minute %d", op, store.ErrCorrupt, field, n)
			}
			if (q.RuleID != "" && rule != q.RuleID) || (q.Severity != "" && sev != q.Severity) {
				continue
			}
			j, seen := at[key{minutes[i], rs}]
			if !seen {
				j = len(rows)
				at[key{minutes[i], rs}] = j
				rows = append(rows, violations.SummaryRow{RuleID: rule, Severity: sev, Start: time.Unix(n, 0).UTC()})
			}
			if kind == "k" {
				rows[j].Kept += v
			} else {
				rows[j].Counted += v
			}
		}
	}
	return violations.Rollup(rows, q.Bucket), nil
}

// parseRuleSeverity reads the rule and severity back from an index prefix
// of tagRuleSeverity: "rs:<len>:<rule>:<len>:<severity>:".
func parseRuleSeverity(p string) (rule, severity string, ok bool) {
	rest, ok := strings.CutPrefix(p, tagRuleSeverity+":")
	if !ok {
		return "", "", false
	}
	var vals [2]string
	for i := range vals {
		c := strings.IndexByte(rest, ':')
		if c < 0 {
			return "", "", false
		}
		n, err := strconv.Atoi(rest[:c])
		if err != nil || n < 0 || len(rest) < c+1+n+1 || rest[c+1+n] != ':' {
			return "", "", false
		}
		vals[i] = rest[c+1 : c+1+n]
		rest = rest[c+1+n+1:]
	}
	return vals[0], vals[1], rest == ""
}
