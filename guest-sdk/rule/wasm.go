//go:build wasip1

package rule

import (
	"strconv"
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
)

// The ABI v1 exports. Go emits `memory` and, with -buildmode=c-shared,
// `_initialize` (which runs the package init functions, and so Register).

// input is the one input buffer; the host writes each trace into it.
var input []byte

//go:wasmexport betrace_abi_version
func exportABIVersion() int32 { return abiv1.Version }

//go:wasmexport betrace_input
func exportInput(size int32) int32 {
	if size < 0 {
		panic("rule: betrace_input: negative size " + strconv.Itoa(int(size)))
	}
	if int(size) > cap(input) || cap(input) == 0 {
		// Grow geometrically so a run of slowly growing traces does not
		// reallocate every time.
		input = make([]byte, max(int(size), 2*cap(input), 64<<10))
	}
	input = input[:cap(input)]
	return int32(addr(input))
}

//go:wasmexport betrace_evaluate
func exportEvaluate(size int32) int64 {
	if size < 0 || int(size) > len(input) {
		panic("rule: betrace_evaluate: size " + strconv.Itoa(int(size)) +
			" is larger than the input buffer (" + strconv.Itoa(len(input)) + " bytes)")
	}
	return pack(Evaluate(input[:size]))
}

//go:wasmexport betrace_describe
func exportDescribe() int64 { return pack(Describe()) }

// addr is the linear-memory address of b's first element.
func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func pack(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	return int64(abiv1.Pack(addr(b), uint32(len(b))))
}
