package sandbox

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/traces"
)

// syntheticTrace is a checkout trace of n spans: a root, payment charges,
// no fraud check (so payment-fraud-check fires on every charge), and db
// calls with attributes, four children per parent.
func syntheticTrace(n int) []traces.Span {
	res := []traces.Attr{{Key: "service.name", Type: abiv1.ValueString, Str: "checkout"}}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := &spans[i]
		s.TraceID = [16]byte{0: 1, 15: 1}
		s.SpanID = [8]byte{0: 1, 6: byte(i >> 8), 7: byte(i)}
		s.Service = "checkout"
		s.StartUnixNano = uint64(1_000_000 + i*1000)
		s.EndUnixNano = s.StartUnixNano + 500_000
		s.ResourceAttrs = res
		switch {
		case i == 0:
			s.Name = "checkout"
		case i%10 == 1:
			s.Name = "payment.charge"
			s.Attrs = []traces.Attr{{Key: "payment.amount", Type: abiv1.ValueInt, Num: 4200}}
		default:
			s.Name = "SELECT orders"
			s.Attrs = []traces.Attr{{Key: "db.system", Type: abiv1.ValueString, Str: "postgresql"}, {Key: "db.rows", Type: abiv1.ValueInt, Num: 3}}
		}
		if i > 0 {
			s.ParentSpanID = spans[(i-1)/4].SpanID
		}
	}
	return spans
}

func benchEvaluate(b *testing.B, s *Sandbox, spans []traces.Span) {
	enc := abi.NewEncoder()
	buf := enc.Encode(spans, 0)
	var dst []abi.Violation
	ctx := context.Background()
	b.ReportAllocs()
	var fuel uint64
	for b.Loop() {
		res, err := s.Evaluate(ctx, buf, uint32(len(spans)), dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		dst, fuel = res.Violations, res.FuelUsed
	}
	b.ReportMetric(float64(fuel), "fuel/op")
}

// BenchmarkCallOverhead is the host's fixed cost per rule call: a trivial
// hand-written rule, and a Go SDK rule, on a one-span trace.
func BenchmarkCallOverhead(b *testing.B) {
	h := newHost(b)
	spans := syntheticTrace(1)
	b.Run("trivial-wasm", func(b *testing.B) { benchEvaluate(b, load(b, h, abiModule(1).bytes(), Limits{}), spans) })
	b.Run("go-sdk", func(b *testing.B) {
		benchEvaluate(b, load(b, h, testrules.Module(b, "payment-fraud-check"), Limits{}), spans)
	})
}

func BenchmarkPaymentFraudCheck(b *testing.B) {
	h := newHost(b)
	s := load(b, h, testrules.Module(b, "payment-fraud-check"), Limits{})
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("%dspans", n), func(b *testing.B) { benchEvaluate(b, s, syntheticTrace(n)) })
	}
}

// BenchmarkMetering compares every real rule metered and unmetered on the
// same 1,000-span trace; the ratio of the two is the cost of fuel.
func BenchmarkMetering(b *testing.B) {
	h := newHost(b)
	spans := syntheticTrace(1000)
	for _, id := range testrules.Real {
		mod := testrules.Module(b, id)
		b.Run(id+"/metered", func(b *testing.B) { benchEvaluate(b, load(b, h, mod, Limits{}), spans) })
		b.Run(id+"/unmetered", func(b *testing.B) {
			s, err := h.load(context.Background(), mod, Limits{}, false)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			benchEvaluate(b, s, spans)
		})
	}
}

// BenchmarkRunawayStop times one call of a runaway rule from its start to
// the fuel trap, at the default budget; instance replacement is excluded.
func BenchmarkRunawayStop(b *testing.B) {
	h := newHost(b)
	spans := syntheticTrace(10)
	buf := abi.NewEncoder().Encode(spans, 0)
	for _, id := range []string{"runaway-loop", "exp-recursion"} {
		b.Run(id, func(b *testing.B) {
			benchFuelTrap(b, load(b, h, testrules.Module(b, id), Limits{}), buf, uint32(len(spans)))
		})
	}
}

// benchFuelTrap times calls that must end out of fuel, from the start of
// the call to the trap; acquiring and discarding the instance are excluded.
func benchFuelTrap(b *testing.B, s *Sandbox, input []byte, spans uint32) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		inst, err := s.acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		_, err = s.call(ctx, inst, input, spans, s.limits.Fuel, nil)
		b.StopTimer()
		if f, ok := err.(*Fault); !ok || f.Outcome != OutcomeFuelExhausted {
			b.Fatalf("runaway not stopped by fuel: %v", err)
		}
		s.discard(ctx, inst)
		b.StartTimer()
	}
}

// BenchmarkInstantiate measures creating one instance of a Go rule
// (instantiation plus the Go runtime's _initialize) and its memory.
func BenchmarkInstantiate(b *testing.B) {
	h := newHost(b)
	s := load(b, h, testrules.Module(b, "payment-fraud-check"), Limits{})
	ctx := context.Background()
	var pages uint32
	for b.Loop() {
		inst, err := s.newInstance(ctx)
		if err != nil {
			b.Fatal(err)
		}
		pages = inst.mem.Size() / 65536
		inst.mod.Close(ctx)
	}
	b.ReportMetric(float64(pages)*64, "KiB-memory/instance")
	b.ReportMetric(float64(len(testrules.Module(b, "payment-fraud-check")))/1024, "KiB-module")
}

// BenchmarkHostFuncRunawayStop times a rule that calls regex_match forever
// with RE2's worst case, `(a|aa)*b` over 60 KiB of "a", from its start to
// the fuel trap at the default budget: the fuel charged per byte and
// instruction must stop it as soon as a looping rule.
func BenchmarkHostFuncRunawayStop(b *testing.B) {
	h := newHost(b)
	const textLen = 60 << 10
	pattern := `(a|aa)*b`
	input := []byte(pattern + strings.Repeat("a", textLen))
	benchFuelTrap(b, load(b, h, hostCaller(abiv1.HostRegexMatch, 0, textArgs(len(pattern), textLen)), Limits{}), input, 0)
}

// BenchmarkHostFuncCall is one evaluation making four host calls over
// short texts: the cost of crossing into the host.
func BenchmarkHostFuncCall(b *testing.B) {
	h := newHost(b)
	pattern := `/api/v[0-9]+/admin/.*`
	input := []byte(pattern + "/api/v1/admin/users/1234")
	for _, fn := range []string{abiv1.HostRegexMatch, abiv1.HostTextContains} {
		b.Run(fn, func(b *testing.B) {
			s := load(b, h, hostCaller(fn, 4, textArgs(len(pattern), 24)), Limits{Instances: 1})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Evaluate(ctx, input, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
