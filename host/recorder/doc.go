// Package recorder is the stage between evaluation and the stores: it takes
// each completed trace's violations, holds them in a buffer bounded in
// bytes, writes many traces' violations to the store in one call (group
// commit), and exports them once the store has accepted them.
//
// # Why a stage of its own
//
// Evaluation used to store each trace's violations inline, on the worker
// that found them: a slow disk slowed every rule, and a store that could
// not write (a full disk) only produced a log line per trace while ingest
// went on answering 200 and /ready said READY. Violations were lost and
// nothing counted them. The recorder separates the two: Record copies the
// violations into the buffer and returns at once, so evaluation never
// waits on storage, and one goroutine, the flusher, owns every write.
//
// # Group commit
//
// The flusher writes a batch as soon as it holds Config.BatchBytes, or
// when its oldest violation has waited Config.FlushInterval, whichever
// comes first; while one write is in flight the next batch gathers. One
// AppendViolations (one fsync) then serves violations of many traces from
// every worker, so writes grow with time, not with violating traces.
//
// # When the store cannot write
//
// A write that fails with a retryable error (store.ErrFull: disk full or
// quota exceeded; store.ErrUnavailable) leaves the batch at the head of
// the buffer and is retried with exponential backoff and jitter, from
// Config.RetryMin to Config.RetryMax. Meanwhile Check fails with the
// store's reason (so /ready says "disk full") and Accepting refuses, so
// ingest answers a retryable 503 instead of taking traces whose violations
// could not be kept. The first write that succeeds clears both by itself.
// Ingest is also refused while the buffer is three quarters full (a slow
// store), leaving the last quarter for traces evaluation already holds.
//
// # What is dropped, and counted
//
// Every violation the recorder does not keep is counted in
// betrace_violations_dropped_total{reason}, never silent:
//
//   - disk_full, store_unavailable: the buffer was full while the store
//     was failing for that reason;
//   - buffer_full: the buffer was full while the store was writing (it is
//     slower than evaluation);
//   - store_error: the store refused the violation as such (not
//     retryable); the rest of its batch is written trace by trace;
//   - shutdown: Record after Shutdown began, or still held when the
//     shutdown deadline passed.
//
// # Durability
//
// A violation is durable once the store's write returned. Shutdown stops
// intake and drains the buffer, retrying until its deadline, so a clean
// stop loses nothing the store could take. kill -9 loses what the buffer
// held: violations younger than the flush interval plus the write in
// flight, and, while the store is failing, everything held for retry.
//
// # Concurrency
//
// Record, Accepting and Check are safe for concurrent use. Only the
// flusher writes to the store or removes from the buffer.
package recorder
