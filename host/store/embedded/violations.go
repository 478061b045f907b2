package embedded

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/betracehq/betrace/host/store"
	"github.com/betracehq/betrace/host/violations"
)

const (
	// DefaultLimit is the page size of a query whose Limit is zero.
	DefaultLimit = 100
	// MaxLimit caps a query's page size.
	MaxLimit = 1000

	// maxRequestsPerCommit bounds how many append calls share one
	// transaction.
	maxRequestsPerCommit = 1024
	// trimBatch bounds the deletions in one background transaction, so a
	// large trim does not hold up appends; Open uses openTrimBatch.
	trimBatch     = 10_000
	openTrimBatch = 100_000
)

// trimInterval is how often the writer checks retention by age when no
// appends arrive. Appends check both limits in every transaction.
var trimInterval = time.Minute

type appendReq struct {
	ctx   context.Context
	items []pending
	done  chan error // buffered: the writer never waits for the caller
}

// AppendViolations stores a batch atomically and durably: when it returns
// nil the batch has been fsynced. Concurrent calls share a transaction
// (group commit), so they share the fsync. A violation needs an ID and a
// Timestamp; a violation stored again with the same Timestamp and ID
// replaces the first, so retrying a failed or timed-out call is safe.
//
// If ctx ends while the batch waits for the disk, the call returns the
// context's error and the batch may or may not be stored.
func (s *Store) AppendViolations(ctx context.Context, vs []violations.Violation) error {
	const op = "append violations"
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	if len(vs) == 0 {
		return nil
	}
	items := make([]pending, len(vs))
	for i := range vs {
		if items[i], err = encodeViolation(&vs[i]); err != nil {
			return fmt.Errorf("embedded: %s: violation %d (id %q): %w", op, i, vs[i].ID, err)
		}
	}
	req := &appendReq{ctx: ctx, items: items, done: make(chan error, 1)}
	select {
	case s.appends <- req:
	case <-ctx.Done():
		return fmt.Errorf("embedded: %s: %w", op, ctx.Err())
	}
	select {
	case err = <-req.done:
	case <-ctx.Done():
		return fmt.Errorf("embedded: %s: %w (the batch may still be stored)", op, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// Trim applies retention now and returns when nothing is left to trim.
// The store also trims in the background and in every append.
func (s *Store) Trim(ctx context.Context) error {
	const op = "trim violations"
	exit, err := s.enter(ctx, op)
	if err != nil {
		return err
	}
	defer exit()
	w := make(chan error, 1)
	select {
	case s.trims <- w:
	case <-ctx.Done():
		return fmt.Errorf("embedded: %s: %w", op, ctx.Err())
	}
	select {
	case err = <-w:
	case <-ctx.Done():
		return fmt.Errorf("embedded: %s: %w", op, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", op, err)
	}
	return nil
}

// run is the writer: the only goroutine that writes violations or
// changes the index. It takes every append that is waiting, commits them
// with due trimming in one transaction, and repeats; appends that arrive
// during a commit wait for the next one. There is no deliberate delay:
// under load, batches grow by themselves.
func (s *Store) run() {
	defer close(s.done)
	tick := time.NewTicker(trimInterval)
	defer tick.Stop()
	var waiters []chan error
	more := false
	for {
		var batch []*appendReq
		if !more {
			select {
			case r := <-s.appends:
				batch = append(batch, r)
			case w := <-s.trims:
				waiters = append(waiters, w)
			case <-tick.C:
			case <-s.stop:
				s.drain()
				for _, w := range waiters {
					w <- ErrClosed
				}
				return
			}
		}
		var err error
		more, err = s.commit(s.gather(batch), trimBatch)
		if err != nil {
			more = false // retry on the next tick or append, not in a loop
		}
		if !more {
			for _, w := range waiters {
				w <- err
			}
			waiters = nil
		}
	}
}

// gather adds the appends already waiting to batch.
func (s *Store) gather(batch []*appendReq) []*appendReq {
	for len(batch) < maxRequestsPerCommit {
		select {
		case r := <-s.appends:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// drain commits the appends still queued at Close.
func (s *Store) drain() {
	for {
		batch := s.gather(nil)
		if len(batch) == 0 {
			return
		}
		s.commit(batch, trimBatch)
	}
}

// cutoff is the timestamp (Unix ns) before which violations are too old.
func (s *Store) cutoff() int64 {
	return violations.UnixNano(s.now().Add(-s.cfg.MaxViolationAge))
}

// commit writes batch and the deletions retention asks for (at most
// maxTrim rows already stored) in one transaction, updates the index and
// the counts, and answers the callers. more reports that retention still
// has work to do.
//
// Retention (see retention.go) weighs stored and fresh rows together: a
// row of the batch that would be trimmed at once (too old, or among its
// rule's oldest past a cap) is not written at all, and is counted as
// trimmed. Fresh rows count in the summary unless they are too old.
//
// Only the writer (or Open, before the writer starts) calls commit; it
// reads s.idx without idxMu because nothing else changes it.
func (s *Store) commit(batch []*appendReq, maxTrim int) (more bool, err error) {
	live := batch[:0]
	var items []*pending
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- err
			continue
		}
		live = append(live, r)
		for i := range r.items {
			items = append(items, &r.items[i])
		}
	}
	x := s.idx

	// One row per key, the last write winning, in key order; fresh are
	// the rows that are not stored yet.
	slices.SortStableFunc(items, func(a, b *pending) int { return bytes.Compare(a.key, b.key) })
	rows := items[:0]
	for i, p := range items {
		if i+1 < len(items) && bytes.Equal(items[i+1].key, p.key) {
			continue
		}
		rows = append(rows, p)
	}
	cutoff := s.cutoff()
	var fresh []*pending
	skip := map[*pending]bool{}
	for _, p := range rows {
		switch {
		case x.has(p.ts, p.key[8:]):
		case p.ts < cutoff:
			skip[p] = true
		default:
			fresh = append(fresh, p)
		}
	}
	tally := countFresh(fresh)

	// Entries leave the index before their rows leave the disk, and
	// enter it after their rows are committed, so a query that finds an
	// entry in the index always finds its row in a read transaction it
	// begins while it still holds idxMu.
	s.idxMu.Lock()
	plan := s.planRetention(fresh, cutoff, maxTrim)
	s.idxMu.Unlock()
	for _, p := range plan.skip {
		skip[p] = true
	}
	more = plan.more
	if len(skip) > 0 {
		rows = slices.DeleteFunc(rows, func(p *pending) bool { return skip[p] })
	}
	trimmedCounts := 0
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketViolations)
		// Keys mostly arrive in time order, so pages split at the end of
		// the tree: fill them (bbolt's default leaves them half empty).
		b.FillPercent = 0.9
		for i := range plan.removed {
			if err := b.Delete(makeKey(plan.removed[i].ts, plan.removed[i].id)); err != nil {
				return err
			}
		}
		for _, p := range rows {
			if err := b.Put(p.key, p.val); err != nil {
				return err
			}
		}
		if err := addCounts(tx.Bucket(bucketCounts), tally, true); err != nil {
			return err
		}
		var err error
		trimmedCounts, err = trimCounts(tx.Bucket(bucketCounts), cutoff, maxTrim)
		return err
	})
	if err != nil {
		if len(plan.removed) > 0 {
			s.idxMu.Lock()
			for i := range plan.removed {
				x.upsert(&plan.removed[i])
			}
			s.idxMu.Unlock()
		}
		for _, r := range live {
			r.done <- err
		}
		return false, err
	}
	if len(rows) > 0 {
		s.idxMu.Lock()
		for _, p := range rows {
			e := x.makeEntry(p.ts, p.key[8:], p.severity, p.ruleID, p.traceID)
			x.upsert(&e)
		}
		s.idxMu.Unlock()
	}
	s.trimmed.Add(uint64(len(plan.removed) + len(skip)))
	for _, r := range live {
		r.done <- nil
	}
	return more || trimmedCounts == maxTrim || s.overRetention(cutoff), nil
}

// QueryViolations returns one page of matches, newest first. The index
// in memory does the filtering and counting; only the page is read from
// disk. TotalCount counts every match of the filters, wherever the cursor
// is. NextCursor continues strictly after the last violation returned,
// whatever has been appended since.
func (s *Store) QueryViolations(ctx context.Context, q violations.Query) (violations.Page, error) {
	const op = "query violations"
	exit, err := s.enter(ctx, op)
	if err != nil {
		return violations.Page{}, err
	}
	defer exit()
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	var curTS int64
	var curID []byte
	if q.Cursor != "" {
		if curTS, curID, err = decodeCursor(q.Cursor); err != nil {
			return violations.Page{}, fmt.Errorf("embedded: %s: %w", op, err)
		}
	}
	page := violations.Page{Violations: []violations.Violation{}}
	if !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start) {
		return page, nil
	}

	s.idxMu.RLock()
	locked := true
	defer func() {
		if locked {
			s.idxMu.RUnlock()
		}
	}()
	x := s.idx
	lo, hi := pos{}, x.end()
	if !q.Start.IsZero() {
		lo = x.search(violations.UnixNano(q.Start), nil)
	}
	if !q.End.IsZero() {
		if end := violations.UnixNano(q.End); end < math.MaxInt64 {
			hi = x.search(end+1, nil)
		}
	}
	loOrd, hiOrd := x.ord(lo), x.ord(hi)
	upper := hi
	if q.Cursor != "" {
		if c := x.search(curTS, curID); x.ord(c) < hiOrd {
			upper = c
		}
	}
	if x.ord(upper) < loOrd {
		upper = lo
	}

	keys := make([][]byte, 0, min(limit, 64))
	more := false
	f := x.makeFilter(q.Severity, q.RuleID, q.TraceID)
	switch {
	case f.none:
	case !f.any():
		page.TotalCount = hiOrd - loOrd
		x.scanBack(lo, upper, func(ch *chunk, a, b int) bool {
			for i := b - 1; i >= a; i-- {
				if len(keys) == limit {
					more = true
					return false
				}
				keys = append(keys, makeKey(ch.ts[i], ch.id(i)))
			}
			return true
		})
	default:
		total := 0
		// Matches newer than the cursor count but are not on the page.
		x.scanBack(upper, hi, func(ch *chunk, a, b int) bool {
			total += f.count(ch, a, b)
			return true
		})
		x.scanBack(lo, upper, func(ch *chunk, a, b int) bool {
			i := b - 1
			for ; i >= a && len(keys) < limit; i-- {
				if f.match(ch, i) {
					total++
					keys = append(keys, makeKey(ch.ts[i], ch.id(i)))
				}
			}
			if i >= a {
				n := f.count(ch, a, i+1)
				total += n
				more = more || n > 0
			}
			return true
		})
		page.TotalCount = total
	}
	if len(keys) == 0 {
		return page, nil
	}

	tx, err := s.db.Begin(false)
	if err != nil {
		return violations.Page{}, fmt.Errorf("embedded: %s: %w", op, err)
	}
	defer tx.Rollback()
	s.idxMu.RUnlock()
	locked = false

	b := tx.Bucket(bucketViolations)
	page.Violations = make([]violations.Violation, 0, len(keys))
	for _, k := range keys {
		v := b.Get(k)
		if v == nil {
			_, id, _ := splitKey(k)
			return violations.Page{}, fmt.Errorf("embedded: %s: %w: violation %q is indexed but not stored", op, store.ErrCorrupt, id)
		}
		vi, err := decodeViolation(v)
		if err != nil {
			_, id, _ := splitKey(k)
			return violations.Page{}, fmt.Errorf("embedded: %s: %w: violation %q: %v", op, store.ErrCorrupt, id, err)
		}
		page.Violations = append(page.Violations, vi)
	}
	if more {
		ts, id, _ := splitKey(keys[len(keys)-1])
		page.NextCursor = encodeCursor(ts, id)
	}
	return page, nil
}
