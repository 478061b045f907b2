//go:build !linux

package redistest

import "syscall"

// sysProcAttr has nothing to add outside Linux: a server orphaned by a
// crashed test binary must be killed by hand there.
func sysProcAttr() *syscall.SysProcAttr { return nil }
