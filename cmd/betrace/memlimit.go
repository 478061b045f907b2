package main

import (
	"bufio"
	"bytes"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// containerMemoryLimit returns the memory limit of the cgroup this process
// runs in (cgroup v2 memory.max, or v1 memory.limit_in_bytes), read from
// fsys rooted at /, or 0 when there is none. Defaults derive from it (see
// deriveMemoryDefaults): a container's limit is the one memory figure an
// operator always sets, and a heap tuned to a bigger machine is killed.
func containerMemoryLimit(fsys fs.FS) int64 {
	self, _ := fs.ReadFile(fsys, "proc/self/cgroup")
	var v2, v1 string // the process's cgroup paths, when listed
	sc := bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = parts[2]
		}
	}
	// Inside a container the process's own cgroup is usually mounted as the
	// root, so the listed path may not exist there: try both.
	for _, p := range []string{
		path.Join("sys/fs/cgroup", v2, "memory.max"), "sys/fs/cgroup/memory.max",
		path.Join("sys/fs/cgroup/memory", v1, "memory.limit_in_bytes"), "sys/fs/cgroup/memory/memory.limit_in_bytes",
	} {
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		// cgroup v1 writes "no limit" as a number near 2^63.
		if err != nil || n <= 0 || n >= 1<<62 {
			return 0
		}
		return n
	}
	return 0
}

// Default shares of a container's memory limit: the Go heap's soft limit
// takes three quarters (as the Kubernetes manifest sets it), a third of
// that goes to buffered traces and a third to rules' linear memory (the
// service's own default).
const (
	defaultMemoryLimit  = 768 << 20
	defaultTraceBuffer  = 256 << 20
	heapShareOfLimit    = 0.75
	bufferShareOfMemory = 3 // the trace buffer is memory limit / 3
)

// deriveMemoryDefaults fills the memory limit and the trace buffer where
// they were not set: from container, the cgroup's limit, when there is one.
func deriveMemoryDefaults(memoryLimit, traceBuffer *int64, container int64) {
	if *memoryLimit == 0 {
		*memoryLimit = defaultMemoryLimit
		if container > 0 {
			*memoryLimit = int64(float64(container) * heapShareOfLimit)
		}
	}
	if *traceBuffer == 0 {
		*traceBuffer = defaultTraceBuffer
		if container > 0 {
			*traceBuffer = *memoryLimit / bufferShareOfMemory
		}
	}
}
