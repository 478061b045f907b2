// Package abiv1 holds the constants of BeTrace rule ABI version 1: export
// names, record sizes and field offsets of the flat little-endian trace
// layout, value and kind codes, and the limits the host enforces.
//
// It is the single place these numbers live. The host encoder (host/abi), the
// Go guest SDK (guest-sdk) and the DSL compiler all import it, so the package
// has no dependencies and no code beyond tiny pure helpers: a guest built for
// wasip1 links it too. The prose specification is api/abi-v1.md; a change here
// is a change to that document and its tests.
package abiv1

// Version is the ABI version this package describes. A module reports the
// version it speaks from ExportABIVersion.
const Version = 1

// Exports a rule module provides.
const (
	// ExportABIVersion is `() -> i32`, returning Version.
	ExportABIVersion = "betrace_abi_version"
	// ExportInput is `(size i32) -> i32`: the guest makes its input buffer at
	// least size bytes long and returns its address.
	ExportInput = "betrace_input"
	// ExportEvaluate is `(size i32) -> i64`: evaluate the trace in the first
	// size bytes of the input buffer; returns Pack(resultPtr, resultLen).
	ExportEvaluate = "betrace_evaluate"
	// ExportDescribe is the optional `() -> i64` self-description: returns
	// Pack(ptr, len) of a key/value record (see DescribeKey*).
	ExportDescribe = "betrace_describe"
	// ExportWholeTracesOnly is the optional `() -> ()` marker, never called,
	// of a module that does not handle TraceFlagFragment: the host does not
	// run it on a fragment, so none of its verdicts is reported on one.
	ExportWholeTracesOnly = "betrace_whole_traces_only"
	// ExportMemory is the module's linear memory.
	ExportMemory = "memory"
	// ExportInitialize is the optional reactor initializer, run once per
	// instance before any other call.
	ExportInitialize = "_initialize"
	// ExportFuel is the mutable i64 global the host's metering pass adds.
	// A module that already defines this export is refused.
	ExportFuel = "__betrace_fuel"
)

// HostModule is the import module name of BeTrace's own host functions.
const HostModule = "betrace"

// Host functions a rule may import from HostModule. A value argument is a
// (type i32, value i64) pair in the attribute value encoding: ValueString,
// ValueBytes, ValueArray and ValueMap take Pack(address, length) of the text
// in the guest's memory; ValueBool, ValueInt and ValueDouble take the value
// itself and are read as text as api/abi-v1.md §2 describes.
const (
	// HostRegexMatch is `(pattern_ptr i32, pattern_len i32, type i32,
	// value i64) -> i32`: 1 when the RE2 pattern matches somewhere in the
	// value's text (unanchored), else 0.
	HostRegexMatch = "regex_match"
	// HostTextContains is `(needle_ptr i32, needle_len i32, type i32,
	// value i64) -> i32`: 1 when the needle's bytes occur in the value's
	// text, else 0.
	HostTextContains = "text_contains"
	// HostParseNumber is `(ptr i32, len i32) -> (i32, i64)`: the decimal
	// number the text denotes, as (NumberInt, i64) or (NumberDouble, f64
	// bits), or (NumberNone, 0).
	HostParseNumber = "parse_number"
)

// What HostParseNumber found.
const (
	NumberNone   = 0
	NumberInt    = 1
	NumberDouble = 2
)

// Limits and fuel of the host functions. A call that breaks a limit traps
// with an error naming it. Fuel is charged before the work is done; a call
// the remaining budget cannot pay for ends the evaluation as out of fuel.
const (
	MaxRegexBytes   = 1024  // one pattern
	MaxRegexProgram = 10000 // instructions of one compiled pattern
	MaxRegexes      = 64    // distinct patterns one rule module uses

	// FuelHostCall is charged for every host function call.
	FuelHostCall = 100
	// FuelRegexStep is charged per text byte (plus one) per instruction of
	// the compiled pattern: RE2's worst case is proportional to both.
	FuelRegexStep = 16
	// FuelPerByte is charged per byte of the text and needle of
	// HostTextContains and of the text of HostParseNumber.
	FuelPerByte = 2
)

// CustomSectionSource is the custom section in which a compiled DSL rule
// carries its source text.
const CustomSectionSource = "betrace.source"

// Magic opens every encoded trace: the bytes "BTR1".
const Magic uint32 = 0x31525442

// None marks an absent span index (no parent, no child, no sibling, no root).
const None uint32 = 0xFFFFFFFF

// Header of an encoded trace. Offsets are from the start of the buffer.
const (
	HeaderSize = 48

	HeaderMagic       = 0  // u32 Magic
	HeaderVersion     = 4  // u32 Version
	HeaderSpanCount   = 8  // u32 number of span records
	HeaderSpanTable   = 12 // u32 offset of the first span record
	HeaderAttrCount   = 16 // u32 number of attribute records
	HeaderAttrTable   = 20 // u32 offset of the first attribute record
	HeaderStringTable = 24 // u32 offset of the string table
	HeaderStringSize  = 28 // u32 size of the string table in bytes
	HeaderRootIndex   = 32 // u32 index of the earliest span whose parent span ID is zero, or None
	HeaderFlags       = 36 // u32 TraceFlag* bits
	HeaderReserved0   = 40 // u32, zero
	HeaderReserved1   = 44 // u32, zero
)

