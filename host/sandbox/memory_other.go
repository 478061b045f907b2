//go:build !(linux || darwin)

package sandbox

// mapping is linear memory in a Go slice where anonymous mappings are not
// available; growing may move it. Every byte is taken from the host's
// memory budget first, as with mappings.
type mapping struct {
	mem     []byte
	max     int
	budget  *memoryBudget
	refused bool
}

func newMapping(b *memoryBudget, min, max uint64) (*mapping, error) {
	if !b.take(int64(min)) {
		return nil, b.spent("a new instance", int64(min))
	}
	return &mapping{mem: make([]byte, min), max: int(max), budget: b}, nil
}

func (m *mapping) Reallocate(size uint64) []byte {
	n := int(size)
	if n > m.max {
		return nil
	}
	if grow := n - len(m.mem); grow > 0 {
		if !m.budget.take(int64(grow)) {
			m.refused = true
			return nil
		}
		m.mem = append(m.mem, make([]byte, grow)...)
	}
	return m.mem[:n]
}

func (m *mapping) Free() {
	if m.mem != nil {
		m.budget.give(int64(len(m.mem)))
		m.mem = nil
	}
}
