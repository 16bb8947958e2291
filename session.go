package hallpass

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass/internal/jsontext"
)

// Errors of the Session API.
var (
	// ErrResponseStarted reports a change to a session after the response
	// headers were sent; the change is not saved. Change the session
	// before writing the response.
	ErrResponseStarted = errors.New("hallpass: session changed after the response started; the change was not saved")
	// ErrNoSession reports a nil Session: the handler is not wrapped by
	// Manager.Handler.
	ErrNoSession = errors.New("hallpass: no session in the request context; wrap the handler with Manager.Handler")
	// ErrSessionEnded reports that the session ended (revoked, expired)
	// while the request ran; the request now has a guest session. Send
	// the user to sign in again.
	ErrSessionEnded = errors.New("hallpass: the session ended during the request; sign in again")
)

// Session is one request's view of a session. Handlers get it with
// FromRequest or FromContext. It is safe for concurrent use by the
// handler's goroutines until the response starts.
type Session struct {
	m   *Manager
	ctx context.Context

	mu        sync.Mutex
	rec       *Record                    // nil while the session is a guest that nothing was written to
	token     string                     // the token the client holds, or will after this response
	data      map[string]json.RawMessage // shared with rec until ownData
	dataOwned bool
	set       map[string]json.RawMessage
	removed   map[string]struct{}
	cleared   bool
	committed bool

	newCookie  bool // the client must get a (new) cookie
	dropCookie bool // the client must forget its cookie
	forceTouch bool // Extend was called
	// clientChanged forces a touch to record a new client address or
	// browser.
	clientChanged bool
	background    bool // do not slide the idle deadline
	reseal        bool // a sealed session changed in load: send a new cookie
	ip, ua, xff   string
	requestTime   time.Time
}

type ctxKey struct{}

func contextWithSession(ctx context.Context, s *Session) context.Context {
	return context.WithValue(ctx, ctxKey{}, s)
}

// FromContext returns the session that Manager.Handler put in ctx, or nil.
func FromContext(ctx context.Context) *Session {
	s, _ := ctx.Value(ctxKey{}).(*Session)
	return s
}

// FromRequest returns the request's session, or nil if the handler is not
// wrapped by Manager.Handler.
func FromRequest(r *http.Request) *Session { return FromContext(r.Context()) }

// Get decodes the value at key into a T. A missing key gives T's zero
// value and no error; a value that is not a T gives an error naming the
// key and the type.
func Get[T any](s *Session, key string) (T, error) {
	var v T
	if s == nil {
		return v, ErrNoSession
	}
	s.mu.Lock()
	raw, ok := s.data[key]
	s.mu.Unlock()
	if !ok {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("hallpass: session key %q does not hold a %T: %w", key, v, err)
	}
	return v, nil
}

// Pop is Get followed by Delete, for one-time messages ("flash"). A value
// of the wrong type is still deleted.
func Pop[T any](s *Session, key string) (T, error) {
	v, err := Get[T](s, key)
	if s == nil {
		return v, err
	}
	if s.Has(key) {
		if derr := s.Delete(key); err == nil {
			err = derr
		}
	}
	return v, err
}

// Has reports whether key holds a value.
func (s *Session) Has(key string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.data[key]
	return ok
}

