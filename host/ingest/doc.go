// Package ingest is where OpenTelemetry data enters BeTrace. A Receiver
// serves OTLP/HTTP (TracesHandler, POST /v1/traces, protobuf or JSON,
// optionally gzip), OTLP/gRPC (its own server on Config.GRPCAddr) and the
// legacy POST /v1/spans of earlier BeTrace servers (SpansHandler). Every
// request is decoded once, with pdata, and each span converted into the
// compact traces.Span that the rest of the pipeline uses; the spans of a
// request then go to one Sink call (normally traces.Assembler.Add).
//
// pdata stops here: nothing downstream imports it, so the assembler and the
// ABI encoder work on plain Go values that pin no request buffers. The HTTP
// side is plain http.Handlers; package httpapi mounts them on its router.
//
// # Validation
//
// Spans are checked one by one and only the bad ones are refused: an empty
// trace ID, span ID or name, more than Config.MaxSpanAttributes attributes,
// and, on /v1/spans, IDs that are not 32/16 hex digits or fields of the wrong
// type. Each is counted in betrace_spans_rejected_total{reason} and reported
// to the sender: OTLP answers 200 with partial_success (rejected_spans and
// an error_message naming the first few), /v1/spans answers
// {"accepted":n,"rejected":m,"errors":[…]}.
//
// pdata decodes OTLP IDs as fixed-size values, so a trace or span ID of the
// wrong length (in JSON, a hex string that is not 32/16 digits; in protobuf,
// a bytes field that is not 16/8 bytes) makes pdata refuse the whole
// request. BeTrace keeps that: the request is answered 400 /
// INVALID_ARGUMENT, not retryable, and a second pass over the body finds the
// first bad ID so the message names it, e.g.
// "resourceSpans[0].scopeSpans[0].spans[3].traceId: "0102" has 4
// characters, want 32 hex digits". A sender producing such IDs is broken,
// and silently keeping the rest of its data would hide that.
//
// # Errors and backpressure
//
// One function (classify) maps every error to an answer on every transport:
//
//	malformed body              400  INVALID_ARGUMENT     not retryable
//	body over MaxRequestBytes   413  RESOURCE_EXHAUSTED   not retryable (no RetryInfo)
//	traces.ErrFull              429  RESOURCE_EXHAUSTED   Retry-After / RetryInfo
//	traces.ErrUnavailable       503  UNAVAILABLE          Retry-After / RetryInfo
//	missing or wrong token      401  UNAUTHENTICATED
//	wrong method                405 (Allow: POST); unsupported type or encoding 415
//	anything else from the sink 500  INTERNAL
//
// HTTP errors are a google.rpc.Status in the request's encoding (protobuf
// for application/x-protobuf, otherwise JSON {"code","message","details"}),
// as OTLP/HTTP specifies. Nothing is dropped silently: when the trace buffer
// is full the whole request is refused and the sender retries it.
//
// The gRPC trace service is registered by hand, with a codec that decodes
// with pdata exactly as ptraceotlp.RegisterGRPCServer would, but hands a
// decoding failure to the handler: gRPC reports codec errors as INTERNAL,
// and a malformed request must be INVALID_ARGUMENT naming the bad field.
//
// # Bounds
//
// An HTTP body is bounded by Config.MaxRequestBytes both as sent and after
// gzip decompression, and a gRPC message likewise (after decompression).
// At most Config.MaxConcurrentRequests requests are read and decoded at once;
// the others wait for a slot until their own deadline.
//
// # Authentication
//
// When Config.Token is set, HTTP requests need "Authorization: Bearer
// <token>" and gRPC calls the metadata "authorization: Bearer <token>";
// tokens are compared in constant time.
package ingest
