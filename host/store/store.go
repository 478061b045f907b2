// Package store defines where BeTrace keeps what must survive a restart:
// rules (metadata, state, module history), module bytes, and violations.
//
// There are two implementations: store/embedded, a crash-safe single-node
// store in a data directory, and store/redisstore, shared by every instance
// of a cluster. Both keep modules content-addressed by sha256 and verify
// the digest on every read, so a corrupted module is reported, never run.
//
// A write that returns nil is durable: the caller may acknowledge it.
package store

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/betracehq/betrace/host/rules"
	"github.com/betracehq/betrace/host/violations"
)

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrCorrupt     = errors.New("stored data is corrupt")
	ErrUnavailable = errors.New("storage unavailable")
	// ErrMaybeApplied: a write was sent but no answer came back (a timeout
	// or a connection lost mid-call), so it may have landed. It comes
	// with ErrUnavailable. Without it, an ErrUnavailable write was not
	// applied. Rule writes are safe to repeat: an update only applies to
	// the revision it was made from, and a repeat of one that landed is a
	// no-op.
	ErrMaybeApplied = errors.New("the change may have been applied")
	// ErrConflict: the record changed since it was read (Revision moved).
	ErrConflict = errors.New("concurrent update")
	// ErrBadCursor: a violations cursor that this store did not issue.
	ErrBadCursor = errors.New("invalid cursor")
	// ErrFull: the disk under the store has no space left, or its quota
	// is used up. Nothing of the write was kept; the same write succeeds
	// once space is freed, so callers retry rather than give up.
	ErrFull = errors.New("disk full")
	// ErrReset: a shared store no longer holds the rules the caller last
	// read from it (Redis restarted empty, or was flushed), or another
	// instance has since put them back. Nothing was written. The caller
	// should put back the rules it holds (Republisher) and then retry;
	// it must not take the stored set for the rules that exist.
	ErrReset = errors.New("the shared store lost its rules")
)

// CheckFull returns err wrapped with ErrFull when the operating system
// said the disk is full or the quota exceeded (ENOSPC, EDQUOT), and err
// unchanged otherwise (nil stays nil). Every layer that writes files calls
// it, so that "no space left" is reported as such instead of as whatever
// the write was doing (a corrupt module, an internal error).
func CheckFull(err error) error {
	if err == nil || errors.Is(err, ErrFull) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: free space in the data directory (or raise its quota); writes resume by themselves: %w", ErrFull, err)
	}
	return err
}

// Rules stores rule records and module bytes.
type Rules interface {
	// ListRules returns every rule, ordered by ID.
	ListRules(ctx context.Context) ([]rules.Record, error)
	// Rule returns one rule or ErrNotFound.
	Rule(ctx context.Context, id string) (rules.Record, error)
	// CreateRule stores a new rule, or returns ErrExists.
	CreateRule(ctx context.Context, r rules.Record) error
	// UpdateRule replaces a rule whose stored Revision is r.Revision-1;
	// ErrNotFound if it is gone, ErrConflict if someone else changed it.
	UpdateRule(ctx context.Context, r rules.Record) error
	// DeleteRule removes a rule (not its modules) or returns ErrNotFound.
	DeleteRule(ctx context.Context, id string) error
	// PutModule stores module bytes under their sha256 (hex); storing
	// the same bytes twice is a no-op.
	PutModule(ctx context.Context, sha256 string, module []byte) error
	// Module returns the bytes stored under sha256, verifying the digest
	// (ErrCorrupt on mismatch, ErrNotFound if absent).
	Module(ctx context.Context, sha256 string) ([]byte, error)
}

// HeldRule is a rule an instance holds, with the bytes of its module in
// force.
type HeldRule struct {
	Record rules.Record
	Module []byte
}

// Republisher is a shared store that can lose its data while instances
// still hold the rules (Redis without persistence). RepublishRules writes
// them back in one step, so that no reader sees part of them: a rule is
// written when it is missing (unless it was deleted since the loss) or
// stored at a lower revision. It answers how many it wrote. Afterwards the
// store no longer answers ErrReset to this caller for the same loss.
type Republisher interface {
	RepublishRules(ctx context.Context, held []HeldRule) (int, error)
}

// Violations stores violations with bounded retention, and counts them.
//
// Retention is bounded per rule and in total: a rule past its own cap
// loses its own oldest violations, and when the total is past its cap the
// rule holding the most loses its oldest, so one storming rule cannot
// erase the history of the others.
//
// Counts are kept by rule, severity and minute for as long as violations
// are kept by age, whatever retention by count removed: every violation
// appended counts as kept and counted, every tallied one as counted only.
type Violations interface {
	// AppendViolations stores a batch atomically, and counts what it
	// stores for the first time.
	AppendViolations(ctx context.Context, vs []violations.Violation) error
	// QueryViolations returns one page, newest first.
	QueryViolations(ctx context.Context, q violations.Query) (violations.Page, error)
	// CountViolations adds tallies of violations that were found but not
	// kept. token names the call: a call with a token seen within the
	// last hour counts nothing, so a retry after a timeout is safe.
	CountViolations(ctx context.Context, token string, ts []violations.Tally) error
	// SummarizeViolations returns the counts of q, rolled up into q.Bucket.
	SummarizeViolations(ctx context.Context, q violations.SummaryQuery) ([]violations.SummaryRow, error)
}

// TallyTokenTTL is how long a store remembers a CountViolations token.
const TallyTokenTTL = time.Hour

// Store is a whole backend.
type Store interface {
	Rules
	Violations
	// Ping reports whether the backend is reachable (for /ready).
	Ping(ctx context.Context) error
	// Close flushes and releases the backend.
	Close() error
}
