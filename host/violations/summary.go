package violations

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// CountResolution is the finest time bucket the stores count violations
// in: every count belongs to the minute of its violations' Timestamp.
const CountResolution = time.Minute

// Tally counts violations of one rule and severity in one minute that
// were found but not kept as records (the recorder sampled them out). The
// stores add tallies to the same counts as the violations they keep, so a
// summary counts every violation found.
type Tally struct {
	RuleID   string
	Severity string
	Minute   time.Time // truncated to CountResolution
	Count    int64
}

// SummaryQuery selects the counts a summary adds up. Zero fields do not
// filter.
type SummaryQuery struct {
	// Start and End bound the minutes counted, inclusive: a minute counts
	// when it overlaps [Start, End].
	Start, End time.Time
	// Bucket is the width of a row's time bucket: a whole number of
	// minutes (1m, 1h). Zero means one minute.
	Bucket   time.Duration
	RuleID   string
	Severity string
}

// Validate refuses a bucket that is not a whole number of minutes.
func (q SummaryQuery) Validate() error {
	if q.Bucket < 0 || q.Bucket%CountResolution != 0 {
		return fmt.Errorf("bucket %s is not a whole number of minutes: use 1m, 1h or another multiple of a minute", q.Bucket)
	}
	return nil
}

// SummaryRow counts the violations of one rule and severity in one time
// bucket. Counted is every violation found; Kept is how many of them were
// stored as records when they were appended (retention may have removed
// some since). Counted-Kept were only counted.
type SummaryRow struct {
	RuleID   string
	Severity string
	Start    time.Time // the bucket's first instant, UTC
	Kept     int64
	Counted  int64
}

// Rollup adds rows up into buckets of width bucket (minutes, aligned to the
// Unix epoch) and sorts them by bucket, then rule, then severity. Stores
// count by minute and call it to answer a SummaryQuery.
func Rollup(rows []SummaryRow, bucket time.Duration) []SummaryRow {
	if bucket < CountResolution {
		bucket = CountResolution
	}
	type key struct {
		start          int64
		rule, severity string
	}
	sums := make(map[key]*SummaryRow, len(rows))
	// out has room for every row, so appending never moves it and the
	// pointers in sums stay valid.
	out := make([]SummaryRow, 0, len(rows))
	for _, r := range rows {
		start := r.Start.Truncate(bucket).UTC()
		k := key{start.UnixNano(), r.RuleID, r.Severity}
		s := sums[k]
		if s == nil {
			out = append(out, SummaryRow{RuleID: r.RuleID, Severity: r.Severity, Start: start})
			s = &out[len(out)-1]
			sums[k] = s
		}
		s.Kept += r.Kept
		s.Counted += r.Counted
	}
	slices.SortFunc(out, func(a, b SummaryRow) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.RuleID, b.RuleID), cmp.Compare(a.Severity, b.Severity))
	})
	return out
}
