package csrf

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"html"
	"html/template"
	"net/http"

	"github.com/hallpass/hallpass"
)

const (
	secretBytes = 32
	// tokenLen is the length of a rendered token: pad and masked secret,
	// base64url without padding.
	tokenLen = (2*secretBytes*8 + 5) / 6
)

var strictB64 = base64.RawURLEncoding.Strict()

// stored is the session value at SessionKey.
type stored struct {
	// User is who was signed in when the secret was made; the secret is
	// valid only while they still are.
	User   string `json:"user"`
	Secret []byte `json:"secret"`
}

// loadSecret returns the session's secret for its current user, if it
// has one.
func loadSecret(s *hallpass.Session) (secret [secretBytes]byte, ok bool) {
	v, err := hallpass.Get[*stored](s, SessionKey)
	// A value that does not decode or has the wrong length was not
	// written by this package; Token replaces it.
	if err != nil || v == nil || len(v.Secret) != secretBytes || v.User != s.UserID() {
		return secret, false
	}
	copy(secret[:], v.Secret)
	return secret, true
}

// Token returns a CSRF token for the request's session: the value for the
// form field or the X-CSRF-Token header. Each call masks the secret
// afresh, so two tokens never look alike, and all of them are valid.
//
// The first call in a session (or after the signed-in user changed)
// creates the secret, which writes to the session, so call Token before
// the response starts; otherwise it returns an error wrapping
// hallpass.ErrResponseStarted. Without a session in the request context
// it returns hallpass.ErrNoSession.
func Token(r *http.Request) (string, error) {
	s := hallpass.FromRequest(r)
	if s == nil {
		return "", hallpass.ErrNoSession
	}
	secret, ok := loadSecret(s)
	if !ok {
		rand.Read(secret[:]) // never fails; crashes the program if the kernel has no entropy
		if err := s.Set(SessionKey, stored{User: s.UserID(), Secret: secret[:]}); err != nil {
			return "", fmt.Errorf("csrf: storing the session's secret: %w", err)
		}
	}
	return mask(&secret), nil
}

// Field returns the hidden form field that carries a fresh token, for
// the view data of a page with a form:
//
//	<input type="hidden" name="csrf_token" value="...">
//
// Inside a Protection's Handler the name is its Options.FieldName. If
// Token fails, Field returns an empty string: the form is then refused
// with missing_token, and Token tells why.
func Field(r *http.Request) template.HTML {
	tok, err := Token(r)
	if err != nil {
		return ""
	}
	name := DefaultFieldName
	if p, _ := r.Context().Value(ctxKey{}).(*Protection); p != nil {
		name = p.fieldName()
	}
	// The token is base64url, which needs no escaping.
	return template.HTML(`<input type="hidden" name="` + html.EscapeString(name) + `" value="` + tok + `">`)
}

// MetaTag returns a <meta name="csrf-token"> element that carries a
// fresh token, for the <head> of a page whose scripts send the token in
// the X-CSRF-Token header. If Token fails, MetaTag returns an empty
// string.
func MetaTag(r *http.Request) template.HTML {
	tok, err := Token(r)
	if err != nil {
		return ""
	}
	return template.HTML(`<meta name="` + MetaName + `" content="` + tok + `">`)
}

// token is a parsed token: a one-time pad, then the secret XOR the pad.
type token [2 * secretBytes]byte

func mask(secret *[secretBytes]byte) string {
	var t token
	rand.Read(t[:secretBytes])
	for i := range secretBytes {
		t[secretBytes+i] = t[i] ^ secret[i]
	}
	return base64.RawURLEncoding.EncodeToString(t[:])
}

// parseToken decodes s, accepting only the spelling mask produces: the
// exact length, the URL alphabet, no padding, zero trailing bits. Other
// spellings of the same bytes are refused, so that each token has
// exactly one spelling, as hallpass does for session tokens.
func parseToken(s string) (t token, ok bool) {
	if len(s) != tokenLen {
		return t, false
	}
	// Fixed arrays keep the check free of allocations.
	var src [tokenLen]byte
	copy(src[:], s)
	// Strict decoding still skips CR and LF; they shorten the result,
	// which the length check catches.
	n, err := strictB64.Decode(t[:], src[:])
	return t, err == nil && n == len(t)
}

// verify reports, in constant time, whether t was masked from secret.
func (t *token) verify(secret *[secretBytes]byte) bool {
	var unmasked [secretBytes]byte
	for i := range secretBytes {
		unmasked[i] = t[i] ^ t[secretBytes+i]
	}
	return subtle.ConstantTimeCompare(unmasked[:], secret[:]) == 1
}
