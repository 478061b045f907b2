//go:build linux || darwin

package sandbox

import (
	"fmt"
	"syscall"
)

// mapping backs one instance's linear memory with its own anonymous mapping
// instead of a Go slice. The whole cap is reserved up front without access
// and pages are opened as the guest grows, so the address never moves and
// growing never copies. Above all, a rule's memory is not Go heap: a rule
// that allocates tens of megabytes does not make the host's garbage
// collector work harder for every other rule, and a discarded instance gives
// its memory back to the system at once. Every page opened is taken from
// the host's memory budget first.
type mapping struct {
	mem       []byte // the whole reservation
	committed int    // bytes readable and writable, and taken from budget
	budget    *memoryBudget
	refused   bool // the budget refused a growth
}

// newMapping reserves max bytes of address space and commits min of them.
// wazero cannot take a failure at instantiation, so it is reported here,
// before the instance is created.
func newMapping(b *memoryBudget, min, max uint64) (*mapping, error) {
	if max < pageSize {
		max = pageSize
	}
	if !b.take(int64(min)) {
		return nil, b.spent("a new instance", int64(min))
	}
	mem, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		b.give(int64(min))
		return nil, fmt.Errorf("reserve %d MiB of address space for linear memory: %w", max>>20, err)
	}
	m := &mapping{mem: mem, budget: b}
	if min > 0 {
		if err := syscall.Mprotect(mem[:min], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			syscall.Munmap(mem)
			b.give(int64(min))
			return nil, fmt.Errorf("commit %d KiB of linear memory: %w", min>>10, err)
		}
	}
	m.committed = int(min)
	return m, nil
}

const pageSize = 65536

func (m *mapping) Reallocate(size uint64) []byte {
	if size > uint64(len(m.mem)) {
		return nil
	}
	if n := int(size); n > m.committed {
		if !m.budget.take(int64(n - m.committed)) {
			m.refused = true
			return nil
		}
		if err := syscall.Mprotect(m.mem[m.committed:n], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			m.budget.give(int64(n - m.committed))
			return nil
		}
		m.committed = n
	}
	return m.mem[:size]
}

func (m *mapping) Free() {
	if m.mem != nil {
		syscall.Munmap(m.mem)
		m.mem = nil
		m.budget.give(int64(m.committed))
		m.committed = 0
	}
}
