package token

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/internal/successor"
)

// Refresh tokens.
//
// A refresh token is "hprt_" and 32 random bytes in base64url. The store
// holds, each under the SHA-256 of a label and a secret, never the
// secret itself, with no user id (so no device list shows them and no
// session limit counts them):
//
//   - the live token of a chain, at refreshKey(token): user, family
//     generation, the user's cutoff when the family began (stamp);
//   - for each rotated-out token, a tombstone at successorKey(token): the
//     successor sealed with a key derived from the old token (the store
//     cannot open it; whoever presents the old token can), when it was
//     rotated, and the successor's expiry;
//   - the family, at familyKey(handle): user and generation. Deleting it
//     ends every token of the family at once; a new family for the same
//     handle has a new generation, so old chains stay dead.
//
// Rotation is decided by who creates the tombstone: Create of a key
// succeeds once. The tombstone exists before the old token is moved to
// its successor, so a parallel request never finds neither, and every
// request presenting the old token within the grace window opens the
// same successor. Moving the record (Rotate, whose from key vanishes
// atomically) is then idempotent: whoever gets there first does it, so a
// winner that dies after creating the tombstone leaves no family stuck.

const (
	refreshPrefix   = "hprt_"
	refreshBytes    = 32
	refreshLen      = len(refreshPrefix) + (refreshBytes*8+5)/6
	maxChain        = 16 // rotations a grace request follows to the live token
	tokenDataKey    = "hallpass.refresh"
	tombDataKey     = "hallpass.refresh.successor"
	familyDataKey   = "hallpass.refresh.family"
	familyExtension = 2 // a family record lives this many RefreshTTLs past its last extension
)

// NewRefreshToken-like spellings only: see parseRefresh.
func newRefreshToken() string {
	var b [refreshBytes]byte
	rand.Read(b[:])
	return refreshPrefix + b64.EncodeToString(b[:])
}

// parseRefresh checks that s is spelled as newRefreshToken spells it.
// Every other spelling of the same bytes is refused, so one token has
// one store key.
func parseRefresh(s string) error {
	if len(s) != refreshLen || s[:len(refreshPrefix)] != refreshPrefix {
		return fmt.Errorf("%w: not a refresh token of this issuer", ErrMalformed)
	}
	var raw [refreshBytes + 2]byte
	n, err := b64.Decode(raw[:], []byte(s[len(refreshPrefix):]))
	if err != nil || n != refreshBytes {
		return fmt.Errorf("%w: refresh token not canonical base64url", ErrMalformed)
	}
	return nil
}

// Store keys: hashes of a label and a secret (or a handle), so that no
// two kinds of key, nor a session key (SHA-256 of the bare token), can
// coincide.
func refreshKey(token string) hallpass.Key {
	return sha256.Sum256([]byte("hallpass refresh token\x00" + token))
}

func successorKey(token string) hallpass.Key {
	return sha256.Sum256([]byte("hallpass refresh successor\x00" + token))
}

func familyKey(handle string) hallpass.Key {
	return sha256.Sum256([]byte("hallpass refresh family\x00" + handle))
}

// chain is what a live token's record says about its family.
type chain struct {
	User   string `json:"u"`
	Gen    string `json:"g"` // the family record's generation
	Stamp  int64  `json:"s"` // the user's cutoff, unix ms, when the family began
	Issued int64  `json:"i"` // unix ms this token was issued
}

type tombstone struct {
	User    string `json:"u"`
	Gen     string `json:"g"`
	Stamp   int64  `json:"s"`
	Sealed  []byte `json:"sealed"` // nonce || AES-256-GCM(successor)
	Rotated int64  `json:"r"`      // unix ms
	Expires int64  `json:"x"`      // the successor's expiry, unix ms
}

type family struct {
	User string `json:"u"`
	Gen  string `json:"g"`
}

// successorLabel keeps refresh tombstones' keys apart from other uses of
// package successor.
const successorLabel = "hallpass refresh successor"

func sealSuccessor(old, next string) ([]byte, error) {
	return successor.Seal(successorLabel, old, next, []byte(tombDataKey))
}

func openSuccessor(old string, sealed []byte) (string, bool) {
	next, err := successor.Open(successorLabel, old, sealed, []byte(tombDataKey))
	if err != nil || parseRefresh(next) != nil {
		return "", false
	}
	return next, true
}

func decode[T any](rec *hallpass.Record, dataKey string) (T, bool) {
	var v T
	raw, ok := rec.Data[dataKey]
	return v, ok && json.Unmarshal(raw, &v) == nil
}

