package hallpass

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hallpass/hallpass/internal/unixms"
)

// Broadcaster is implemented by stores that can tell every app instance
// sharing them about a change at once (Redis pub/sub, PostgreSQL
// NOTIFY). Revocations uses it so that a credential revoked on one
// instance is refused by all of them within milliseconds, with no store
// round trip per check. Stores used by one process need not implement
// it.
type Broadcaster interface {
	// Broadcast delivers msg to the subscribers of every instance sharing
	// the store, this one included. msg is UTF-8 text (JSON) without NUL,
	// at most 1 KiB, so that every wire format carries it as is. One
	// channel serves every user of it: each message is a JSON object with
	// a "topic" naming its user, and a subscriber ignores other topics.
	Broadcast(ctx context.Context, msg []byte) error
	// Subscribe calls fn, one call at a time, with each message broadcast
	// after Subscribe returns, and with nil whenever messages may have
	// been lost (after a reconnect, say), so that the subscriber reloads
	// what it keeps from the store. stop ends the subscription.
	Subscribe(fn func(msg []byte)) (stop func())
}

// RevocationsUser is the user id under which Revocations keeps its
// entries in the store, so that one ListUser finds them all. Login
// refuses user ids with the "hallpass." prefix.
const RevocationsUser = "hallpass.revocations"

// reservedUserPrefix marks user ids the library uses for itself.
const reservedUserPrefix = "hallpass."

// maxRevokedID bounds user ids and credential ids in the list, so that
// every entry fits in one broadcast.
const maxRevokedID = 512

// DefaultRevocationPoll is how often Revocations reloads its list when
// the store cannot broadcast, and as a safety net when it can.
const DefaultRevocationPoll = time.Second

// DefaultRevocationRetain is how long a user's cutoff is kept by
// default: the default lifetime of a persistent session.
const DefaultRevocationRetain = DefaultPersistentLifetime

