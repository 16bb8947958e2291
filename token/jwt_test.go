package token

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// craft signs any header and payload with k, as an attacker holding the
// key (or a buggy issuer) could: the parser must refuse every spelling
// but its own even when the signature is good.
func craft(k *key, header, payload string) string {
	msg := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	return msg + "." + b64.EncodeToString(k.sign(nil, []byte(msg)))
}

func parts(t *testing.T, tok string) (header, payload string, sig []byte) {
	t.Helper()
	p := strings.Split(tok, ".")
	if len(p) != 3 {
		t.Fatalf("token has %d parts", len(p))
	}
	h, err1 := b64.DecodeString(p[0])
	pl, err2 := b64.DecodeString(p[1])
	s, err3 := b64.DecodeString(p[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	return string(h), string(pl), s
}

func TestIssueAndVerify(t *testing.T) {
	in, clock := single(t, nil)
	now := clock.Now()
	p := issue(t, in.is, "alice")
	c, err := in.is.Verify(p.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "alice" || c.Handle != p.Handle || c.Issuer != "https://issuer.example" || c.Audience != "https://api.example" || c.ID == "" || !c.Stamp.IsZero() {
		t.Errorf("claims %+v", c)
	}
	ttl := DefaultAccessTTL
	if lo, hi := now.Add(ttl-ttl/10-time.Second), now.Add(ttl); c.ExpiresAt.Before(lo) || c.ExpiresAt.After(hi) || !c.ExpiresAt.Equal(p.AccessExpires) {
		t.Errorf("expires %v, want within [%v, %v] and equal to the pair's %v", c.ExpiresAt, lo, hi, p.AccessExpires)
	}
	header, payload, sig := parts(t, p.AccessToken)
	if want := `{"alg":"EdDSA","kid":"test-1","typ":"at+jwt"}`; header != want {
		t.Errorf("header %s, want %s", header, want)
	}
	if len(sig) != ed25519.SignatureSize {
		t.Errorf("signature of %d bytes", len(sig))
	}
	// Any JWT library must read the claims: decode with encoding/json.
	var std map[string]any
	if err := json.Unmarshal([]byte(payload), &std); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "stamp"} {
		if _, ok := std[k]; !ok {
			t.Errorf("claim %s missing from %s", k, payload)
		}
	}
	if !strings.HasPrefix(p.RefreshToken, refreshPrefix) || parseRefresh(p.RefreshToken) != nil {
		t.Error("the refresh token is not one parseRefresh accepts")
	}
}

// TestLifetimeJitter checks that lifetimes are shortened at random, by at
// most a tenth, so that clients do not refresh in lockstep.
func TestLifetimeJitter(t *testing.T) {
	in, clock := single(t, nil)
	seen := map[time.Time]bool{}
	for range 50 {
		p := issue(t, in.is, "alice")
		seen[p.AccessExpires] = true
		lo := clock.Now().Add(DefaultRefreshTTL - DefaultRefreshTTL/10)
		if p.RefreshExpires.Before(lo) || p.RefreshExpires.After(clock.Now().Add(DefaultRefreshTTL)) {
			t.Fatalf("refresh expiry %v outside [%v, now+TTL]", p.RefreshExpires, lo)
		}
	}
	if len(seen) < 10 {
		t.Errorf("50 tokens issued at once have %d distinct expiries", len(seen))
	}
}

// TestTamperedByte flips every bit of every byte of a token: header,
// payload, signature and separators. Each must be refused.
func TestTamperedByte(t *testing.T) {
	for _, alg := range []string{"EdDSA", "HS256"} {
		t.Run(alg, func(t *testing.T) {
			in, _ := single(t, func(c *Config) {
				if alg == "HS256" {
					c.Keys = []Key{{ID: "hs", Secret: bytes.Repeat([]byte{7}, 32)}}
				}
			})
			tok := issue(t, in.is, "alice").AccessToken
			if _, err := in.is.Verify(tok); err != nil {
				t.Fatal(err)
			}
			b := []byte(tok)
			for i := range b {
				for bit := range 8 {
					b[i] ^= 1 << bit
					if _, err := in.is.Verify(string(b)); err == nil {
						t.Fatalf("byte %d (of %d) with bit %d flipped is accepted", i, len(b), bit)
					}
					b[i] ^= 1 << bit
				}
			}
		})
	}
}

func TestRefusedHeaders(t *testing.T) {
	in, _ := single(t, nil)
	k := in.is.signer
	tok := issue(t, in.is, "alice").AccessToken
	_, payload, _ := parts(t, tok)
	good := `{"alg":"EdDSA","kid":"test-1","typ":"at+jwt"}`
	if _, err := in.is.Verify(craft(k, good, payload)); err != nil {
		t.Fatalf("the test's own spelling is refused: %v", err)
	}
	for _, tc := range []struct{ name, header string }{
		{"alg none", `{"alg":"none","kid":"test-1","typ":"at+jwt"}`},
		{"alg None", `{"alg":"None","kid":"test-1","typ":"at+jwt"}`},
		{"no alg", `{"kid":"test-1","typ":"at+jwt"}`},
		{"alg RS256", `{"alg":"RS256","kid":"test-1","typ":"at+jwt"}`},
		{"typ JWT", `{"alg":"EdDSA","kid":"test-1","typ":"JWT"}`},
		{"no typ", `{"alg":"EdDSA","kid":"test-1"}`},
		{"unknown kid", `{"alg":"EdDSA","kid":"test-2","typ":"at+jwt"}`},
		{"no kid", `{"alg":"EdDSA","typ":"at+jwt"}`},
		{"other order", `{"kid":"test-1","alg":"EdDSA","typ":"at+jwt"}`},
		{"whitespace", `{"alg": "EdDSA","kid":"test-1","typ":"at+jwt"}`},
		{"duplicate alg", `{"alg":"none","alg":"EdDSA","kid":"test-1","typ":"at+jwt"}`},
		{"extra field", `{"alg":"EdDSA","kid":"test-1","typ":"at+jwt","jku":"https://evil.example/keys"}`},
		{"escaped", `{"alg":"Ed\u0044SA","kid":"test-1","typ":"at+jwt"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := in.is.Verify(craft(k, tc.header, payload))
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
	// alg none with an empty signature, as attacks send it.
	none := b64.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + b64.EncodeToString([]byte(payload)) + "."
	if _, err := in.is.Verify(none); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "none") {
		t.Errorf("unsigned token: %v", err)
	}
}

// TestAlgorithmConfusion signs a token with HS256 keyed by the Ed25519
// public key (which is published) and the other way round.
func TestAlgorithmConfusion(t *testing.T) {
	ed, _ := single(t, nil)
	tok := issue(t, ed.is, "alice").AccessToken
	_, payload, _ := parts(t, tok)
	pub := testKey.Private.Public().(ed25519.PublicKey)
	for _, secret := range [][]byte{pub, []byte(b64.EncodeToString(pub)), ed.is.jwks} {
		msg := b64.EncodeToString([]byte(`{"alg":"HS256","kid":"test-1","typ":"at+jwt"}`)) + "." + b64.EncodeToString([]byte(payload))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(msg))
		forged := msg + "." + b64.EncodeToString(mac.Sum(nil))
		if _, err := ed.is.Verify(forged); !errors.Is(err, ErrMalformed) {
			t.Errorf("HS256 keyed with public material accepted by an EdDSA verifier: %v", err)
		}
	}

	secret := bytes.Repeat([]byte{9}, 32)
	hs, _ := single(t, func(c *Config) { c.Keys = []Key{{ID: "hs-1", Secret: secret}} })
	_, payload, _ = parts(t, issue(t, hs.is, "alice").AccessToken)
	seed := sha256.Sum256(secret) // any Ed25519 key an attacker might derive
	forged := craft(&key{alg: "EdDSA", priv: ed25519.NewKeyFromSeed(seed[:])}, `{"alg":"EdDSA","kid":"hs-1","typ":"at+jwt"}`, payload)
	if _, err := hs.is.Verify(forged); !errors.Is(err, ErrMalformed) {
		t.Errorf("EdDSA token accepted by an HS256 verifier: %v", err)
	}
	// An HS256 token of the HS256 issuer is of course not valid on the
	// EdDSA one, even with the same kid and claims.
	if _, err := ed.is.Verify(issue(t, hs.is, "alice").AccessToken); err == nil {
		t.Error("EdDSA issuer accepts an HS256 token")
	}
}

// TestRespelled re-spells a valid token in ways lenient decoders accept:
// the same signed bytes must not come back as another string.
func TestRespelled(t *testing.T) {
	in, _ := single(t, nil)
	tok := issue(t, in.is, "alice").AccessToken
	p := strings.Split(tok, ".")
	sig, _ := b64.DecodeString(p[2])
	// The last character of an 86-character signature carries 4 unused
	// bits; a non-strict decoder ignores them.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", p[2][85])
	loose := p[2][:85] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])
	if got, _ := base64.RawURLEncoding.DecodeString(loose); !bytes.Equal(got, sig) {
		t.Fatal("the loose spelling does not decode to the same signature; the test proves nothing")
	}
	std := base64.StdEncoding.EncodeToString(sig)
	for _, tc := range []struct{ name, tok string }{
		{"padded signature", p[0] + "." + p[1] + "." + p[2] + "=="},
		{"trailing bits", p[0] + "." + p[1] + "." + loose},
		{"standard alphabet", p[0] + "." + p[1] + "." + strings.TrimRight(std, "=")},
		{"newline in payload", p[0] + "." + p[1][:10] + "\n" + p[1][10:] + "." + p[2]},
		{"newline in signature", p[0] + "." + p[1] + "." + p[2][:10] + "\r\n" + p[2][10:]},
		{"padded payload", p[0] + "." + p[1] + "=" + "." + p[2]},
		{"trailing dot", tok + "."},
		{"four parts", p[0] + "." + p[1] + "." + p[1] + "." + p[2]},
		{"space", " " + tok},
	} {
		if strings.Contains(std, "+") || strings.Contains(std, "/") || tc.name != "standard alphabet" {
			if _, err := in.is.Verify(tc.tok); err == nil {
				t.Errorf("%s: accepted", tc.name)
			}
		}
	}
}

// TestRefusedClaims signs payloads in other spellings with the real key.
func TestRefusedClaims(t *testing.T) {
	in, clock := single(t, nil)
	k := in.is.signer
	now := clock.Now().Unix()
	header := `{"alg":"EdDSA","kid":"test-1","typ":"at+jwt"}`
	base := claims{iss: in.is.iss, sub: "alice", aud: in.is.aud, exp: now + 60, nbf: now, iat: now, jti: "j1", sid: "h1"}
	spell := func(c claims) string { return string(appendClaims(nil, &c)) }
	if _, err := in.is.Verify(craft(k, header, spell(base))); err != nil {
		t.Fatalf("the test's own claims are refused: %v", err)
	}
	with := func(f func(*claims)) string { c := base; f(&c); return spell(c) }
	good := spell(base)
	for _, tc := range []struct {
		name, payload string
		want          error
	}{
		{"duplicate sub", strings.Replace(good, `"sub":"alice"`, `"sub":"alice","sub":"bob"`, 1), ErrMalformed},
		{"whitespace", strings.Replace(good, `"sub":"alice"`, `"sub": "alice"`, 1), ErrMalformed},
		{"reordered", `{"sub":"alice"` + strings.Replace(good[1:], `"sub":"alice",`, "", 1), ErrMalformed},
		{"extra claim", strings.TrimSuffix(good, "}") + `,"admin":true}`, ErrMalformed},
		{"escaped letter", strings.Replace(good, `"sub":"alice"`, `"sub":"\u0061lice"`, 1), ErrMalformed},
		{"float exp", strings.Replace(good, `"exp":`, `"exp":1e0*`, 1), ErrMalformed},
		{"leading zero", strings.Replace(good, `"exp":`, `"exp":0`, 1), ErrMalformed},
		{"negative stamp", strings.Replace(good, `"stamp":0`, `"stamp":-1`, 1), ErrMalformed},
		{"string exp", strings.Replace(good, `"exp":`+itoa(base.exp), `"exp":"`+itoa(base.exp)+`"`, 1), ErrMalformed},
		{"empty jti", with(func(c *claims) { c.jti = "" }), ErrMalformed},
		{"wrong issuer", with(func(c *claims) { c.iss = "https://evil.example" }), ErrClaims},
		{"wrong audience", with(func(c *claims) { c.aud = "https://other-api.example" }), ErrClaims},
		{"expired", with(func(c *claims) { c.exp = now }), ErrExpired},
		{"iat in the future", with(func(c *claims) { c.iat = now + 60 }), ErrClaims},
		{"nbf in the future", with(func(c *claims) { c.nbf = now + 60 }), ErrClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := in.is.Verify(craft(k, header, tc.payload))
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Within the leeway, a clock a little ahead is forgiven.
	if _, err := in.is.Verify(craft(k, header, with(func(c *claims) { c.iat, c.nbf = now+5, now+5 }))); err != nil {
		t.Errorf("iat 5 s ahead (leeway 10 s): %v", err)
	}
	// Strings with quotes and backslashes survive the round trip.
	odd := with(func(c *claims) { c.sub = `a"b\c` })
	if c, err := in.is.Verify(craft(k, header, odd)); err != nil || c.UserID != `a"b\c` {
		t.Errorf("escaped user id: %q, %v", c.UserID, err)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestExpiredAndWrongAudience(t *testing.T) {
	in, clock := single(t, nil)
	p := issue(t, in.is, "alice")
	other, err := New(Config{Issuer: in.is.iss, Audience: "https://other-api.example", Keys: []Key{testKey}, Revocations: in.rev, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Verify(p.AccessToken); !errors.Is(err, ErrClaims) {
		t.Errorf("another audience's verifier: %v, want ErrClaims", err)
	}
	clock.Add(p.AccessExpires.Sub(clock.Now()) - time.Millisecond)
	if _, err := in.is.Verify(p.AccessToken); err != nil {
		t.Errorf("just before expiry: %v", err)
	}
	clock.Add(time.Millisecond)
	if _, err := in.is.Verify(p.AccessToken); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v, want ErrExpired", err)
	}
}

func TestKeyRotation(t *testing.T) {
	old, clock := single(t, nil)
	tok := issue(t, old.is, "alice").AccessToken
	next := NewKey("test-2")
	verifier := Key{ID: "test-1", Public: testKey.Private.Public().(ed25519.PublicKey)}
	rotated, err := New(Config{Issuer: old.is.iss, Audience: old.is.aud, Keys: []Key{next, verifier}, Store: old.store, Revocations: old.rev, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Verify(tok); err != nil {
		t.Errorf("a token of the retired key: %v", err)
	}
	newTok := issue(t, rotated, "alice").AccessToken
	if h, _, _ := parts(t, newTok); !strings.Contains(h, `"kid":"test-2"`) {
		t.Errorf("the new key does not sign: header %s", h)
	}
	if _, err := old.is.Verify(newTok); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "unknown key") {
		t.Errorf("an instance without the new key: %v, want an unknown key error", err)
	}
	var set struct{ Keys []map[string]string }
	if err := json.Unmarshal(rotated.jwks, &set); err != nil || len(set.Keys) != 2 || set.Keys[0]["kid"] != "test-2" || set.Keys[1]["kid"] != "test-1" {
		t.Errorf("key set %s", rotated.jwks)
	}
	verifyOnly, err := New(Config{Issuer: old.is.iss, Audience: old.is.aud, Keys: []Key{verifier}, Revocations: old.rev, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyOnly.Verify(tok); err != nil {
		t.Errorf("verify-only Issuer: %v", err)
	}
	if _, err := verifyOnly.IssueForUser(context.Background(), "alice"); err == nil {
		t.Error("a verify-only Issuer issued tokens")
	}
}

// TestStampSameMillisecond revokes a user and signs in again within the
// same millisecond (and second): the new token must be valid, every
// older one not.
func TestStampSameMillisecond(t *testing.T) {
	in, _ := single(t, nil)
	before := issue(t, in.is, "alice")
	if err := in.is.RevokeUser(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	after := issue(t, in.is, "alice")
	if _, err := in.is.Verify(before.AccessToken); !errors.Is(err, ErrRevoked) {
		t.Errorf("token from before the cutoff: %v, want ErrRevoked", err)
	}
	c, err := in.is.Verify(after.AccessToken)
	if err != nil {
		t.Fatalf("token issued in the same instant after the cutoff: %v", err)
	}
	if !c.Stamp.Equal(in.rev.Cutoff("alice")) {
		t.Errorf("stamp %v, want the cutoff %v", c.Stamp, in.rev.Cutoff("alice"))
	}
}

func TestRevokeOneToken(t *testing.T) {
	in, _ := single(t, nil)
	a, b := issue(t, in.is, "alice"), issue(t, in.is, "alice")
	c, err := in.is.Verify(a.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.is.Revoke(context.Background(), &c); err != nil {
		t.Fatal(err)
	}
	if _, err := in.is.Verify(a.AccessToken); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked token: %v", err)
	}
	if _, err := in.is.Verify(b.AccessToken); err != nil {
		t.Errorf("another token of the user: %v", err)
	}
	if _, err := in.is.Refresh(context.Background(), a.RefreshToken); err != nil {
		t.Errorf("revoking one access token ended its refresh token: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	clock := storetest.NewClock(start())
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	rev, err := hallpass.NewRevocations(t.Context(), s, &hallpass.RevocationOptions{Retain: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer rev.Close()
	ok := Config{Issuer: "i", Audience: "a", Keys: []Key{testKey}, Store: s, Revocations: rev, RefreshTTL: time.Hour}
	if _, err := New(ok); err != nil {
		t.Fatalf("a good Config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"Retain shorter than the access TTL", func(c *Config) { c.AccessTTL = 2 * time.Hour }, "Retain"},
		{"Retain shorter than the refresh TTL", func(c *Config) { c.RefreshTTL = 2 * time.Hour }, "Retain"},
		{"no Revocations", func(c *Config) { c.Revocations = nil }, "Revocations"},
		{"no issuer", func(c *Config) { c.Issuer = "" }, "Issuer"},
		{"no audience", func(c *Config) { c.Audience = "" }, "Audience"},
		{"no keys", func(c *Config) { c.Keys = nil }, "Keys"},
		{"bad kid", func(c *Config) { c.Keys = []Key{{ID: "a b", Private: testKey.Private}} }, "ID"},
		{"duplicate kid", func(c *Config) { c.Keys = []Key{testKey, testKey} }, "twice"},
		{"two kinds", func(c *Config) { c.Keys = []Key{{ID: "x", Private: testKey.Private, Secret: make([]byte, 32)}} }, "exactly one"},
		{"short secret", func(c *Config) { c.Keys = []Key{{ID: "x", Secret: make([]byte, 16)}} }, "32"},
		{"short private key", func(c *Config) { c.Keys = []Key{{ID: "x", Private: testKey.Private[:32]}} }, "private key"},
		{"corrupt private key", func(c *Config) {
			bad := bytes.Clone(testKey.Private)
			bad[40] ^= 1
			c.Keys = []Key{{ID: "x", Private: bad}}
		}, "corrupt"},
		{"negative TTL", func(c *Config) { c.AccessTTL = -time.Second }, "negative"},
		{"grace as long as the refresh TTL", func(c *Config) { c.RefreshGrace = time.Hour }, "RefreshGrace"},
	} {
		c := ok
		tc.mod(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	// Without a Store, the refresh lifetime does not matter.
	c := ok
	c.Store, c.RefreshTTL = nil, 0
	if _, err := New(c); err != nil {
		t.Errorf("verify-only Config with a short Retain: %v", err)
	}
}

func TestHS256(t *testing.T) {
	in, _ := single(t, func(c *Config) { c.Keys = []Key{{ID: "hs", Secret: bytes.Repeat([]byte{1}, 32)}} })
	p := issue(t, in.is, "alice")
	if h, _, sig := parts(t, p.AccessToken); h != `{"alg":"HS256","kid":"hs","typ":"at+jwt"}` || len(sig) != 32 {
		t.Errorf("header %s, signature of %d bytes", h, len(sig))
	}
	if _, err := in.is.Verify(p.AccessToken); err != nil {
		t.Fatal(err)
	}
	if string(in.is.jwks) != `{"keys":[]}` {
		t.Errorf("an HS256 secret is published: %s", in.is.jwks)
	}
}
