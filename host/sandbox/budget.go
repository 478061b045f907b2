package sandbox

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrMemoryBudget: the linear memory of every rule together would pass the
// host's memory budget (HostConfig.MemoryBudget).
var ErrMemoryBudget = errors.New("rule memory budget spent")

// DefaultMemoryBudget is the budget of a Host whose HostConfig leaves it
// zero: 256 MiB, a third of the service's default Go heap limit (768 MiB),
// so heap and rules together fit the 1 GiB container the deployment ships.
const DefaultMemoryBudget = 256 << 20

// memoryBudget counts the linear memory committed by every instance of
// every sandbox of a Host. Per-rule caps alone do not add up: twenty rules
// at their 32 MiB default, two instances each, could ask for 1.25 GiB. The
// budget counts what instances actually commit, page by page as they grow,
// so small rules cost little, and a growth the budget cannot cover fails
// like any failed memory.grow.
type memoryBudget struct {
	limit int64
	used  atomic.Int64
}

// take commits n bytes if they fit.
func (b *memoryBudget) take(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

func (b *memoryBudget) give(n int64) { b.used.Add(-n) }

func (b *memoryBudget) spent(what string, n int64) error {
	return fmt.Errorf("%w: %s needs %d KiB, and the rules' linear memory already takes %d of the %d MiB budget (BETRACE_RULE_MEMORY_BUDGET); raise the budget, or lower the memoryPages of the largest rules",
		ErrMemoryBudget, what, n>>10, b.used.Load()>>20, b.limit>>20)
}

// MemoryInUse returns the bytes of linear memory committed by every
// instance of every sandbox of h.
func (h *Host) MemoryInUse() int64 { return h.memory.used.Load() }

// MemoryBudget returns h's budget for that memory, in bytes.
func (h *Host) MemoryBudget() int64 { return h.memory.limit }