// Trace flags.
const (
	// TraceFlagFragment says the host knows the trace may be incomplete
	// (for example, spans of it died with another instance). A rule must
	// not report the absence of a span, or anything more spans could undo,
	// on a fragment; a module that cannot tell exports
	// ExportWholeTracesOnly and is not run on fragments.
	TraceFlagFragment uint32 = 1 << 0
)

// Span record: SpanSize bytes, fields at these offsets. Spans are ordered by
// start time, ties kept in arrival order. A string field is a StrRef: u32
// offset into the string table, then u32 length.
const (
	SpanSize = 112

	SpanTraceID       = 0   // [16]byte
	SpanSpanID        = 16  // [8]byte
	SpanParentSpanID  = 24  // [8]byte, all zero when the span is a root
	SpanStart         = 32  // u64 start time, ns since the Unix epoch
	SpanEnd           = 40  // u64 end time, ns since the Unix epoch
	SpanParentIndex   = 48  // u32 index of the parent span, or None
	SpanFirstChild    = 52  // u32 index of the earliest child, or None
	SpanNextSibling   = 56  // u32 index of the next child of the same parent, or None
	SpanKind          = 60  // u8 Kind*
	SpanStatusCode    = 61  // u8 Status*
	SpanReserved0     = 62  // u16, zero
	SpanName          = 64  // StrRef
	SpanService       = 72  // StrRef, resource attribute service.name
	SpanStatusMessage = 80  // StrRef
	SpanAttrStart     = 88  // u32 index of the first span attribute record
	SpanAttrCount     = 92  // u32 number of span attribute records
	SpanResAttrStart  = 96  // u32 index of the first resource attribute record
	SpanResAttrCount  = 100 // u32 number of resource attribute records
	SpanFlags         = 104 // u32, zero in v1
	SpanReserved1     = 108 // u32, zero
)

// Attribute record: AttrSize bytes.
const (
	AttrSize = 24

	AttrKey      = 0  // StrRef
	AttrType     = 8  // u8 Value*
	AttrReserved = 9  // 7 bytes, zero
	AttrValue    = 16 // u64: see Value*
)

// Attribute value types. For ValueString, ValueBytes, ValueArray and
// ValueMap the value is a StrRef (arrays and maps as JSON text).
const (
	ValueEmpty  uint8 = 0 // no value; the u64 is zero
	ValueString uint8 = 1 // StrRef
	ValueBool   uint8 = 2 // 0 or 1
	ValueInt    uint8 = 3 // two's-complement i64
	ValueDouble uint8 = 4 // IEEE 754 binary64 bits
	ValueBytes  uint8 = 5 // StrRef of the raw bytes
	ValueArray  uint8 = 6 // StrRef of JSON text
	ValueMap    uint8 = 7 // StrRef of JSON text
)

// Span kinds, numbered as in OTLP.
const (
	KindUnspecified uint8 = 0
	KindInternal    uint8 = 1
	KindServer      uint8 = 2
	KindClient      uint8 = 3
	KindProducer    uint8 = 4
	KindConsumer    uint8 = 5
)

// Span status codes, numbered as in OTLP.
const (
	StatusUnset uint8 = 0
	StatusOK    uint8 = 1
	StatusError uint8 = 2
)

// Result record, written by the guest and returned from ExportEvaluate:
//
//	u32 violation count, then for each violation:
//	  u32 span index (into the span records of the evaluated trace)
//	  u32 message length, message bytes (UTF-8)
//	  u32 attribute count, then for each attribute:
//	    u32 key length, key bytes, u32 value length, value bytes
//
// Records are packed, without padding. A zero-length result means no
// violations. The self-description record returned from ExportDescribe uses
// the attribute part of this layout: u32 count, then key/value pairs.

// Keys of the self-description record.
const (
	DescribeKeyID          = "id"
	DescribeKeyName        = "name"
	DescribeKeySeverity    = "severity"
	DescribeKeyDescription = "description"
	DescribeKeyTags        = "tags" // comma-separated
)

// Limits the host enforces on what a guest returns. Exceeding one is an ABI
// violation.
const (
	MaxResultBytes    = 1 << 20 // whole result record
	MaxViolations     = 10000   // violation records per evaluation
	MaxMessageBytes   = 4096    // one violation message
	MaxViolationAttrs = 32      // attributes on one violation
	MaxKeyBytes       = 256     // one attribute key
	MaxValueBytes     = 4096    // one attribute value
	MaxDescribeBytes  = 64 << 10
)

// Pack returns the i64 a guest returns for a (pointer, length) pair.
func Pack(ptr, length uint32) uint64 { return uint64(ptr)<<32 | uint64(length) }

// Unpack splits a value made by Pack.
func Unpack(v uint64) (ptr, length uint32) { return uint32(v >> 32), uint32(v) }
