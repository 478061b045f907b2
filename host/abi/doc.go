// Package abi lays a trace out in the ABI v1 input format and reads back what
// a rule returns.
//
// An Encoder turns one assembled trace ([]traces.Span) into the flat
// little-endian buffer of api/abi-v1.md: a header, fixed-size span records
// sorted by start time with parent, first-child and next-sibling indexes
// already resolved, fixed-size attribute records and one string table. The
// trace is encoded once and the same bytes are handed to every rule, so the
// guest side decodes lazily without parsing, hashing or allocating.
//
// DecodeResult and DecodeDescription are the host's only readers of guest
// output. Guests are untrusted: every length and index is checked against the
// buffer and the trace, and a record that breaks the layout is reported as
// ErrMalformedResult with what was wrong, never trusted or half-read.
//
// # Concurrency
//
// An Encoder reuses its buffers and is not safe for concurrent use; keep one
// per evaluation worker. The bytes Encode returns stay valid until the next
// call to Encode on the same Encoder.
package abi
