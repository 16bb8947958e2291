package token

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
)

// Defaults for the zero values of Config.
const (
	DefaultAccessTTL    = 10 * time.Minute
	DefaultRefreshTTL   = 30 * 24 * time.Hour
	DefaultRefreshGrace = hallpass.DefaultRotateGrace
	DefaultLeeway       = 10 * time.Second
)

// maxUserID bounds user ids and handles, as hallpass.Revocations does, so
// that every revocation fits in one broadcast.
const maxUserID = 512

// Errors that Verify, Refresh and the handlers return, wrapped with
// detail. Compare with errors.Is. None of them quotes a token.
var (
	// ErrMalformed reports a token that is not spelled the way this
	// Issuer spells tokens: wrong shape, encoding, header, algorithm or
	// key id, or claims in another form.
	ErrMalformed = errors.New("token: malformed token")
	// ErrSignature reports a token whose signature does not verify.
	ErrSignature = errors.New("token: bad signature")
	// ErrClaims reports a token for another issuer or audience, or one
	// issued in the future.
	ErrClaims = errors.New("token: token not valid here")
	// ErrExpired reports an access token past its expiry: refresh it.
	ErrExpired = errors.New("token: access token expired; refresh it")
	// ErrRevoked reports a revoked token: the user signed out everywhere
	// or changed credentials, the token or its device was revoked, or a
	// rotated refresh token was reused. The client must sign in again.
	ErrRevoked = errors.New("token: revoked; sign in again")
	// ErrRefresh reports a refresh token that is unknown or expired. The
	// client must sign in again.
	ErrRefresh = errors.New("token: refresh token unknown or expired; sign in again")
)

