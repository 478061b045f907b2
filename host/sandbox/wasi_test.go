package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// wasiCaller is an ABI v1 module whose evaluate first stores an iovec
// {ptr 4096, len 1 MiB - 4096} at 0, then calls the WASI function fn with
// the arguments args pushes, forever.
func wasiCaller(fn string, p []byte, argsBody []byte) []byte {
	m := abiModule(1)
	m.imports = []wasmImport{{wasiModule, fn, p, []byte{i32}}}
	body := append([]byte{0x41, 0x00}, append([]byte{0x41}, sleb(4096)...)...)
	body = append(body, 0x36, 0x02, 0x00) // i32.store [0] = 4096
	body = append(body, 0x41, 0x04)
	body = append(body, append([]byte{0x41}, sleb(1<<20-4096)...)...)
	body = append(body, 0x36, 0x02, 0x00) // i32.store [4] = len
	body = append(body, 0x03, 0x40)       // loop
	body = append(body, argsBody...)
	body = append(body, 0x10, 0x00, 0x1a, 0x0c, 0x00, 0x0b) // call; drop; br 0; end
	body = append(body, 0x42, 0x00)
	m.funcs[2] = wasmFunc{params: []byte{i32}, results: []byte{i64}, body: body, export: "betrace_evaluate"}
	return m.bytes()
}

// hogs call the WASI functions that produce or consume bytes as hard as a
// module can: 1 MiB of randomness, or 1 MiB of stderr, per call.
var hogs = []struct {
	name   string
	module []byte
}{
	{"random_get", wasiCaller("random_get", []byte{i32, i32}, args([]int64{4096, 1<<20 - 4096}))},
	{"fd_write", wasiCaller("fd_write", []byte{i32, i32, i32, i32}, args([]int64{2, 0, 1, 8}))},
	{"poll_oneoff", wasiCaller("poll_oneoff", []byte{i32, i32, i32, i32}, args([]int64{4096, 65536, 1024, 8}))},
}

// TestWASIChargesFuelPerByte: with a small budget, a host-call hog stops
// out of fuel after a few calls' worth of bytes, not after the thousands
// of calls a per-call price would allow (with fuel 2,000, one random_get
// loop ran 10 s when calls cost a few units).
func TestWASIChargesFuelPerByte(t *testing.T) {
	h, err := NewHost(HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	for _, hog := range hogs {
		t.Run(hog.name, func(t *testing.T) {
			s, err := h.Load(context.Background(), hog.module, Limits{Fuel: 2_000_000})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			began := time.Now()
			_, err = s.Evaluate(context.Background(), make([]byte, 64), 0, nil)
			took := time.Since(began)
			var f *Fault
			if !errors.As(err, &f) || f.Outcome != OutcomeFuelExhausted {
				t.Fatalf("want an out-of-fuel fault, got %v", err)
			}
			// 2 M fuel pays for at most 2 MiB of host work: milliseconds.
			// The bound is the backstop, generous for a loaded machine.
			if took > Backstop(2_000_000) {
				t.Fatalf("stopping the hog took %v, beyond the backstop %v", took, Backstop(2_000_000))
			}
			t.Logf("%s hog stopped out of fuel after %v", hog.name, took)
		})
	}
}

// TestBackstopStopsHostCalls: when a call's host work outlasts the
// backstop (here forced short, with fuel to spare), the next host call
// stops it as a deadline fault.
func TestBackstopStopsHostCalls(t *testing.T) {
	h, err := NewHost(HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	const backstop = 200 * time.Millisecond
	for _, hog := range hogs[:2] {
		t.Run(hog.name, func(t *testing.T) {
			s, err := h.Load(context.Background(), hog.module, Limits{Fuel: 1 << 40, Backstop: backstop})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			began := time.Now()
			_, err = s.Evaluate(context.Background(), make([]byte, 64), 0, nil)
			took := time.Since(began)
			var f *Fault
			if !errors.As(err, &f) || f.Outcome != OutcomeDeadline || f.Outcome.String() != "deadline" {
				t.Fatalf("want a deadline fault, got %v", err)
			}
			if took < backstop || took > 10*backstop {
				t.Fatalf("stopped after %v, want just after the %v backstop", took, backstop)
			}
			t.Logf("%s hog stopped %v after its %v backstop", hog.name, took-backstop, backstop)
		})
	}
}

// TestWASIBoundsEachCall: a call asking for more than one call may do is
// refused (EINVAL), not served.
func TestWASIBoundsEachCall(t *testing.T) {
	h, err := NewHost(HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	// random_get of 2 MiB, fd_write of 2,000 iovecs, poll_oneoff of 2,000
	// subscriptions: each returns EINVAL, which the module traps on.
	for _, tc := range []struct {
		fn      string
		nparams int
		args    []int64
	}{
		{"random_get", 2, []int64{0, 2 << 20}},
		{"fd_write", 4, []int64{2, 0, 2000, 8}},
		{"poll_oneoff", 4, []int64{0, 0, 2000, 8}},
	} {
		m := abiModule(1)
		p := make([]byte, tc.nparams)
		for i := range p {
			p[i] = i32
		}
		m.imports = []wasmImport{{wasiModule, tc.fn, p, []byte{i32}}}
		body := args(tc.args)
		body = append(body, 0x10, 0x00)                                   // call
		body = append(body, append([]byte{0x41}, sleb(errnoInval)...)...) // expected errno
		body = append(body, 0x47, 0x04, 0x40, 0x00, 0x0b)                 // i32.ne; if unreachable end
		body = append(body, 0x42, 0x00)
		m.funcs[2] = wasmFunc{params: []byte{i32}, results: []byte{i64}, body: body, export: "betrace_evaluate"}
		s, err := h.Load(context.Background(), m.bytes(), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Evaluate(context.Background(), make([]byte, 64), 0, nil); err != nil {
			t.Errorf("%s over its bound did not answer EINVAL: %v", tc.fn, err)
		}
		s.Close(context.Background())
	}
}

// TestNoWASICallOutlastsTheBudget: every WASI function a rule may import,
// called in a loop with zero arguments at the default budget, stops out of
// fuel (or exits) well within the default backstop.
func TestNoWASICallOutlastsTheBudget(t *testing.T) {
	h, err := NewHost(HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	for name, f := range wasiFuncs {
		p := make([]byte, f.params)
		var push []byte
		for i := range p {
			p[i] = i32
			push = append(push, 0x41, 0x00)
		}
		for _, i := range f.i64Args {
			p[i] = i64
			push[2*i] = 0x42
		}
		s, err := h.Load(context.Background(), wasiCaller(name, p, push), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		began := time.Now()
		_, err = s.Evaluate(context.Background(), make([]byte, 64), 0, nil)
		took := time.Since(began)
		s.Close(context.Background())
		var fault *Fault
		if !errors.As(err, &fault) || fault.Outcome != OutcomeFuelExhausted {
			t.Errorf("%s loop: want out of fuel, got %v", name, err)
		}
		if took > Backstop(DefaultFuel) {
			t.Errorf("%s loop ran %v, beyond the backstop %v", name, took, Backstop(DefaultFuel))
		}
	}
}
