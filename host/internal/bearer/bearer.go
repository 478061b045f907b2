// Package bearer checks "Authorization: Bearer <token>" credentials the same
// way on every route that takes one: the API, OTLP ingest and the routes
// instances use between themselves.
//
// The scheme is matched case-insensitively (RFC 7235 §2.1) and surrounding
// blanks are ignored. Tokens are compared as SHA-256 digests so the
// comparison takes the same time whatever the token's length or how much of
// it matches. A token that could not survive an HTTP header unchanged (one
// with a space, a control character or a trailing newline from a secrets
// file) is refused when it is configured, not discovered as 401s later.
package bearer

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"
)

// Token is a configured bearer token. The zero Token accepts nothing.
type Token struct {
	raw    string
	digest [sha256.Size]byte
}

// Parse checks a configured token; name is the setting it came from, so
// the error says which to fix.
func Parse(name, token string) (Token, error) {
	if token == "" {
		return Token{}, fmt.Errorf("%s is empty", name)
	}
	if i := strings.IndexFunc(token, func(r rune) bool { return r <= ' ' || r == 0x7f }); i >= 0 {
		return Token{}, fmt.Errorf("%s contains a space or control character at byte %d (a trailing newline from a file?): remove it", name, i)
	}
	return Token{raw: token, digest: sha256.Sum256([]byte(token))}, nil
}

// Value is the token itself, for storing where peers read it.
func (t Token) Value() string { return t.raw }

// Header is the Authorization value that presents the token.
func (t Token) Header() string { return "Bearer " + t.raw }

// Match reports whether an Authorization value presents the token.
func (t Token) Match(header string) bool {
	if t.raw == "" {
		return false
	}
	tok, ok := Credentials(header)
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], t.digest[:]) == 1
}

// Credentials returns the token of a "Bearer" Authorization value, the
// scheme in any case.
func Credentials(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
