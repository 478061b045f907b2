// Package ingest is where OpenTelemetry data enters BeTrace: it decodes OTLP
// once with pdata and converts every span into the compact traces.Span that
// the rest of the pipeline uses, rejecting malformed spans one by one.
//
// pdata stops here: nothing downstream imports it, so the assembler and the
// encoder work on plain Go values that do not pin request buffers.
package ingest
