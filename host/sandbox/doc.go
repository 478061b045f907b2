// Package sandbox runs rule modules in wazero, one sandbox per rule, and is
// the only package in BeTrace that imports wazero.
//
// Load admits a module: it checks size, that the bytes are WebAssembly, that
// every import is on the allowlist (the WASI calls a Go guest needs and
// nothing that reaches a filesystem or a socket), meters it (package meter),
// compiles it through the shared compilation cache, checks the ABI version and
// exports, and runs `_initialize` within a fuel budget. A module that passes
// becomes a Sandbox: its own runtime, so its memory cap is its own, and a
// small pool of instances sharing one compiled module.
//
// Evaluate runs one encoded trace on one instance under a fuel budget. Any
// error leaves a wazero instance unusable, so the instance is discarded and
// the next call gets a fresh one; an instance whose memory passed the
// high-water mark is recycled the same way, because linear memory never
// shrinks. What went wrong comes back as a *Fault whose Outcome says which
// (fuel, memory, trap, abi, deadline); deciding what a fault means for the rule is the
// caller's job (package rules counts strikes).
//
// # Host calls
//
// The WASI calls a rule may import are served by this package (wasi.go),
// not by a general WASI implementation: each charges fuel for the bytes it
// handles before handling them and bounds what one call may ask, as the
// betrace host functions do, so the fuel budget bounds host work too. A
// wall-clock backstop per call (Backstop), checked as each host call
// starts, stops whatever fuel does not see. wazero's own preemption
// (closing a module when a context ends) is not used: it slows every loop.
//
// # Concurrency
//
// A Sandbox is safe for concurrent use; at most Limits.Instances calls run at
// once and further callers wait for a free instance or their context.
package sandbox
