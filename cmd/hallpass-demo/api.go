package main

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/token"
)

// The API for clients that are not browsers: they sign in with a
// password for an access token and a refresh token, call with the access
// token as a Bearer header, refresh before it expires, and revoke their
// own pair at sign-out. Cookies play no part, so CSRF does not apply.

// apiRoutes adds the API to mux.
func (a *app) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/token", a.apiToken)
	mux.Handle("POST /api/token/refresh", a.tokens.RefreshHandler())
	mux.Handle("POST /api/token/revoke", a.tokens.Require(http.HandlerFunc(a.apiRevoke)))
	mux.Handle("GET /api/me", a.tokens.Require(http.HandlerFunc(a.apiMe)))
	mux.Handle("GET /.well-known/jwks.json", a.tokens.JWKSHandler())
}

// newTokens makes the token issuer. Its signing key is kept in the
// database, so tokens survive a restart and every instance on the same
// database verifies them.
func newTokens(a *app, seed []byte, st hallpass.Store, rev *hallpass.Revocations, accessTTL time.Duration, now func() time.Time) (*token.Issuer, error) {
	return token.New(token.Config{
		Issuer:      "hallpass-demo",
		Audience:    "hallpass-demo",
		Keys:        []token.Key{{ID: "demo-1", Private: ed25519.NewKeyFromSeed(seed)}},
		Store:       st,
		Revocations: rev,
		AccessTTL:   accessTTL,
		Events:      a.sessions.Events(),
		ClientIP:    a.sessions.ClientIP,
		Now:         now,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type apiError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// apiToken handles POST /api/token: username and password (form fields),
// and for a user with two-step verification a current code (form field
// code), for a token pair, within the login throttles.
func (a *app) apiToken(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	u, wait, err := a.checkPassword(r, strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password"))
	switch {
	case err != nil:
		a.log.ErrorContext(r.Context(), "api token", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "temporarily_unavailable"})
		return
	case wait > 0:
		retryAfter(w, wait)
		writeJSON(w, http.StatusTooManyRequests, apiError{Error: "slow_down", Description: tooManyAttempts(wait)})
		return
	case u == nil:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_grant", Description: loginFailed})
		return
	}
	if u.MFASecret != "" {
		ok, wait, err := a.checkCode(r, u, r.PostFormValue("code"))
		switch {
		case err != nil:
			a.log.ErrorContext(r.Context(), "api token", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "temporarily_unavailable"})
			return
		case wait > 0:
			retryAfter(w, wait)
			writeJSON(w, http.StatusTooManyRequests, apiError{Error: "slow_down", Description: tooManyAttempts(wait)})
			return
		case !ok:
			writeJSON(w, http.StatusBadRequest, apiError{Error: "invalid_grant", Description: "two-step verification code required or wrong"})
			return
		}
	}
	pair, err := a.tokens.IssueForUser(r.Context(), strconv.FormatInt(u.ID, 10))
	if err != nil {
		a.log.ErrorContext(r.Context(), "api token", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "temporarily_unavailable"})
		return
	}
	a.tokens.WritePair(w, pair)
}

// apiRevoke handles POST /api/token/revoke: the client signs out, and its
// refresh token family and access token stop working on every instance.
func (a *app) apiRevoke(w http.ResponseWriter, r *http.Request) {
	c := token.FromContext(r.Context())
	if err := a.tokens.RevokeHandle(r.Context(), c.Handle); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "temporarily_unavailable"})
		return
	}
	if err := a.tokens.Revoke(r.Context(), c); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "temporarily_unavailable"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// apiMe handles GET /api/me.
func (a *app) apiMe(w http.ResponseWriter, r *http.Request) {
	c := token.FromContext(r.Context())
	id, err := strconv.ParseInt(c.UserID, 10, 64)
	var name string
	if err == nil {
		if u, err := a.users.ByID(r.Context(), id); err == nil && u != nil {
			name = u.Username
		}
	}
	if name == "" { // the account is gone
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "invalid_token"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": c.UserID, "username": name, "expires": c.ExpiresAt})
}
