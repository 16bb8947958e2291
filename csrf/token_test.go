package csrf

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
)

func newSecret() *[secretBytes]byte {
	var s [secretBytes]byte
	rand.Read(s[:])
	return &s
}

func TestMaskVerify(t *testing.T) {
	secret, other := newSecret(), newSecret()
	for range 100 {
		s := mask(secret)
		if len(s) != tokenLen {
			t.Fatalf("token of %d characters, want %d", len(s), tokenLen)
		}
		tok, ok := parseToken(s)
		if !ok {
			t.Fatalf("parseToken refused a fresh token")
		}
		if !tok.verify(secret) {
			t.Fatal("a fresh token does not verify")
		}
		if tok.verify(other) {
			t.Fatal("a token verifies against another secret")
		}
	}
}

// FuzzParseToken checks that parseToken never panics and accepts exactly
// the canonical spellings: 64 bytes in base64url without padding, which
// re-encode to the same string.
func FuzzParseToken(f *testing.F) {
	// The seed corpus is in testdata/fuzz/FuzzParseToken.
	f.Fuzz(func(t *testing.T, s string) {
		tok, ok := parseToken(s)
		raw, err := base64.RawURLEncoding.DecodeString(s)
		canonical := err == nil && len(raw) == len(tok) && base64.RawURLEncoding.EncodeToString(raw) == s
		if ok != canonical {
			t.Fatalf("parseToken(%q) accepted %v, canonical %v", s, ok, canonical)
		}
		if ok && base64.RawURLEncoding.EncodeToString(tok[:]) != s {
			t.Fatalf("parseToken(%q) decoded to other bytes", s)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	secret := newSecret()
	s := mask(secret)
	b.ReportAllocs()
	for b.Loop() {
		tok, ok := parseToken(s)
		if !ok || !tok.verify(secret) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkMask(b *testing.B) {
	secret := newSecret()
	b.ReportAllocs()
	for b.Loop() {
		mask(secret)
	}
}