// Keys returns the keys that hold values, in no set order. The keys the
// library keeps for itself (the "hallpass." prefix: how the user signed
// in, the CSRF secret) are left out.
func (s *Session) Keys() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		if !reservedKey(k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// reservedKey reports whether a data key is one the library keeps for
// itself (see the constants in rotation.go and auth.go, and package
// csrf's secret).
func reservedKey(k string) bool { return strings.HasPrefix(k, reservedUserPrefix) }

// Set stores v, encoded as JSON, at key. The change is saved when the
// response starts, merged with changes other requests made to other keys.
//
// Keys may be any valid UTF-8 without NUL: every store must be able to
// keep them as JSON object keys, and PostgreSQL's jsonb holds no NUL.
func (s *Session) Set(key string, v any) error {
	if !utf8.ValidString(key) || strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("hallpass: session key %q is not valid UTF-8 or contains NUL; use another key", key)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("hallpass: session key %q: value cannot be stored as JSON: %w", key, err)
	}
	if jsontext.HasEscapedNUL(raw) {
		return fmt.Errorf("hallpass: session key %q: value contains a NUL character, which not every store can keep; encode it (base64, say)", key)
	}
	var sizeErr error
	err = s.change(func() {
		s.ownDataLocked()
		old, had := s.data[key]
		oldSet, hadSet := s.set[key]
		_, wasRemoved := s.removed[key]
		s.setLocked(key, raw)
		sizeErr = s.sizeCheckLocked(func() {
			if had {
				s.data[key] = old
			} else {
				delete(s.data, key)
			}
			if hadSet {
				s.set[key] = oldSet
			} else {
				delete(s.set, key)
			}
			if wasRemoved {
				s.removed[key] = struct{}{}
			}
		})
	})
	return cmp.Or(err, sizeErr)
}

// setLocked records raw at key in the data view and the pending delta.
// The data must be owned.
func (s *Session) setLocked(key string, raw json.RawMessage) {
	if s.set == nil {
		s.set = make(map[string]json.RawMessage)
	}
	s.data[key] = raw
	s.set[key] = raw
	delete(s.removed, key)
}

// Delete removes key.
func (s *Session) Delete(key string) error {
	return s.change(func() {
		if _, ok := s.data[key]; !ok && s.rec == nil {
			return
		}
		s.ownDataLocked()
		delete(s.data, key)
		delete(s.set, key)
		if s.removed == nil {
			s.removed = make(map[string]struct{})
		}
		s.removed[key] = struct{}{}
	})
}

// Clear removes every key. The session itself, who is signed in to it and
// how (the library's own "hallpass." keys), stay. As with Delete, what is
// removed is the keys this request knows of: a key another request of the
// session sets meanwhile stays, and the library's own keys are not written
// at all, so that a change another request made to them (a downgrade, a
// re-authentication) is not undone with this request's older copy.
func (s *Session) Clear() error {
	return s.change(func() {
		s.ownDataLocked()
		for k := range s.data {
			if reservedKey(k) {
				continue
			}
			delete(s.data, k)
			delete(s.set, k)
			if s.removed == nil {
				s.removed = make(map[string]struct{})
			}
			s.removed[k] = struct{}{}
		}
	})
}

func (s *Session) change(f func()) error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	if s.committed {
		rec := s.rec
		s.mu.Unlock()
		s.m.emit(s.ctx, EventSuspicious, ReasonWriteAfterStart, rec, s.ip, s.ua)
		return ErrResponseStarted
	}
	f()
	s.mu.Unlock()
	return nil
}

// ownDataLocked gives the session its own copy of the data before the
// first change: records from the store are shared and read-only, and most
// requests only read.
func (s *Session) ownDataLocked() {
	if !s.dataOwned {
		s.data = maps.Clone(s.data)
		if s.data == nil {
			s.data = make(map[string]json.RawMessage)
		}
		s.dataOwned = true
	}
}

func (s *Session) dirtyLocked() bool {
	return len(s.set) > 0 || len(s.removed) > 0 || s.cleared
}

// pendingLocked returns the data changes not yet saved.
func (s *Session) pendingLocked() Delta {
	d := Delta{Set: s.set, Clear: s.cleared}
	if len(s.removed) > 0 {
		d.Remove = make([]string, 0, len(s.removed))
		for k := range s.removed {
			d.Remove = append(d.Remove, k)
		}
	}
	return d
}

func (s *Session) resetPendingLocked() {
	s.set, s.removed, s.cleared = nil, nil, false
}

// Handle returns the session's public id, or "" for a guest that has not
// been saved yet. It is safe to show and to log.
func (s *Session) Handle() string { return s.field(func(r *Record) string { return r.Handle }) }

// UserID returns the signed-in user's id, or "" for a guest.
func (s *Session) UserID() string { return s.field(func(r *Record) string { return r.UserID }) }

// IsAuthenticated reports whether a user is signed in.
func (s *Session) IsAuthenticated() bool { return s.UserID() != "" }

