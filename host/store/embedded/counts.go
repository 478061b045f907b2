package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

// Counts live in bucket "counts", one row per (minute, rule, severity):
// the key is the minute (Unix ns, sign bit flipped, big-endian, like a
// violation key), the rule ID, a zero byte and the severity, so a time
// range is a key range; the value is two big-endian uint64, kept then
// counted. Rule IDs never hold a zero byte (rules.ValidateID). Bucket
// "tally-tokens" maps a CountViolations token to when it was seen.

const countValueLen = 16

// countKey is a row's key; countKey(minute, "", "") sorts before every
// row of that minute.
func countKey(minute int64, ruleID, severity string) []byte {
	k := make([]byte, 0, 8+len(ruleID)+1+len(severity))
	k = binary.BigEndian.AppendUint64(k, encodeTS(minute))
	k = append(k, ruleID...)
	if ruleID != "" || severity != "" {
		k = append(k, 0)
		k = append(k, severity...)
	}
	return k
}

func splitCountKey(k []byte) (minute int64, ruleID, severity string, ok bool) {
	if len(k) < 9 {
		return 0, "", "", false
	}
	rest := k[8:]
	z := bytes.IndexByte(rest, 0)
	if z < 0 {
		return 0, "", "", false
	}
	return decodeTS(binary.BigEndian.Uint64(k)), string(rest[:z]), string(rest[z+1:]), true
}

func minuteOf(ts int64) int64 {
	m := ts - ts%int64(violations.CountResolution)
	if ts < 0 && m != ts {
		m -= int64(violations.CountResolution)
	}
	return m
}

// countFresh turns rows about to be stored into kept-and-counted tallies.
func countFresh(fresh []*pending) []violations.Tally {
	type key struct {
		minute         int64
		rule, severity string
	}
	at := map[key]int{}
	var out []violations.Tally
	for _, p := range fresh {
		k := key{minuteOf(p.ts), p.ruleID, p.severity}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, violations.Tally{RuleID: p.ruleID, Severity: p.severity, Minute: time.Unix(0, k.minute)})
		}
		out[i].Count++
	}
	return out
}

// addCounts adds tallies to the counts: as kept and counted when they are
// the violations being stored (kept), as counted only otherwise.
func addCounts(b *bolt.Bucket, ts []violations.Tally, kept bool) error {
	for _, t := range ts {
		k := countKey(minuteOf(violations.UnixNano(t.Minute)), t.RuleID, t.Severity)
		var kv, cv uint64
		if v := b.Get(k); len(v) == countValueLen {
			kv, cv = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
		}
		if kept {
			kv += uint64(t.Count)
		}
		cv += uint64(t.Count)
		val := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, countValueLen), kv), cv)
		if err := b.Put(k, val); err != nil {
			return err
		}
	}
	return nil
}

// trimCounts deletes up to budget rows of minutes wholly before cutoff and
// says how many it deleted.
func trimCounts(b *bolt.Bucket, cutoff int64, budget int) (int, error) {
	bound := countKey(minuteOf(cutoff), "", "")
	var ks [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, bound) < 0 && len(ks) < budget; k, _ = c.Next() {
		ks = append(ks, bytes.Clone(k))
	}
	for _, k := range ks {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(ks), nil
}

// CountViolations adds tallies of violations that were found but not
// kept (counted, not kept) in one transaction. A token seen within
// store.TallyTokenTTL counts nothing, so a call retried after a timeout
// whose first attempt committed does not count twice.
func (s *Store) CountViolations(ctx context.Context, token string, ts []violations.Tally) error {
	const op = "count violations"
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	if len(ts) == 0 {
		return nil
	}
	if token == "" {
		return fmt.Errorf("embedded: %s: the token is empty: give each call a unique token", op)
	}
	now := s.now()
	err = s.update(func(tx *bolt.Tx) error {
		tokens := tx.Bucket(bucketTallyTokens)
		if tokens.Get([]byte(token)) != nil {
			return nil // a retry of a call that committed
		}
		// Forget tokens past their TTL; a call a second keeps this small.
		expired := violations.UnixNano(now.Add(-store.TallyTokenTTL))
		c := tokens.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < expired {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		if err := tokens.Put([]byte(token), binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano()))); err != nil {
			return err
		}
		return addCounts(tx.Bucket(bucketCounts), ts, false)
	})
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// SummarizeViolations adds up the counts of q's minutes, rules and
// severities into rows of q.Bucket, oldest first. Minutes past
// MaxViolationAge are not counted, trimmed yet or not.
func (s *Store) SummarizeViolations(ctx context.Context, q violations.SummaryQuery) ([]violations.SummaryRow, error) {
	const op = "summarize violations"
	exit, err := s.enter(ctx, op)
	if err != nil {
		return nil, err
	}
	defer exit()
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("embedded: %s: %w", op, err)
	}
	lo := minuteOf(s.cutoff())
	if !q.Start.IsZero() {
		lo = max(lo, minuteOf(violations.UnixNano(q.Start)))
	}
	hi := int64(-1 << 63) // unbounded when End is zero
	if !q.End.IsZero() {
		hi = violations.UnixNano(q.End)
	}
	var rows []violations.SummaryRow
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCounts).Cursor()
		for k, v := c.Seek(countKey(lo, "", "")); k != nil; k, v = c.Next() {
			minute, rule, sev, ok := splitCountKey(k)
			if !ok || len(v) != countValueLen {
				return fmt.Errorf("%w: count row %x", store.ErrCorrupt, k)
			}
			if !q.End.IsZero() && minute > hi {
				break
			}
			if (q.RuleID != "" && rule != q.RuleID) || (q.Severity != "" && sev != q.Severity) {
				continue
			}
			rows = append(rows, violations.SummaryRow{RuleID: rule, Severity: sev, Start: time.Unix(0, minute).UTC(),
				Kept: int64(binary.BigEndian.Uint64(v)), Counted: int64(binary.BigEndian.Uint64(v[8:]))})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: %s: %w", op, err)
	}
	return violations.Rollup(rows, q.Bucket), nil
}
