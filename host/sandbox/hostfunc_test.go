package sandbox

import (
	"context"
	"errors"
	"math"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero/api"

	"github.com/betracehq/betrace/api/abiv1"
	"github.com/betracehq/betrace/host/abi"
)

// The host functions are tested through hand-built modules: the "encoded
// trace" the host writes at 1024 is whatever bytes the test chooses, so it
// holds the pattern and the text the module passes to the host.

const inputAt = 1024

func valueTypes(ts []api.ValueType) []byte { return []byte(ts) }

// hostCaller is an ABI v1 module whose evaluate calls the betrace function
// fn `calls` times (forever when calls is 0) with the arguments args pushes
// (local 1 is the call number), then reports no violations.
func hostCaller(fn string, calls int, args []byte) []byte {
	t := hostFuncTypes[fn]
	m := abiModule(1)
	m.memPages = 64
	m.imports = []wasmImport{{abiv1.HostModule, fn, valueTypes(t.params), valueTypes(t.results)}}
	body := []byte{0x03, 0x40} // loop
	body = append(body, args...)
	body = append(body, 0x10, 0x00) // call the import
	for range t.results {
		body = append(body, 0x1a) // drop
	}
	body = append(body, 0x20, 1, 0x41, 1, 0x6a, 0x22, 1) // i++ (tee)
	if calls == 0 {
		body = append(body, 0x1a, 0x0c, 0) // drop; br 0
	} else {
		body = append(append(append(body, 0x41), sleb(int64(calls))...), 0x49, 0x0d, 0) // i < calls: br_if 0
	}
	body = append(body, 0x0b, 0x42, 0x00) // end; i64.const 0
	m.funcs[2] = wasmFunc{params: []byte{i32}, results: []byte{i64}, locals: []byte{i32}, body: body, export: abiv1.ExportEvaluate}
	return m.bytes()
}

// args pushes constant arguments: i32s, then an i64 if value is given.
func args(i32s []int64, value ...int64) []byte {
	var b []byte
	for _, v := range i32s {
		b = append(append(b, 0x41), sleb(v)...)
	}
	for _, v := range value {
		b = append(append(b, 0x42), sleb(v)...)
	}
	return b
}

// textArgs pushes (pattern or needle at inputAt, its length, a string value
// at inputAt+patLen of textLen bytes).
func textArgs(patLen, textLen int) []byte {
	return args([]int64{inputAt, int64(patLen), int64(abiv1.ValueString)}, int64(abiv1.Pack(uint32(inputAt+patLen), uint32(textLen))))
}

func callOnce(t *testing.T, s *Sandbox, input []byte) (Result, error) {
	t.Helper()
	return s.Evaluate(context.Background(), input, 0, nil)
}

func TestHostFuncFuelIsCharged(t *testing.T) {
	h := newHost(t)
	pattern := `/api/v[0-9]+/admin/.*`
	re, err := abi.CompileRegex(pattern)
	if err != nil {
		t.Fatal(err)
	}
	used := func(fn string, textLen int) uint64 {
		t.Helper()
		s := load(t, h, hostCaller(fn, 1, textArgs(len(pattern), textLen)), Limits{Instances: 1})
		input := []byte(pattern + strings.Repeat("x", 1000))
		res, err := callOnce(t, s, input)
		if err != nil {
			t.Fatalf("%s over %d bytes: %v", fn, textLen, err)
		}
		again, err := callOnce(t, s, input)
		if err != nil || again.FuelUsed != res.FuelUsed {
			t.Fatalf("%s: fuel %d then %d (%v): host functions must cost the same every time", fn, res.FuelUsed, again.FuelUsed, err)
		}
		return res.FuelUsed
	}
	if got, want := used(abiv1.HostRegexMatch, 1000)-used(abiv1.HostRegexMatch, 0), re.Fuel(1000)-re.Fuel(0); got != want {
		t.Errorf("regex_match over 1000 more bytes cost %d more fuel, the documented cost is %d", got, want)
	}
	if got, want := used(abiv1.HostTextContains, 1000)-used(abiv1.HostTextContains, 0), abi.ContainsFuel(1000, 0)-abi.ContainsFuel(0, 0); got != want {
		t.Errorf("text_contains over 1000 more bytes cost %d more fuel, the documented cost is %d", got, want)
	}
}

