package hallpass

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestNewTokenShape(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		tok := NewToken()
		if len(tok) != 43 {
			t.Fatalf("token length %d, want 43", len(tok))
		}
		if _, err := ParseToken(tok); err != nil {
			t.Fatalf("ParseToken(NewToken()): %v", err)
		}
		if seen[tok] {
			t.Fatal("NewToken repeated a token")
		}
		seen[tok] = true
	}
	if h := NewHandle(); len(h) != 22 || h == NewHandle() {
		t.Fatalf("bad handle %q", h)
	}
}

func TestParseTokenRejectsNonCanonical(t *testing.T) {
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(i*7 + 1)
	}
	good := base64.RawURLEncoding.EncodeToString(raw)
	if k, err := ParseToken(good); err != nil || k != KeyOf(good) {
		t.Fatalf("ParseToken(good) = %v, %v", k, err)
	}
	// The last character carries 2 padding bits; flipping them spells the
	// same 32 bytes differently, and must be refused.
	last := good[len(good)-1]
	idx := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last)
	alt := good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[idx|1])
	if alt == good {
		alt = good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[idx|2])
	}
	cases := map[string]struct {
		in   string
		want error
	}{
		"empty":              {"", ErrTokenLength},
		"padded":             {good + "=", ErrTokenLength},
		"short":              {good[:42], ErrTokenLength},
		"long":               {good + "A", ErrTokenLength},
		"std alphabet":       {strings.NewReplacer("-", "+", "_", "/").Replace(good[:40]) + "+/A", ErrTokenEncoding},
		"trailing bits":      {alt, ErrTokenEncoding},
		"NUL":                {good[:42] + "\x00", ErrTokenEncoding},
		"space":              {good[:42] + " ", ErrTokenEncoding},
		"unicode same bytes": {good[:41] + "é", ErrTokenEncoding},
		"oversized":          {strings.Repeat("A", 5000), ErrTokenLength},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseToken(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("ParseToken(%q) error %v, want %v", c.in, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), c.in) && c.in != "" {
				t.Fatalf("error quotes its input: %v", err)
			}
		})
	}
}

// FuzzParseToken checks that ParseToken never panics and accepts exactly
// the canonical spelling of 32 bytes.
func FuzzParseToken(f *testing.F) {
	f.Add(NewToken())
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	f.Add(strings.Repeat("_", 42) + "8")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParseToken(s)
		if err != nil {
			return
		}
		raw, derr := base64.RawURLEncoding.DecodeString(s)
		if derr != nil || len(raw) != 32 {
			t.Fatalf("accepted %q, which does not decode to 32 bytes", s)
		}
		if base64.RawURLEncoding.EncodeToString(raw) != s {
			t.Fatalf("accepted non-canonical %q", s)
		}
		if key != KeyOf(s) {
			t.Fatal("key is not SHA-256 of the token")
		}
	})
}

// FuzzReadCookie checks that the cookie header scan never panics and
// agrees with net/http's parser on well-formed headers.
func FuzzReadCookie(f *testing.F) {
	f.Add("__Host-hallpass=abc")
	f.Add("a=b; __Host-hallpass=x; __Host-hallpass=y")
	f.Add(";;;=;__Host-hallpass")
	f.Add("__Host-hallpass =v ; q=\"w\"")
	f.Fuzz(func(t *testing.T, line string) {
		h := map[string][]string{"Cookie": {line}}
		v, n := ReadCookie(h, "__Host-hallpass")
		if n == 0 && v != "" {
			t.Fatalf("no cookie counted but value %q", v)
		}
		if n > 0 && !strings.Contains(line, v) {
			t.Fatalf("value %q is not part of the header", v)
		}
	})
}
