package sandbox

import (
	"errors"
	"fmt"
)

// Admission errors. Load wraps one of them with what exactly was wrong.
var (
	ErrModuleTooLarge   = errors.New("module too large")
	ErrNotWasm          = errors.New("not a WebAssembly module")
	ErrInvalidModule    = errors.New("invalid WebAssembly module")
	ErrImportNotAllowed = errors.New("import not allowed")
	ErrMissingExport    = errors.New("missing or mistyped ABI export")
	ErrABIVersion       = errors.New("unsupported ABI version")
	ErrMeteringFailed   = errors.New("module cannot be metered")
	ErrInitFailed       = errors.New("module initialization failed")
	ErrInvalidLimits    = errors.New("invalid sandbox limits")
	ErrClosed           = errors.New("sandbox closed")
)

// Outcome says how an evaluation that did not complete went wrong.
type Outcome uint8

const (
	// OutcomeFuelExhausted: the call used its whole fuel budget.
	OutcomeFuelExhausted Outcome = iota + 1
	// OutcomeMemoryExceeded: the guest ran out of memory under its cap.
	OutcomeMemoryExceeded
	// OutcomeTrap: the guest trapped, panicked or exited.
	OutcomeTrap
	// OutcomeABIViolation: the guest returned something that breaks ABI v1.
	OutcomeABIViolation
	// OutcomeCanceled: the caller's context ended first; not the rule's fault.
	OutcomeCanceled
	// OutcomeDeadline: the call outlasted its wall-clock backstop (Backstop),
	// which only host calls can do, fuel bounding everything else.
	OutcomeDeadline
	// OutcomeMemoryBudget: the guest grew its memory within its own cap,
	// but the host's budget for all rules together was spent. Not the
	// rule's fault: it is not a strike.
	OutcomeMemoryBudget
)

// Strikes reports whether the outcome counts against the rule: whether it
// says something about the rule rather than about the host or the caller.
func (o Outcome) Strikes() bool { return o != OutcomeCanceled && o != OutcomeMemoryBudget }

// String returns the word used in the API, metric labels and logs.
func (o Outcome) String() string {
	switch o {
	case OutcomeFuelExhausted:
		return "fuel"
	case OutcomeMemoryExceeded:
		return "memory"
	case OutcomeTrap:
		return "trap"
	case OutcomeABIViolation:
		return "abi"
	case OutcomeCanceled:
		return "canceled"
	case OutcomeDeadline:
		return "deadline"
	case OutcomeMemoryBudget:
		return "memory_budget"
	}
	return "unknown"
}

// Fault is the error of an evaluation that did not complete.
type Fault struct {
	Outcome  Outcome
	FuelUsed uint64 // fuel consumed before the fault
	Err      error  // the underlying error, with the guest's last stderr line if any
}

func (f *Fault) Error() string {
	return fmt.Sprintf("rule %s after %d fuel: %v", f.describe(), f.FuelUsed, f.Err)
}

func (f *Fault) describe() string {
	switch f.Outcome {
	case OutcomeFuelExhausted:
		return "ran out of fuel"
	case OutcomeMemoryExceeded:
		return "ran out of memory"
	case OutcomeTrap:
		return "trapped"
	case OutcomeABIViolation:
		return "broke the ABI"
	case OutcomeCanceled:
		return "evaluation canceled"
	case OutcomeDeadline:
		return "ran past its deadline"
	case OutcomeMemoryBudget:
		return "could not grow its memory"
	}
	return "failed"
}

func (f *Fault) Unwrap() error { return f.Err }
