package meter

import (
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error about input that is not a
// well-formed binary module: bad magic, truncated sections, over-long LEB128
// numbers, bodies that do not end where their size says; and by the errors
// about modules beyond a structural limit (see MaxNestingDepth and the
// limits beside it), whose message names the limit. Callers treat it as
// "the rule author shipped a module the host will not take", never as a
// bug in the host.
var ErrMalformed = errors.New("meter: malformed module")

// ErrAlreadyMetered is wrapped when the module already exports the fuel
// global. Metering twice would charge twice, and a guest that defines the
// export itself could hand the host a global it controls.
var ErrAlreadyMetered = errors.New("meter: module already exports the fuel global")

// UnsupportedError reports a construct the pass refuses to meter because its
// cost or control flow is not accounted for (SIMD, atomics, exceptions, tail
// calls, GC), or because it is unknown. Func is the index in the module's
// function index space (imported functions first, as in the name section);
// it is -1 for constructs outside any function, such as a tag section.
type UnsupportedError struct {
	Func        int
	Offset      int    // byte offset from the start of the module
	Instruction string // opcode bytes and what they are, e.g. "0xfd 0x0c (SIMD)"
}

func (e *UnsupportedError) Error() string {
	if e.Func < 0 {
		return fmt.Sprintf("meter: at offset %#x: unsupported %s", e.Offset, e.Instruction)
	}
	return fmt.Sprintf("meter: function[%d] at offset %#x: unsupported instruction %s", e.Func, e.Offset, e.Instruction)
}

// malformed builds an ErrMalformed error; where names the part of the module
// ("function[3]", "import section") so a rule author can find the bytes.
func malformed(where string, offset int, msg string) error {
	return fmt.Errorf("%w: %s at offset %#x: %s", ErrMalformed, where, offset, msg)
}