func TestHostFuncRunawayStoppedByFuel(t *testing.T) {
	h := newHost(t)
	const textLen = 60 << 10
	pattern := `(a|aa)*b` // a worst case for RE2: every position is live
	input := []byte(pattern + strings.Repeat("a", textLen))
	for _, fn := range []string{abiv1.HostRegexMatch, abiv1.HostTextContains} {
		t.Run(fn, func(t *testing.T) {
			s := load(t, h, hostCaller(fn, 0, textArgs(len(pattern), textLen)), Limits{Instances: 1})
			_, err := callOnce(t, s, input)
			var f *Fault
			if !errors.As(err, &f) || f.Outcome != OutcomeFuelExhausted || f.FuelUsed != s.Limits().Fuel {
				t.Fatalf("err = %v, want the fuel budget exhausted with all %d used", err, s.Limits().Fuel)
			}
		})
	}
}

func TestHostFuncTraps(t *testing.T) {
	h := newHost(t)
	distinct := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~ "
	perCall := append(args([]int64{inputAt}), 0x20, 1, 0x6a) // pattern at inputAt+i
	perCall = append(perCall, args([]int64{1, int64(abiv1.ValueBool)}, 1)...)
	tests := []struct {
		name   string
		module []byte
		input  string
		says   string
	}{
		{"invalid pattern", hostCaller(abiv1.HostRegexMatch, 1, textArgs(3, 1)), "(a[x", "regular expression"},
		{"pattern too long", hostCaller(abiv1.HostRegexMatch, 1, textArgs(2000, 1)), strings.Repeat("a", 2001), "more than the 1024 allowed"},
		{"pattern too complex", hostCaller(abiv1.HostRegexMatch, 1, textArgs(77, 1)), strings.Repeat("x{1000}", 11), "11002 instructions"},
		{"too many patterns", hostCaller(abiv1.HostRegexMatch, len(distinct), perCall), distinct, "more than 64 distinct"},
		{"value past memory", hostCaller(abiv1.HostTextContains, 1, textArgs(1, 64<<16)), "a", "past the end of memory"},
		{"unknown value type", hostCaller(abiv1.HostTextContains, 1, args([]int64{inputAt, 1, 9}, 0)), "ab", "value type 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := load(t, h, tt.module, Limits{Instances: 1})
			_, err := callOnce(t, s, []byte(tt.input))
			var f *Fault
			if !errors.As(err, &f) || f.Outcome != OutcomeTrap || !strings.Contains(f.Error(), tt.says) {
				t.Fatalf("err = %v, want a trap mentioning %q", err, tt.says)
			}
		})
	}
}

func TestHostFuncAdmission(t *testing.T) {
	h := newHost(t)
	unknown := abiModule(1)
	unknown.imports = []wasmImport{{abiv1.HostModule, "exec", []byte{i32}, nil}}
	mistyped := abiModule(1)
	mistyped.imports = []wasmImport{{abiv1.HostModule, abiv1.HostRegexMatch, []byte{i32, i32}, []byte{i32}}}
	for _, tt := range []struct {
		name   string
		module []byte
		want   error
		says   string
	}{
		{"unknown betrace function", unknown.bytes(), ErrImportNotAllowed, "betrace.exec"},
		{"mistyped betrace function", mistyped.bytes(), ErrInvalidModule, "ABI v1 defines (i32, i32, i32, i64) -> (i32)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Load(context.Background(), tt.module, Limits{})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.want, tt.says)
			}
		})
	}
}