// RevocationOptions configure NewRevocations. The zero value picks
// defaults.
type RevocationOptions struct {
	// Retain is how long a user's cutoff is kept. It must be at least the
	// longest lifetime of any credential checked against the list:
	// afterwards a credential issued before the cutoff would be valid
	// again. Verifiers check this when given the list. Default
	// DefaultRevocationRetain.
	Retain time.Duration
	// PollInterval is how often the list is reloaded from the store.
	// This bounds how late an instance learns of a revocation made on
	// another one when the store is not a Broadcaster (or a broadcast is
	// lost). Default DefaultRevocationPoll.
	PollInterval time.Duration
	// OnError receives errors of the background reloads (the store was
	// unreachable, say); the list keeps what it had. Default: ignore.
	OnError func(error)
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Revocations is the list of revoked credentials for verifiers that do
// not ask the store on each request: sealed cookie sessions and access
// tokens. It holds per-user cutoffs ("everything issued before this
// instant is invalid": a password change, sign out everywhere) and
// revoked credential ids (one token, one device), each only until what it
// revokes would have expired anyway, so it stays small.
//
// The list lives in memory, so a check is a map lookup. It is kept in the
// store too, which shares it between app instances: a new instance loads
// it at start, every instance reloads it every PollInterval, and a store
// that is a Broadcaster pushes each revocation to all instances at once.
// Use one Revocations per process for all verifiers.
type Revocations struct {
	store  Store
	bc     Broadcaster
	now    func() time.Time
	poll   time.Duration
	retain time.Duration
	onErr  func(error)

	mu    sync.RWMutex
	users map[string]revokedUser
	ids   map[string]time.Time // until

	stopSub   func()
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

type revokedUser struct {
	cutoff, until time.Time
}

// revocation is one entry as broadcast and as kept in a record's data.
type revocation struct {
	Topic   string `json:"topic"` // revocationTopic, on the Broadcaster's shared channel
	Kind    string `json:"k"`     // "u": a user's cutoff; "i": a credential id
	Subject string `json:"s"`
	Cutoff  int64  `json:"c,omitempty"` // unix ms
	Until   int64  `json:"x"`           // unix ms
}

// NewRevocations loads the list from store and keeps it current until
// Close. ctx bounds the first load only.
func NewRevocations(ctx context.Context, store Store, opts *RevocationOptions) (*Revocations, error) {
	if store == nil {
		return nil, errors.New("hallpass: NewRevocations needs a Store")
	}
	var o RevocationOptions
	if opts != nil {
		o = *opts
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultRevocationPoll
	}
	if o.Retain <= 0 {
		o.Retain = DefaultRevocationRetain
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	r := &Revocations{
		store: store, now: o.Now, poll: o.PollInterval, retain: o.Retain, onErr: o.OnError,
		users:   make(map[string]revokedUser),
		ids:     make(map[string]time.Time),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if bc, ok := store.(Broadcaster); ok {
		r.bc = bc
		// Subscribe before the first load: a revocation made in between
		// then arrives twice instead of not at all.
		r.stopSub = bc.Subscribe(r.receive)
	}
	if err := r.reload(ctx); err != nil {
		if r.stopSub != nil {
			r.stopSub()
		}
		return nil, fmt.Errorf("hallpass: load the revocation list: %w", err)
	}
	go r.loop()
	return r, nil
}

// Close stops the reloading and the subscription.
func (r *Revocations) Close() error {
	r.closeOnce.Do(func() {
		if r.stopSub != nil {
			r.stopSub()
		}
		close(r.stop)
		<-r.stopped
	})
	return nil
}

// RevokeUser invalidates every credential of userID issued before now,
// on every instance, for RevocationOptions.Retain.
func (r *Revocations) RevokeUser(ctx context.Context, userID string) error {
	if userID == "" {
		return errors.New("hallpass: RevokeUser needs a user id")
	}
	now := r.now()
	cutoff := now.UnixMilli()
	// Each cutoff is later than the one before, even within a
	// millisecond, so that a credential issued between two revocations
	// cannot survive the second.
	if prev := r.Cutoff(userID); !prev.IsZero() && prev.UnixMilli() >= cutoff {
		cutoff = prev.UnixMilli() + 1
	}
	return r.add(ctx, revocation{Kind: "u", Subject: userID, Cutoff: cutoff, Until: now.Add(r.retain).UnixMilli()})
}

// Retain returns how long a user's cutoff is kept: the longest lifetime
// a credential checked against the list may have.
func (r *Revocations) Retain() time.Duration { return r.retain }

// RevokeID invalidates the credential with id (a token's jti, a sealed
// session's handle) on every instance, until it would have expired. A
// zero until, a credential without an expiry, keeps the revocation for
// Retain; an until further away than any clock reaches is kept as the
// furthest time a store holds (it does not wrap into the past).
func (r *Revocations) RevokeID(ctx context.Context, id string, until time.Time) error {
	if id == "" {
		return errors.New("hallpass: RevokeID needs an id")
	}
	if until.IsZero() {
		until = r.now().Add(r.retain)
	}
	return r.add(ctx, revocation{Kind: "i", Subject: id, Until: unixms.From(until)})
}

// Revoked reports whether a credential of userID with id, issued at
// issued, has been revoked. Either of userID and id may be empty.
func (r *Revocations) Revoked(userID, id string, issued time.Time) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if id != "" {
		if _, ok := r.ids[id]; ok {
			return true
		}
	}
	if userID != "" {
		if u, ok := r.users[userID]; ok && issued.Before(u.cutoff) {
			return true
		}
	}
	return false
}

// Cutoff returns the instant before which credentials of userID are
// revoked, or the zero time. A token can carry it as the user's
// security stamp.
func (r *Revocations) Cutoff(userID string) time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.users[userID].cutoff
}

func (r *Revocations) add(ctx context.Context, e revocation) error {
	if len(e.Subject) > maxRevokedID {
		return fmt.Errorf("hallpass: revoked id of %d bytes; at most %d", len(e.Subject), maxRevokedID)
	}
	if e.Until <= r.now().UnixMilli() {
		return nil // expired already: nothing left to revoke
	}
	if err := r.persist(ctx, e); err != nil {
		return fmt.Errorf("%w: store revocation: %w", ErrStore, err)
	}
	r.apply(e)
	if r.bc == nil {
		return nil
	}
	e.Topic = revocationTopic
	msg, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := r.bc.Broadcast(ctx, msg); err != nil {
		return fmt.Errorf("hallpass: revocation stored but not broadcast; other instances apply it within %v: %w", r.poll, err)
	}
	return nil
}

// revocationTopic marks Revocations' messages among a Broadcaster's.
const revocationTopic = "hallpass.revocation"

// revocationKey is where the entry for kind and subject lives: a hash
// under a label no session token hashes to.
func revocationKey(kind, subject string) Key {
	return sha256.Sum256([]byte("hallpass revocation\x00" + kind + "\x00" + subject))
}

// persist stores e, or merges it into the stored entry: a cutoff and an
// expiry only ever move later.
func (r *Revocations) persist(ctx context.Context, e revocation) error {
	key := revocationKey(e.Kind, e.Subject)
	until := time.UnixMilli(e.Until)
	for range 3 {
		data, _ := json.Marshal(e)
		rec := &Record{
			Key:    key,
			Handle: NewHandle(),
			Meta:   Meta{UserID: RevocationsUser, AbsoluteDeadline: until},
			Touch:  Touch{LastSeen: r.now(), IdleDeadline: until},
			Data:   map[string]json.RawMessage{"entry": data},
		}
		rec.CreatedAt = rec.LastSeen
		err := r.store.Create(ctx, rec)
		if !errors.Is(err, ErrExists) {
			return err
		}
		old, err := r.store.Load(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // expired or deleted in between: create it again
		}
		if err != nil {
			return err
		}
		var prev revocation
		if json.Unmarshal(old.Data["entry"], &prev) == nil && prev.Kind == e.Kind && prev.Subject == e.Subject {
			e.Cutoff, e.Until = max(e.Cutoff, prev.Cutoff), max(e.Until, prev.Until)
		}
		data, _ = json.Marshal(e)
		meta := old.Meta
		meta.AbsoluteDeadline = time.UnixMilli(e.Until)
		err = r.store.Update(ctx, key, Delta{
			Set:   map[string]json.RawMessage{"entry": data},
			Meta:  &meta,
			Touch: &Touch{LastSeen: r.now(), IdleDeadline: meta.AbsoluteDeadline},
		})
		if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return errors.New("the entry kept disappearing")
}

func (r *Revocations) apply(e revocation) {
	until := time.UnixMilli(e.Until)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case "u":
		u := r.users[e.Subject]
		if c := time.UnixMilli(e.Cutoff); c.After(u.cutoff) {
			u.cutoff = c
		}
		if until.After(u.until) {
			u.until = until
		}
		r.users[e.Subject] = u
	case "i":
		if until.After(r.ids[e.Subject]) {
			r.ids[e.Subject] = until
		}
	}
}

// receive handles a broadcast message, or nil: reload.
func (r *Revocations) receive(msg []byte) {
	if msg == nil {
		if err := r.reload(context.Background()); err != nil {
			r.onErr(fmt.Errorf("hallpass: reload the revocation list after a lost broadcast: %w", err))
		}
		return
	}
	var e revocation
	err := json.Unmarshal(msg, &e)
	if err == nil && e.Topic != revocationTopic {
		return // another user of the channel
	}
	if err != nil || (e.Kind != "u" && e.Kind != "i") || e.Subject == "" {
		r.onErr(fmt.Errorf("hallpass: ignored a malformed revocation broadcast of %d bytes", len(msg)))
		return
	}
	r.apply(e)
}

// reload merges the stored list into memory. It never forgets an entry:
// entries only expire, in sweep.
func (r *Revocations) reload(ctx context.Context) error {
	recs, err := r.store.ListUser(ctx, RevocationsUser)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		var e revocation
		if json.Unmarshal(rec.Data["entry"], &e) == nil && revocationKey(e.Kind, e.Subject) == rec.Key {
			r.apply(e)
		}
	}
	return nil
}

func (r *Revocations) sweep() {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, u := range r.users {
		if !now.Before(u.until) {
			delete(r.users, k)
		}
	}
	for k, until := range r.ids {
		if !now.Before(until) {
			delete(r.ids, k)
		}
	}
}

func (r *Revocations) loop() {
	defer close(r.stopped)
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(r.poll, time.Second))
			if err := r.reload(ctx); err != nil {
				r.onErr(fmt.Errorf("hallpass: reload the revocation list: %w", err))
			}
			cancel()
			r.sweep()
		}
	}
}

// reservedUser reports whether userID is one the library keeps for
// itself.
func reservedUser(userID string) bool { return strings.HasPrefix(userID, reservedUserPrefix) }
