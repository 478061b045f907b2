package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestOneImageTag: the image the docs build is the one compose runs and
// the Kubernetes manifests deploy, so following any of them works.
func TestOneImageTag(t *testing.T) {
	files := map[string]*regexp.Regexp{
		// The local build; release builds carry their version instead.
		"deploy/README.md":                     regexp.MustCompile(`docker build -f deploy/Dockerfile -t betrace:([\w.-]+)`),
		"deploy/Dockerfile":                    regexp.MustCompile(`docker build -f deploy/Dockerfile -t betrace:([\w.-]+)`),
		"deploy/compose.yaml":                  regexp.MustCompile(`image: betrace:([\w.-]+)`),
		"deploy/kubernetes/kustomization.yaml": regexp.MustCompile(`newTag: ([\w.-]+)`),
	}
	tags := map[string]string{}
	for file, re := range files {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindAllSubmatch(b, -1)
		if len(m) == 0 {
			t.Fatalf("%s: no image tag found (%s)", file, re)
		}
		for _, sm := range m {
			tags[string(sm[1])] = file
		}
	}
	if len(tags) != 1 {
		t.Fatalf("the deploy files name different image tags: %v (tag → a file naming it)", tags)
	}
}
