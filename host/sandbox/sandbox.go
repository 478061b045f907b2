package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/meter"
	"github.com/betracehq/betrace/host/store"
)

// allowedImports are the only WASI functions a rule may import: what a Go
// wasip1 guest links, served by wasi.go (fuel-charged, bounded, fake clocks,
// deterministic randomness, nothing open but stdio). The fd_ calls beyond
// fd_write are what Go's os package links at start-up to look at stdio and
// preopens.
func allowedImport(mod, name string) bool {
	if mod != wasiModule {
		return false
	}
	_, ok := wasiFuncs[name]
	return ok || name == "proc_exit"
}

// Host holds what sandboxes share: the compilation cache and the memory
// budget. Close it after every Sandbox it loaded.
type Host struct {
	cache  wazero.CompilationCache
	meter  meter.Config
	memory *memoryBudget
	admit  time.Duration // AdmissionTimeout
}

// HostConfig configures a Host. A zero field means its default.
type HostConfig struct {
	// CacheDir keeps compiled code on disk, so a restart does not recompile
	// every rule; "" keeps the cache in memory.
	CacheDir string
	// MemoryBudget bounds the linear memory of every instance of every rule
	// together, in bytes. Default DefaultMemoryBudget.
	MemoryBudget int64
	// AdmissionTimeout bounds metering and compiling one module. Default
	// DefaultAdmissionTimeout.
	AdmissionTimeout time.Duration
}

// NewHost returns a Host configured by cfg.
func NewHost(cfg HostConfig) (*Host, error) {
	if cfg.MemoryBudget < 0 {
		return nil, fmt.Errorf("sandbox: memory budget %d is negative", cfg.MemoryBudget)
	}
	if cfg.MemoryBudget == 0 {
		cfg.MemoryBudget = DefaultMemoryBudget
	}
	if cfg.AdmissionTimeout <= 0 {
		cfg.AdmissionTimeout = DefaultAdmissionTimeout
	}
	cache := wazero.NewCompilationCache()
	if cfg.CacheDir != "" {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("sandbox: open compilation cache in %s: %w", cfg.CacheDir, err)
		}
	}
	return &Host{cache: cache, meter: meter.DefaultConfig(), memory: &memoryBudget{limit: cfg.MemoryBudget}, admit: cfg.AdmissionTimeout}, nil
}

// Close releases the compilation cache.
func (h *Host) Close(ctx context.Context) error { return h.cache.Close(ctx) }

// Sandbox is one admitted rule module with its runtime and instance pool.
type Sandbox struct {
	host      *Host
	limits    Limits
	metered   bool
	runtime   wazero.Runtime
	compiled  wazero.CompiledModule
	moduleCfg wazero.ModuleConfig
	desc      abi.Description
	source    string // betrace.source custom section
	wholeOnly bool   // exports abiv1.ExportWholeTracesOnly
	log       *Log

	idle  chan *instance
	slots chan struct{} // one token per live instance

	mu     sync.RWMutex // held for reading by calls, for writing by Close
	closed atomic.Bool

	created, discarded atomic.Uint64

	memMin, memMax uint64 // bytes of an instance's linear memory at start and at most
}

// Stats counts instance turnover: every fault and every recycle discards
// an instance and a later call creates a fresh one.
type Stats struct {
	Created, Discarded uint64
}

// Stats returns the instance counters.
func (s *Sandbox) Stats() Stats {
	return Stats{Created: s.created.Load(), Discarded: s.discarded.Load()}
}

// instance is one wazero module instance and what a call needs of it.
type instance struct {
	mod      api.Module
	mem      api.Memory
	fuel     api.MutableGlobal // nil when unmetered
	input    api.Function
	evaluate api.Function
	stack    [2]uint64
	stderr   *tail
	memory   *mapping

	// ctx is what the guest is called with: it carries the instance to the
	// host functions (callKey). The caller's own context is checked by the
	// host functions' fuel, not by wazero, whose preemption would slow
	// every loop.
	ctx      context.Context
	wasi     wasiState
	deadline time.Time // wall-clock backstop of the current call
	expired  bool      // a host function found the backstop passed
}

