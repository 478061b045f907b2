package embedded

// Retention by count is per rule as well as in total, so that one rule
// firing on every trace evicts its own history, not everyone's: past
// MaxViolationsPerRule a rule loses its own oldest violations, and past
// MaxViolations the rule holding the most loses its oldest, until it is
// level with the next largest (and then both lose theirs, and so on).
// Age comes first: violations past MaxViolationAge go whatever their rule.

// retentionPlan is what one commit removes: stored entries, already out
// of the index, and fresh rows not to write.
type retentionPlan struct {
	removed []entry
	skip    []*pending
	more    bool // the budget ran out before retention was met
}

// load is one rule's share of the index plus the batch.
type load struct {
	id     uint32
	known  bool       // id is interned: the rule has entries
	stored int        // entries in the index
	fresh  []*pending // rows of the batch, in key order
	evict  int        // how many of its oldest (stored and fresh) go
}

func (l *load) remain() int { return l.stored + len(l.fresh) - l.evict }

// planRetention removes from the index what retention asks for, given the
// fresh rows about to be written (in key order), at most budget stored
// entries. The caller holds idxMu for writing.
func (s *Store) planRetention(fresh []*pending, cutoff int64, budget int) retentionPlan {
	x := s.idx
	var plan retentionPlan
	if old := x.countBefore(cutoff); old > 0 {
		plan.removed = x.removeFront(min(old, budget))
		plan.more = old > budget
		budget -= len(plan.removed)
	}

	loads := make([]*load, 0, len(x.perRule)+1)
	byRule := make(map[uint32]*load, len(x.perRule))
	for id, n := range x.perRule {
		l := &load{id: id, known: true, stored: n}
		byRule[id] = l
		loads = append(loads, l)
	}
	unknown := map[string]*load{} // rules the index has never seen
	for _, p := range fresh {
		var l *load
		if id, ok := x.rules.lookup(p.ruleID); ok && byRule[id] != nil {
			l = byRule[id]
		} else if l = unknown[p.ruleID]; l == nil {
			l = &load{}
			unknown[p.ruleID] = l
			loads = append(loads, l)
		}
		l.fresh = append(l.fresh, p)
	}

	total := 0
	for _, l := range loads {
		l.evict = max(0, l.stored+len(l.fresh)-s.cfg.MaxViolationsPerRule)
		total += l.remain()
	}
	levelDown(loads, total-s.cfg.MaxViolations)

	for _, l := range loads {
		if l.evict == 0 {
			continue
		}
		stored := 0
		if l.known {
			stored = x.splitOldest(l.id, l.fresh, l.evict)
		}
		plan.skip = append(plan.skip, l.fresh[:l.evict-stored]...)
		if stored > budget {
			stored, plan.more = budget, true
		}
		if stored > 0 {
			plan.removed = append(plan.removed, x.removeOldestOf(l.id, stored)...)
			budget -= stored
		}
	}
	return plan
}

// levelDown adds over evictions to the rules holding the most: the
// largest gives up violations until it is level with the next, then the
// level ones give up together.
func levelDown(loads []*load, over int) {
	for over > 0 {
		top, next, ties := 0, 0, 0
		for _, l := range loads {
			switch r := l.remain(); {
			case r > top:
				top, next, ties = r, top, 1
			case r == top:
				ties++
			case r > next:
				next = r
			}
		}
		if top == 0 {
			return
		}
		each := min(top-next, (over+ties-1)/ties)
		for _, l := range loads {
			if l.remain() == top && over > 0 {
				t := min(each, over)
				l.evict += t
				over -= t
			}
		}
	}
}

// splitOldest picks the k oldest of rule r's stored entries and fresh rows
// (in key order) together and says how many of them are stored: the
// others are the first of fresh.
func (x *index) splitOldest(r uint32, fresh []*pending, k int) (stored int) {
	f := 0
	x.oldestOf(r, func(ch *chunk, i int) bool {
		for stored+f < k && f < len(fresh) && ch.cmp(i, fresh[f].ts, fresh[f].key[8:]) > 0 {
			f++ // a fresh row older than this entry goes first
		}
		if stored+f == k {
			return false
		}
		stored++
		return stored+f < k
	})
	return stored
}

// overRetention reports whether the index is past a limit, so the writer
// must trim again.
func (s *Store) overRetention(cutoff int64) bool {
	x := s.idx
	if x.n > s.cfg.MaxViolations || x.countBefore(cutoff) > 0 {
		return true
	}
	for _, n := range x.perRule {
		if n > s.cfg.MaxViolationsPerRule {
			return true
		}
	}
	return false
}
