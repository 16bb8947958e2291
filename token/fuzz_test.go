package token

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// fuzzIssuer has a fixed key and clock, so that the valid tokens in
// testdata/fuzz stay valid.
func fuzzIssuer(f *testing.F) *Issuer {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	f.Cleanup(func() { s.Close() })
	return newInstance(f, s, clock, time.Hour, func(c *Config) {
		c.Keys = []Key{{ID: "fuzz", Private: ed25519.NewKeyFromSeed(seed)}}
	}).is
}

// FuzzParse feeds the access token parser. Whatever it accepts must be
// exactly what the Issuer would write for those claims: one spelling per
// token. The same input is also tried as a bare payload.
func FuzzParse(f *testing.F) {
	is := fuzzIssuer(f)
	p, err := is.IssueForUser(context.Background(), `al"ice\`)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.AccessToken)
	parts := strings.Split(p.AccessToken, ".")
	payload, _ := b64.DecodeString(parts[1])
	f.Add(string(payload))
	header, _ := b64.DecodeString(parts[0])
	f.Add(string(header))
	f.Add(b64.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + ".")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := is.Verify(s)
		if err == nil {
			again := claims{iss: c.Issuer, sub: c.UserID, aud: c.Audience, exp: c.ExpiresAt.Unix(),
				nbf: c.IssuedAt.Unix(), iat: c.IssuedAt.Unix(), jti: c.ID, sid: c.Handle, stamp: cutoffMillis(c.Stamp)}
			if is.signer.token(&again) != s {
				t.Fatalf("accepted a token the issuer does not spell that way: %q", s)
			}
		}
		if pc, ok := parseClaims(s); ok {
			if string(appendClaims(nil, &pc)) != s {
				t.Fatalf("claims parse but do not round-trip: %q", s)
			}
		}
	})
}

// FuzzRefreshToken feeds the refresh token parser and Refresh. Whatever
// the parser accepts must be the one spelling of its bytes.
func FuzzRefreshToken(f *testing.F) {
	is := fuzzIssuer(f)
	p, err := is.IssueForUser(context.Background(), "alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.RefreshToken)
	f.Add(p.RefreshToken + "=")
	f.Add(strings.TrimPrefix(p.RefreshToken, refreshPrefix))
	f.Fuzz(func(t *testing.T, s string) {
		if parseRefresh(s) == nil {
			raw, err := b64.DecodeString(s[len(refreshPrefix):])
			if err != nil || refreshPrefix+b64.EncodeToString(raw) != s {
				t.Fatalf("accepted a second spelling: %q", s)
			}
		}
		if _, err := is.Refresh(context.Background(), s); err == nil && s != p.RefreshToken {
			t.Fatalf("refreshed a token never issued: %q", s)
		}
	})
}
