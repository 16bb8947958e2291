package token

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
)

type claimsKey struct{}

// FromContext returns the claims Require put in ctx, or nil.
func FromContext(ctx context.Context) *Claims {
	c, _ := ctx.Value(claimsKey{}).(*Claims)
	return c
}

// Require returns a handler that serves next only requests bearing a
// valid access token in the Authorization header (RFC 6750), with its
// claims in the request context (see FromContext). Other requests get
// 401 and a WWW-Authenticate challenge: with error="invalid_token" for a
// bad, expired or revoked token, and without an error for a request with
// no token, as RFC 6750 asks. A garbled header gets 400.
//
// Tokens in the URL or the body are not looked at: URLs end up in logs.
func (is *Issuer) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values("Authorization")
		if len(vals) == 0 {
			challenge(w, http.StatusUnauthorized, "", "")
			return
		}
		scheme, tok, _ := strings.Cut(vals[0], " ")
		if !strings.EqualFold(scheme, "Bearer") {
			challenge(w, http.StatusUnauthorized, "", "")
			return
		}
		tok = strings.TrimLeft(tok, " ")
		if len(vals) > 1 || tok == "" {
			challenge(w, http.StatusBadRequest, "invalid_request", "send one Authorization header: Bearer and the access token")
			return
		}
		c, err := is.Verify(tok)
		if err != nil {
			desc := "the access token is invalid"
			switch {
			case errors.Is(err, ErrExpired):
				desc = "the access token expired"
			case errors.Is(err, ErrRevoked):
				desc = "the access token was revoked"
			}
			challenge(w, http.StatusUnauthorized, "invalid_token", desc)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, &c)))
	})
}

// challenge answers a refused request for a protected resource. desc
// is one of the fixed texts above: no quote or backslash to escape.
func challenge(w http.ResponseWriter, status int, code, desc string) {
	h := w.Header()
	if code == "" {
		h.Set("WWW-Authenticate", "Bearer")
	} else {
		h.Set("WWW-Authenticate", `Bearer error="`+code+`", error_description="`+desc+`"`)
	}
	h.Set("Cache-Control", "no-store")
	writeJSON(w, status, oauthError{Error: cmp.Or(code, "invalid_token"), Description: cmp.Or(desc, "send an access token: Authorization: Bearer <token>")})
}

type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// maxRefreshBody bounds a refresh request's body.
const maxRefreshBody = 8 << 10

// RefreshHandler returns the token endpoint for refreshing (RFC 6749
// section 6): a POST whose body carries the refresh token, as JSON
// {"refresh_token": "..."} or as the form field refresh_token (with
// grant_type=refresh_token, optional). It answers
//
//	{"access_token": "...", "token_type": "Bearer", "expires_in": 540, "refresh_token": "..."}
//
// with Cache-Control: no-store. Refusals are JSON {"error", "error_description"}
// as RFC 6749 section 5.2 spells them: 400 invalid_request for a garbled
// request, 400 invalid_grant for a refresh token that is unknown,
// expired, revoked or reused (sign in again), 503
// temporarily_unavailable when the store fails (try again).
func (is *Issuer) RefreshHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		if r.Method != http.MethodPost {
			h.Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, oauthError{"invalid_request", "use POST"})
			return
		}
		if r.URL.Query().Has("refresh_token") {
			writeJSON(w, http.StatusBadRequest, oauthError{"invalid_request", "send the refresh token in the body, never in the URL"})
			return
		}
		rt, grant, msg := readRefreshRequest(w, r)
		switch {
		case msg != "":
			writeJSON(w, http.StatusBadRequest, oauthError{"invalid_request", msg})
			return
		case grant != "" && grant != "refresh_token":
			writeJSON(w, http.StatusBadRequest, oauthError{"unsupported_grant_type", "this endpoint only refreshes: grant_type=refresh_token"})
			return
		}
		p, err := is.refresh(r.Context(), rt, is.clientIP(r), r.UserAgent())
		switch {
		case err == nil:
		case errors.Is(err, hallpass.ErrStore):
			h.Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, oauthError{"temporarily_unavailable", "try again in a second"})
			return
		case errors.Is(err, ErrRevoked):
			writeJSON(w, http.StatusBadRequest, oauthError{"invalid_grant", "the refresh token was revoked; sign in again"})
			return
		case errors.Is(err, ErrRefresh), errors.Is(err, ErrMalformed):
			writeJSON(w, http.StatusBadRequest, oauthError{"invalid_grant", "the refresh token is unknown or expired; sign in again"})
			return
		default:
			writeJSON(w, http.StatusInternalServerError, oauthError{"server_error", "the server cannot refresh tokens"})
			return
		}
		is.WritePair(w, p)
	})
}

// WritePair answers with p as an OAuth 2.0 token response (RFC 6749
// section 5.1): {"access_token", "token_type": "Bearer", "expires_in",
// "refresh_token"}, uncacheable. RefreshHandler uses it; so can an app's
// own sign-in endpoint.
func (is *Issuer) WritePair(w http.ResponseWriter, p *Pair) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		ExpiresIn    int64  `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
	}{p.AccessToken, "Bearer", int64(p.AccessExpires.Sub(is.now()) / time.Second), p.RefreshToken})
}

// readRefreshRequest returns the refresh token and grant type of r, or a
// message saying what is wrong with the request.
func readRefreshRequest(w http.ResponseWriter, r *http.Request) (rt, grant, msg string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRefreshBody)
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return "", "", "set Content-Type to application/json or application/x-www-form-urlencoded"
	}
	switch mt {
	case "application/json":
		var body struct {
			RefreshToken *string `json:"refresh_token"`
			GrantType    string  `json:"grant_type"`
		}
		d := json.NewDecoder(r.Body)
		if err := d.Decode(&body); err != nil || d.More() {
			return "", "", "the body is not one JSON object of at most " + strconv.Itoa(maxRefreshBody) + " bytes"
		}
		if body.RefreshToken == nil || *body.RefreshToken == "" {
			return "", "", "the body has no refresh_token"
		}
		return *body.RefreshToken, body.GrantType, ""
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return "", "", "the body is not a form of at most " + strconv.Itoa(maxRefreshBody) + " bytes"
		}
		vals := r.PostForm["refresh_token"]
		if len(vals) != 1 || vals[0] == "" {
			return "", "", "send exactly one refresh_token field"
		}
		return vals[0], r.PostForm.Get("grant_type"), ""
	}
	return "", "", "set Content-Type to application/json or application/x-www-form-urlencoded"
}

// JWKSHandler returns a handler serving the public keys as a JSON Web Key
// Set (RFC 7517; Ed25519 as OKP, RFC 8037), for verifiers elsewhere.
// HS256 secrets are never published. Clients may cache it for five
// minutes: add a new key to Config.Keys (not first) at least that long
// before it starts signing.
func (is *Issuer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(is.jwks)
	})
}
