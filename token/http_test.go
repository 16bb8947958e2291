package token

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

func TestRequire(t *testing.T) {
	in, clock := single(t, nil)
	p := issue(t, in.is, "alice")
	var seen *Claims
	h := in.is.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = FromContext(r.Context())
		io.WriteString(w, "hello "+seen.UserID)
	}))
	do := func(auth ...string) *httptest.ResponseRecorder {
		seen = nil
		r := httptest.NewRequest("GET", "/api", nil)
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	for _, auth := range []string{"Bearer " + p.AccessToken, "bearer " + p.AccessToken, "Bearer   " + p.AccessToken} {
		w := do(auth)
		if w.Code != 200 || seen == nil || seen.UserID != "alice" || seen.Handle != p.Handle {
			t.Errorf("%.10q: %d %s, claims %+v", auth, w.Code, w.Body, seen)
		}
	}

	check := func(name string, w *httptest.ResponseRecorder, status int, challenge, code string) {
		t.Helper()
		var body struct{ Error string }
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != status || w.Header().Get("WWW-Authenticate") != challenge && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), challenge+",") || body.Error != code || seen != nil {
			t.Errorf("%s: %d, WWW-Authenticate %q, body %s; want %d, %q, error %q", name, w.Code, w.Header().Get("WWW-Authenticate"), w.Body, status, challenge, code)
		}
		if strings.Contains(w.Body.String(), p.AccessToken[:40]) {
			t.Errorf("%s: the response quotes the token", name)
		}
	}
	check("no token", do(), 401, "Bearer", "invalid_token")
	check("basic auth", do("Basic YWxpY2U6cHc="), 401, "Bearer", "invalid_token")
	check("garbage", do("Bearer not-a-token"), 401, `Bearer error="invalid_token"`, "invalid_token")
	check("two headers", do("Bearer "+p.AccessToken, "Bearer "+p.AccessToken), 400, `Bearer error="invalid_request"`, "invalid_request")
	check("empty bearer", do("Bearer "), 400, `Bearer error="invalid_request"`, "invalid_request")
	// One character of the signature changed, to another that decodes
	// (a fixed replacement would sometimes be the same character).
	i := len(p.AccessToken) - 10
	swap := byte('A')
	if p.AccessToken[i] == swap {
		swap = 'B'
	}
	tampered := p.AccessToken[:i] + string(swap) + p.AccessToken[i+1:]
	check("tampered", do("Bearer "+tampered), 401, `Bearer error="invalid_token"`, "invalid_token")

	c, _ := in.is.Verify(p.AccessToken)
	in.is.Revoke(context.Background(), &c)
	w := do("Bearer " + p.AccessToken)
	check("revoked", w, 401, `Bearer error="invalid_token"`, "invalid_token")
	if !strings.Contains(w.Header().Get("WWW-Authenticate"), "revoked") {
		t.Errorf("revoked: challenge %q does not say so", w.Header().Get("WWW-Authenticate"))
	}

	p = issue(t, in.is, "alice")
	clock.Add(DefaultAccessTTL)
	w = do("Bearer " + p.AccessToken)
	check("expired", w, 401, `Bearer error="invalid_token"`, "invalid_token")
	if !strings.Contains(w.Header().Get("WWW-Authenticate"), "expired") {
		t.Errorf("expired: challenge %q does not say so", w.Header().Get("WWW-Authenticate"))
	}
	if FromContext(context.Background()) != nil {
		t.Error("FromContext of a bare context is not nil")
	}
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
}

