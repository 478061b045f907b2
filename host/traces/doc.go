// Package traces holds BeTrace's compact span and, in time, the byte-bounded
// assembler that groups spans into traces and decides when each is complete.
//
// A Span is decoded from OTLP once at the edge (package ingest) and never
// converted again: the assembler buffers it and the ABI encoder (package abi)
// lays whole traces out for the rule sandboxes.
package traces