// parse_number and the text of non-string values are checked against
// package abi by the DSL's differential tests; here: no allocation.
func TestHostFuncAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (make test runs this test again without it)")
	}
	h := newHost(t)
	pattern := `^[0-9]+$`
	numArgs := args([]int64{inputAt, int64(len(pattern)), int64(abiv1.ValueDouble)}, int64(math.Float64bits(-1.5)))
	parseArgs := args([]int64{inputAt + int64(len(pattern)), 8})
	input := []byte(pattern + "12345678 /api/v1/users")
	for name, mod := range map[string][]byte{
		"regex over text":   hostCaller(abiv1.HostRegexMatch, 4, textArgs(len(pattern), 14)),
		"regex over double": hostCaller(abiv1.HostRegexMatch, 4, numArgs),
		"contains":          hostCaller(abiv1.HostTextContains, 4, textArgs(3, 14)),
		"parse_number":      hostCaller(abiv1.HostParseNumber, 4, parseArgs),
	} {
		s := load(t, h, mod, Limits{Instances: 1})
		if _, err := callOnce(t, s, input); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := testing.AllocsPerRun(100, func() { callOnce(t, s, input) }); n != 0 {
			t.Errorf("%s: %.1f allocations per evaluation, want 0", name, n)
		}
	}
}

// TestHostFuncContract checks api/abi-v1.md against the code: every host
// function's signature and every limit and fuel figure.
func TestHostFuncContract(t *testing.T) {
	b, err := os.ReadFile("../../api/abi-v1.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(b)), " ")
	start, end := strings.Index(doc, "### The `betrace` host functions"), strings.Index(doc, "## 3.")
	if start < 0 || end < start {
		t.Fatal("abi-v1.md has no section \"The `betrace` host functions\" before section 3")
	}
	doc = doc[start:end]
	row := regexp.MustCompile("\\| `([a-z_]+)` \\| `\\(([^)]*)\\) -> \\(?([^`)]*)\\)?` \\|")
	paramName := regexp.MustCompile(`[a-z_]+ (i32|i64)`)
	found := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		want, ok := hostFuncTypes[m[1]]
		if !ok {
			t.Errorf("abi-v1.md documents %s, which the host does not serve", m[1])
			continue
		}
		found[m[1]] = true
		got := "(" + paramName.ReplaceAllString(m[2], "$1") + ") -> (" + m[3] + ")"
		if sig := signature(want.params, want.results); got != sig {
			t.Errorf("abi-v1.md gives %s the type %s, the host serves %s", m[1], got, sig)
		}
	}
	for name := range hostFuncTypes {
		if !found[name] {
			t.Errorf("abi-v1.md does not document %s", name)
		}
	}
	for _, fig := range []string{
		"at most 1,024 bytes", "at most 10,000 RE2 instructions", "at most 64 distinct patterns",
		"Every call costs 100", "adds 16 × (text length + 1)", "adds 2 per byte of text and needle", "`parse_number` 2 per byte",
	} {
		if !strings.Contains(doc, fig) {
			t.Errorf("abi-v1.md lacks %q", fig)
		}
	}
	if abiv1.MaxRegexBytes != 1024 || abiv1.MaxRegexProgram != 10000 || abiv1.MaxRegexes != 64 ||
		abiv1.FuelHostCall != 100 || abiv1.FuelRegexStep != 16 || abiv1.FuelPerByte != 2 {
		t.Error("a host function limit or fuel constant changed: update api/abi-v1.md §2 and this test")
	}
}

// Instances of one sandbox share its compiled patterns; -race checks the
// sharing while they are added concurrently.
func TestHostFuncConcurrentPatterns(t *testing.T) {
	h := newHost(t)
	distinct := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	perCall := append(args([]int64{inputAt}), 0x20, 1, 0x6a) // pattern at inputAt+i
	perCall = append(perCall, args([]int64{1, int64(abiv1.ValueString)}, int64(abiv1.Pack(inputAt, uint32(len(distinct)))))...)
	s := load(t, h, hostCaller(abiv1.HostRegexMatch, len(distinct), perCall), Limits{Instances: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := s.Evaluate(context.Background(), []byte(distinct), 0, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
