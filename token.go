package hallpass

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

const (
	tokenBytes  = 32
	handleBytes = 16
)

// tokenLen is the length of an encoded token: 32 bytes, base64url, no padding.
const tokenLen = (tokenBytes*8 + 5) / 6

var strictB64 = base64.RawURLEncoding.Strict()

// Token decoding errors. They describe the shape of the input and never
// quote it: the input might be someone's valid token.
var (
	ErrTokenLength   = errors.New("hallpass: token has the wrong length")
	ErrTokenEncoding = errors.New("hallpass: token is not canonical base64url")
)

// NewToken returns a fresh session token: 256 bits from crypto/rand,
// base64url without padding.
func NewToken() string { return randomString(tokenBytes) }

// NewHandle returns a fresh public session handle.
func NewHandle() string { return randomString(handleBytes) }

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails; crashes the program if the kernel has no entropy
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken checks that s is a token as NewToken spells it and returns
// its store key. Every other spelling of the same bytes (padding, other
// alphabets, non-zero trailing bits) is refused, so one token has exactly
// one cookie value.
func ParseToken(s string) (Key, error) {
	if len(s) != tokenLen {
		return Key{}, ErrTokenLength
	}
	// Fixed arrays keep the request path free of allocations.
	var src [tokenLen]byte
	var raw [tokenBytes + 2]byte
	copy(src[:], s)
	n, err := strictB64.Decode(raw[:], src[:])
	if err != nil || n != tokenBytes {
		return Key{}, ErrTokenEncoding
	}
	return sha256.Sum256(src[:]), nil
}
