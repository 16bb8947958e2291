package token

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkVerify verifies an access token, revocation check included,
// against a list holding 1000 revoked ids and 1000 user cutoffs.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"EdDSA", "HS256"} {
		b.Run(alg, func(b *testing.B) {
			in, clock := single(b, func(c *Config) {
				if alg == "HS256" {
					c.Keys = []Key{{ID: "hs", Secret: bytes.Repeat([]byte{3}, 32)}}
				}
			})
			ctx := context.Background()
			for i := range 1000 {
				in.rev.RevokeID(ctx, "jti-"+strconv.Itoa(i), clock.Now().Add(time.Hour))
				in.rev.RevokeUser(ctx, "user-"+strconv.Itoa(i))
			}
			tok := issue(b, in.is, "alice").AccessToken
			b.ReportAllocs()
			for b.Loop() {
				if _, err := in.is.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIssue starts a token family: a signed access token and a
// refresh token written to a memstore.
func BenchmarkIssue(b *testing.B) {
	in, _ := single(b, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.is.IssueForUser(ctx, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign signs an access token alone.
func BenchmarkSign(b *testing.B) {
	in, clock := single(b, nil)
	now := clock.Now()
	b.ReportAllocs()
	for b.Loop() {
		in.is.accessToken("alice", "handle", 0, now)
	}
}

// BenchmarkRefresh rotates a refresh token on a memstore.
func BenchmarkRefresh(b *testing.B) {
	in, _ := single(b, nil)
	ctx := context.Background()
	rt := issue(b, in.is, "alice").RefreshToken
	b.ReportAllocs()
	for b.Loop() {
		p, err := in.is.Refresh(ctx, rt)
		if err != nil {
			b.Fatal(err)
		}
		rt = p.RefreshToken
	}
}
