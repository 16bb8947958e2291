package hallpass

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sealer keeps each session sealed inside its own cookie, so that the
// server holds no session state (package cookiestore implements it). Set
// it as Config.Sealer instead of Config.Store; handlers use the same
// Session API either way.
//
// What a server-side store does and a cookie cannot, the Manager does
// with Config.Revocations: Logout, Revoke and Renew put the session's
// handle on the list until the cookie would have expired, and RevokeAll
// and CredentialsChanged cut off the user's cookies issued before. There
// is no list of a user's sessions (Devices fails with ErrNoServerState),
// no session limit, and no periodic rotation: every change re-seals the
// cookie anyway. Two concurrent requests that change the session each
// send a whole new cookie, and the browser keeps the last one.
type Sealer interface {
	// Seal returns the cookie value holding r, bound to the cookie name.
	Seal(name string, r *Record) (string, error)
	// Open returns the record sealed in value for the cookie name. It
	// fails for any value that Seal did not make with a key it still
	// holds, for this name.
	Open(name, value string) (*Record, error)
}

// MaxCookieSize is the most a whole Set-Cookie header value (name, value
// and attributes) may take: what every browser keeps.
const MaxCookieSize = 4096

// ErrCookieTooLarge reports that a sealed session would not fit in its
// cookie. The change that would have made it too large is not made.
var ErrCookieTooLarge = errors.New("hallpass: the session does not fit in its cookie (4096 bytes with attributes); keep less in it, or use a server-side Store")

// ErrNoServerState reports an operation that needs a list of sessions
// kept on the server, asked of a Manager whose sessions live in cookies.
var ErrNoServerState = errors.New("hallpass: sessions sealed in cookies keep no server-side list; use a Store for this")

// newSealed checks what a Manager with a Sealer needs.
func (m *Manager) newSealed() error {
	cfg := &m.cfg
	switch {
	case cfg.Revocations == nil:
		return errors.New("hallpass: Config.Sealer needs Config.Revocations: without it, a cookie captured before Logout would still work")
	case cfg.Revocations.Retain() < max(cfg.Lifetime, cfg.PersistentLifetime):
		return fmt.Errorf("hallpass: Revocations keeps cutoffs for %v, less than the longest session lifetime %v; raise RevocationOptions.Retain", cfg.Revocations.Retain(), max(cfg.Lifetime, cfg.PersistentLifetime))
	case cfg.MaxSessions > 0:
		return errors.New("hallpass: Config.MaxSessions needs a server-side Store: sealed cookies cannot be counted")
	}
	m.sealer, m.rotateEvery = cfg.Sealer, 0
	c := m.baseCookie()
	c.MaxAge = int(maxCookieAge / time.Second)
	m.cookieOverhead = len(c.String())
	return nil
}

// seal returns the cookie value for rec, or ErrCookieTooLarge with an
// event.
func (m *Manager) seal(ctx context.Context, rec *Record, ip, ua string) (string, error) {
	v, err := m.sealer.Seal(m.cookie.Name, rec)
	if err != nil {
		return "", fmt.Errorf("hallpass: seal the session: %w", err)
	}
	if m.cookieOverhead+len(v) > MaxCookieSize {
		m.emit(ctx, EventWriteRefused, ReasonCookieTooLarge, rec, ip, ua)
		return "", ErrCookieTooLarge
	}
	return v, nil
}

// loadSealed is load for a Sealer: open the cookie and check it against
// the revocation list and its deadlines.
func (m *Manager) loadSealed(ctx context.Context, s *Session, value string) error {
	rec, err := m.sealer.Open(m.cookie.Name, value)
	if err != nil {
		m.emit(ctx, EventSuspicious, ReasonTamperedCookie, nil, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	if m.cfg.Revocations.Revoked(rec.UserID, rec.Handle, issuedAt(rec)) {
		// A cookie captured before Logout or a revocation, replayed.
		m.emit(ctx, EventSuspicious, ReasonRevokedCookie, rec, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	if rec.Expired(s.requestTime) {
		kind := EventExpiredIdle
		if !rec.AbsoluteDeadline.IsZero() && !s.requestTime.Before(rec.AbsoluteDeadline) {
			kind = EventExpiredAbsolute
		}
		m.emit(ctx, kind, "", rec, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	s.rec, s.token, s.data = rec, value, rec.Data
	if live, err := m.checkClient(ctx, s); err != nil || !live {
		s.rec, s.token, s.data = nil, "", nil
		return err
	}
	return nil
}

// rotateSealed is rotate for a Sealer. A signed-in session's old cookie
// must stop working at once, so the session gets a new handle and the
// old one goes on the revocation list. A guest's old cookie stays valid:
// it holds nothing the new one gives away.
func (m *Manager) rotateSealed(ctx context.Context, prev *Record, d Delta) (*Record, string, error) {
	rec := prev.Clone()
	d.Apply(rec)
	rec.Version++
	if prev.UserID != "" {
		rec.Handle = NewHandle()
	}
	token, err := m.seal(ctx, rec, "", "")
	if err != nil {
		return nil, "", err
	}
	if prev.UserID != "" {
		if err := m.cfg.Revocations.RevokeID(ctx, prev.Handle, prev.ExpiresAt()); err != nil {
			return nil, "", fmt.Errorf("%w: revoke the old cookie: %w", ErrStore, err)
		}
	}
	return rec, token, nil
}

// remove ends rec on the server: deleted from the store, or, for a
// sealed cookie, listed as revoked until it would have expired.
func (m *Manager) remove(ctx context.Context, rec *Record) error {
	if m.sealer != nil {
		return m.cfg.Revocations.RevokeID(ctx, rec.Handle, rec.ExpiresAt())
	}
	return m.store.Delete(ctx, rec.Key)
}

// sizeCheckLocked refuses a change that would make a sealed session too
// large for its cookie, before it is made, so that nothing is lost at
// the end of the request. undo reverts the change.
func (s *Session) sizeCheckLocked(undo func()) error {
	m := s.m
	if m.sealer == nil {
		return nil
	}
	rec := s.rec
	if rec == nil {
		rec = m.newRecord(s.requestTime, s.ip, s.ua)
	}
	c := *rec
	c.Data = s.data
	if _, err := m.seal(s.ctx, &c, s.ip, s.ua); err != nil {
		undo()
		return err
	}
	return nil
}

// sealedErrorStatus maps errors only sealed sessions have to a response.
func sealedErrorStatus(w http.ResponseWriter, err error) bool {
	if errors.Is(err, ErrCookieTooLarge) {
		http.Error(w, "session too large for its cookie", http.StatusInternalServerError)
		return true
	}
	return false
}
