package sandbox

import (
	"strings"
	"testing"

	"github.com/betracehq/betrace/api/abiv1"
)

func customSection(name, text string) []byte {
	return section(0, append(uleb(uint64(len(name))), append([]byte(name), text...)...))
}

func TestSourceSection(t *testing.T) {
	good := abiModule(1).bytes()
	for _, tt := range []struct {
		name   string
		module []byte
		want   string
	}{
		{"no custom section", good, ""},
		{"source", append(good, customSection(abiv1.CustomSectionSource, "when { a } always { b }")...), "when { a } always { b }"},
		{"other custom sections first", append(append(good, customSection("name", "x")...), customSection(abiv1.CustomSectionSource, "src")...), "src"},
		{"not UTF-8", append(good, customSection(abiv1.CustomSectionSource, "\xff\xfe")...), ""},
		{"too large", append(good, customSection(abiv1.CustomSectionSource, strings.Repeat("x", MaxSourceBytes+1))...), ""},
		{"truncated length", append(good, 0, 0xff, 0xff), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sourceSection(tt.module); got != tt.want {
				t.Fatalf("sourceSection = %.40q, want %.40q", got, tt.want)
			}
		})
	}
	h := newHost(t)
	s := load(t, h, append(good, customSection(abiv1.CustomSectionSource, "when { a } always { b }")...), Limits{})
	if s.Source() != "when { a } always { b }" {
		t.Fatalf("Source() = %q", s.Source())
	}
}