func encode(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func storeErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", hallpass.ErrStore, what, err)
}

// issue starts a chain for userID in the family handle.
func (is *Issuer) issue(ctx context.Context, userID, handle string) (*Pair, error) {
	if err := is.canIssue(); err != nil {
		return nil, err
	}
	if err := checkUserID(userID); err != nil {
		return nil, err
	}
	if len(handle) > maxUserID || !printable(handle) {
		return nil, errors.New("token: handle too long or not printable")
	}
	now := is.now()
	if is.rev.Revoked("", handle, now) {
		return nil, fmt.Errorf("%w: the handle was revoked", ErrRevoked)
	}
	gen, err := is.joinFamily(ctx, userID, handle, now)
	if err != nil {
		return nil, err
	}
	c := chain{User: userID, Gen: gen, Stamp: cutoffMillis(is.rev.Cutoff(userID)), Issued: now.UnixMilli()}
	rt := newRefreshToken()
	exp := now.Add(jitter(is.refreshTTL))
	err = is.store.Create(ctx, &hallpass.Record{
		Key:       refreshKey(rt),
		Handle:    handle,
		Meta:      hallpass.Meta{AuthTime: now, AbsoluteDeadline: exp},
		Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: exp},
		CreatedAt: now,
		Data:      map[string]json.RawMessage{tokenDataKey: encode(c)},
	})
	if err != nil {
		return nil, storeErr("store refresh token", err)
	}
	is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventCreated, Handle: handle, UserID: userID, Time: now})
	return is.pair(userID, handle, c.Stamp, rt, exp, now), nil
}

// joinFamily returns the generation of the live family record of
// handle, creating one if there is none.
func (is *Issuer) joinFamily(ctx context.Context, userID, handle string, now time.Time) (string, error) {
	key := familyKey(handle)
	for range 3 {
		gen := hallpass.NewHandle()
		until := now.Add(familyExtension * is.refreshTTL)
		err := is.store.Create(ctx, &hallpass.Record{
			Key:       key,
			Handle:    handle,
			Meta:      hallpass.Meta{AuthTime: now, AbsoluteDeadline: until},
			Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: until},
			CreatedAt: now,
			Data:      map[string]json.RawMessage{familyDataKey: encode(family{User: userID, Gen: gen})},
		})
		if err == nil {
			return gen, nil
		}
		if !errors.Is(err, hallpass.ErrExists) {
			return "", storeErr("store token family", err)
		}
		rec, err := is.store.Load(ctx, key)
		if errors.Is(err, hallpass.ErrNotFound) {
			continue // ended in between: start a new one
		}
		if err != nil {
			return "", storeErr("load token family", err)
		}
		f, ok := decode[family](rec, familyDataKey)
		if !ok || f.User != userID {
			return "", errors.New("token: the handle belongs to a token family of another user")
		}
		if err := is.extendFamily(ctx, rec, now); err != nil {
			return "", err
		}
		return f.Gen, nil
	}
	return "", errors.New("token: the token family kept disappearing; try again")
}

// extendFamily makes sure the family record outlives a token issued now.
// It is written once per RefreshTTL, not at every refresh.
func (is *Issuer) extendFamily(ctx context.Context, rec *hallpass.Record, now time.Time) error {
	if !rec.ExpiresAt().Before(now.Add(is.refreshTTL)) {
		return nil
	}
	until := now.Add(familyExtension * is.refreshTTL)
	meta := rec.Meta
	meta.AbsoluteDeadline = until
	err := is.store.Update(ctx, rec.Key, hallpass.Delta{Meta: &meta, Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: until}})
	if errors.Is(err, hallpass.ErrNotFound) {
		return fmt.Errorf("%w: the token family was revoked", ErrRevoked)
	}
	if err != nil {
		return storeErr("extend token family", err)
	}
	return nil
}

// checkFamily refuses a chain whose user, handle or family was revoked.
func (is *Issuer) checkFamily(ctx context.Context, handle, user, gen string, stamp int64, now time.Time) error {
	if is.rev.Revoked(user, handle, time.UnixMilli(stamp)) {
		// The Revocations forget entries; the store does not: end the
		// family there, so that it stays ended.
		is.endFamily(ctx, handle, gen)
		return fmt.Errorf("%w: the user or the device was signed out", ErrRevoked)
	}
	rec, err := is.store.Load(ctx, familyKey(handle))
	if errors.Is(err, hallpass.ErrNotFound) {
		return fmt.Errorf("%w: the token family was revoked", ErrRevoked)
	}
	if err != nil {
		return storeErr("load token family", err)
	}
	if f, ok := decode[family](rec, familyDataKey); !ok || f.Gen != gen || f.User != user {
		return fmt.Errorf("%w: the token family was revoked", ErrRevoked)
	}
	return is.extendFamily(ctx, rec, now)
}

