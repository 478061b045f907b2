// Package export sends each recorded violation to an OpenTelemetry
// collector as a span, so that violations appear in the trace they were
// found in, next to the span that broke the rule.
//
// Input is violations.Violation, handed over with Exporter.Export. Output is
// OTLP/HTTP protobuf: a POST of an ExportTraceServiceRequest to
// <Endpoint>/v1/traces. Each violation becomes one span named
// "betrace.violation" in the violation's trace, whose parent is the
// offending span (Violation.SpanID) and whose span ID is fresh. It starts
// and ends at the violation's timestamp. Its status is Error for severities
// CRITICAL and HIGH and unset for the others: Error is how tracing
// back ends flag a span in red, and lesser findings should not look like
// outages. Its attributes are betrace.violation (true),
// betrace.violation.{rule_id, rule_name, severity, message, id, trace_id,
// trigger} and the violation's own attributes as betrace.violation.attr.<key>.
// The resource is service.name "betrace" (plus service.instance.id when
// configured); the scope is "github.com/betracehq/betrace". A violation
// whose trace ID is not 32 hex digits is still sent, in a new trace of its
// own; one without a valid span ID gets no parent.
//
// Export is a copy, not the record: the store keeps every violation whether
// or not the collector ever sees it.
//
// # Why OTLP/HTTP only
//
// Endpoint follows OTEL_EXPORTER_OTLP_ENDPOINT with the specification's
// default protocol, http/protobuf, so the port is the collector's OTLP/HTTP
// port, 4318. One transport means one error model (HTTP status codes and
// Retry-After), one client from the standard library, and no connection
// state or dial logic of our own. gRPC would add a second error model and a
// long-lived connection to manage for no gain at violation rates.
// "host:4317" is refused at validation because it is almost always the
// collector's gRPC port given by mistake, which would otherwise fail at
// every request.
//
// # Why a bounded queue, dropping new violations
//
// Rules are evaluated on the ingest path, and a dead or slow collector must
// never slow evaluation down or grow memory without bound. So Export only
// puts violations in a queue of QueueSize and returns; when it is full the
// new violations are dropped and counted. Dropping the newest rather than
// the oldest keeps the queue a plain channel that Export can fill without
// a lock shared with the sender, matches what the OpenTelemetry SDKs and
// the collector do, and costs nothing that matters: the store has them all.
// One goroutine batches the queue (BatchSize violations, or whatever
// arrived within FlushInterval) and sends.
//
// # Retries
//
// Network errors and the statuses OTLP/HTTP names as retryable (429, 502,
// 503, 504) are retried, the same request each time. The wait doubles
// from one second up to 30 s and is drawn at random from the upper half of
// that range, so that many replicas do not retry in step after a collector
// restart; a Retry-After header lengthens the wait but never shortens it
// below the backoff. A batch is given up once its next retry would start
// more than MaxRetryTime after its first attempt (default five minutes,
// the collector's own default, long enough to ride out a collector
// restart). While a batch waits, the queue behind it fills and then drops:
// memory stays bounded at QueueSize plus one batch.
//
// Other statuses (400, 401, 413, 500…) mean the collector will not take
// this request however often it is sent, so they are not retried. A 2xx
// with a partial_success that reports rejected spans counts those spans as
// failed and the rest as emitted.
//
// # What is counted
//
// betrace_violation_spans_emitted_total counts spans the collector
// accepted. betrace_compliance_span_emissions_failed_total counts spans
// that were not delivered, with a reason label: queue_full (dropped by
// Export), rejected (a non-retryable status or a partial success),
// retries_exhausted (MaxRetryTime passed) and shutdown (still queued or in
// flight when Shutdown's deadline passed, or exported after Shutdown).
// betrace_export_retries_total counts repeated requests and
// betrace_export_queue_length the violations waiting. Every violation
// handed to an enabled Exporter ends in exactly one of emitted and failed,
// once Shutdown has returned.
//
// # Logging
//
// One line when export starts failing (Warn while retrying, Error when the
// collector refuses spans for good), one when it recovers (Info, with how
// long it failed and how many spans were lost), and at most one a minute
// while the queue is full. Nothing is logged per span or per batch.
//
// # Lifecycle
//
// Start returns at once. Shutdown stops intake, sends what is queued until
// its context is done, then aborts the request in flight, counts what is
// left as failed and returns the context's error. It works without Start
// and more than once.
package export
