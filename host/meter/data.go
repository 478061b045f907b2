package meter

// mergeData implements "Data segments" of the package documentation: the
// memory image of many small segments, written as a few large ones, so
// that instantiating copies instead of decoding.

const (
	// minSegmentsToMerge: below this many segments merging gains nothing.
	minSegmentsToMerge = 64
	// zeroGap is the shortest run of zero bytes that splits a merged
	// segment: shorter runs are cheaper to copy than to start a segment.
	zeroGap = 4096
	// maxImage bounds the memory image built while merging.
	maxImage = 64 << 20
)

// mergeData returns the payload of a data section equivalent to body (the
// payload of the input's data section) for a memory of minBytes initial
// bytes, and the number of segments in it; ok is false when the section is
// left as it is.
func mergeData(body []byte, minBytes uint64) (out []byte, count uint32, ok bool) {
	type segment struct {
		off  uint64
		data []byte
	}
	r := &reader{buf: body}
	n := r.u32()
	if r.failed() || n < minSegmentsToMerge {
		return nil, 0, false
	}
	segs := make([]segment, 0, n)
	lo, hi := ^uint64(0), uint64(0)
	for i := uint32(0); i < n && !r.failed(); i++ {
		switch flag := r.u32(); flag {
		case 0: // active, memory 0
		case 2: // active, explicit memory index
			if r.u32() != 0 {
				return nil, 0, false
			}
		default: // passive
			return nil, 0, false
		}
		if r.byte() != 0x41 { // i32.const; a global.get offset is not constant here
			return nil, 0, false
		}
		off := uint64(uint32(r.sleb(32)))
		if r.byte() != 0x0b {
			return nil, 0, false
		}
		data := r.bytes(r.u32())
		if r.failed() || off+uint64(len(data)) > minBytes {
			return nil, 0, false // out of bounds: let instantiation fail as it would have
		}
		if len(data) > 0 {
			lo, hi = min(lo, off), max(hi, off+uint64(len(data)))
		}
		segs = append(segs, segment{off, data})
	}
	if r.failed() || !r.done() || hi-lo > maxImage {
		return nil, 0, false
	}
	if hi == 0 {
		return appendU32(nil, 0), 0, true
	}
	image := make([]byte, hi-lo)
	for _, s := range segs {
		if len(s.data) > 0 {
			copy(image[s.off-lo:], s.data) // later segments overwrite earlier ones, as at instantiation
		}
	}
	var runs [][2]int // non-zero runs separated by at least zeroGap zero bytes
	start, zeros := -1, 0
	for i, b := range image {
		switch {
		case b != 0 && start < 0:
			start, zeros = i, 0
		case b != 0:
			zeros = 0
		case start >= 0:
			if zeros++; zeros == zeroGap {
				runs = append(runs, [2]int{start, i - zeroGap + 1})
				start = -1
			}
		}
	}
	if start >= 0 {
		runs = append(runs, [2]int{start, len(image) - zeros})
	}
	out = appendU32(make([]byte, 0, len(image)+16*len(runs)), uint32(len(runs)))
	for _, run := range runs {
		out = append(out, 0x00, 0x41)
		out = appendS64(out, int64(int32(uint32(lo+uint64(run[0]))))) // i32.const reads it as signed
		out = append(out, 0x0b)
		out = appendU32(out, uint32(run[1]-run[0]))
		out = append(out, image[run[0]:run[1]]...)
	}
	return out, uint32(len(runs)), true
}