// endFamily deletes the family record of handle if it is generation gen.
// A failure is left for the next attempt, which checks again.
func (is *Issuer) endFamily(ctx context.Context, handle, gen string) {
	key := familyKey(handle)
	rec, err := is.store.Load(ctx, key)
	if err != nil {
		return
	}
	if f, ok := decode[family](rec, familyDataKey); ok && f.Gen == gen {
		is.store.Delete(ctx, key)
	}
}

// Refresh exchanges a refresh token for a new pair. The refresh token is
// rotated: the one presented keeps working for Config.RefreshGrace, each
// use getting the same successor, and using it later revokes its family
// and emits suspicious{token_reuse}. The error wraps ErrMalformed,
// ErrRefresh, ErrRevoked or hallpass.ErrStore.
func (is *Issuer) Refresh(ctx context.Context, refreshToken string) (*Pair, error) {
	return is.refresh(ctx, refreshToken, "", "")
}

func (is *Issuer) refresh(ctx context.Context, rt, ip, ua string) (*Pair, error) {
	if err := is.canIssue(); err != nil {
		return nil, err
	}
	if err := parseRefresh(rt); err != nil {
		return nil, err
	}
	now := is.now()
	rec, err := is.store.Load(ctx, refreshKey(rt))
	if errors.Is(err, hallpass.ErrNotFound) {
		return is.rotated(ctx, rt, now, ip, ua)
	}
	if err != nil {
		return nil, storeErr("load refresh token", err)
	}
	c, ok := decode[chain](rec, tokenDataKey)
	if !ok {
		return nil, fmt.Errorf("%w: unreadable record", ErrRefresh)
	}
	if err := is.checkFamily(ctx, rec.Handle, c.User, c.Gen, c.Stamp, now); err != nil {
		if errors.Is(err, ErrRevoked) {
			is.store.Delete(ctx, rec.Key)
		}
		return nil, err
	}
	next := newRefreshToken()
	sealed, err := sealSuccessor(rt, next)
	if err != nil {
		return nil, fmt.Errorf("token: refresh: %w", err)
	}
	ts := tombstone{
		User: c.User, Gen: c.Gen, Stamp: c.Stamp,
		Sealed:  sealed,
		Rotated: now.UnixMilli(),
		Expires: now.Add(jitter(is.refreshTTL)).UnixMilli(),
	}
	// The tombstone lives as long as the old token would have, so that
	// reuse is recognised for as long as the token was worth stealing.
	until := rec.ExpiresAt()
	if g := now.Add(is.grace); until.Before(g) {
		until = g
	}
	err = is.store.Create(ctx, &hallpass.Record{
		Key:       successorKey(rt),
		Handle:    rec.Handle,
		Meta:      hallpass.Meta{AbsoluteDeadline: until},
		Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: until},
		CreatedAt: now,
		Data:      map[string]json.RawMessage{tombDataKey: encode(ts)},
	})
	if errors.Is(err, hallpass.ErrExists) {
		// A parallel request rotated it first: take its successor.
		return is.rotated(ctx, rt, now, ip, ua)
	}
	if err != nil {
		return nil, storeErr("store rotation", err)
	}
	return is.finish(ctx, rt, rec.Handle, ts, now, ip, ua, true)
}

// rotated handles a token that has, or is about to have, a successor.
func (is *Issuer) rotated(ctx context.Context, rt string, now time.Time, ip, ua string) (*Pair, error) {
	rec, err := is.store.Load(ctx, successorKey(rt))
	if errors.Is(err, hallpass.ErrNotFound) {
		return nil, ErrRefresh
	}
	if err != nil {
		return nil, storeErr("load rotation", err)
	}
	ts, ok := decode[tombstone](rec, tombDataKey)
	if !ok {
		return nil, fmt.Errorf("%w: unreadable rotation record", ErrRefresh)
	}
	return is.finish(ctx, rt, rec.Handle, ts, now, ip, ua, false)
}

