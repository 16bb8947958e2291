package token_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/token"
)

// A mobile app signs in, calls the API with its access token, refreshes,
// and is signed out.
func Example() {
	ctx := context.Background()
	store := memstore.New(nil) // the sessions' store: Redis or PostgreSQL with many instances
	defer store.Close()
	revocations, err := hallpass.NewRevocations(ctx, store, nil) // also in hallpass.Config.Revocations
	if err != nil {
		log.Fatal(err)
	}
	defer revocations.Close()
	tokens, err := token.New(token.Config{
		Issuer:      "https://api.example.com",
		Audience:    "https://api.example.com",
		Keys:        []token.Key{token.NewKey("2026-03")}, // load it from your secrets in production
		Store:       store,
		Revocations: revocations,
		Events:      hallpass.SinkFunc(func(context.Context, hallpass.Event) {}),
	})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("POST /oauth/token", tokens.RefreshHandler())
	mux.Handle("GET /.well-known/jwks.json", tokens.JWKSHandler())
	mux.Handle("GET /api/me", tokens.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", token.FromContext(r.Context()).UserID)
	})))
	mux.HandleFunc("POST /api/logout", func(w http.ResponseWriter, r *http.Request) {
		// Behind tokens.Require in a real app; here the handle comes from
		// the access token's claims.
		c, err := tokens.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err == nil {
			err = tokens.RevokeHandle(r.Context(), c.Handle)
		}
		if err != nil {
			http.Error(w, "not signed in", http.StatusUnauthorized)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Sign-in, after the password was checked.
	pair, err := tokens.IssueForUser(ctx, "alice")
	if err != nil {
		log.Fatal(err)
	}

	call := func(method, path, accessToken string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+accessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	fmt.Println(call("GET", "/api/me", pair.AccessToken))

	// Shortly before the access token expires: refresh, keep both new tokens.
	resp, err := http.PostForm(srv.URL+"/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {pair.RefreshToken}})
	if err != nil {
		log.Fatal(err)
	}
	var refreshed struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		RefreshToken string `json:"refresh_token"`
	}
	json.NewDecoder(resp.Body).Decode(&refreshed)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, refreshed.TokenType, refreshed.RefreshToken != pair.RefreshToken)

	// Sign out this device: both tokens stop working on every instance.
	call("POST", "/api/logout", refreshed.AccessToken)
	status, _ := call("GET", "/api/me", refreshed.AccessToken)
	fmt.Println(status)
	_, err = tokens.Refresh(ctx, refreshed.RefreshToken)
	fmt.Println(err)
	// Output:
	// 200 hello alice
	// 200 Bearer true
	// 401
	// token: revoked; sign in again: the user or the device was signed out
}
