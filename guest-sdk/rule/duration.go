package rule

import "strconv"

// Duration is a span of time in nanoseconds. It has the same representation
// as time.Duration, so time.Duration(d) converts it, but the SDK defines its
// own type because package time pulls WASI imports into a module that the
// BeTrace host does not provide. Rules should not import time either.
type Duration int64

// Common durations.
const (
	Nanosecond  Duration = 1
	Microsecond          = 1000 * Nanosecond
	Millisecond          = 1000 * Microsecond
	Second               = 1000 * Millisecond
	Minute               = 60 * Second
	Hour                 = 60 * Minute
)

// Milliseconds returns d as a whole number of milliseconds, truncated.
func (d Duration) Milliseconds() int64 { return int64(d / Millisecond) }

// Microseconds returns d as a whole number of microseconds, truncated.
func (d Duration) Microseconds() int64 { return int64(d / Microsecond) }

// Seconds returns d in seconds.
func (d Duration) Seconds() float64 { return float64(d) / float64(Second) }

// String formats d as time.Duration does: "1.5s", "250ms", "2m3s",
// "1h0m0s", "0s".
func (d Duration) String() string {
	var b []byte
	u := uint64(d)
	if d < 0 {
		b = append(b, '-')
		u = -u
	}
	switch {
	case u == 0:
		return "0s"
	case u < uint64(Microsecond):
		b = strconv.AppendUint(b, u, 10)
		b = append(b, "ns"...)
	case u < uint64(Millisecond):
		b = append(appendFixed(b, u, uint64(Microsecond)), "µs"...)
	case u < uint64(Second):
		b = append(appendFixed(b, u, uint64(Millisecond)), "ms"...)
	default:
		h := u / uint64(Hour)
		u -= h * uint64(Hour)
		m := u / uint64(Minute)
		u -= m * uint64(Minute)
		if h > 0 {
			b = append(strconv.AppendUint(b, h, 10), 'h')
		}
		if h > 0 || m > 0 {
			b = append(strconv.AppendUint(b, m, 10), 'm')
		}
		b = append(appendFixed(b, u, uint64(Second)), 's')
	}
	return view(b)
}

// appendFixed appends u/unit as a decimal with the fraction's trailing
// zeros (and a bare point) removed; unit is a power of ten.
func appendFixed(b []byte, u, unit uint64) []byte {
	b = strconv.AppendUint(b, u/unit, 10)
	frac := u % unit
	if frac == 0 {
		return b
	}
	b = append(b, '.')
	for unit /= 10; frac != 0; unit /= 10 {
		b = append(b, byte('0'+frac/unit))
		frac %= unit
	}
	return b
}
