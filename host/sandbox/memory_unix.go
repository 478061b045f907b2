//go:build linux || darwin

package sandbox

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// offHeapMemory backs each instance's linear memory with its own anonymous
// mapping instead of a Go slice. The whole cap is reserved up front without
// access and pages are opened as the guest grows, so the address never moves
// and growing never copies. Above all, a rule's memory is not Go heap: a rule
// that allocates tens of megabytes does not make the host's garbage
// collector work harder for every other rule, and a discarded instance gives
// its memory back to the system at once.
var offHeapMemory experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(newMapping)

type mapping struct {
	mem       []byte // the whole reservation
	committed int    // bytes readable and writable
}

func newMapping(_, max uint64) experimental.LinearMemory {
	if max == 0 {
		max = pageSize
	}
	mem, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil // wazero then fails the instantiation with an error
	}
	return &mapping{mem: mem}
}

const pageSize = 65536

func (m *mapping) Reallocate(size uint64) []byte {
	if size > uint64(len(m.mem)) {
		return nil
	}
	if n := int(size); n > m.committed {
		if err := syscall.Mprotect(m.mem[m.committed:n], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
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
	}
}
