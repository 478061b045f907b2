// Package console serves BeTrace's web console at /ui/ on the API port.
//
// The console is a handful of static files embedded in the binary: one HTML
// page, one script and one style sheet. The page reads and writes only
// through the public /v1 API, with the same requests an operator would type
// with curl, so the console can never do or see anything the API does not
// offer, and it works against any instance of a cluster. Nothing is fetched
// at run time and nothing needs a JavaScript toolchain to build.
//
// When the API has a token, the console asks for it once and exchanges it
// for a session cookie (HttpOnly, SameSite=Strict, Secure behind TLS). The
// cookie is stateless: it carries its expiry and is signed with a key
// derived from the API token, so every instance sharing the token accepts
// it, and rotating the token ends every session. A request authenticated by
// the cookie alone must also present the session's anti-forgery token in a
// header, which a page on another origin cannot read or set; the token
// itself never reaches the page.
package console
