package dsl

import (
	"context"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
	"github.com/betracehq/betrace/host/internal/testrules"
	"github.com/betracehq/betrace/host/meter"
	"github.com/betracehq/betrace/host/sandbox"
	"github.com/betracehq/betrace/host/traces"
)

// benchTrace is an n-span checkout trace with a payment charge every tenth
// span, database calls in between and no fraud check, so the rule fires.
func benchTrace(n int) []traces.Span {
	res := []traces.Attr{sAttr("service.name", "checkout")}
	spans := make([]traces.Span, n)
	for i := range spans {
		s := &spans[i]
		s.TraceID = [16]byte{0: 9, 15: 9}
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
			s.Attrs = []traces.Attr{iAttr("payment.amount", 4200), sAttr("payment.currency", "EUR")}
		default:
			s.Name = "SELECT orders"
			s.Attrs = []traces.Attr{sAttr("db.system", "postgresql"), {Key: "db.rows", Type: abiv1.ValueInt, Num: 3}}
		}
		if i > 0 {
			s.ParentSpanID = spans[(i-1)/4].SpanID
		}
	}
	return spans
}

// benchFiring evaluates the encoded n-span trace buf, which must make the
// rule fire, and reports the fuel each evaluation used.
func benchFiring(b *testing.B, s *sandbox.Sandbox, buf []byte, n int) {
	var dst []abi.Violation
	var fuel uint64
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Evaluate(context.Background(), buf, uint32(n), dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Violations) == 0 {
			b.Fatal("rule did not fire")
		}
		dst, fuel = res.Violations, res.FuelUsed
	}
	b.ReportMetric(float64(fuel), "fuel/op")
}

// BenchmarkCompiledVsSDK compares the compiled
// `when { payment.charge } always { fraud.check }` with the Go SDK rule
// payment-fraud-check (run `make rules` to build it), both metered.
func BenchmarkCompiledVsSDK(b *testing.B) {
	h := testHost(b)
	_, compiled, mod := compileLoad(b, h, `when { payment.charge } always { fraud.check }`)
	sdk, err := h.Load(context.Background(), testrules.Module(b, "payment-fraud-check"), sandbox.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sdk.Close(context.Background()) })
	b.Logf("compiled module: %d bytes", len(mod))
	for _, n := range []int{10, 100, 1000} {
		spans := benchTrace(n)
		buf := abi.NewEncoder().Encode(spans, 0)
		for _, c := range []struct {
			name string
			s    *sandbox.Sandbox
		}{{"compiled", compiled}, {"go-sdk", sdk}} {
			b.Run(fmt.Sprintf("%s/%dspans", c.name, n), func(b *testing.B) { benchFiring(b, c.s, buf, n) })
		}
	}
}

// BenchmarkCompiledHostFuncs is the cost of the betrace host functions in a
// compiled rule: the same rule as BenchmarkCompiledVsSDK with a regular
// expression or a substring test on every payment charge.
func BenchmarkCompiledHostFuncs(b *testing.B) {
	h := testHost(b)
	for _, c := range []struct{ name, src string }{
		{"matches", `when { payment.charge.where(payment.currency matches "^(USD|EUR)$") } always { fraud.check }`},
		{"contains", `when { payment.charge.where(payment.currency contains "EU") } always { fraud.check }`},
	} {
		_, s, _ := compileLoad(b, h, c.src)
		for _, n := range []int{10, 100, 1000} {
			spans := benchTrace(n)
			buf := abi.NewEncoder().Encode(spans, 0)
			b.Run(fmt.Sprintf("%s/%dspans", c.name, n), func(b *testing.B) { benchFiring(b, s, buf, n) })
		}
	}
}

// compileSource parses and compiles src.
func compileSource(b *testing.B, src string) []byte {
	r, err := Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	module, err := Compile(r, Meta{ID: "pay"})
	if err != nil {
		b.Fatal(err)
	}
	return module
}

// BenchmarkInstantiateCompiled is one more instance of an admitted
// compiled rule: what a sandbox pays to grow its pool or replace a faulted
// instance.
func BenchmarkInstantiateCompiled(b *testing.B) {
	module := compileSource(b, `when { payment.charge } always { fraud.check }`)
	metered, err := meter.Instrument(module, meter.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, metered)
	if err != nil {
		b.Fatal(err)
	}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	for b.Loop() {
		m, err := rt.InstantiateModule(ctx, cm, cfg)
		if err != nil {
			b.Fatal(err)
		}
		m.Close(ctx)
	}
}

// BenchmarkCompile is parse plus compile of a typical rule.
func BenchmarkCompile(b *testing.B) {
	const src = `when { payment.charge.where(amount > 1000) } always { fraud.check } never { payment.refund }`
	var size int
	for b.Loop() {
		r, err := Parse(src)
		if err != nil {
			b.Fatal(err)
		}
		m, err := Compile(r, Meta{ID: "pay", Severity: "HIGH"})
		if err != nil {
			b.Fatal(err)
		}
		size = len(m)
	}
	b.ReportMetric(float64(size), "module-bytes")
}

// BenchmarkAdmitCompiled is what a server does with a compiled rule:
// metering, compilation by wazero, the admission checks and one instance.
func BenchmarkAdmitCompiled(b *testing.B) {
	module := compileSource(b, `when { payment.charge } always { fraud.check }`)
	h, err := sandbox.NewHost(sandbox.HostConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	for b.Loop() {
		s, err := h.Load(context.Background(), module, sandbox.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		s.Close(context.Background())
	}
}
