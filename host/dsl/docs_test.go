package dsl

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exampleRule finds a rule written out in prose: `when { … }` up to the end
// of its last always/never clause.
var exampleRule = regexp.MustCompile(`when \{[^'"\n]*?\}(?: (?:always|never) \{[^}\n]*\})+`)

// TestDocumentedExamplesCompile keeps the rules shown to people honest:
// every example in the README, the runbooks and the language reference
// parses and compiles.
func TestDocumentedExamplesCompile(t *testing.T) {
	root := repoRoot(t)
	files := []string{filepath.Join(root, "README.md"), filepath.Join(root, "api", "dsl.md")}
	runbooks, _ := filepath.Glob(filepath.Join(root, "deploy", "runbooks", "*.md"))
	files = append(files, runbooks...)
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "|") {
				continue // tables quote fragments of rules, not rules
			}
			for _, src := range exampleRule.FindAllString(line, -1) {
				seen++
				r, err := Parse(src)
				if err != nil {
					t.Errorf("%s: example %q does not parse: %v", filepath.Base(f), src, err)
					continue
				}
				if _, err := Compile(r, Meta{}); err != nil {
					t.Errorf("%s: example %q does not compile: %v", filepath.Base(f), src, err)
				}
			}
		}
	}
	if seen < 5 {
		t.Fatalf("found only %d example rules in the docs; the pattern no longer matches them", seen)
	}
}
