package redisstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

const (
	// DefaultLimit is the page size of a query whose Limit is zero.
	DefaultLimit = 100
	// MaxLimit caps a query's page size.
	MaxLimit = 1000

	// trimBudget bounds the violations one script removes, so that a large
	// trim (after MaxViolations was lowered, say) does not block Redis for
	// long; the rest goes in the next appends or Trim calls.
	trimBudget = 10_000

	tsDigits     = 20 // digits of a uint64
	valueFormat  = '1'
	cursorFormat = '1'
)

// ErrBadCursor is wrapped by QueryViolations when Query.Cursor was not
// made by this store.
var ErrBadCursor = fmt.Errorf("bad cursor: %w", store.ErrBadCursor)

// tsKey is a timestamp (Unix ns) as 20 decimal digits, sign bit flipped,
// so that byte order is time order.
func tsKey(ns int64) string {
	s := strconv.FormatUint(uint64(ns)^1<<63, 10)
	return strings.Repeat("0", tsDigits-len(s)) + s
}

// violationKey is a violation's key: its timestamp, ':', its ID. Keys
// sort by time, then by ID, byte by byte, as Redis orders members of equal
// score.
func violationKey(ns int64, id string) string { return tsKey(ns) + ":" + id }

// The index holds, for every violation, one member per filter it can be
// found by: the filter's prefix followed by the violation's key.
const (
	tagSeverity     = "s"
	tagRule         = "r"
	tagTrace        = "t"
	tagRuleSeverity = "rs"
	indexesPer      = 4 // index members per violation
)

// indexPrefix is the prefix of index members for a tag and filter values:
// the tag, then ':', length, ':' and value for each value, then ':'. The
// lengths make it unambiguous whatever the values hold.
func indexPrefix(tag string, vals ...string) string {
	var b strings.Builder
	b.WriteString(tag)
	for _, v := range vals {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	b.WriteByte(':')
	return b.String()
}

// indexPrefixes are a violation's index prefixes, in the order its value
// stores them.
func indexPrefixes(v *violations.Violation) [indexesPer]string {
	return [indexesPer]string{
		indexPrefix(tagSeverity, v.Severity),
		indexPrefix(tagRule, v.RuleID),
		indexPrefix(tagTrace, v.TraceID),
		indexPrefix(tagRuleSeverity, v.RuleID, v.Severity),
	}
}

// encodeValue is what the data hash holds for a violation: a format byte,
// its index prefixes, each as length, ':' and bytes, so that a script can
// index and unindex it without decoding JSON, then the violation as JSON.
func encodeValue(prefixes [indexesPer]string, body []byte) string {
	var b strings.Builder
	b.Grow(1 + indexesPer*4 + len(prefixes[0]) + len(prefixes[1]) + len(prefixes[2]) + len(prefixes[3]) + len(body))
	b.WriteByte(valueFormat)
	for _, p := range prefixes {
		b.WriteString(strconv.Itoa(len(p)))
		b.WriteByte(':')
		b.WriteString(p)
	}
	b.Write(body)
	return b.String()
}

// valueJSON returns the JSON part of a stored value.
func valueJSON(v string) (string, error) {
	if v == "" || v[0] != valueFormat {
		return "", errors.New("unknown value format")
	}
	rest := v[1:]
	for i := 0; i < indexesPer; i++ {
		c := strings.IndexByte(rest, ':')
		if c < 0 {
			return "", errors.New("truncated header")
		}
		n, err := strconv.Atoi(rest[:c])
		if err != nil || n < 0 || len(rest) < c+1+n {
			return "", errors.New("bad header")
		}
		rest = rest[c+1+n:]
	}
	return rest, nil
}

func encodeCursor(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(string(cursorFormat) + key))
}

func decodeCursor(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("%w: not unpadded base64url", ErrBadCursor)
	}
	switch {
	case len(b) < 1+tsDigits+2:
		return "", fmt.Errorf("%w: %d bytes is too short", ErrBadCursor, len(b))
	case b[0] != cursorFormat:
		return "", fmt.Errorf("%w: unknown format", ErrBadCursor)
	case len(b) > 1+tsDigits+1+violations.MaxIDBytes:
		return "", fmt.Errorf("%w: %d bytes is too long", ErrBadCursor, len(b))
	case b[1+tsDigits] != ':':
		return "", fmt.Errorf("%w: malformed", ErrBadCursor)
	}
	if _, err := strconv.ParseUint(string(b[1:1+tsDigits]), 10, 64); err != nil {
		return "", fmt.Errorf("%w: malformed timestamp", ErrBadCursor)
	}
	return string(b[1:]), nil
}

