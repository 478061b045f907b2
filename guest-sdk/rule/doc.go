// Package rule is the Go SDK for writing BeTrace rules.
//
// A BeTrace rule checks one behaviour of a system against whole
// OpenTelemetry traces: "every payment.charge has a fraud.check", "no
// database call in checkout takes over a second". Each rule is compiled to
// its own WebAssembly module and runs in its own sandbox inside the BeTrace
// service. When a trace is complete, the host encodes it in the ABI v1
// layout (see package github.com/betracehq/betrace/api/abiv1), writes it
// into the module's memory and calls the module's evaluate export. This
// package implements those exports: a rule author writes one function that
// looks at a *Trace and calls Report for every violation it finds.
//
// # A complete rule
//
//	package main
//
//	import "github.com/betracehq/betrace/guest-sdk/rule"
//
//	func init() {
//		rule.Register(rule.Info{
//			ID:          "payment-fraud-check",
//			Name:        "Payment charged without a fraud check",
//			Severity:    rule.SeverityCritical,
//			Description: "Every trace with a payment.charge span must also contain a fraud.check span.",
//			Tags:        []string{"payments", "fraud"},
//		}, check)
//	}
//
//	func check(t *rule.Trace) {
//		if t.Fragment() {
//			return // the fraud.check may be in a part of the trace we cannot see
//		}
//		if _, ok := t.FindByName("fraud.check"); ok {
//			return
//		}
//		for charge := range t.SpansNamed("payment.charge") {
//			t.Report(charge, "payment.charge without fraud.check in the same trace",
//				rule.Attr("service", charge.Service()))
//		}
//	}
//
//	func main() {}
//
// Build it as a WASI reactor module:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o payment-fraud-check.wasm .
//
// main is never called: -buildmode=c-shared makes Go emit an _initialize
// export, which the host runs once per instance and which runs the init
// functions, and so Register. The module then exports betrace_abi_version,
// betrace_input, betrace_evaluate and betrace_describe (from this package)
// and its memory.
//
// # The model
//
// A Trace holds Len spans, indexed 0 to Len()-1 in start-time order (ties
// in the order the host received them), so a lower index never started
// later. Walk them with an index loop over Trace.Span, or with range over
// Trace.Spans; find them by name with Trace.FindByName and
// Trace.SpansNamed. Trace.Root is the earliest span with no parent span ID,
// if the trace has one.
//
// A Span is a small value: the trace and an index. Its methods decode fields
// from the input on demand: Name, Service (the service.name resource
// attribute), Kind, Status and StatusMessage, Start and End (nanoseconds
// since the Unix epoch) and Duration. The tree is precomputed by the host:
// Parent, Children, Ancestors, Descendants, Root and HasAncestorNamed follow
// links in the span records. A span whose parent is not in the trace has no
// Parent but is not IsRoot either.
//
// Attributes are typed. Span.Str, Span.Int, Span.Float and Span.Bool return
// ok == false when the key is missing or the value has another type (Float
// also accepts ints); Span.Attr returns a Value of any type, including bytes,
// arrays and maps (the latter two as JSON text). The Resource* methods do
// the same for the attributes of the resource (service, host, deployment)
// that emitted the span. When a key appears twice, the first wins.
//
// Trace.Fragment reports that the host knows the trace is incomplete. A rule
// that reports the absence of something should not report it on a
// fragment.
//
// # Reporting
//
// Trace.Report records a violation on a span, with a message written for
// the person on call and optional attributes made by Attr, AttrInt,
// AttrFloat and AttrBool. Messages and attributes are copied into the result,
// so they may be built from strings read from the trace. Report keeps the
// result within the ABI limits: over-long messages, keys and values are cut,
// attributes past abiv1.MaxViolationAttrs are left out, and violations past
// abiv1.MaxViolations or abiv1.MaxResultBytes are dropped (Trace.Dropped
// counts them). A rule that reports nothing returns an empty result.
//
// # Lifetimes and cost
//
// Everything read from a Trace points into the module's input buffer: the
// Trace itself, its Spans, the strings they return and attribute Values are
// valid only until the check function returns. The host writes the next
// trace over the same buffer, so a string kept in a package variable would
// silently change; copy it with strings.Clone if it must outlive the call.
// A Span used after its evaluation panics.
//
// Evaluating does not allocate: decoding is lazy, strings are not copied,
// the range-over-func iterators stay on the stack, and the result is
// written into a buffer reused across calls. What does allocate is only done
// on demand: hex IDs (TraceID, SpanID, ParentSpanID), Value.String and
// Duration.String, and whatever the rule itself builds, such as a message
// made by concatenation.
//
// # Imports
//
// The host provides a fixed set of WASI functions: the ones the Go runtime
// and package os need for stdio, and nothing that can reach a file or a
// socket. fmt, time, strconv and strings therefore all work in a rule. This
// package itself avoids fmt, time and os so that it stays small and
// allocation-free; prefer strconv and strings on the hot path, and Duration
// and its constants (Millisecond, Second, ...) for span durations. Packages
// that open files or sockets (net, os.Open) produce imports the host
// refuses at upload, naming the import.
//
// # Failures
//
// A panic in a rule ends the evaluation: in wasm the module traps and the
// host records the failure for that rule alone. This package also panics,
// with a message starting "rule:", when the host's input is not a valid
// ABI v1 trace (bad magic or version, a table, string reference, span link
// or attribute range out of bounds, or a link cycle); it never reads out of
// bounds silently.
//
// # Testing natively
//
// The wasm glue is built only for wasip1; everything else compiles on any
// platform. Evaluate runs the registered rule over an encoded trace exactly
// as betrace_evaluate does, and DecodeResult and DecodeDescription parse
// what the module returns, so a rule's behaviour can be tested with go test
// given encoded traces.
package rule