// DefaultAdmissionTimeout bounds metering and compiling one module. The
// example rules take under 1 s alone and a 13 MB Go program 4 s; the limits
// in package meter keep each function quick, and this bounds a module of
// many, with room for a machine busy evaluating (or running the race
// detector). Compilation uses two workers, the fewest with which wazero
// stops between functions when the deadline passes.
const DefaultAdmissionTimeout = 30 * time.Second

// Load admits module under limits and returns its Sandbox, or an error that
// wraps one of the admission errors and names the problem.
func (h *Host) Load(ctx context.Context, module []byte, limits Limits) (*Sandbox, error) {
	return h.load(ctx, module, limits, true)
}

func (h *Host) load(ctx context.Context, module []byte, limits Limits, metered bool) (*Sandbox, error) {
	if err := limits.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLimits, err)
	}
	lim := limits.withDefaults()
	if len(module) > lim.MaxModuleBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrModuleTooLarge, len(module), lim.MaxModuleBytes)
	}
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, fmt.Errorf("%w: the file does not start with the wasm magic bytes (\\0asm)%s", ErrNotWasm, sniff(module))
	}
	if len(module) < 8 || !bytes.Equal(module[4:8], []byte{1, 0, 0, 0}) {
		return nil, fmt.Errorf("%w: only binary format version 1 is supported", ErrInvalidModule)
	}
	code := module
	actx, cancel := context.WithTimeoutCause(experimental.WithCompilationWorkers(ctx, 2), h.admit,
		fmt.Errorf("metering and compiling took longer than %v; make the module or its largest functions smaller", h.admit))
	defer cancel()
	if metered {
		var err error
		if code, err = meter.InstrumentContext(actx, module, h.meter); err != nil {
			var unsupported *meter.UnsupportedError
			if errors.As(err, &unsupported) {
				return nil, fmt.Errorf("%w: %w", ErrMeteringFailed, err)
			}
			return nil, fmt.Errorf("%w: %w", ErrInvalidModule, err)
		}
	}

	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(lim.MemoryPages))
	s := &Sandbox{
		host:    h,
		limits:  lim,
		metered: metered,
		runtime: rt,
		log:     newLog(lim.LogBytes),
		idle:    make(chan *instance, lim.Instances),
		slots:   make(chan struct{}, lim.Instances),
	}
	if err := s.admit(ctx, actx, code); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	s.source = sourceSection(module)
	return s, nil
}

func (s *Sandbox) admit(ctx, compileCtx context.Context, code []byte) error {
	compiled, err := s.runtime.CompileModule(compileCtx, code)
	if err != nil {
		// The compilation cache writes the compiled code to the data
		// directory: a full disk fails the compile, and that is not the
		// module's fault.
		if full := store.CheckFull(err); errors.Is(full, store.ErrFull) {
			return fmt.Errorf("compile the module: write the compilation cache: %w", full)
		}
		return fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	s.compiled = compiled
	usesHost := false
	for _, f := range compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod == abiv1.HostModule {
			if err := checkHostImport(name, f.ParamTypes(), f.ResultTypes()); err != nil {
				return err
			}
			usesHost = true
			continue
		}
		if !allowedImport(mod, name) {
			return fmt.Errorf("%w: %s.%s%s; rules may import only the WASI calls a Go guest needs and the betrace host functions (no filesystem, sockets or other host modules)", ErrImportNotAllowed, mod, name, importHint(mod, name))
		}
	}
	for _, m := range compiled.ImportedMemories() {
		mod, name, _ := m.Import()
		return fmt.Errorf("%w: memory %s.%s; a rule must define its own memory", ErrImportNotAllowed, mod, name)
	}
	_, s.wholeOnly = compiled.ExportedFunctions()[abiv1.ExportWholeTracesOnly]
	if err := checkExports(compiled); err != nil {
		return err
	}
	s.memMin, s.memMax = memorySize(compiled.ExportedMemories()[abiv1.ExportMemory], s.limits.MemoryPages)
	if s.memMin > s.memMax {
		return fmt.Errorf("%w: the module's memory starts at %d pages, above its cap of %d (limits.memoryPages)", ErrInvalidLimits, s.memMin/pageSize, s.memMax/pageSize)
	}
	if s.memMax > uint64(s.host.memory.limit) {
		return fmt.Errorf("%w: the memory cap of %d MiB is more than the %d MiB the host allows all rules together (BETRACE_RULE_MEMORY_BUDGET); lower limits.memoryPages",
			ErrInvalidLimits, s.memMax>>20, s.host.memory.limit>>20)
	}
	if err := instantiateWASI(ctx, s.runtime); err != nil {
		return err
	}
	if usesHost {
		if err := newHostFuncs().instantiate(ctx, s.runtime); err != nil {
			return err
		}
	}
	s.moduleCfg = wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions() // _initialize runs under a fuel budget in newInstance

	// The first instance proves initialization works and answers the
	// version and description; it then joins the pool.
	s.slots <- struct{}{}
	inst, err := s.newInstance(ctx)
	if err != nil {
		<-s.slots
		if errors.Is(err, ErrMemoryBudget) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrInitFailed, err)
	}
	if err := s.describe(ctx, inst); err != nil {
		s.discard(ctx, inst)
		return err
	}
	s.idle <- inst
	return nil
}