// Config configures an Issuer. Issuer, Audience, Keys and Revocations are
// required; Store is required to issue. Every zero duration means the
// documented default.
type Config struct {
	// Issuer and Audience go into every access token (iss, aud) and must
	// match when one is verified. Use URLs, say "https://api.example.com".
	Issuer   string
	Audience string

	// Keys sign and verify access tokens. Keys[0] signs; every key
	// verifies, so that tokens signed with a retired key stay valid until
	// they expire. With only public keys the Issuer verifies and cannot
	// issue.
	Keys []Key

	// Store keeps refresh token families, under keys no session token
	// hashes to and with no user id, so that they are neither device
	// sessions nor counted by session limits. Any hallpass.Store works.
	Store hallpass.Store

	// Revocations is the per-user cutoff and revoked-id list that Verify
	// checks in memory; share one per process with the hallpass.Manager
	// (Config.Revocations), so that RevokeAll and CredentialsChanged end
	// access and refresh tokens too. Its Retain must be at least the
	// AccessTTL, and the RefreshTTL when there is a Store: a cutoff
	// forgotten earlier would bring older tokens back.
	Revocations *hallpass.Revocations

	// AccessTTL is the lifetime of an access token. Each token gets up to
	// a tenth less, at random, so that clients issued tokens together do
	// not all refresh together. Default 10 minutes.
	AccessTTL time.Duration
	// RefreshTTL is how long a refresh token stays valid unused; every
	// refresh issues a new one with a new lifetime (shortened at random
	// like access tokens). Default 30 days.
	RefreshTTL time.Duration
	// RefreshGrace is how long a rotated-out refresh token keeps working,
	// for requests sent in parallel: each gets the same successor. Using
	// it later revokes its whole family. Default one minute.
	RefreshGrace time.Duration
	// Leeway is how far in the future a token's iat and nbf may be, for
	// clocks that differ between instances. Expiry gets no leeway.
	// Default 10 seconds.
	Leeway time.Duration

	// Events receives token events: created (a new family), rotated,
	// revoked and suspicious{token_reuse}. Each carries the user id and
	// the family's handle, never a token. Default hallpass.SlogSink{}.
	Events hallpass.Sink
	// ClientIP returns the address recorded in events from RefreshHandler.
	// Default hallpass.RemoteIP.
	ClientIP func(r *http.Request) string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Issuer issues, verifies, refreshes and revokes tokens. It is safe for
// concurrent use. Create it with New.
type Issuer struct {
	iss, aud string
	signer   *key            // nil: verify only
	byHeader map[string]*key // encoded header segment → key
	keys     []*key
	jwks     []byte

	store hallpass.Store
	rev   *hallpass.Revocations

	accessTTL, refreshTTL, grace, leeway time.Duration

	events   hallpass.Sink
	clientIP func(*http.Request) string
	now      func() time.Time
}

// New returns an Issuer for cfg, or an error naming what is wrong with it.
func New(cfg Config) (*Issuer, error) {
	switch {
	case cfg.Issuer == "" || !printable(cfg.Issuer):
		return nil, errors.New("token: Config.Issuer must be set, in printable characters (a URL, say)")
	case cfg.Audience == "" || !printable(cfg.Audience):
		return nil, errors.New("token: Config.Audience must be set, in printable characters (a URL, say)")
	case len(cfg.Keys) == 0:
		return nil, errors.New("token: Config.Keys is empty; create one with NewKey")
	case cfg.Revocations == nil:
		return nil, errors.New("token: Config.Revocations is nil; create one with hallpass.NewRevocations and share it with the Manager")
	}
	setDefault(&cfg.AccessTTL, DefaultAccessTTL)
	setDefault(&cfg.RefreshTTL, DefaultRefreshTTL)
	setDefault(&cfg.RefreshGrace, DefaultRefreshGrace)
	setDefault(&cfg.Leeway, DefaultLeeway)
	for _, d := range []time.Duration{cfg.AccessTTL, cfg.RefreshTTL, cfg.RefreshGrace, cfg.Leeway} {
		if d < 0 {
			return nil, fmt.Errorf("token: negative duration %v in Config", d)
		}
	}
	if cfg.AccessTTL < time.Second {
		return nil, errors.New("token: Config.AccessTTL is under a second; token times have one-second resolution")
	}
	if cfg.RefreshGrace >= cfg.RefreshTTL {
		return nil, errors.New("token: Config.RefreshGrace must be shorter than RefreshTTL")
	}
	if r := cfg.Revocations.Retain(); r < cfg.AccessTTL {
		return nil, fmt.Errorf("token: the Revocations keep a cutoff for %v, less than the access token lifetime %v; raise RevocationOptions.Retain", r, cfg.AccessTTL)
	} else if cfg.Store != nil && r < cfg.RefreshTTL {
		return nil, fmt.Errorf("token: the Revocations keep a cutoff for %v, less than the refresh token lifetime %v; raise RevocationOptions.Retain or lower Config.RefreshTTL", r, cfg.RefreshTTL)
	}
	if cfg.Events == nil {
		cfg.Events = hallpass.SlogSink{}
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = hallpass.RemoteIP
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	is := &Issuer{
		iss: cfg.Issuer, aud: cfg.Audience,
		byHeader: make(map[string]*key, len(cfg.Keys)),
		store:    cfg.Store, rev: cfg.Revocations,
		accessTTL: cfg.AccessTTL, refreshTTL: cfg.RefreshTTL, grace: cfg.RefreshGrace, leeway: cfg.Leeway,
		events: cfg.Events, clientIP: cfg.ClientIP, now: cfg.Now,
	}
	for i, kc := range cfg.Keys {
		k, err := newKey(kc)
		if err != nil {
			return nil, fmt.Errorf("token: Config.Keys[%d]: %w", i, err)
		}
		if _, dup := is.byHeader[k.header]; dup {
			return nil, fmt.Errorf("token: Config.Keys[%d]: key id %q used twice", i, kc.ID)
		}
		is.byHeader[k.header] = k
		is.keys = append(is.keys, k)
	}
	if k := is.keys[0]; k.canSign() {
		is.signer = k
	}
	is.jwks = jwks(is.keys)
	return is, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Key is one key for access tokens. Set ID and exactly one of Private,
// Public and Secret.
type Key struct {
	// ID names the key in each token's header (kid) and in the key set:
	// 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'. Give each new
	// key a new ID.
	ID string
	// Private signs with EdDSA (Ed25519) and verifies. Its public half is
	// published by JWKSHandler.
	Private ed25519.PrivateKey
	// Public verifies EdDSA only: a key retired from signing, or the key
	// of another service.
	Public ed25519.PublicKey
	// Secret signs and verifies with HS256 (HMAC-SHA256); at least 32
	// random bytes. It is never published, and every verifier must hold
	// it, so prefer Ed25519 unless only one service verifies.
	Secret []byte
}

// NewKey returns a new Ed25519 key named id.
func NewKey(id string) Key {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic("token: crypto/rand failed: " + err.Error()) // cannot happen: crypto/rand never fails
	}
	return Key{ID: id, Private: priv}
}

// Claims are what a verified access token says.
type Claims struct {
	Issuer    string    // iss
	UserID    string    // sub
	Audience  string    // aud
	IssuedAt  time.Time // iat (and nbf), one-second resolution
	ExpiresAt time.Time // exp, one-second resolution
	ID        string    // jti: revoke this one token with Issuer.Revoke
	// Handle is the public id of the token family (sid): the hallpass
	// session's handle for tokens from IssueForSession. It never
	// authenticates; pass it to RevokeHandle to end the device.
	Handle string
	// Stamp is the user's revocation cutoff when the family was issued
	// (zero if none): the token is invalid once the user has a later one.
	Stamp time.Time
}

// Pair is what a client gets at sign-in and at each refresh. Its String
// and LogValue methods leave the tokens out.
type Pair struct {
	AccessToken    string
	AccessExpires  time.Time
	RefreshToken   string
	RefreshExpires time.Time
	// Handle is the public id of the token family, as in Claims.
	Handle string
	// UserID is whom the tokens are for.
	UserID string
}

// String describes p without its tokens.
func (p Pair) String() string {
	return fmt.Sprintf("token.Pair{UserID: %q, Handle: %q, AccessExpires: %v, RefreshExpires: %v}", p.UserID, p.Handle, p.AccessExpires, p.RefreshExpires)
}

// GoString is String, so that %#v leaves the tokens out too.
func (p Pair) GoString() string { return p.String() }

// LogValue logs p without its tokens.
func (p Pair) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", p.UserID), slog.String("handle", p.Handle),
		slog.Time("access_expires", p.AccessExpires), slog.Time("refresh_expires", p.RefreshExpires))
}

