package sandbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// The WASI calls a rule may import (allowedImports), served by the host
// itself rather than by a general WASI implementation, so that each one
// charges fuel for its work before doing it and bounds what one call may
// ask. A call's fuel is wasiCallFuel plus one per byte it reads, writes or
// produces; a rule that asks the host for a gigabyte of randomness runs out
// of fuel exactly as one that loops.
//
// Nothing here reaches the outside world: no files are open (so the fd
// calls answer for stdio only), stdout is discarded, stderr goes to the
// rule's log, clocks are fake and deterministic (they advance 1 ms per
// reading, and a sleep advances them instead of waiting) and randomness is
// a fixed-seed stream per instance. A rule's result depends only on its
// input.

const (
	wasiModule = "wasi_snapshot_preview1"
	// wasiCallFuel is the fixed cost of any WASI call.
	wasiCallFuel = 100
	// maxRandomBytes is the most one random_get may ask for.
	maxRandomBytes = 1 << 20
	// maxWriteBytes is the most one fd_write takes; it reports a short
	// write beyond, which a guest's write loop continues.
	maxWriteBytes = 64 << 10
	// maxIOVecs is the most buffers one fd_write may name (POSIX IOV_MAX).
	maxIOVecs = 1024
	// maxSubscriptions is the most subscriptions one poll_oneoff may name.
	maxSubscriptions = 1024
	// fakeEpoch is what the wall clock reads at an instance's start.
	fakeEpoch = int64(1640995200) * int64(time.Second)
)

// WASI errno values (wasi_snapshot_preview1 errno).
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNotsup  = 58
)

// wasiState is one instance's view of the WASI world.
type wasiState struct {
	stderr   *tail
	monotime int64 // nanoseconds; advances 1 ms per reading and by every sleep
	walltime int64
	rng      *rand.ChaCha8
}

func newWASIState(stderr *tail) wasiState {
	return wasiState{stderr: stderr, walltime: fakeEpoch, rng: rand.NewChaCha8([32]byte{'b', 'e', 't', 'r', 'a', 'c', 'e'})}
}

// wasiFuncs are the allowed WASI functions by name, with their types.
var wasiFuncs = map[string]struct {
	fn      func(*instance, api.Memory, []uint64) uint32
	params  int // all i32 unless listed in i64Params
	i64Args []int
}{
	"args_get":            {func(*instance, api.Memory, []uint64) uint32 { return errnoSuccess }, 2, nil},
	"args_sizes_get":      {wasiZeroSizes, 2, nil},
	"environ_get":         {func(*instance, api.Memory, []uint64) uint32 { return errnoSuccess }, 2, nil},
	"environ_sizes_get":   {wasiZeroSizes, 2, nil},
	"clock_time_get":      {wasiClockTimeGet, 3, []int{1}},
	"clock_res_get":       {wasiClockResGet, 2, nil},
	"random_get":          {wasiRandomGet, 2, nil},
	"sched_yield":         {func(*instance, api.Memory, []uint64) uint32 { return errnoSuccess }, 0, nil},
	"poll_oneoff":         {wasiPollOneoff, 4, nil},
	"fd_write":            {wasiFdWrite, 4, nil},
	"fd_close":            {wasiStdio(errnoSuccess), 1, nil},
	"fd_fdstat_get":       {wasiFdstatGet, 2, nil},
	"fd_fdstat_set_flags": {wasiStdio(errnoSuccess), 2, nil},
	"fd_prestat_get":      {func(*instance, api.Memory, []uint64) uint32 { return errnoBadf }, 2, nil},
	"fd_prestat_dir_name": {func(*instance, api.Memory, []uint64) uint32 { return errnoBadf }, 3, nil},
}

// instantiateWASI adds the WASI host module to rt.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasiModule)
	for name, f := range wasiFuncs {
		params := make([]api.ValueType, f.params)
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		for _, i := range f.i64Args {
			params[i] = api.ValueTypeI64
		}
		fn := f.fn
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			inst := callInstance(ctx)
			charge(ctx, mod, wasiCallFuel)
			stack[0] = uint64(fn(inst, mod.Memory(), stack))
		}), params, []api.ValueType{api.ValueTypeI32}).Export(name)
	}
	// proc_exit returns nothing: it ends the call.
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		code := uint32(stack[0])
		_ = mod.CloseWithExitCode(ctx, code)
		panic(sys.NewExitError(code))
	}), []api.ValueType{api.ValueTypeI32}, nil).Export("proc_exit")
	if _, err := b.Instantiate(ctx); err != nil {
		return fmt.Errorf("sandbox: instantiate WASI: %w", err)
	}
	return nil
}

var le = binary.LittleEndian

