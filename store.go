package hallpass

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"time"
)

// Errors a Store returns. Callers compare with errors.Is.
var (
	// ErrNotFound reports that no live record has the key: it never existed,
	// it expired, or it was deleted.
	ErrNotFound = errors.New("hallpass: session not found")
	// ErrExists reports that Create or Rotate found the target key taken.
	ErrExists = errors.New("hallpass: session key already exists")
	// ErrTooManySessions reports that a Rotate carrying a Limit with
	// RefuseNew found the user already at the limit. Login returns it too:
	// the app can tell the user to sign out elsewhere first.
	ErrTooManySessions = errors.New("hallpass: the user already has the most sessions allowed; sign out of another one first")
)

// ExpiredError is what Load may return for a record that has expired but
// is still held by the store (not yet swept). It matches ErrNotFound, so
// callers that only care whether a session is live need not know it; the
// engine uses Record to say which deadline passed, and for whom.
type ExpiredError struct {
	Record *Record
}

func (e *ExpiredError) Error() string { return "hallpass: session expired" }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *ExpiredError) Is(target error) bool { return target == ErrNotFound }

// Key is the store key of a session: the SHA-256 of its token. A store
// holds keys, never tokens, so a leaked store yields no usable cookie.
type Key [32]byte

// KeyOf returns the store key for a token.
func KeyOf(token string) Key { return sha256.Sum256([]byte(token)) }

// String returns the key in hex. A key does not authenticate anything,
// but prefer the handle in logs: it is what users see.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// Record is one session as a store keeps it.
type Record struct {
	Key    Key
	Handle string // public id, stable across rotations; never authenticates
	Meta          // who is signed in and for how long
	Touch         // activity

	CreatedAt time.Time
	CreatedIP string
	CreatedUA string

	// Data maps keys to JSON values. A store must keep each value's bytes
	// as given (semantically equal JSON is fine) and must not mutate them.
	Data map[string]json.RawMessage

	// Version counts the updates the record has seen. Stores set it: 1 on
	// Create, +1 on every Update or Rotate.
	Version int64
}

// Meta holds a session's identity and lifetime. It changes only at login,
// logout-like transitions and privilege changes, which also rotate the key.
type Meta struct {
	UserID           string    // empty for a guest
	AuthTime         time.Time // when the user last proved who they are
	AuthLevel        string    // Level.String() of the session; empty for a guest
	Remembered       bool      // authenticated by a remember-me token
	ReauthAt         time.Time // last re-authentication
	Persistent       bool      // the cookie outlives the browser session
	AbsoluteDeadline time.Time // the session ends here whatever happens
}

// Touch holds a session's activity. Stores never move LastSeen or
// IdleDeadline backwards: of two concurrent touches the later one wins.
type Touch struct {
	LastSeen     time.Time
	IdleDeadline time.Time
	LastIP       string
	LastUA       string
}

// ExpiresAt returns when the record stops being valid: the earlier of its
// idle and absolute deadlines. A zero deadline does not count.
func (r *Record) ExpiresAt() time.Time {
	idle, abs := r.IdleDeadline, r.AbsoluteDeadline
	switch {
	case idle.IsZero():
		return abs
	case abs.IsZero() || idle.Before(abs):
		return idle
	}
	return abs
}

// Expired reports whether the record has expired at now.
func (r *Record) Expired(now time.Time) bool {
	exp := r.ExpiresAt()
	return !exp.IsZero() && !now.Before(exp)
}

// Clone returns a copy of r that shares no map with it. The JSON values
// themselves are shared: nobody mutates them.
func (r *Record) Clone() *Record {
	c := *r
	c.Data = maps.Clone(r.Data)
	return &c
}

// Delta is what one request changed in a session. Stores apply it as a
// whole, merged with whatever other requests changed meanwhile, so that
// two requests writing different keys both win.
type Delta struct {
	Set    map[string]json.RawMessage // keys to add or replace
	Remove []string                   // keys to delete; applied before Set
	Clear  bool                       // delete every key first

	// Meta, when non-nil, replaces the record's Meta. A new identity
	// starts new timeouts, so with Meta set a non-nil Touch replaces the
	// record's Touch outright instead of moving it forward.
	Meta  *Meta
	Touch *Touch // when non-nil, moves activity forward (never back), unless Meta is set

	// Limit, when non-nil on a Rotate, caps the sessions of the user the
	// rotated record belongs to afterwards. Update ignores it.
	Limit *Limit
}