// finish completes the rotation of rt described by ts and answers with
// the family's live token. checked says the family was checked already.
func (is *Issuer) finish(ctx context.Context, rt, handle string, ts tombstone, now time.Time, ip, ua string, checked bool) (*Pair, error) {
	next, ok := openSuccessor(rt, ts.Sealed)
	if !ok {
		return nil, fmt.Errorf("%w: rotation record does not open with this token", ErrRefresh)
	}
	rotated, exp := time.UnixMilli(ts.Rotated), time.UnixMilli(ts.Expires)
	// Every request computes the same move from the tombstone, so it does
	// not matter which one makes it.
	err := is.store.Rotate(ctx, refreshKey(rt), refreshKey(next), hallpass.Delta{
		Set:   map[string]json.RawMessage{tokenDataKey: encode(chain{User: ts.User, Gen: ts.Gen, Stamp: ts.Stamp, Issued: ts.Rotated})},
		Meta:  &hallpass.Meta{AuthTime: rotated, AbsoluteDeadline: exp},
		Touch: &hallpass.Touch{LastSeen: rotated, IdleDeadline: exp},
	})
	moved := err == nil
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) && !errors.Is(err, hallpass.ErrExists) {
		return nil, storeErr("rotate refresh token", err)
	}
	if !moved && now.Sub(rotated) >= is.grace {
		// The old token after its successor took over and the grace
		// window closed: its holder is not the client that got the
		// successor, and one of them stole it.
		return nil, is.reuse(ctx, handle, ts, now, ip, ua)
	}
	if !checked {
		if err := is.checkFamily(ctx, handle, ts.User, ts.Gen, ts.Stamp, now); err != nil {
			return nil, err
		}
	}
	if !moved {
		// Serve the live end of the chain: the successor, or its own
		// successor if the client already used it. Never a new branch.
		next, exp, err = is.chainEnd(ctx, next)
		if err != nil {
			return nil, err
		}
	}
	if moved {
		is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventRotated, Handle: handle, UserID: ts.User, Time: now, IP: ip, UserAgent: ua})
	}
	return is.pair(ts.User, handle, ts.Stamp, next, exp, now), nil
}

// chainEnd follows rotations from tok to the live token of the chain.
func (is *Issuer) chainEnd(ctx context.Context, tok string) (string, time.Time, error) {
	for range maxChain {
		rec, err := is.store.Load(ctx, refreshKey(tok))
		if err == nil {
			return tok, rec.ExpiresAt(), nil
		}
		if !errors.Is(err, hallpass.ErrNotFound) {
			return "", time.Time{}, storeErr("load refresh token", err)
		}
		rec, err = is.store.Load(ctx, successorKey(tok))
		if errors.Is(err, hallpass.ErrNotFound) {
			return "", time.Time{}, fmt.Errorf("%w: the token family ended", ErrRefresh)
		}
		if err != nil {
			return "", time.Time{}, storeErr("load rotation", err)
		}
		ts, ok := decode[tombstone](rec, tombDataKey)
		if !ok {
			return "", time.Time{}, fmt.Errorf("%w: unreadable rotation record", ErrRefresh)
		}
		if tok, ok = openSuccessor(tok, ts.Sealed); !ok {
			return "", time.Time{}, fmt.Errorf("%w: rotation record does not open", ErrRefresh)
		}
	}
	return "", time.Time{}, fmt.Errorf("%w: too many rotations within the grace window", ErrRefresh)
}

// reuse revokes the family of a reused refresh token.
func (is *Issuer) reuse(ctx context.Context, handle string, ts tombstone, now time.Time, ip, ua string) error {
	is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventSuspicious, Reason: hallpass.ReasonTokenReuse, Handle: handle, UserID: ts.User, Time: now, IP: ip, UserAgent: ua})
	// The store first: that ends the refresh tokens for good. The access
	// tokens of the family follow through the Revocations.
	is.endFamily(ctx, handle, ts.Gen)
	if err := is.rev.RevokeID(ctx, handle, now.Add(is.accessTTL+is.leeway)); err != nil {
		return fmt.Errorf("%w: refresh token reused; its family's refresh tokens are revoked, its access tokens could not be: %w", ErrRevoked, err)
	}
	is.events.Emit(ctx, hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonTokenReuse, Handle: handle, UserID: ts.User, Time: now, IP: ip, UserAgent: ua})
	return fmt.Errorf("%w: refresh token reused after rotation; the token family is revoked", ErrRevoked)
}

func (is *Issuer) pair(userID, handle string, stamp int64, rt string, rexp, now time.Time) *Pair {
	at, aexp := is.accessToken(userID, handle, stamp, now)
	return &Pair{AccessToken: at, AccessExpires: aexp, RefreshToken: rt, RefreshExpires: rexp, Handle: handle, UserID: userID}
}