func wasiZeroSizes(_ *instance, mem api.Memory, st []uint64) uint32 {
	if !mem.WriteUint32Le(uint32(st[0]), 0) || !mem.WriteUint32Le(uint32(st[1]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiClockTimeGet(inst *instance, mem api.Memory, st []uint64) uint32 {
	w := &inst.wasi
	var t int64
	switch uint32(st[0]) {
	case 0: // realtime
		w.walltime += int64(time.Millisecond)
		t = w.walltime
	case 1, 2, 3: // monotonic, process and thread CPU time
		w.monotime += int64(time.Millisecond)
		t = w.monotime
	default:
		return errnoInval
	}
	if !mem.WriteUint64Le(uint32(st[2]), uint64(t)) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiClockResGet(_ *instance, mem api.Memory, st []uint64) uint32 {
	if uint32(st[0]) > 3 {
		return errnoInval
	}
	if !mem.WriteUint64Le(uint32(st[1]), uint64(time.Millisecond)) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiRandomGet(inst *instance, mem api.Memory, st []uint64) uint32 {
	n := uint32(st[1])
	if n > maxRandomBytes {
		return errnoInval
	}
	chargeInst(inst, uint64(n))
	buf, ok := mem.Read(uint32(st[0]), n)
	if !ok {
		return errnoFault
	}
	inst.wasi.rng.Read(buf)
	return errnoSuccess
}

func wasiFdWrite(inst *instance, mem api.Memory, st []uint64) uint32 {
	fd, iovs, count, written := uint32(st[0]), uint32(st[1]), uint32(st[2]), uint32(st[3])
	if fd != 1 && fd != 2 {
		return errnoBadf
	}
	if count > maxIOVecs {
		return errnoInval
	}
	chargeInst(inst, 8*uint64(count))
	vecs, ok := mem.Read(iovs, 8*count)
	if !ok {
		return errnoFault
	}
	total := uint32(0)
	for i := range count {
		ptr, n := le.Uint32(vecs[8*i:]), le.Uint32(vecs[8*i+4:])
		n = min(n, maxWriteBytes-total)
		chargeInst(inst, uint64(n))
		b, ok := mem.Read(ptr, n)
		if !ok {
			return errnoFault
		}
		if fd == 2 {
			inst.wasi.stderr.Write(b)
		}
		if total += n; total == maxWriteBytes {
			break
		}
	}
	if !mem.WriteUint32Le(written, total) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiStdio answers errno for stdio descriptors and EBADF for any other.
func wasiStdio(errno uint32) func(*instance, api.Memory, []uint64) uint32 {
	return func(_ *instance, _ api.Memory, st []uint64) uint32 {
		if uint32(st[0]) > 2 {
			return errnoBadf
		}
		return errno
	}
}

func wasiFdstatGet(_ *instance, mem api.Memory, st []uint64) uint32 {
	if uint32(st[0]) > 2 {
		return errnoBadf
	}
	var stat [24]byte
	stat[0] = 2                                   // character device
	le.PutUint64(stat[8:], (1<<1)|(1<<6)|(1<<21)) // fd_read, fd_write, poll_fd_readwrite
	if !mem.Write(uint32(st[1]), stat[:]) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiPollOneoff answers every subscription at once: a clock one as
// elapsed (the fake clock advances by the longest timeout, so a sleeping
// guest wakes at once and deterministically), an fd one as not supported.
func wasiPollOneoff(inst *instance, mem api.Memory, st []uint64) uint32 {
	in, out, n, nevents := uint32(st[0]), uint32(st[1]), uint32(st[2]), uint32(st[3])
	if n == 0 || n > maxSubscriptions {
		return errnoInval
	}
	chargeInst(inst, 80*uint64(n))
	subs, ok := mem.Read(in, 48*n)
	if !ok {
		return errnoFault
	}
	events, ok := mem.Read(out, 32*n)
	if !ok {
		return errnoFault
	}
	clear(events)
	var sleep uint64
	for i := range n {
		sub, ev := subs[48*i:48*i+48], events[32*i:32*i+32]
		copy(ev[0:8], sub[0:8]) // userdata
		ev[10] = sub[8]         // event type
		switch sub[8] {
		case 0: // clock
			timeout := le.Uint64(sub[24:])
			if le.Uint16(sub[40:])&1 != 0 { // absolute: the time left until then
				if now := uint64(inst.wasi.monotime); timeout > now {
					timeout -= now
				} else {
					timeout = 0
				}
			}
			sleep = max(sleep, min(timeout, uint64(time.Hour)))
		case 1, 2: // fd_read, fd_write
			le.PutUint16(ev[8:], errnoNotsup)
		default:
			return errnoInval
		}
	}
	inst.wasi.monotime += int64(sleep)
	inst.wasi.walltime += int64(sleep)
	if !mem.WriteUint32Le(nevents, n) {
		return errnoFault
	}
	return errnoSuccess
}

// errDeadline ends a host call made after the evaluation's wall-clock
// backstop passed.
var errDeadline = errors.New("wall-clock backstop of the evaluation passed")

// callKey finds the instance a host function serves in the context the
// sandbox calls the guest with (instance.ctx, made once per instance, so a
// call allocates nothing).
type callKey struct{}

func callInstance(ctx context.Context) *instance {
	inst, _ := ctx.Value(callKey{}).(*instance)
	return inst
}

// chargeInst stops the call when the evaluation is past its backstop, then
// takes cost from the instance's fuel, trapping as out of fuel when the
// budget cannot pay. Every host function calls it before its work, so the
// backstop covers the only place where time passes without fuel.
func chargeInst(inst *instance, cost uint64) {
	if !inst.deadline.IsZero() && time.Now().After(inst.deadline) {
		inst.expired = true
		panic(errDeadline)
	}
	if inst.fuel != nil {
		takeFuel(inst.fuel, cost)
	}
}