// IssueForUser starts a new token family for userID, for a client that
// signed in directly (a mobile app's sign-in form, say). The family gets
// a new handle.
func (is *Issuer) IssueForUser(ctx context.Context, userID string) (*Pair, error) {
	return is.issue(ctx, userID, hallpass.NewHandle())
}

// IssueForSession starts a new token family for the user signed in to s.
// The tokens carry the session's handle, so RevokeHandle with the handle
// a device list shows ends them.
func (is *Issuer) IssueForSession(ctx context.Context, s *hallpass.Session) (*Pair, error) {
	user, handle := s.UserID(), s.Handle()
	if user == "" || handle == "" {
		return nil, errors.New("token: the session is not signed in; issue tokens after Login")
	}
	return is.issue(ctx, user, handle)
}

// Revoke ends the access token c on every instance, until it expires.
// Refresh tokens are not affected: see RevokeHandle.
func (is *Issuer) Revoke(ctx context.Context, c *Claims) error {
	return is.rev.RevokeID(ctx, c.ID, c.ExpiresAt)
}

// RevokeHandle ends the token family (the device) with handle: its
// refresh tokens at once, in the store, and its access tokens on every
// instance, through the Revocations. A live hallpass session with that
// handle can get new tokens only after the access token lifetime.
func (is *Issuer) RevokeHandle(ctx context.Context, handle string) error {
	if handle == "" {
		return errors.New("token: RevokeHandle needs a handle")
	}
	now := is.now()
	// An access token of the family expires at most AccessTTL from now;
	// Leeway covers an instance whose clock runs ahead.
	if err := is.rev.RevokeID(ctx, handle, now.Add(is.accessTTL+is.leeway)); err != nil {
		return err
	}
	var user string
	if is.store != nil {
		// Read first only to name the user in the event.
		if rec, err := is.store.Load(ctx, familyKey(handle)); err == nil {
			if f, ok := decode[family](rec, familyDataKey); ok {
				user = f.User
			}
		}
		if err := is.store.Delete(ctx, familyKey(handle)); err != nil {
			return fmt.Errorf("%w: revoke token family: %w", hallpass.ErrStore, err)
		}
	}
	is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonRevoke, Handle: handle, UserID: user, Time: now})
	return nil
}

// RevokeUser ends every access and refresh token of userID issued until
// now, on every instance. hallpass.Manager.RevokeAll does the same when
// the Manager shares the Revocations.
func (is *Issuer) RevokeUser(ctx context.Context, userID string) error {
	if err := is.rev.RevokeUser(ctx, userID); err != nil {
		return err
	}
	is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonRevokeAll, UserID: userID, Time: is.now()})
	return nil
}

// checkUserID refuses ids the tokens cannot carry: the Revocations bound
// their length, and control characters have no business in an id (and
// PostgreSQL's jsonb cannot hold NUL).
func checkUserID(id string) error {
	switch {
	case id == "":
		return errors.New("token: empty user id")
	case len(id) > maxUserID:
		return fmt.Errorf("token: user id of %d bytes; at most %d", len(id), maxUserID)
	case strings.HasPrefix(id, "hallpass."):
		return errors.New(`token: user ids starting "hallpass." are the library's own`)
	case !printable(id):
		return errors.New("token: user id is not printable UTF-8")
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return utf8.ValidString(s)
}

// jitter shortens d by up to a tenth, at random.
func jitter(d time.Duration) time.Duration {
	return d - rand.N(d/10+1)
}

// cutoffMillis is a user's cutoff as the stamp claim spells it.
func cutoffMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func (is *Issuer) canIssue() error {
	switch {
	case is.signer == nil:
		return errors.New("token: this Issuer only verifies: Config.Keys[0] has no private key or secret")
	case is.store == nil:
		return errors.New("token: issuing needs Config.Store, which keeps refresh tokens")
	}
	return nil
}