// pending is a validated, encoded violation on its way to Redis. minute
// is its minute in Unix seconds until AppendViolations numbers it.
type pending struct {
	key, val string
	minute   int64
}

func encodeViolation(v *violations.Violation) (pending, error) {
	if err := v.CheckStorable(); err != nil {
		return pending{}, err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return pending{}, err
	}
	return pending{
		key:    violationKey(v.Timestamp.UnixNano(), v.ID),
		val:    encodeValue(indexPrefixes(v), body),
		minute: minuteOf(v.Timestamp),
	}, nil
}

// group is the violations of one (rule, trace) pair in a batch.
type group struct {
	ruleID, traceID string
	token           string // the smallest violation ID: the same on a retry
	items           []pending
}

// cutoffKey is the tsKey before which violations are too old.
func (s *Store) cutoffKey() string {
	return tsKey(violations.UnixNano(s.now().Add(-s.cfg.MaxViolationAge)))
}

// AppendViolations stores a batch in one script, so atomically: all of it
// or none. A violation needs an ID and a Timestamp; one stored again with
// the same Timestamp and ID replaces the first, so a retried call stores
// nothing twice.
//
// With de-duplication on (the default), the violations of a (rule, trace)
// pair are skipped when another batch recorded that pair within DedupTTL;
// see the package doc. Skipped violations are not an error; Duplicates
// counts them.
//
// If the call fails with store.ErrUnavailable after sending the script
// (a timeout), the batch may or may not be stored; retrying it is safe.
func (s *Store) AppendViolations(ctx context.Context, vs []violations.Violation) error {
	const op = "append violations"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer cancel()
	if len(vs) == 0 {
		return nil
	}
	// Without de-duplication the whole batch is one group.
	var groups []*group
	byPair := map[[2]string]*group{}
	for i := range vs {
		p, err := encodeViolation(&vs[i])
		if err != nil {
			return fmt.Errorf("redisstore: %s: violation %d (id %q): %w", op, i, vs[i].ID, err)
		}
		var pair [2]string
		if s.cfg.dedup() {
			pair = [2]string{vs[i].RuleID, vs[i].TraceID}
		}
		g := byPair[pair]
		if g == nil {
			g = &group{ruleID: pair[0], traceID: pair[1], token: vs[i].ID}
			byPair[pair] = g
			groups = append(groups, g)
		}
		g.token = min(g.token, vs[i].ID)
		g.items = append(g.items, p)
	}

	keys := s.retentionKeys()
	ttl := int64(0)
	if s.cfg.dedup() {
		ttl = max(1, s.cfg.DedupTTL.Milliseconds())
	}
	var mins minuteKeys
	for _, g := range groups {
		for i := range g.items {
			g.items[i].minute = mins.add(g.items[i].minute)
		}
	}
	args := make([]any, 0, 8+2*len(mins.list)+2*len(groups)+3*len(vs))
	args = append(s.retentionArgs(args), ttl, len(groups), len(mins.list))
	for _, g := range groups {
		if s.cfg.dedup() {
			keys = append(keys, s.k.dedup(g.ruleID, g.traceID))
		}
	}
	keys, args = s.minuteArgs(keys, args, mins.list)
	for _, g := range groups {
		args = append(args, g.token, len(g.items))
		for _, p := range g.items {
			args = append(args, p.key, p.val, p.minute)
		}
	}
	res, err := s.run(c, scriptAppend, keys, args...).Int64Slice()
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if len(res) != 4 {
		return fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
	}
	s.duplicates.Add(uint64(res[1]))
	s.trimmed.Add(uint64(res[2]))
	return nil
}

// Trim applies retention now and returns when nothing is left to trim.
// Every append also trims, at most 10,000 violations at a time; a query
// never returns a violation older than MaxViolationAge, trimmed or not.
func (s *Store) Trim(ctx context.Context) error {
	const op = "trim violations"
	for {
		c, cancel, err := s.enter(ctx, op)
		if err != nil {
			return err
		}
		res, err := s.run(c, scriptTrim, s.retentionKeys(), s.retentionArgs(nil)...).Int64Slice()
		cancel()
		if err != nil {
			return s.fail(ctx, op, err)
		}
		if len(res) != 2 {
			return fmt.Errorf("redisstore: %s: unexpected script reply %v", op, res)
		}
		s.trimmed.Add(uint64(res[0]))
		if res[1] == 0 {
			return nil
		}
	}
}

// lexLo and lexHi render a bound of the key space ("" is unbounded) for
// ZRANGEBYLEX on members that are prefix p followed by a key. Keys start
// with a digit, so p+"~" is above all of p's members.
func lexLo(p, k string) string {
	switch {
	case k != "":
		return "[" + p + k
	case p == "":
		return "-"
	}
	return "[" + p
}

