package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"
)

// grower is an ABI v1 module starting at minPages whose every evaluation
// grows its memory by 10 MiB and keeps it, trapping when the growth fails.
func grower(minPages uint32) []byte {
	m := abiModule(1)
	m.memPages = minPages
	body := append([]byte{0x41}, sleb(160)...)  // i32.const 160 (pages)
	body = append(body, 0x40, 0x00)             // memory.grow
	body = append(body, 0x41, 0x7f, 0x46)       // i32.const -1; i32.eq
	body = append(body, 0x04, 0x40, 0x00, 0x0b) // if unreachable end
	body = append(body, 0x42, 0x00)             // i64.const 0
	m.funcs[2] = wasmFunc{params: []byte{i32}, results: []byte{i64}, body: body, export: "betrace_evaluate"}
	return m.bytes()
}

func budgetHost(t *testing.T, budget int64) *Host {
	t.Helper()
	h, err := NewHost(HostConfig{MemoryBudget: budget})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h
}

// TestMemoryBudgetBoundsEveryRule: per-rule caps alone let rules together
// take more memory than the process has (one rule at memoryPages 16384
// reached 2 GiB against a 768 MiB limit). The budget holds across rules:
// no growth passes it, the rule that could not grow is told why and is not
// struck for it, and the memory is there again once the holder lets go.
func TestMemoryBudgetBoundsEveryRule(t *testing.T) {
	ctx := context.Background()
	const budget = 40 << 20
	h := budgetHost(t, budget)
	lim := Limits{Instances: 1, RecyclePages: 512} // 32 MiB cap each, kept
	holder := load(t, h, grower(16), lim)
	defer holder.Close(ctx)
	other := load(t, h, grower(16), lim)
	defer other.Close(ctx)
	if got := h.MemoryInUse(); got != 2<<20 {
		t.Fatalf("two instances of 1 MiB commit %d bytes, want %d", got, 2<<20)
	}

	// The holder grows to 31 MiB, within its own cap, and keeps it.
	for i := range 3 {
		if _, err := holder.Evaluate(ctx, make([]byte, 16), 0, nil); err != nil {
			t.Fatalf("holder's growth %d within its cap and the budget: %v", i+1, err)
		}
	}
	if got := h.MemoryInUse(); got != 32<<20 {
		t.Fatalf("after the holder grew 30 MiB, %d MiB committed, want 32", got>>20)
	}

	// The other rule's growth would make 42 MiB.
	_, err := other.Evaluate(ctx, make([]byte, 16), 0, nil)
	var f *Fault
	if !errors.As(err, &f) || f.Outcome != OutcomeMemoryBudget {
		t.Fatalf("growth past the budget: got %v, want a %s fault", err, OutcomeMemoryBudget)
	}
	if !errors.Is(err, ErrMemoryBudget) || f.Outcome.Strikes() {
		t.Fatalf("fault %v: want ErrMemoryBudget and no strike", err)
	}
	if got := h.MemoryInUse(); got > budget {
		t.Fatalf("%d MiB committed, over the %d MiB budget", got>>20, budget>>20)
	}

	// A rule whose memory starts larger than what is left is refused at
	// admission, saying so; one whose cap alone is over the budget too.
	if _, err := h.Load(ctx, grower(256), lim); !errors.Is(err, ErrMemoryBudget) {
		t.Fatalf("admitting 16 MiB with %d MiB left: got %v, want ErrMemoryBudget", (budget-h.MemoryInUse())>>20, err)
	}
	if _, err := h.Load(ctx, grower(16), Limits{MemoryPages: 1024}); !errors.Is(err, ErrInvalidLimits) {
		t.Fatalf("a 64 MiB cap under a 40 MiB budget: got %v, want ErrInvalidLimits", err)
	}

	// Once the holder is gone, its memory is the others' again.
	holder.Close(ctx)
	waitFor(t, func() bool { return h.MemoryInUse() <= 2<<20 }, "the closed holder's memory to return to the budget")
	if _, err := other.Evaluate(ctx, make([]byte, 16), 0, nil); err != nil {
		t.Fatalf("growth after the holder closed: %v", err)
	}
}

// TestMemoryBudgetLimitsParallelismFirst: when the budget has no room for
// a rule's second instance, calls take turns on the first rather than fail.
func TestMemoryBudgetLimitsParallelismFirst(t *testing.T) {
	ctx := context.Background()
	h := budgetHost(t, 1<<20+1<<19) // one 1 MiB instance, not two
	s := load(t, h, abiModule(1).bytes(), Limits{Instances: 2, MemoryPages: 16, RecyclePages: 16})
	defer s.Close(ctx)
	errs := make(chan error, 8)
	for range cap(errs) {
		go func() {
			_, err := s.Evaluate(ctx, make([]byte, 16), 0, nil)
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatalf("a call failed instead of waiting for the one instance the budget allows: %v", err)
		}
	}
	if got := h.MemoryInUse(); got != 1<<20 {
		t.Fatalf("%d bytes committed, want one instance's %d", got, 1<<20)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
