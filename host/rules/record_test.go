package rules

import "testing"

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{
		"payment-fraud-check": true,
		"v1.2_rule":           true,
		"...":                 true,
		".hidden":             true,
		"":                    false,
		".":                   false,
		"..":                  false,
		"a/b":                 false,
		"a:b":                 false,
		"a b":                 false,
	} {
		if err := ValidateID(id); (err == nil) != ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}