func TestRefreshHandler(t *testing.T) {
	in, clock := single(t, nil)
	h := in.is.RefreshHandler()
	post := func(method, target, ctype, body string) (*httptest.ResponseRecorder, tokenResponse) {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		r.Header.Set("User-Agent", "TestApp/1.0")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var resp tokenResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Errorf("%s %s: body %q is not JSON", method, target, w.Body)
		}
		if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		return w, resp
	}

	p := issue(t, in.is, "alice")
	w, resp := post("POST", "/token", "application/json", `{"refresh_token":"`+p.RefreshToken+`"}`)
	if w.Code != 200 || resp.TokenType != "Bearer" || resp.RefreshToken == "" || resp.RefreshToken == p.RefreshToken || resp.AccessToken == "" {
		t.Fatalf("JSON refresh: %d %s", w.Code, w.Body)
	}
	if resp.ExpiresIn <= int64((DefaultAccessTTL*9/10)/time.Second)-2 || resp.ExpiresIn > int64(DefaultAccessTTL/time.Second) {
		t.Errorf("expires_in %d", resp.ExpiresIn)
	}
	if c, err := in.is.Verify(resp.AccessToken); err != nil || c.UserID != "alice" {
		t.Errorf("the answer's access token: %v", err)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {resp.RefreshToken}}.Encode()
	w, resp2 := post("POST", "/token", "application/x-www-form-urlencoded", form)
	if w.Code != 200 || resp2.RefreshToken == resp.RefreshToken {
		t.Fatalf("form refresh: %d %s", w.Code, w.Body)
	}
	if n := len(in.events.all()); n == 0 || in.events.all()[n-1].UserAgent != "TestApp/1.0" {
		t.Errorf("rotated event without the client: %+v", in.events.all())
	}

	for _, tc := range []struct {
		name, method, target, ctype, body string
		status                            int
		code                              string
	}{
		{"GET", "GET", "/token", "", "", 405, "invalid_request"},
		{"token in the URL", "POST", "/token?refresh_token=" + resp2.RefreshToken, "application/x-www-form-urlencoded", "", 400, "invalid_request"},
		{"no content type", "POST", "/token", "", `{"refresh_token":"x"}`, 400, "invalid_request"},
		{"text", "POST", "/token", "text/plain", resp2.RefreshToken, 400, "invalid_request"},
		{"bad JSON", "POST", "/token", "application/json", `{"refresh_token":`, 400, "invalid_request"},
		{"two JSON objects", "POST", "/token", "application/json", `{"refresh_token":"a"}{}`, 400, "invalid_request"},
		{"no token", "POST", "/token", "application/json", `{}`, 400, "invalid_request"},
		{"two form tokens", "POST", "/token", "application/x-www-form-urlencoded", "refresh_token=a&refresh_token=b", 400, "invalid_request"},
		{"huge body", "POST", "/token", "application/json", `{"refresh_token":"` + strings.Repeat("a", 10000) + `"}`, 400, "invalid_request"},
		{"other grant", "POST", "/token", "application/x-www-form-urlencoded", "grant_type=password&refresh_token=a", 400, "unsupported_grant_type"},
		{"malformed token", "POST", "/token", "application/json", `{"refresh_token":"hprt_short"}`, 400, "invalid_grant"},
		{"unknown token", "POST", "/token", "application/json", `{"refresh_token":"` + newRefreshToken() + `"}`, 400, "invalid_grant"},
		{"access token as refresh token", "POST", "/token", "application/json", `{"refresh_token":"` + resp2.AccessToken + `"}`, 400, "invalid_grant"},
	} {
		w, r := post(tc.method, tc.target, tc.ctype, tc.body)
		if w.Code != tc.status || r.Error != tc.code || r.Description == "" {
			t.Errorf("%s: %d %s, want %d %s", tc.name, w.Code, w.Body, tc.status, tc.code)
		}
		if strings.Contains(w.Body.String(), resp2.RefreshToken) {
			t.Errorf("%s: the answer quotes the token", tc.name)
		}
	}

	// Reuse after the grace window through the handler.
	clock.Add(DefaultRefreshGrace)
	w, r := post("POST", "/token", "application/json", `{"refresh_token":"`+p.RefreshToken+`"}`)
	if w.Code != 400 || r.Error != "invalid_grant" || !strings.Contains(r.Description, "revoked") {
		t.Errorf("reuse: %d %s", w.Code, w.Body)
	}
	if in.events.count(hallpass.EventSuspicious, hallpass.ReasonTokenReuse) != 1 {
		t.Error("no reuse event")
	}
}

// failing is a store that is down.
type failing struct{ hallpass.Store }

func (failing) Load(context.Context, hallpass.Key) (*hallpass.Record, error) {
	return nil, errors.New("connection refused")
}

func TestRefreshHandlerStoreDown(t *testing.T) {
	in, clock := single(t, nil)
	p := issue(t, in.is, "alice")
	down, err := New(Config{Issuer: in.is.iss, Audience: in.is.aud, Keys: []Key{testKey}, Store: failing{in.store}, Revocations: in.rev, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/token", strings.NewReader(`{"refresh_token":"`+p.RefreshToken+`"}`))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	down.RefreshHandler().ServeHTTP(w, r)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "temporarily_unavailable") {
		t.Errorf("store down: %d %s", w.Code, w.Body)
	}
	// The token was not spent: with the store back, it refreshes.
	refresh(t, in.is, p.RefreshToken)
}

func TestJWKSHandler(t *testing.T) {
	second := NewKey("test-2")
	in, _ := single(t, func(c *Config) {
		c.Keys = []Key{testKey, {ID: "hs", Secret: make([]byte, 32)}, {ID: "test-2", Public: second.Private.Public().(ed25519.PublicKey)}}
	})
	w := httptest.NewRecorder()
	in.is.JWKSHandler().ServeHTTP(w, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	var set struct {
		Keys []struct{ Kty, Crv, X, Kid, Alg, Use, D, K string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 {
		t.Fatalf("%d keys published, want the 2 Ed25519 ones: %s", len(set.Keys), w.Body)
	}
	for i, want := range []Key{testKey, second} {
		k := set.Keys[i]
		x, err := b64.DecodeString(k.X)
		if err != nil || k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" || k.Kid != want.ID ||
			!want.Private.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(x)) || k.D != "" || k.K != "" {
			t.Errorf("key %d: %+v", i, k)
		}
	}
	w = httptest.NewRecorder()
	in.is.JWKSHandler().ServeHTTP(w, httptest.NewRequest("POST", "/.well-known/jwks.json", nil))
	if w.Code != 405 {
		t.Errorf("POST: %d", w.Code)
	}
}

// TestPairHidesTokens: printing or logging a Pair leaves the tokens out.
func TestPairHidesTokens(t *testing.T) {
	in, _ := single(t, nil)
	p := issue(t, in.is, "alice")
	var b strings.Builder
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", p, *p, *p, *p), p.LogValue().String()} {
		b.WriteString(s)
	}
	if out := b.String(); strings.Contains(out, p.AccessToken) || strings.Contains(out, p.RefreshToken) || !strings.Contains(out, p.Handle) {
		t.Errorf("Pair prints as %s", out)
	}
}
