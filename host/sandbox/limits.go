package sandbox

import (
	"errors"
	"fmt"
	"time"
)

// Limits bound one rule's sandbox. A zero field means its default.
type Limits struct {
	// Fuel is the budget of one evaluation, in metered instructions.
	// Default 25,000,000: a runaway stops after about 16 ms of CPU, and an
	// SDK rule has room for roughly 10,000 spans of per-span work.
	Fuel uint64
	// InitFuel is the budget of `_initialize`. Default 500,000,000: a Go
	// guest's runtime start-up is expensive.
	InitFuel uint64
	// MemoryPages caps linear memory in 64 KiB pages. Default 512 (32 MiB).
	MemoryPages uint32
	// RecyclePages is the memory high-water mark after which an instance is
	// replaced after its call. Default three quarters of MemoryPages.
	RecyclePages uint32
	// Instances is the size of the instance pool. Default 2.
	Instances int
	// MaxModuleBytes caps the size of an uploaded module. Default 16 MiB.
	MaxModuleBytes int
	// LogBytes is the size of the rule's captured stderr. Default 16 KiB.
	LogBytes int
	// Backstop overrides the wall-clock backstop of every call, which is
	// otherwise derived from its fuel budget (see Backstop). Zero: derived.
	Backstop time.Duration
}

// Defaults of Limits.
const (
	DefaultFuel           = 25_000_000
	DefaultInitFuel       = 500_000_000
	DefaultMemoryPages    = 512
	DefaultInstances      = 2
	DefaultMaxModuleBytes = 16 << 20
	DefaultLogBytes       = 16 << 10
	// MaxMemoryPages is the largest memory cap a rule may ask for (4 GiB).
	MaxMemoryPages = 65536
)

// The wall-clock backstop of a call: BackstopBase plus BackstopPerFuel for
// each unit of its fuel budget, 2 s for the default evaluation budget and
// 21 s for the default start-up budget. Metered code runs about 1 ns per
// unit of fuel, so the backstop is some 40 times what the budget can take.
// Fuel stops wasm code deterministically; the backstop stops what fuel
// cannot see: time spent in host calls. It is checked when a host call
// starts, and a call's work is bounded (fuel is charged before it), so a
// rule is stopped within one host call of its backstop.
const (
	BackstopBase    = time.Second
	BackstopPerFuel = 40 * time.Nanosecond
)

// Backstop returns the wall-clock backstop of a call with fuel budget.
func Backstop(budget uint64) time.Duration {
	return BackstopBase + time.Duration(min(budget, uint64(1)<<40))*BackstopPerFuel
}

// DefaultLimits returns Limits with every field at its default.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.Fuel == 0 {
		l.Fuel = DefaultFuel
	}
	if l.InitFuel == 0 {
		l.InitFuel = DefaultInitFuel
	}
	if l.MemoryPages == 0 {
		l.MemoryPages = DefaultMemoryPages
	}
	if l.RecyclePages == 0 {
		l.RecyclePages = l.MemoryPages / 4 * 3
	}
	if l.Instances == 0 {
		l.Instances = DefaultInstances
	}
	if l.MaxModuleBytes == 0 {
		l.MaxModuleBytes = DefaultMaxModuleBytes
	}
	if l.LogBytes == 0 {
		l.LogBytes = DefaultLogBytes
	}
	return l
}

// Validate reports every field that is out of range.
func (l Limits) Validate() error {
	var errs []error
	if l.MemoryPages > MaxMemoryPages {
		errs = append(errs, fmt.Errorf("memoryPages %d is more than the maximum %d", l.MemoryPages, MaxMemoryPages))
	}
	if l.RecyclePages > 0 && l.MemoryPages > 0 && l.RecyclePages > l.MemoryPages {
		errs = append(errs, fmt.Errorf("recyclePages %d is more than memoryPages %d", l.RecyclePages, l.MemoryPages))
	}
	if l.Fuel > 1<<62 || l.InitFuel > 1<<62 {
		errs = append(errs, errors.New("fuel must be below 2^62"))
	}
	if l.Instances < 0 || l.Instances > 64 {
		errs = append(errs, fmt.Errorf("instances %d must be between 1 and 64", l.Instances))
	}
	if l.MaxModuleBytes < 0 || l.LogBytes < 0 {
		errs = append(errs, errors.New("maxModuleBytes and logBytes must not be negative"))
	}
	return errors.Join(errs...)
}