// memorySize returns the bytes of a memory at instantiation and at most,
// the most being the module's own maximum or capPages, whichever is less.
func memorySize(def api.MemoryDefinition, capPages uint32) (min, max uint64) {
	pages := capPages
	if m, ok := def.Max(); ok && m < pages {
		pages = m
	}
	return uint64(def.Min()) * pageSize, uint64(pages) * pageSize
}

func checkExports(m wazero.CompiledModule) error {
	want := []struct {
		name            string
		params, results []api.ValueType
		optional        bool
	}{
		{abiv1.ExportABIVersion, nil, []api.ValueType{api.ValueTypeI32}, false},
		{abiv1.ExportInput, []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI32}, false},
		{abiv1.ExportEvaluate, []api.ValueType{api.ValueTypeI32}, []api.ValueType{api.ValueTypeI64}, false},
		{abiv1.ExportDescribe, nil, []api.ValueType{api.ValueTypeI64}, true},
		{abiv1.ExportInitialize, nil, nil, true},
		{abiv1.ExportWholeTracesOnly, nil, nil, true},
	}
	funcs := m.ExportedFunctions()
	for _, w := range want {
		f, ok := funcs[w.name]
		if !ok {
			if w.optional {
				continue
			}
			return fmt.Errorf("%w: the module does not export function %q (ABI v1 needs %s, %s and %s)", ErrMissingExport, w.name, abiv1.ExportABIVersion, abiv1.ExportInput, abiv1.ExportEvaluate)
		}
		if !sameTypes(f.ParamTypes(), w.params) || !sameTypes(f.ResultTypes(), w.results) {
			return fmt.Errorf("%w: %s has type %s, ABI v1 needs %s", ErrMissingExport, w.name, signature(f.ParamTypes(), f.ResultTypes()), signature(w.params, w.results))
		}
	}
	if _, ok := m.ExportedMemories()[abiv1.ExportMemory]; !ok {
		return fmt.Errorf("%w: the module does not export its memory as %q", ErrMissingExport, abiv1.ExportMemory)
	}
	return nil
}

// describe checks the ABI version and reads the self-description.
func (s *Sandbox) describe(ctx context.Context, inst *instance) error {
	s.arm(inst, s.limits.Fuel)
	st := inst.stack[:]
	if err := inst.mod.ExportedFunction(abiv1.ExportABIVersion).CallWithStack(inst.ctx, st); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInitFailed, abiv1.ExportABIVersion, err)
	}
	if v := uint32(st[0]); v != abiv1.Version {
		return fmt.Errorf("%w: the module speaks ABI version %d, this host speaks version %d", ErrABIVersion, v, abiv1.Version)
	}
	f := inst.mod.ExportedFunction(abiv1.ExportDescribe)
	if f == nil {
		return nil
	}
	if err := f.CallWithStack(inst.ctx, st); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInitFailed, abiv1.ExportDescribe, err)
	}
	ptr, n := abiv1.Unpack(st[0])
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		return fmt.Errorf("%w: %s returned %d bytes at %#x, past the end of memory (%d bytes)", ErrInitFailed, abiv1.ExportDescribe, n, ptr, inst.mem.Size())
	}
	d, err := abi.DecodeDescription(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInitFailed, err)
	}
	s.desc = d
	return nil
}

