// Package embedded is BeTrace's single-node store: everything in one bbolt
// file, Config.Dir/betrace.db, that survives a crash of the process or the
// machine.
//
// # Durability
//
// bbolt is a copy-on-write B+tree with one writer at a time. A transaction
// commits by writing its pages and then a new meta page, with an fsync
// (fdatasync on Linux) after each, so a commit either happened whole or
// not at all, and once Update returns it survives kill -9 and power loss.
// Every write of this package is one such transaction; a method that
// returns nil has committed. The file is locked (flock) while open, so a
// second process using the same directory gets ErrInUse after a second
// instead of corrupting it.
//
// # Layout
//
// Bucket "rules" maps a rule ID to its rules.Record as JSON. Bucket
// "modules" maps a lower-case hex sha256 to module bytes, so equal modules
// are stored once; the digest is checked on every read, and a mismatch is
// store.ErrCorrupt rather than a module that would run. Bucket
// "violations" is keyed by (timestamp, violation ID): the keys sort by
// time, newest first is a reverse cursor walk, and a retried append of
// the same violation rewrites one row. A violation's value is a small
// binary header (severity, rule ID, trace ID) followed by its JSON.
//
// # Group commit
//
// fsync is the cost of a write, a few milliseconds on typical disks.
// Violations arrive as one small batch per completed trace from several
// workers, so one goroutine, the writer, takes every batch waiting, writes
// them in one transaction and acknowledges them all after its fsync;
// batches that arrive meanwhile go in the next transaction. There is no
// timer: an idle store commits a batch at once, a busy one commits bigger
// batches. Each call is still atomic: its rows commit together.
//
// # Index
//
// Listing violations must count every match (TotalCount) under filters by
// time, severity, rule and trace. Over a million violations on disk that
// would mean reading and decoding a million rows per query. Instead the
// store keeps a compact index in memory of every stored violation:
// timestamp, interned severity and rule ID, trace ID as 16 bytes, and the
// violation ID, sorted like the keys and stored as columns in chunks of
// 4096 (about 75 bytes a violation with 26-character IDs, 70 MB for a
// million). A query narrows the time range by binary search, counts by
// scanning only the columns it filters on, and reads from disk only the
// page it returns: over a million violations a filtered count takes a
// millisecond or two, and decoding a page of 100 about as long. Open
// rebuilds the index from the value headers without decoding JSON (about
// 0.6 s for a million). The writer is the index's only mutator: rows enter
// the index after they are committed and leave it before they are
// deleted, so a query that finds an entry also finds its row.
//
// Cursors are the base64url of the last key returned. Keys never change,
// so a cursor continues strictly after that violation however many newer
// ones arrive between pages.
//
// # Retention
//
// By default the store keeps at most 1,000,000 violations and none older
// than 7 days (DefaultMaxViolations, DefaultMaxViolationAge): at the
// hundreds of violations a second a busy service records, that is hours to
// days of history, in about 700 MB of disk and 70 MB of index for
// violations of typical size. No rule keeps more than 100,000
// (DefaultMaxViolationsPerRule): past it a rule loses its own oldest, and
// at the total limit the rule holding the most loses its oldest (see
// retention.go), so a storming rule cannot erase a quiet rule's history.
// Age comes first, whatever the rule. Every append
// transaction also deletes what has become too old or what its rows push
// over the count limit (at most 10,000 rows a transaction, the rest in
// the next ones), so the count stays within the limit; when no appends
// come the writer checks the age limit every minute, and Open trims before
// it returns. Trimmed counts what was removed. bbolt reuses freed pages but
// never shrinks its file.
//
// # Counts
//
// Bucket "counts" holds, per (minute, rule, severity), how many violations
// were kept and how many counted (see counts.go): appends add what they
// store for the first time in their own transaction, CountViolations adds
// the recorder's tallies of sampled-out violations once per token. Counts
// are trimmed by age only, so a summary still counts what retention by
// count removed.
package embedded
