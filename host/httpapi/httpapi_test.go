package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAuthenticate(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	cases := []struct {
		name, token, header string
		want                int
	}{
		{"open without a token", "", "", http.StatusNoContent},
		{"exact", "s3cret", "Bearer s3cret", http.StatusNoContent},
		{"scheme in lower case", "s3cret", "bearer s3cret", http.StatusNoContent},
		{"scheme in upper case, blanks around", "s3cret", "  BEARER   s3cret ", http.StatusNoContent},
		{"missing", "s3cret", "", http.StatusUnauthorized},
		{"wrong", "s3cret", "Bearer s3cre", http.StatusUnauthorized},
		{"other scheme", "s3cret", "Basic s3cret", http.StatusUnauthorized},
		{"token only", "s3cret", "s3cret", http.StatusUnauthorized},
		{"unusable configured token accepts nothing", "bad token", "Bearer bad token", http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := (&api{cfg: Config{APIToken: c.token}}).authenticate(ok)
			req := httptest.NewRequest(http.MethodGet, "/v1/rules", nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.want, rec.Body)
			}
		})
	}
}

func TestReadSpecRefusesEmptyModules(t *testing.T) {
	for _, ctype := range []string{"application/wasm", "application/octet-stream"} {
		for _, create := range []bool{true, false} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPut, "/v1/rules/r", bytes.NewReader(nil))
			req.Header.Set("Content-Type", ctype)
			_, err := (&api{cfg: Config{MaxBodyBytes: DefaultMaxBodyBytes}}).readSpec(rec, req, create)
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusBadRequest || !strings.Contains(ae.message, "empty") {
				t.Errorf("%s create=%v: %v, want a 400 naming the empty body", ctype, create, err)
			}
		}
	}
}