// Description is what the module said about itself (zero if it exports no
// description).
func (s *Sandbox) Description() abi.Description { return s.desc }

// Source is the rule's source text when the module carries it in a
// betrace.source custom section (as compiled DSL rules do), else "".
func (s *Sandbox) Source() string { return s.source }

// Limits returns the effective limits, defaults filled in.
func (s *Sandbox) Limits() Limits { return s.limits }

// Log returns the tail of what the rule wrote to stderr.
func (s *Sandbox) Log() []byte { return s.log.Bytes() }

func (s *Sandbox) newInstance(ctx context.Context) (*instance, error) {
	t := &tail{log: s.log}
	m, err := newMapping(s.host.memory, s.memMin, s.memMax)
	if err != nil {
		return nil, err
	}
	alloc := experimental.MemoryAllocatorFunc(func(uint64, uint64) experimental.LinearMemory { return m })
	mod, err := s.runtime.InstantiateModule(experimental.WithMemoryAllocator(ctx, alloc), s.compiled, s.moduleCfg)
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	s.created.Add(1)
	inst := &instance{
		mod:      mod,
		mem:      mod.ExportedMemory(abiv1.ExportMemory),
		input:    mod.ExportedFunction(abiv1.ExportInput),
		evaluate: mod.ExportedFunction(abiv1.ExportEvaluate),
		stderr:   t,
		memory:   m,
		wasi:     newWASIState(t),
	}
	inst.ctx = context.WithValue(context.WithoutCancel(ctx), callKey{}, inst)
	if s.metered {
		g, ok := mod.ExportedGlobal(abiv1.ExportFuel).(api.MutableGlobal)
		if !ok {
			mod.Close(ctx)
			return nil, fmt.Errorf("metered module lacks the %s global", abiv1.ExportFuel)
		}
		inst.fuel = g
	}
	if init := mod.ExportedFunction(abiv1.ExportInitialize); init != nil {
		s.arm(inst, s.limits.InitFuel)
		if err := init.CallWithStack(inst.ctx, inst.stack[:]); err != nil {
			f := s.fault(ctx, inst, err, s.limits.InitFuel)
			mod.Close(ctx)
			s.discarded.Add(1)
			return nil, fmt.Errorf("%s: %w", abiv1.ExportInitialize, f)
		}
	}
	return inst, nil
}

// arm readies inst for a call with budget: its fuel, and the wall-clock
// backstop derived from it (Backstop).
func (s *Sandbox) arm(inst *instance, budget uint64) {
	s.setFuel(inst, budget)
	inst.deadline, inst.expired = time.Now().Add(s.backstop(budget)), false
}

func (s *Sandbox) backstop(budget uint64) time.Duration {
	if s.limits.Backstop > 0 {
		return s.limits.Backstop
	}
	return Backstop(budget)
}

func (s *Sandbox) setFuel(inst *instance, budget uint64) {
	if inst.fuel != nil {
		inst.fuel.Set(budget)
	}
}

// remaining returns the fuel left; negative once the budget ran out.
func (s *Sandbox) remaining(inst *instance) int64 {
	if inst.fuel == nil {
		return 0
	}
	return int64(inst.fuel.Get())
}

// Result is what one completed evaluation returned.
type Result struct {
	Violations []abi.Violation
	FuelUsed   uint64
	// NotRun is set when the trace is a fragment and the module declared
	// it judges whole traces only (abiv1.ExportWholeTracesOnly).
	NotRun bool
}

