package meter

import "github.com/betracehq/betrace/host/internal/leb128"

// reader decodes the binary format. Its error is sticky: after the first
// failure every read returns zero and the failure's offset and message are
// kept, so decoders can read a whole record and check once. Loops whose
// bound comes from the input must still check failed() on each turn, or a
// corrupt count would spin on zeros.
type reader struct {
	buf     []byte
	pos     int
	base    int // module offset of buf[0], for error messages
	failOff int
	failMsg string
}

func (r *reader) failed() bool { return r.failMsg != "" }

func (r *reader) fail(at int, msg string) {
	if r.failMsg == "" {
		r.failOff, r.failMsg = r.base+at, msg
	}
	r.pos = len(r.buf)
}

func (r *reader) done() bool { return r.pos >= len(r.buf) }

// offset is the module offset of the next byte.
func (r *reader) offset() int { return r.base + r.pos }

func (r *reader) byte() byte {
	if r.pos >= len(r.buf) {
		r.fail(r.pos, "unexpected end of data")
		return 0
	}
	b := r.buf[r.pos]
	r.pos++
	return b
}

func (r *reader) bytes(n uint32) []byte {
	if uint64(n) > uint64(len(r.buf)-r.pos) {
		r.fail(r.pos, "length runs past the end of its section")
		return nil
	}
	b := r.buf[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b
}

// u32 reads an unsigned LEB128 number of at most 5 bytes whose unused high
// bits are zero, as the spec requires.
func (r *reader) u32() uint32 {
	start := r.pos
	var v uint32
	for i := 0; i < 5; i++ {
		if r.pos >= len(r.buf) {
			r.fail(start, "truncated LEB128 number")
			return 0
		}
		b := r.buf[r.pos]
		r.pos++
		if i == 4 && b&0xf0 != 0 {
			r.fail(start, "LEB128 number overflows 32 bits")
			return 0
		}
		v |= uint32(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v
		}
	}
	return v // not reached: the fifth byte either ends or overflows
}

// sleb reads a signed LEB128 number of the given width (32, 33 or 64 bits),
// rejecting encodings longer than the width allows or whose final byte's
// spare bits are not a sign extension.
func (r *reader) sleb(bits uint) int64 {
	start := r.pos
	maxBytes := int(bits+6) / 7
	var v int64
	var shift uint
	for i := 0; i < maxBytes; i++ {
		if r.pos >= len(r.buf) {
			r.fail(start, "truncated LEB128 number")
			return 0
		}
		b := r.buf[r.pos]
		r.pos++
		if i == maxBytes-1 {
			if b&0x80 != 0 {
				break
			}
			used := bits - 7*uint(maxBytes-1)
			mask := byte(0x7f) >> (used - 1) << (used - 1)
			if spare := b & mask; spare != 0 && spare != mask {
				break
			}
		}
		v |= int64(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			if shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
	r.fail(start, "LEB128 number overflows its width")
	return 0
}

// name reads a length-prefixed byte string (names, custom section names).
func (r *reader) name() []byte {
	n := r.u32()
	return r.bytes(n)
}

// valType reads a value type. Typed references (0x63/0x64 followed by a heap
// type) are decoded so their length is right; the instructions that would
// use them are refused elsewhere.
func (r *reader) valType() {
	at := r.pos
	switch b := r.byte(); b {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f, 0x69:
	case 0x63, 0x64:
		r.sleb(33)
	default:
		if !r.failed() {
			r.fail(at, "invalid value type "+hexByte(b))
		}
	}
}

// blockType reads a block type: an s33 that is either a type index or, when
// negative, a one-byte value type, where the typed-reference forms 0x63 and
// 0x64 carry a heap type after them.
func (r *reader) blockType() {
	if t := r.sleb(33); t == -29 || t == -28 {
		r.sleb(33)
	}
}

// limits reads table or memory limits; flags 2 and 3 are shared memories,
// which need no metering of their own (atomics are refused as instructions).
func (r *reader) limits() {
	at := r.pos
	switch flag := r.byte(); flag {
	case 0x00, 0x02:
		r.u32()
	case 0x01, 0x03:
		r.u32()
		r.u32()
	default:
		if !r.failed() {
			r.fail(at, "invalid limits flag "+hexByte(flag))
		}
	}
}

const hexDigits = "0123456789abcdef"

func hexByte(b byte) string {
	return string([]byte{'0', 'x', hexDigits[b>>4], hexDigits[b&15]})
}

func appendU32(dst []byte, v uint32) []byte { return leb128.AppendUint(dst, uint64(v)) }

func appendS64(dst []byte, v int64) []byte { return leb128.AppendInt(dst, v) }