// Record returns a copy of the session's record, or nil for a guest that
// has not been saved yet.
func (s *Session) Record() *Record {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil {
		return nil
	}
	r := s.rec.Clone()
	r.Data = nil
	return r
}

func (s *Session) field(f func(*Record) string) string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil {
		return ""
	}
	return f(s.rec)
}

// LoginOptions describes a sign-in.
type LoginOptions struct {
	// Persistent keeps the session across browser restarts ("keep me
	// signed in"), with the persistent timeouts.
	Persistent bool
	// Method is how the user proved who they are: MethodPassword (the
	// default), MethodTOTP, MethodWebAuthn, MethodRememberMe, or a name
	// of your own. See Session.Auth and Manager.Require.
	Method string
	// Remembered marks a sign-in by a remember-me token; Method
	// MethodRememberMe implies it. Such a session has had no credential
	// check, so it is never fresh enough for Require's FreshWithin.
	Remembered bool
}

// Login signs userID in to this session. It issues a new token and kills
// the old one at once (no session fixation), keeps the guest's data (a
// cart) unless another user was signed in, calls Config.OnLogin, and
// starts a new absolute lifetime.
func (s *Session) Login(userID string, opts LoginOptions) error {
	if s == nil {
		return ErrNoSession
	}
	if userID == "" {
		return errors.New("hallpass: Login needs a non-empty user id")
	}
	if reservedUser(userID) {
		return fmt.Errorf("hallpass: Login: user ids starting with %q are reserved for the library's own records", reservedUserPrefix)
	}
	if opts.Method == "" {
		opts.Method = MethodPassword
	}
	opts.Remembered = opts.Remembered || opts.Method == MethodRememberMe
	now := s.m.now()
	idle, lifetime := s.m.timeouts(opts.Persistent)
	methods := []MethodUse{{Method: opts.Method, At: now}}
	meta := Meta{
		UserID:           userID,
		AuthTime:         now,
		AuthLevel:        levelOf(methods).String(),
		Remembered:       opts.Remembered,
		ReauthAt:         now,
		Persistent:       opts.Persistent,
		AbsoluteDeadline: now.Add(lifetime),
	}
	if opts.Remembered {
		meta.ReauthAt = time.Time{}
	}
	touch := Touch{LastSeen: now, IdleDeadline: minTime(now.Add(idle), meta.AbsoluteDeadline), LastIP: s.ip, LastUA: s.ua}

	s.mu.Lock()
	if s.committed {
		s.mu.Unlock()
		return ErrResponseStarted
	}
	// A failed Login leaves the session as it was: neither OnLogin's
	// merge (the user's saved cart) nor the auth record may stay behind
	// in what is still a guest's, or another user's, session.
	saved := s.saveDataLocked()
	if s.rec != nil && s.rec.UserID != "" && s.rec.UserID != userID {
		// Another user's data must not leak into this one's session.
		s.data, s.dataOwned = make(map[string]json.RawMessage), true
		s.set, s.removed, s.cleared = nil, nil, true
	}
	prev := s.rec
	// OnLogin sees the new identity; it runs unlocked because it uses the
	// Session API itself.
	s.rec = &Record{Meta: meta, Touch: touch}
	if prev != nil {
		s.rec.Handle, s.rec.CreatedAt = prev.Handle, prev.CreatedAt
	}
	s.mu.Unlock()

	if hook := s.m.cfg.OnLogin; hook != nil {
		if err := hook(s.ctx, s); err != nil {
			s.mu.Lock()
			s.rec = prev
			s.restoreDataLocked(saved)
			s.mu.Unlock()
			return fmt.Errorf("hallpass: Login: OnLogin: %w", err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.ownDataLocked()
	if err := s.setAuthLocked(methods, now); err != nil {
		s.rec = prev
		s.restoreDataLocked(saved)
		return err
	}
	d := s.pendingLocked()
	d.Meta, d.Touch = &meta, &touch
	var evicted []string
	if s.m.cfg.MaxSessions > 0 {
		d.Limit = &Limit{
			Max:       s.m.cfg.MaxSessions,
			RefuseNew: s.m.cfg.RefuseNewSessions,
			Evicted:   func(h string) { evicted = append(evicted, h) },
		}
	}
	rec, token, err := s.m.signIn(s.ctx, prev, d, s.data, now, s.ip, s.ua)
	if err != nil {
		s.rec = prev
		s.restoreDataLocked(saved)
		if errors.Is(err, ErrTooManySessions) {
			s.m.emit(s.ctx, EventLoginRefused, ReasonSessionLimit, &Record{Meta: meta}, s.ip, s.ua)
		}
		return err
	}
	s.installLocked(rec, token)
	s.m.emit(s.ctx, EventAuthenticated, "", rec, s.ip, s.ua)
	for _, h := range evicted {
		// The store knows only the handle of a session it ended; where
		// that session was used from is not this request's address.
		s.m.emit(s.ctx, EventRevoked, ReasonSessionLimit, &Record{Handle: h, Meta: Meta{UserID: userID}}, "", "")
	}
	return nil
}

// dataState is a session's data and pending changes, as saved by Login
// to put back if it fails.
type dataState struct {
	data    map[string]json.RawMessage
	owned   bool
	set     map[string]json.RawMessage
	removed map[string]struct{}
	cleared bool
}

func (s *Session) saveDataLocked() dataState {
	st := dataState{data: s.data, owned: s.dataOwned, set: maps.Clone(s.set), removed: maps.Clone(s.removed), cleared: s.cleared}
	if s.dataOwned { // owned data changes in place; shared data never does
		st.data = maps.Clone(s.data)
	}
	return st
}

func (s *Session) restoreDataLocked(st dataState) {
	s.data, s.dataOwned = st.data, st.owned
	s.set, s.removed, s.cleared = st.set, st.removed, st.cleared
}

// signIn stores the session prev (nil for a guest never saved) under a
// new token with d applied, d carrying the new identity. data is the
// session's whole data, for when prev is not stored.
func (m *Manager) signIn(ctx context.Context, prev *Record, d Delta, data map[string]json.RawMessage, now time.Time, ip, ua string) (*Record, string, error) {
	if prev != nil {
		rec, token, err := m.rotate(ctx, prev, d)
		if !errors.Is(err, ErrNotFound) {
			return rec, token, err
		}
	}
	// No stored session yet, or it ended during this request (expired,
	// revoked): the user has just proved who they are, so start a new
	// one from what this request saw.
	rec := m.newRecord(now, ip, ua)
	rec.Data = maps.Clone(data)
	if d.Limit == nil {
		rec.Meta, rec.Touch = *d.Meta, *d.Touch
		token, err := m.create(ctx, rec)
		return rec, token, err
	}
	// Only Rotate enforces a limit: store the data as a guest first,
	// then sign that in. The extra round trip is paid only by a login
	// with a limit and no stored guest session.
	if _, err := m.create(ctx, rec); err != nil {
		return nil, "", err
	}
	rec2, token, err := m.rotate(ctx, rec, Delta{Meta: d.Meta, Touch: d.Touch, Limit: d.Limit})
	if err != nil {
		if derr := m.store.Delete(context.WithoutCancel(ctx), rec.Key); derr != nil {
			m.cfg.Logger.Warn("hallpass: could not delete the guest record of a refused login", "err", derr)
		}
		if errors.Is(err, ErrNotFound) { // removed in between: nothing to sign in
			err = fmt.Errorf("%w: login: the new session vanished before sign-in", ErrStore)
		}
		return nil, "", err
	}
	return rec2, token, nil
}

// Renew issues a new token for the session and kills the old one at once.
// Data, handle, user and both deadlines stay. Call it after any change of
// privilege. A guest that has not been saved has no token to renew.
func (s *Session) Renew() error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed {
		return ErrResponseStarted
	}
	if s.rec == nil {
		return nil
	}
	s.ownDataLocked()
	s.setLocked(issuedKey, issuedValue(s.m.now()))
	rec, token, err := s.m.rotate(s.ctx, s.rec, s.pendingLocked())
	if errors.Is(err, ErrNotFound) {
		s.goneLocked()
		return nil
	}
	if err != nil {
		return err
	}
	s.installLocked(rec, token)
	s.m.emit(s.ctx, EventRenewed, "", rec, s.ip, s.ua)
	return nil
}

func (s *Session) installLocked(rec *Record, token string) {
	s.rec, s.token = rec, token
	s.data, s.dataOwned = rec.Data, false
	s.resetPendingLocked()
	s.newCookie, s.dropCookie = true, false
}

// goneLocked turns the session into a fresh guest after its record ended
// during the request. The cookie is left alone (see Manager.load).
func (s *Session) goneLocked() {
	s.m.emit(s.ctx, EventRevoked, ReasonGone, s.rec, s.ip, s.ua)
	s.rec, s.token, s.data, s.dataOwned = nil, "", nil, false
	s.resetPendingLocked()
	s.newCookie, s.dropCookie = false, false
}

// Logout ends the session on the server at once and tells the browser to
// drop the cookie. Anything written to the session afterwards in the same
// request starts a new guest session.
func (s *Session) Logout() error {
	if s == nil {
		return ErrNoSession
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed {
		return ErrResponseStarted
	}
	if s.rec != nil {
		if err := s.m.remove(s.ctx, s.rec); err != nil {
			return fmt.Errorf("%w: logout: %w", ErrStore, err)
		}
		s.m.emit(s.ctx, EventLoggedOut, "", s.rec, s.ip, s.ua)
	}
	s.rec, s.token, s.data, s.dataOwned = nil, "", nil, false
	s.resetPendingLocked()
	s.newCookie, s.dropCookie = false, true
	return nil
}

// Extend slides the idle deadline now, ignoring the touch throttle.
func (s *Session) Extend() error {
	return s.change(func() { s.forceTouch = true })
}

// rotate moves prev to a fresh token, applying d. It returns the record
// as now stored, or an error wrapping ErrNotFound if prev has ended.
func (m *Manager) rotate(ctx context.Context, prev *Record, d Delta) (*Record, string, error) {
	if m.sealer != nil {
		return m.rotateSealed(ctx, prev, d)
	}
	for range 3 { // a taken 256-bit key means a broken RNG, not bad luck
		token := NewToken()
		key := KeyOf(token)
		err := m.store.Rotate(ctx, prev.Key, key, d)
		if errors.Is(err, ErrExists) {
			continue
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrTooManySessions) {
			return nil, "", err
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: rotate: %w", ErrStore, err)
		}
		rec := prev.Clone()
		d.Apply(rec)
		rec.Key = key
		rec.Version++
		return rec, token, nil
	}
	return nil, "", fmt.Errorf("%w: no free key for the session; is crypto/rand broken?", ErrStore)
}

// create stores rec under a fresh token, which it returns.
func (m *Manager) create(ctx context.Context, rec *Record) (string, error) {
	if m.sealer != nil {
		rec.Version = 1
		return m.seal(ctx, rec, rec.LastIP, rec.LastUA)
	}
	for range 3 {
		token := NewToken()
		rec.Key = KeyOf(token)
		err := m.store.Create(ctx, rec)
		if errors.Is(err, ErrExists) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("%w: create: %w", ErrStore, err)
		}
		rec.Version = 1
		return token, nil
	}
	return "", fmt.Errorf("%w: no free key for the session; is crypto/rand broken?", ErrStore)
}

// newRecord returns a guest record as a new session starts.
func (m *Manager) newRecord(now time.Time, ip, ua string) *Record {
	persistent := m.cfg.GuestPersistent
	idle, lifetime := m.timeouts(persistent)
	abs := now.Add(lifetime)
	return &Record{
		Handle:    NewHandle(),
		Meta:      Meta{Persistent: persistent, AbsoluteDeadline: abs},
		Touch:     Touch{LastSeen: now, IdleDeadline: minTime(now.Add(idle), abs), LastIP: ip, LastUA: ua},
		CreatedAt: now,
		CreatedIP: ip,
		CreatedUA: ua,
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