// Limit caps how many live sessions one user may hold. A store checks it
// in the same atomic step as the Rotate that carries it: two logins at
// the same moment cannot both slip past it, and no other session of the
// user can appear or move between the count and the write.
//
// The count is of the user's live records other than the two keys of the
// Rotate (a session that signs in again is not a new one). When it is
// Max or more, the Rotate either fails with ErrTooManySessions and
// changes nothing (RefuseNew), or deletes as many of the user's oldest
// sessions as make room for the rotated one: earliest Meta.AuthTime
// first, ties broken by the lower Handle.
type Limit struct {
	// Max is how many live sessions the user may hold, the rotated one
	// included. Zero or less means no limit.
	Max int
	// RefuseNew refuses the Rotate instead of ending older sessions.
	RefuseNew bool
	// Evicted, if non-nil, is called after a successful Rotate with the
	// handle of each session it deleted to make room, so that the caller
	// can report them. Stores call it before Rotate returns, never later,
	// and never for a Rotate that fails.
	Evicted func(handle string)
}

// IsZero reports whether d changes nothing.
func (d *Delta) IsZero() bool {
	return len(d.Set) == 0 && len(d.Remove) == 0 && !d.Clear && d.Meta == nil && d.Touch == nil
}

// Apply applies d to r in place, as every store must: Clear, then Remove,
// then Set; Meta replaced; Touch moved forward only, or replaced along
// with Meta. It does not change
// r.Version. Stores may use it or do the same thing natively.
func (d *Delta) Apply(r *Record) {
	if d.Clear {
		clear(r.Data)
	}
	for _, k := range d.Remove {
		delete(r.Data, k)
	}
	if len(d.Set) > 0 && r.Data == nil {
		r.Data = make(map[string]json.RawMessage, len(d.Set))
	}
	for k, v := range d.Set {
		r.Data[k] = v
	}
	if d.Meta != nil {
		r.Meta = *d.Meta
	}
	if t := d.Touch; t != nil && d.Meta != nil {
		r.Touch = *t
	} else if t != nil {
		if t.LastSeen.After(r.LastSeen) {
			r.LastSeen = t.LastSeen
			if t.LastIP != "" {
				r.LastIP = t.LastIP
			}
			if t.LastUA != "" {
				r.LastUA = t.LastUA
			}
		}
		if t.IdleDeadline.After(r.IdleDeadline) {
			r.IdleDeadline = t.IdleDeadline
		}
	}
}

// Store keeps session records. Implementations must be safe for
// concurrent use, must never hold tokens (only Keys), and must treat an
// expired record (Record.Expired at the store's current time) exactly
// like a missing one; they delete expired records themselves.
//
// A call that fails or times out may still have been applied, but only
// whole: a store never applies part of a Delta, and never creates a
// record in Update.
//
// Records a Store returns are read-only: a store may hand the same record
// to many callers, so a caller that wants to change one works on a Clone.
// Records and Deltas passed in stay the caller's; the store copies what
// it keeps.
// store/storetest is the executable definition of this contract.
type Store interface {
	// Create stores a new record with Version 1. It fails with ErrExists if
	// the key is taken.
	Create(ctx context.Context, r *Record) error
	// Load returns the record for key, or ErrNotFound. For a record that
	// has expired but is still held, it may return an *ExpiredError.
	Load(ctx context.Context, key Key) (*Record, error)
	// Update applies d to the live record at key and increments its
	// Version. It never creates: a missing or expired record gives
	// ErrNotFound, so an in-flight request cannot resurrect a session that
	// was logged out or revoked.
	Update(ctx context.Context, key Key, d Delta) error
	// Rotate atomically moves the live record at from to the key to,
	// applying d on the way. Afterwards from is gone. It fails with
	// ErrNotFound if from is not live, and ErrExists if to is taken.
	// With d.Limit it also enforces the limit (see Limit), failing with
	// ErrTooManySessions when it refuses.
	Rotate(ctx context.Context, from, to Key, d Delta) error
	// Delete removes the records at keys. Missing keys are not an error.
	Delete(ctx context.Context, keys ...Key) error
	// ListUser returns the live records of a user, in no set order,
	// without a full scan of the store.
	ListUser(ctx context.Context, userID string) ([]*Record, error)
	// DeleteUser removes every record of a user except those at keep and
	// returns how many it removed.
	DeleteUser(ctx context.Context, userID string, keep ...Key) (int, error)
}
