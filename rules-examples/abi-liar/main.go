// Command abi-liar is an adversarial BeTrace rule for isolation tests: it
// implements the ABI v1 exports itself, without the guest SDK, and lies in
// its results.
//
//   - If the trace contains a span named abi.bad_length, betrace_evaluate
//     returns a result whose length (0xF0000000 bytes) runs far past the
//     module's memory.
//   - Otherwise it returns a well-formed result record with one violation on
//     span index span_count+7, which is not in the trace.
//
// betrace_abi_version, betrace_input and betrace_describe behave correctly.
// It does not import the SDK, whose exports would clash with its own.
package main

import (
	"unsafe"

	"github.com/betracehq/betrace/api/abiv1"
)

const badLength = 0xF000_0000

var (
	input    []byte
	result   []byte
	describe = kvRecord(
		abiv1.DescribeKeyID, "abi-liar",
		abiv1.DescribeKeyName, "Adversarial: ABI liar",
		abiv1.DescribeKeySeverity, "LOW",
		abiv1.DescribeKeyDescription, "Test rule that returns out-of-range result lengths and span indexes; the host must reject them.",
		abiv1.DescribeKeyTags, "adversarial,test",
	)
)

//go:wasmexport betrace_abi_version
func abiVersion() int32 { return abiv1.Version }

//go:wasmexport betrace_input
func inputBuffer(size int32) int32 {
	if int(size) > cap(input) || cap(input) == 0 {
		input = make([]byte, max(int(size), 4096))
	}
	input = input[:cap(input)]
	return int32(addr(input))
}

//go:wasmexport betrace_evaluate
func evaluate(size int32) int64 {
	in := input[:size]
	n := le32(in, abiv1.HeaderSpanCount)
	spans := le32(in, abiv1.HeaderSpanTable)
	strs := le32(in, abiv1.HeaderStringTable)
	bad := false
	for i := uint32(0); i < n; i++ {
		rec := spans + i*abiv1.SpanSize
		off, length := le32(in, rec+abiv1.SpanName), le32(in, rec+abiv1.SpanName+4)
		if string(in[strs+off:strs+off+length]) == "abi.bad_length" {
			bad = true
		}
	}
	msg := "abi-liar: violation on a span index past the end of the trace"
	result = append(result[:0], make([]byte, 16+len(msg))...)
	put32(result[0:], 1)   // one violation
	put32(result[4:], n+7) // on a span that does not exist
	put32(result[8:], uint32(len(msg)))
	copy(result[12:], msg)
	put32(result[12+len(msg):], 0) // no attributes
	if bad {
		return int64(abiv1.Pack(addr(result), badLength))
	}
	return int64(abiv1.Pack(addr(result), uint32(len(result))))
}

//go:wasmexport betrace_describe
func describeRecord() int64 { return int64(abiv1.Pack(addr(describe), uint32(len(describe)))) }

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func le32(b []byte, off uint32) uint32 {
	b = b[off : off+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func kvRecord(kv ...string) []byte {
	b := make([]byte, 4, 256)
	put32(b, uint32(len(kv)/2))
	for _, s := range kv {
		b = append(b, 0, 0, 0, 0)
		put32(b[len(b)-4:], uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

func main() {}
