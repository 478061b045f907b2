//go:build !(linux || darwin)

package sandbox

import "github.com/tetratelabs/wazero/experimental"

// offHeapMemory is nil where anonymous mappings are not available: linear
// memory is then an ordinary Go slice.
var offHeapMemory experimental.MemoryAllocator
