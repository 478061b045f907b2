// Package meter rewrites a WebAssembly module so that running it burns a
// deterministic amount of "fuel", letting the host bound a rule's CPU cost.
//
// # Why
//
// wazero has no fuel of its own. Its only preemption is closing the module
// when a context is done, which makes compiled code call out to the runtime
// at every loop header (slow in tight loops) and checks nothing on function
// entry, so a loop-free call tree of exponential size is never stopped. It
// also leaves the cut-off point to wall-clock time: the same rule over the
// same trace could pass on an idle host and time out on a busy one. A
// per-instruction budget is instead a property of the rule and its input,
// so a verdict ("this rule is too expensive for this trace") is
// reproducible, and the host can report how much of the budget a rule used.
//
// # How
//
// Instrument adds one mutable i64 global, exported as abiv1.ExportFuel and
// appended after every existing global so no global index moves. The host
// writes a budget into it before each call and reads it afterwards; the
// amount used is the budget minus what is left. No functions are added, so
// function indices, tables, element segments and the name section stay
// valid; metering code is inlined.
//
// Fuel is charged at the start of each straight-line segment for the whole
// segment: `global.get; i64.const cost; i64.sub; global.set`. Charging up
// front, even for code a branch then skips, keeps the count deterministic
// and the inserted code small; it is an upper bound, not an exact count.
// Segments begin at the function entry, at every loop header, at the start of
// each then and else arm, and after the end of a block or if that a branch
// targets (the join points a br_table dispatch jumps to, which is how Go
// lays out its functions). Everything else, such as code after a block that
// nothing branches to, joins an existing segment, since it can run at most
// once each time that segment is entered. If arms of up to four
// instructions join the segment before the if the same way: Go jumps by
// setting a local and branching from such an arm, and a separate charge
// would cost as much as the arm. No segment crosses a loop header, so every
// iteration pays for what it runs.
//
// At every function entry and loop header the fuel is also checked and the
// module traps with `unreachable` if it is negative. Between two checks code
// only moves forward, through straight-line code and returns, so the work
// done unchecked is bounded by the code on the call stack: both an infinite
// loop and a loop-free call tree of exponential size (which no back-edge
// check would catch) are stopped soon after the budget is spent. Because
// the charge comes before the check, the global is negative whenever fuel
// exhaustion caused the trap, which is how the host tells it from other
// traps.
//
// The global starts at zero and the host must set a non-negative budget.
// Start functions run during instantiation, before the host can set one, so
// start code that costs anything traps; a host meters a reactor's
// _initialize by instantiating with no start functions (in wazero,
// WithStartFunctions() with no names), setting the budget and calling it.
//
// # Costs
//
// Every instruction costs Config.InstructionCost (default 1); block, loop,
// else and end are free, as they compile to nothing. Instructions whose work
// grows with an operand pay for it too, on top: memory.fill, memory.copy and
// memory.init one fuel per Config.BytesPerFuel bytes (default 32, rounded
// down); memory.grow Config.FuelPerPage per page asked for (default 2048,
// that is 64 KiB at 32 bytes a fuel, paid whether or not the grow succeeds);
// table.grow, table.fill, table.copy and table.init one fuel per
// Config.ElementsPerFuel elements (default 4). For these the count is
// stashed in a scratch i32 local, appended after the function's own locals
// so no local index moves, and fuel is checked before the operation runs so
// a huge fill cannot start on an empty budget.
//
// # Data segments
//
// The pass also lays a module's data segments out again when it can do so
// exactly. Go's linker emits one active segment per run of non-zero bytes,
// over 20,000 for a rule built with the Go SDK, and wazero decodes and
// applies each one at every instantiation: most of the time a new instance
// of a Go rule took, paid whenever a pool grows and after every fault. When
// every segment is active, in memory 0, at a constant offset inside the
// initial memory, and no function uses memory.init or data.drop (which name
// segments by index), the segments are replaced by the memory image they
// produce, split only at long runs of zeros: a few segments, the same bytes.
//
// # What is refused
//
// Instrument refuses, with an *UnsupportedError naming the function, the
// byte offset and the instruction, anything whose cost or control flow it
// does not account for: SIMD (0xfd), threads and atomics (0xfe), exception
// handling (try, catch, throw, rethrow, delegate, try_table, throw_ref, the
// tag section), tail calls (return_call, return_call_indirect,
// return_call_ref), typed function references and GC instructions, and any
// opcode it does not know. Unknown code is refused rather than copied
// because a misread immediate would shift every later instruction boundary
// and put metering code in the middle of an instruction. Input that is not
// a well-formed binary module gives an error wrapping ErrMalformed; a module
// that already exports the fuel global gives ErrAlreadyMetered, since the
// guest would then own the number the host trusts.
//
// Because Instrument is the first code to read an uploaded rule, it also
// refuses as malformed what would make the runtime allocate or compute out
// of proportion to the input: vector counts larger than the bytes that hold
// them (wazero sizes its slices by the declared count before reading, so a
// module of a few dozen bytes could ask for gigabytes), and modules beyond
// the structural limits in bounds.go: MaxNestingDepth, MaxFunctionBlocks,
// MaxFunctionBodyBytes, MaxFunctions and MaxLocals. wazero's optimizing
// compiler takes time quadratic in the basic blocks of a function on some
// shapes (25,000 nested blocks took seconds, a million did not finish), and
// cannot be interrupted inside a function, so these keep every function
// quick to compile. The pass itself is linear in the size of the module.
// What bounds a whole module's compile time is the caller's deadline:
// InstrumentContext stops when its context ends, and a host compiling with
// wazero's compilation workers has the compiler stop between functions too.
//
// The pass checks the binary format, not validity: it decodes every
// instruction to find segment boundaries but does not type-check, and relies
// on the runtime to validate the output as it would have the input. The
// inserted code is type-neutral, so a module that validated before still
// validates after.
package meter
