package rule

import (
	"strings"
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
)

// Severity is how serious a rule's violations are.
type Severity string

// Severities a rule can declare.
const (
	SeverityCritical Severity = "CRITICAL"
	SeverityHigh     Severity = "HIGH"
	SeverityMedium   Severity = "MEDIUM"
	SeverityLow      Severity = "LOW"
	SeverityInfo     Severity = "INFO"
)

func (s Severity) valid() bool {
	switch s {
	case SeverityCritical, SeverityHigh, SeverityMedium, SeverityLow, SeverityInfo:
		return true
	}
	return false
}

// Info describes a rule. The host reads it through betrace_describe.
type Info struct {
	// ID identifies the rule; required. Use lower-case words joined by
	// hyphens, e.g. "payment-fraud-check".
	ID string
	// Name is a short human-readable title; defaults to ID.
	Name string
	// Severity of the rule's violations; required.
	Severity Severity
	// Description says in one line what the rule checks.
	Description string
	// Tags are free-form labels; none may contain a comma.
	Tags []string
}

// Check is the function a rule registers. It inspects the trace and calls
// Trace.Report for each violation it finds. Everything it reads from the
// trace is only valid until it returns.
type Check func(t *Trace)

var (
	registered   Info
	registeredFn Check
	describeRec  []byte
)

// Register installs the module's rule. Call it exactly once, from an init
// function of package main. It panics if called twice or if info is invalid
// (missing ID, unknown severity, a tag containing a comma, or a description
// record beyond the ABI limits); in a wasm module that makes instantiation
// fail, which is where such mistakes belong.
func Register(info Info, check Check) {
	if registeredFn != nil {
		panic("rule: Register called more than once (rule " + registered.ID + " already registered)")
	}
	register(info, check)
}

func register(info Info, check Check) {
	if check == nil {
		panic("rule: Register with a nil check function")
	}
	if info.ID == "" {
		panic("rule: Register with an empty Info.ID")
	}
	if !info.Severity.valid() {
		panic("rule: Register " + info.ID + ": unknown severity " + string(info.Severity) +
			" (use one of the rule.Severity* constants)")
	}
	if info.Name == "" {
		info.Name = info.ID
	}
	for _, tag := range info.Tags {
		if tag == "" || strings.Contains(tag, ",") {
			panic("rule: Register " + info.ID + ": tag " + `"` + tag + `"` + " is empty or contains a comma")
		}
	}
	rec := appendKVCount(nil, 5)
	for _, kv := range [...][2]string{
		{abiv1.DescribeKeyID, info.ID},
		{abiv1.DescribeKeyName, info.Name},
		{abiv1.DescribeKeySeverity, string(info.Severity)},
		{abiv1.DescribeKeyDescription, info.Description},
		{abiv1.DescribeKeyTags, strings.Join(info.Tags, ",")},
	} {
		if len(kv[1]) > abiv1.MaxValueBytes {
			panic("rule: Register " + info.ID + ": " + kv[0] + " is longer than the ABI allows")
		}
		rec = appendKV(rec, kv[0], kv[1])
	}
	if len(rec) > abiv1.MaxDescribeBytes {
		panic("rule: Register " + info.ID + ": description record is larger than the ABI allows")
	}
	registered, registeredFn, describeRec = info, check, rec
}

// Registered returns the Info passed to Register, with defaults filled in,
// and whether a rule has been registered.
func Registered() (Info, bool) { return registered, registeredFn != nil }

// Describe returns the self-description record that betrace_describe hands
// to the host: a u32 count, then (u32 key length, key, u32 value length,
// value) for the keys id, name, severity, description and tags. It panics
// if no rule is registered. The caller must not modify the result.
func Describe() []byte {
	if registeredFn == nil {
		panic(errNotRegistered)
	}
	return describeRec
}

const errNotRegistered = "rule: no rule registered; call rule.Register from an init function in package main"

// Evaluate runs the registered rule over one encoded trace (ABI v1 layout)
// and returns the result record, exactly as betrace_evaluate does inside a
// wasm module: empty when the rule reported nothing, otherwise a u32
// violation count followed by the violation records (see DecodeResult).
//
// It exists so a rule can be driven natively, from tests. The returned slice
// is reused by the next call. Evaluate is not safe for concurrent use, and it
// panics, with a message starting "rule:", when the input is not a valid
// trace or no rule is registered.
func Evaluate(input []byte) []byte {
	if registeredFn == nil {
		panic(errNotRegistered)
	}
	return evaluate(registeredFn, input)
}

// The one evaluation state of the module. A wasm instance evaluates one trace
// at a time, so the trace and the result buffer are reused across calls and
// evaluating allocates nothing once the buffer has grown.
var current Trace

func evaluate(check Check, input []byte) []byte {
	t := &current
	t.load(input)
	check(t)
	res := t.finish()
	t.clear()
	return res
}

// view returns b as a string without copying. The string is only valid while
// b is not modified.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}
