// Package dsl implements the BeTrace rule language (api/dsl.md): a parser
// that produces a typed, positioned syntax tree with line:column errors and
// hints for older dialects, a canonical printer, a reference interpreter and
// a compiler to WebAssembly.
//
// # Why compile
//
// A DSL rule runs where every other rule runs: in its own metered wazero
// sandbox, admitted by the same checks and stopped by the same fuel budget,
// so the engine has one isolation story rather than an interpreter inside
// the host with its own limits. Compile emits the ABI v1 module directly,
// without a language runtime: a few kilobytes of straight-line code over the
// encoded trace, which is an order of magnitude cheaper per span than the
// same rule written with the Go guest SDK. Regular expressions, substring
// search and the rare numeric text that is costly to parse exactly are
// delegated to the documented betrace host functions, which charge fuel
// like any instruction.
//
// # The oracle
//
// Evaluate interprets the same tree in plain Go and defines what a rule
// means. The compiler is tested against it: on a table of rules covering
// every construct and typing rule, on the upstream conformance examples,
// and by differential fuzz targets that generate rules and traces and
// require both to report the same verdict on the same span. Both take
// their value text, number parsing and regular expressions from package
// abi, the code the sandbox's host functions run, so they cannot drift.
package dsl
