// Package traces holds BeTrace's compact span and the assembler that groups
// spans into traces and decides when each is complete.
//
// A Span is decoded from OTLP once at the edge (package ingest) and never
// converted again: the Assembler buffers it and the ABI encoder (package abi)
// lays whole traces out for the rule sandboxes. Nothing here knows pdata.
//
// # Completion
//
// A trace completes at the first of:
//
//   - its root span (ParentSpanID all zero) arrived and Config.Settle passed
//     (CompletionRoot): children often end, and are exported, after the root;
//   - no new span for Config.IdleTimeout (CompletionIdle): the root may never
//     come, for example when it lives in an uninstrumented service;
//   - Config.MaxAge since its first span (CompletionMaxAge): a trace that
//     keeps trickling must still be judged some time;
//   - a span beyond Config.MaxSpans (CompletionSpanCap): the trace is
//     evaluated with the spans it has, at once.
//
// Shutdown completes whatever is left with CompletionShutdown. The reason
// travels with the Trace, into every violation it causes and into the
// betrace_traces_completed_total{trigger} metric. Deadlines are checked by
// one ticker (Sweep), never by a goroutine or timer per trace.
//
// A span whose trace completed within Config.LateWindow is late: it is
// counted (betrace_spans_late_total) and dropped, never assembled into a
// fresh, partial "trace" that rules would then judge wrongly.
//
// # Backpressure instead of drops
//
// The buffer is bounded in estimated bytes (Config.MaxBytes), and a completed
// trace stays counted until its consumer calls Trace.Release. When the
// evaluator falls behind, the buffer fills and Add refuses the whole batch
// with ErrFull, which ingest turns into HTTP 429 / gRPC RESOURCE_EXHAUSTED
// with a retry delay. OTLP senders retry; nothing is dropped silently and
// memory stays bounded however slow the rules are.
//
// # Concurrency
//
// Add is safe for concurrent use. The buffer is split into shards by trace ID,
// each with its own lock, so concurrent ingest requests rarely contend. The
// consumer is called from a single goroutine, in completion order.
package traces
