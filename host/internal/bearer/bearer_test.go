package bearer

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"s3cret", true},
		{"", false},
		{"s3cret\n", false},
		{"s3 cret", false},
		{"\ts3cret", false},
		{"s3cret\x7f", false},
	} {
		if _, err := Parse("BETRACE_API_TOKEN", tc.token); (err == nil) != tc.ok {
			t.Errorf("Parse(%q) = %v, want ok=%v", tc.token, err, tc.ok)
		}
	}
}

func TestMatch(t *testing.T) {
	tok, err := Parse("X", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{"Bearer s3cret", true},
		{"bearer s3cret", true},
		{"BEARER s3cret", true},
		{"  Bearer   s3cret  ", true},
		{tok.Header(), true},
		{"Bearer s3cre", false},
		{"Bearer s3cret2", false},
		{"Basic s3cret", false},
		{"s3cret", false},
		{"Bearer", false},
		{"Bearer ", false},
		{"", false},
	} {
		if got := tok.Match(tc.header); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
	if (Token{}).Match("Bearer ") || (Token{}).Match("Bearer x") {
		t.Error("the zero Token accepted a credential")
	}
}
