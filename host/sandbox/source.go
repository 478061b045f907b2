package sandbox

import (
	"unicode/utf8"

	"github.com/betracehq/betrace/api/abiv1"
)

// MaxSourceBytes bounds the rule source a module may carry in its
// betrace.source custom section; a larger or non-UTF-8 section is ignored.
const MaxSourceBytes = 64 << 10

// sourceSection returns the text of module's betrace.source custom section,
// or "" when it has none. module has been validated, but the walk still
// stops at the first malformed length rather than trusting it.
func sourceSection(module []byte) string {
	p := 8 // magic and version
	for p < len(module) {
		id := module[p]
		size, n := uvarint(module[p+1:])
		p += 1 + n
		if n == 0 || size > uint64(len(module)-p) {
			return ""
		}
		body := module[p : p+int(size)]
		p += int(size)
		if id != 0 {
			continue
		}
		nameLen, n := uvarint(body)
		if n == 0 || nameLen > uint64(len(body)-n) || string(body[n:n+int(nameLen)]) != abiv1.CustomSectionSource {
			continue
		}
		text := body[n+int(nameLen):]
		if len(text) > MaxSourceBytes || !utf8.Valid(text) {
			return ""
		}
		return string(text)
	}
	return ""
}

// uvarint decodes an unsigned LEB128 of at most 5 bytes (a wasm u32); n is
// 0 when b does not start with one.
func uvarint(b []byte) (v uint64, n int) {
	for i := 0; i < len(b) && i < 5; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}