func lexHi(p, k string) string {
	switch {
	case k != "":
		return "(" + p + k
	case p == "":
		return "+"
	}
	return "(" + p + "~"
}

// QueryViolations returns one page of matches, newest first (ties by ID,
// descending). TotalCount counts every match of the filters, wherever the
// cursor is. NextCursor continues strictly after the last violation
// returned, whatever has been appended since.
//
// The count, the page and its violations are read by one script, so they
// agree. An unfiltered or single-filter query costs O(log n) plus the page;
// with several filters the script walks the smallest filter's matches in
// the time window (see the package doc).
func (s *Store) QueryViolations(ctx context.Context, q violations.Query) (violations.Page, error) {
	const op = "query violations"
	c, cancel, err := s.enter(ctx, op)
	if err != nil {
		return violations.Page{}, err
	}
	defer cancel()
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	var cur string
	if q.Cursor != "" {
		if cur, err = decodeCursor(q.Cursor); err != nil {
			return violations.Page{}, fmt.Errorf("redisstore: %s: %w", op, err)
		}
	}
	page := violations.Page{Violations: []violations.Violation{}}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return page, nil
	}

	// The window in key space: lo inclusive, hi exclusive, "" unbounded.
	// Violations past MaxViolationAge are out even before they are
	// trimmed.
	lo, hi := s.cutoffKey(), ""
	if !q.Start.IsZero() {
		lo = max(lo, tsKey(violations.UnixNano(q.Start)))
	}
	if !q.End.IsZero() {
		if end := violations.UnixNano(q.End); end < math.MaxInt64 {
			hi = tsKey(end + 1)
		}
	}
	// The part of the window below the cursor, where the page comes from,
	// and the part at or above it, whose matches only count.
	belowHi, aboveLo := hi, ""
	if cur != "" {
		if hi == "" || cur < hi {
			belowHi = cur
		}
		aboveLo = max(lo, cur)
	}

	// Rule and severity together have an index of their own, so only a
	// trace filter combined with another makes the script walk: the
	// violations of one trace.
	var prefixes []string
	switch {
	case q.RuleID != "" && q.Severity != "":
		prefixes = append(prefixes, indexPrefix(tagRuleSeverity, q.RuleID, q.Severity))
	case q.RuleID != "":
		prefixes = append(prefixes, indexPrefix(tagRule, q.RuleID))
	case q.Severity != "":
		prefixes = append(prefixes, indexPrefix(tagSeverity, q.Severity))
	}
	if q.TraceID != "" {
		prefixes = append(prefixes, indexPrefix(tagTrace, q.TraceID))
	}
	if len(prefixes) == 0 {
		prefixes = []string{""} // the violations set itself
	}
	args := make([]any, 0, 2+5*len(prefixes))
	args = append(args, limit, len(prefixes))
	for _, p := range prefixes {
		alo := ""
		if aboveLo != "" {
			alo = lexLo(p, aboveLo)
		}
		args = append(args, p, lexLo(p, lo), lexHi(p, hi), lexHi(p, belowHi), alo)
	}
	res, err := scriptQuery.Run(c, s.rdb, []string{s.k.violations, s.k.data, s.k.index}, args...).Slice()
	if err != nil {
		return violations.Page{}, s.fail(ctx, op, err)
	}
	var total, more int64
	var ks, vals []any
	if len(res) == 4 {
		total, _ = res[0].(int64)
		more, _ = res[1].(int64)
		ks, _ = res[2].([]any)
		vals, _ = res[3].([]any)
	}
	if len(res) != 4 || len(ks) != len(vals) {
		return violations.Page{}, fmt.Errorf("redisstore: %s: unexpected script reply", op)
	}
	page.TotalCount = int(total)
	page.Violations = make([]violations.Violation, 0, len(ks))
	var last string
	for i := range ks {
		last, _ = ks[i].(string)
		id := last[min(len(last), tsDigits+1):]
		raw, ok := vals[i].(string)
		if !ok {
			return violations.Page{}, fmt.Errorf("redisstore: %s: %w: violation %q is indexed but not stored", op, store.ErrCorrupt, id)
		}
		body, err := valueJSON(raw)
		if err != nil {
			return violations.Page{}, fmt.Errorf("redisstore: %s: %w: violation %q: %v", op, store.ErrCorrupt, id, err)
		}
		var v violations.Violation
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return violations.Page{}, fmt.Errorf("redisstore: %s: %w: violation %q: %v", op, store.ErrCorrupt, id, err)
		}
		page.Violations = append(page.Violations, v)
	}
	if more == 1 && last != "" {
		page.NextCursor = encodeCursor(last)
	}
	return page, nil
}
