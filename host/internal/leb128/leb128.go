// Package leb128 writes the variable-length integers of the WebAssembly
// binary format, for the code that emits or rewrites modules: the metering
// pass, the DSL compiler and the tests that build modules by hand.
package leb128

// AppendUint appends v in unsigned LEB128.
func AppendUint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// AppendInt appends v in signed LEB128.
func AppendInt(dst []byte, v int64) []byte {
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}