// Evaluate runs the encoded trace (spanCount spans) through the rule and
// appends its violations to dst.Violations. A failed call returns a *Fault.
func (s *Sandbox) Evaluate(ctx context.Context, encoded []byte, spanCount uint32, dst []abi.Violation) (Result, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return Result{Violations: dst}, ErrClosed
	}
	// The host cannot tell an absence verdict from any other, so a module
	// that does not read the fragment flag gets no say on a fragment.
	if s.wholeOnly && len(encoded) >= abiv1.HeaderSize && binary.LittleEndian.Uint32(encoded[abiv1.HeaderFlags:])&abiv1.TraceFlagFragment != 0 {
		return Result{Violations: dst, NotRun: true}, nil
	}
	inst, err := s.acquire(ctx)
	if err != nil {
		return Result{Violations: dst}, err
	}
	budget := s.limits.Fuel
	res, err := s.call(ctx, inst, encoded, spanCount, budget, dst)
	if err != nil {
		s.discard(ctx, inst)
		return res, err
	}
	if inst.mem.Size() > s.limits.RecyclePages*65536 {
		s.discard(ctx, inst)
	} else {
		s.idle <- inst
	}
	return res, nil
}

func (s *Sandbox) call(ctx context.Context, inst *instance, encoded []byte, spanCount uint32, budget uint64, dst []abi.Violation) (Result, error) {
	inst.stderr.buf = inst.stderr.buf[:0]
	s.arm(inst, budget)
	st := inst.stack[:]
	st[0] = uint64(len(encoded))
	if err := inst.input.CallWithStack(inst.ctx, st); err != nil {
		return Result{Violations: dst}, s.fault(ctx, inst, err, budget)
	}
	ptr := uint32(st[0])
	if !inst.mem.Write(ptr, encoded) {
		return Result{Violations: dst}, &Fault{Outcome: OutcomeABIViolation, FuelUsed: s.used(inst, budget),
			Err: fmt.Errorf("%s returned a %d-byte buffer at %#x, past the end of memory (%d bytes)", abiv1.ExportInput, len(encoded), ptr, inst.mem.Size())}
	}
	st[0] = uint64(len(encoded))
	if err := inst.evaluate.CallWithStack(inst.ctx, st); err != nil {
		return Result{Violations: dst}, s.fault(ctx, inst, err, budget)
	}
	used := s.used(inst, budget)
	ptr, n := abiv1.Unpack(st[0])
	out, ok := inst.mem.Read(ptr, n)
	if !ok {
		return Result{Violations: dst, FuelUsed: used}, &Fault{Outcome: OutcomeABIViolation, FuelUsed: used,
			Err: fmt.Errorf("%s returned a %d-byte result at %#x, past the end of memory (%d bytes)", abiv1.ExportEvaluate, n, ptr, inst.mem.Size())}
	}
	vs, err := abi.DecodeResult(dst, out, spanCount)
	if err != nil {
		return Result{Violations: dst, FuelUsed: used}, &Fault{Outcome: OutcomeABIViolation, FuelUsed: used, Err: err}
	}
	return Result{Violations: vs, FuelUsed: used}, nil
}

func (s *Sandbox) used(inst *instance, budget uint64) uint64 {
	if inst.fuel == nil {
		return 0 // unmetered (benchmarks and the differential test only)
	}
	left := s.remaining(inst)
	if left < 0 {
		return budget
	}
	return budget - uint64(left)
}

// fault classifies a failed call.
func (s *Sandbox) fault(ctx context.Context, inst *instance, err error, budget uint64) *Fault {
	f := &Fault{Outcome: OutcomeTrap, FuelUsed: s.used(inst, budget), Err: err}
	said := inst.stderr.summary()
	var exit *sys.ExitError
	switch {
	case inst.expired:
		f.Outcome = OutcomeDeadline
		f.Err = fmt.Errorf("wall-clock backstop of %s passed (fuel used %d of %d)", s.backstop(budget), f.FuelUsed, budget)
		return f
	case ctx.Err() != nil:
		f.Outcome = OutcomeCanceled
	case inst.fuel != nil && s.remaining(inst) < 0:
		f.Outcome = OutcomeFuelExhausted
		f.Err = fmt.Errorf("fuel budget of %d exhausted", budget)
		return f
	case inst.memory.refused:
		f.Outcome = OutcomeMemoryBudget
		f.Err = fmt.Errorf("%w: the rules' linear memory takes the whole %d MiB budget (BETRACE_RULE_MEMORY_BUDGET); raise the budget, or lower the memoryPages of the largest rules",
			ErrMemoryBudget, s.host.memory.limit>>20)
	case strings.Contains(said, "out of memory") || inst.mem.Size() >= s.limits.MemoryPages*65536-65536:
		f.Outcome = OutcomeMemoryExceeded
		f.Err = fmt.Errorf("memory cap of %d pages (%d MiB) reached", s.limits.MemoryPages, s.limits.MemoryPages/16)
	case errors.As(err, &exit):
		f.Err = fmt.Errorf("guest exited with code %d", exit.ExitCode())
	}
	if said != "" {
		f.Err = fmt.Errorf("%w: guest said %q", f.Err, said)
	}
	return f
}

