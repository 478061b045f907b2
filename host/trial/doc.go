// Package trial lets a rule author try a rule before it can page anyone:
// run a candidate module on given traces, or replay it over a tape of the
// traffic this instance evaluated recently, and see what it would have
// flagged, what it costs and how it differs from the version running now.
//
// Nothing here is stored. A candidate is admitted by the same sandbox host
// as every rule (size, imports, metering, the memory budget shared by all
// rules), runs under the same per-evaluation fuel budget and memory cap it
// would have live, and is closed when the answer is written; its verdicts
// are therefore the verdicts it would record live.
//
// # The tape
//
// Tape keeps the last completed traces in the ABI layout the evaluation
// workers already produced for the live rules, copied into one ring of
// bytes: no allocation and no per-span work per trace, bounded in bytes and
// shedding the oldest first. Replaying a trace then costs no decoding and
// no encoding.
//
// # Replay
//
// A replay runs on spare capacity: one at a time per instance, on one
// sandbox instance, pausing while completed traces wait for a live
// evaluation worker, and with its own fuel budget across the whole tape
// on top of the per-trace budget. A candidate that faults like a rule that
// would be quarantined (package rules) is stopped after those faults.
//
// # Concurrency
//
// Tape and Runner are safe for concurrent use.
package trial
