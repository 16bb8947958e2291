// Package token issues access and refresh tokens for APIs and mobile
// apps, next to hallpass's cookie sessions.
//
// An access token is a short-lived JWT (EdDSA by default, HS256 as an
// option) that any instance verifies without asking the store; a refresh
// token is an opaque secret, kept hashed in the hallpass.Store, that is
// exchanged for a new pair and rotated at every use.
//
// # The flow
//
// Set up one Issuer per process, next to the hallpass.Manager:
//
//	iss, err := token.New(token.Config{
//		Issuer:      "https://api.example.com",
//		Audience:    "https://api.example.com",
//		Keys:        []token.Key{token.NewKey("2026-03")},
//		Store:       store,       // the sessions' store
//		Revocations: revocations, // shared with hallpass.Config.Revocations
//	})
//	mux.Handle("POST /oauth/token", iss.RefreshHandler())
//	mux.Handle("GET /.well-known/jwks.json", iss.JWKSHandler())
//	mux.Handle("/api/", iss.Require(api)) // token.FromContext(r.Context()) in api
//
// Then a client goes through four steps:
//
//  1. Sign-in. After checking the password, the app calls
//     IssueForUser(ctx, userID) (a native sign-in form) or
//     IssueForSession(ctx, s) (a signed-in hallpass session handing
//     tokens to a client) and sends the client the Pair.
//  2. Calls. The client sends "Authorization: Bearer <access token>".
//     Require verifies it locally and puts the Claims in the context;
//     a refused token gets 401 with WWW-Authenticate: Bearer
//     error="invalid_token".
//  3. Refresh. Refreshing in time is the client's job: shortly before
//     the access token expires (Pair.AccessExpires, or expires_in; a
//     minute before is plenty), or on a 401, the client POSTs its refresh
//     token to RefreshHandler and replaces both tokens with the answer.
//     Each refresh token is good for one refresh: keep only the newest.
//     Requests sent in parallel with the same refresh token within
//     Config.RefreshGrace all get the same new one.
//  4. Sign-out. The app calls RevokeHandle with Claims.Handle (this
//     device), RevokeUser or hallpass.Manager.RevokeAll (every device),
//     or Revoke (this one access token). Every instance refuses the
//     tokens at once when the store broadcasts (hallpass.Broadcaster),
//     within the Revocations' poll interval otherwise.
//
// # Threat model
//
// Access tokens are bearer tokens: whoever holds one is the user until it
// expires, so they live minutes, are sent only in the Authorization
// header (never a URL), and carry no secret. Verification is local, yet
// revocation is immediate: the hallpass.Revocations list, in memory on
// every instance and shared through the store, holds per-user cutoffs
// and revoked token ids and handles, each only until what it revokes
// would have expired. A token carries the user's cutoff as it was when
// its family began (the stamp claim, in milliseconds), so a token issued
// right after a password change is not mistaken for an older one, and
// anything issued before a later cutoff is refused.
//
// The parser accepts exactly one spelling of each token: the header this
// Issuer writes for the key (so alg none, another algorithm for a key,
// HS256 keyed with an Ed25519 public key, a wrong typ or an unknown kid
// are all refused), claims in a fixed order (so no duplicate keys),
// canonical base64url and signatures of their exact length. A token
// refused or revoked cannot come back re-spelled.
//
// Refresh tokens are the long-lived secret. The store holds only hashes
// of them; a rotated-out token's successor is kept sealed with a key
// derived from the old token, which the store does not have. A refresh
// token used after its successor took over and the grace window closed
// is proof that two parties hold it: the whole family (every token
// descended from the same sign-in, and the handle's access tokens) is
// revoked and a suspicious{token_reuse} event emitted, carrying the user
// id and the family's public handle, never a token. A refresh is refused
// after the user's cutoff, so signing out everywhere ends refresh tokens
// too. A stolen refresh token is therefore good until the first of: its
// legitimate holder refreshes (then the thief's next use, or the
// holder's, revokes the family), the user signs out or changes password,
// or the device is revoked.
//
// Not covered: a client that leaks both tokens and stops refreshing
// (its thief keeps the family until RefreshTTL passes unused, or until
// a revocation); a stolen signing key (rotate keys: see Config.Keys);
// clients that keep tokens where other apps can read them.
package token