func (s *Sandbox) acquire(ctx context.Context) (*instance, error) {
	select {
	case inst := <-s.idle:
		return inst, nil
	default:
	}
	select {
	case inst := <-s.idle:
		return inst, nil
	case s.slots <- struct{}{}:
		inst, err := s.newInstance(ctx)
		if err != nil {
			<-s.slots
			if errors.Is(err, ErrMemoryBudget) && len(s.slots) > 0 {
				// Another instance lives: take turns with it rather than
				// fail; the budget bounds a rule's parallelism first.
				return s.waitIdle(ctx)
			}
			var f *Fault
			if errors.As(err, &f) {
				return nil, f
			}
			return nil, &Fault{Outcome: OutcomeTrap, Err: err}
		}
		return inst, nil
	case <-ctx.Done():
		return nil, &Fault{Outcome: OutcomeCanceled, Err: ctx.Err()}
	}
}

func (s *Sandbox) waitIdle(ctx context.Context) (*instance, error) {
	select {
	case inst := <-s.idle:
		return inst, nil
	case <-ctx.Done():
		return nil, &Fault{Outcome: OutcomeCanceled, Err: ctx.Err()}
	}
}

func (s *Sandbox) discard(ctx context.Context, inst *instance) {
	inst.mod.Close(context.WithoutCancel(ctx))
	s.discarded.Add(1)
	<-s.slots
	go s.replenish()
}

// replenish creates a replacement instance off the evaluation path. A fresh
// Go guest takes milliseconds to instantiate and sweeps the CPU caches while
// it does; doing that in the caller would bill a faulty rule's recovery to
// the rules evaluated after it.
func (s *Sandbox) replenish() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return // the pool is full again
	}
	inst, err := s.newInstance(context.Background())
	if err != nil {
		<-s.slots // the next call will try again, and report the failure
		return
	}
	s.idle <- inst
}

// Close waits for running calls, then frees every instance and the runtime.
// It is safe to call more than once.
func (s *Sandbox) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runtime.Close(ctx)
}

func sameTypes(a, b []api.ValueType) bool { return bytes.Equal(a, b) }

func signature(params, results []api.ValueType) string {
	name := func(ts []api.ValueType) string {
		parts := make([]string, len(ts))
		for i, t := range ts {
			parts[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(parts, ", ") + ")"
	}
	return name(params) + " -> " + name(results)
}

func importHint(mod, name string) string {
	switch {
	case mod == "wasi_snapshot_preview1" && strings.HasPrefix(name, "sock_"):
		return " (network access)"
	case mod == "wasi_snapshot_preview1" && (strings.HasPrefix(name, "path_") || strings.HasPrefix(name, "fd_")):
		return " (filesystem access)"
	case mod == "env":
		return " (the module expects an \"env\" host, e.g. a C/Emscripten runtime)"
	}
	return ""
}

// sniff names common non-wasm files so the error says what was uploaded.
func sniff(b []byte) string {
	switch {
	case len(b) == 0:
		return "; it is empty"
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "; it looks like a native ELF executable"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")):
		return "; it looks like a zip archive"
	case bytes.HasPrefix(b, []byte("(module")):
		return "; it looks like WebAssembly text (.wat): compile it to binary first"
	case bytes.HasPrefix(b, []byte("\x1f\x8b")):
		return "; it looks gzip-compressed"
	case b[0] == '{' || b[0] == '<' || b[0] == '#':
		return "; it looks like text"
	}
	return ""
}
