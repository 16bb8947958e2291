package hallpass

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// SessionInfo describes one of a user's sessions for a "your devices"
// page. It holds the public handle, never the token.
type SessionInfo struct {
	Handle           string    `json:"handle"`
	UserID           string    `json:"user"`
	CreatedAt        time.Time `json:"created_at"`
	LastSeen         time.Time `json:"last_seen"`
	IP               string    `json:"ip"`         // at last activity
	UserAgent        string    `json:"user_agent"` // at last activity
	CreatedIP        string    `json:"created_ip"`
	AuthLevel        string    `json:"auth_level"`
	Remembered       bool      `json:"remembered"`
	Persistent       bool      `json:"persistent"`
	IdleDeadline     time.Time `json:"idle_deadline"`
	AbsoluteDeadline time.Time `json:"absolute_deadline"`
	Current          bool      `json:"current"` // the session making the request
}

// ErrUnknownHandle reports a handle that names no live session of the user.
var ErrUnknownHandle = errors.New("hallpass: no such session for this user")

// UserSessions lists a user's live sessions, most recently seen first.
func (m *Manager) UserSessions(ctx context.Context, userID string) ([]SessionInfo, error) {
	return m.userSessions(ctx, userID, "")
}

func (m *Manager) userSessions(ctx context.Context, userID, current string) ([]SessionInfo, error) {
	if userID == "" {
		return nil, nil
	}
	if m.sealer != nil {
		return nil, ErrNoServerState
	}
	recs, err := m.store.ListUser(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("%w: list sessions: %w", ErrStore, err)
	}
	now := m.now()
	out := make([]SessionInfo, 0, len(recs))
	for _, r := range recs {
		if r.Expired(now) {
			continue
		}
		out = append(out, SessionInfo{
			Handle: r.Handle, UserID: r.UserID, CreatedAt: r.CreatedAt, LastSeen: r.LastSeen,
			IP: r.LastIP, UserAgent: r.LastUA, CreatedIP: r.CreatedIP, AuthLevel: r.AuthLevel,
			Remembered: r.Remembered, Persistent: r.Persistent, IdleDeadline: r.IdleDeadline,
			AbsoluteDeadline: r.AbsoluteDeadline, Current: current != "" && r.Handle == current,
		})
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmp.Compare(b.LastSeen.UnixNano(), a.LastSeen.UnixNano()) })
	return out, nil
}

// Revoke ends the session of userID whose handle is handle, on the server,
// at once. It returns ErrUnknownHandle if there is none: a handle of
// another user's session is unknown too.
func (m *Manager) Revoke(ctx context.Context, userID, handle string) error {
	return m.revoke(ctx, userID, handle, ReasonRevoke)
}

func (m *Manager) revoke(ctx context.Context, userID, handle, reason string) error {
	if userID == "" || handle == "" {
		return ErrUnknownHandle
	}
	if m.sealer != nil {
		// No list to check the handle against: revoke it for as long as
		// any cookie can live. A handle of another user's session is as
		// unguessable as any, so this cannot be aimed at someone else.
		until := m.now().Add(max(m.cfg.Lifetime, m.cfg.PersistentLifetime))
		if err := m.cfg.Revocations.RevokeID(ctx, handle, until); err != nil {
			return fmt.Errorf("%w: revoke: %w", ErrStore, err)
		}
		m.emit(ctx, EventRevoked, reason, &Record{Handle: handle, Meta: Meta{UserID: userID}}, "", "")
		return nil
	}
	recs, err := m.store.ListUser(ctx, userID)
	if err != nil {
		return fmt.Errorf("%w: list sessions: %w", ErrStore, err)
	}
	for _, r := range recs {
		if r.Handle != handle || r.UserID != userID {
			continue
		}
		if rv := m.cfg.Revocations; rv != nil {
			// Tokens issued for this session (package token) name its
			// handle; they end with it, for as long as any can live.
			if err := rv.RevokeID(ctx, handle, m.now().Add(rv.Retain())); err != nil {
				return err
			}
		}
		if err := m.store.Delete(ctx, r.Key); err != nil {
			return fmt.Errorf("%w: revoke: %w", ErrStore, err)
		}
		m.emit(ctx, EventRevoked, reason, r, "", "")
		return nil
	}
	return ErrUnknownHandle
}

// RevokeAll ends every session of userID, for "sign out everywhere" and
// password changes, and returns how many it ended.
func (m *Manager) RevokeAll(ctx context.Context, userID string) (int, error) {
	return m.revokeUser(ctx, userID, ReasonRevokeAll)
}

func (m *Manager) revokeUser(ctx context.Context, userID, reason string, keep ...Key) (int, error) {
	if userID == "" {
		return 0, nil
	}
	if reservedUser(userID) {
		return 0, fmt.Errorf("hallpass: %q is not a user: the library keeps its own records under it", userID)
	}
	if r := m.cfg.Revocations; r != nil {
		// First: if it fails, nothing was ended and the caller retries.
		if err := r.RevokeUser(ctx, userID); err != nil {
			return 0, err
		}
	}
	if m.sealer != nil {
		// The cutoff above ended them; how many there were is unknown.
		m.emit(ctx, EventRevoked, reason, &Record{Meta: Meta{UserID: userID}}, "", "")
		return 0, nil
	}
	n, err := m.store.DeleteUser(ctx, userID, keep...)
	if err != nil {
		return n, fmt.Errorf("%w: revoke sessions: %w", ErrStore, err)
	}
	if n > 0 {
		m.emit(ctx, EventRevoked, reason, &Record{Meta: Meta{UserID: userID}}, "", "")
	}
	return n, nil
}

// Devices lists the sessions of the signed-in user, marking this one as
// Current. A guest has none.
func (s *Session) Devices() ([]SessionInfo, error) {
	if s == nil {
		return nil, ErrNoSession
	}
	return s.m.userSessions(s.ctx, s.UserID(), s.Handle())
}

// Revoke ends the signed-in user's session whose handle is handle. Ending
// this very session is a Logout.
func (s *Session) Revoke(handle string) error {
	if s == nil {
		return ErrNoSession
	}
	if handle != "" && handle == s.Handle() {
		return s.Logout()
	}
	return s.m.revoke(s.ctx, s.UserID(), handle, ReasonRevoke)
}

// RevokeOthers ends every session of the signed-in user but this one and
// returns how many it ended.
func (s *Session) RevokeOthers() (int, error) {
	if s == nil {
		return 0, ErrNoSession
	}
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	if rec == nil || rec.UserID == "" {
		return 0, nil
	}
	n, err := s.m.revokeUser(s.ctx, rec.UserID, ReasonRevokeOthers, rec.Key)
	if err != nil || s.m.sealer == nil {
		return n, err
	}
	// The user's cutoff caught this cookie too: issue it anew.
	return n, s.Renew()
}

// CredentialsChanged is for after the signed-in user changed their
// password, second factor or roles: every other session of the user ends,
// and so does this one unless keepThis, in which case it gets a new token.
// It returns how many sessions it ended.
func (s *Session) CredentialsChanged(keepThis bool) (int, error) {
	if s == nil {
		return 0, ErrNoSession
	}
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	if rec == nil || rec.UserID == "" {
		return 0, errors.New("hallpass: CredentialsChanged on a session nobody is signed in to")
	}
	if !keepThis {
		n, err := s.m.revokeUser(s.ctx, rec.UserID, ReasonCredentialsChanged)
		if err == nil {
			s.mu.Lock()
			s.rec, s.token, s.data, s.dataOwned = nil, "", nil, false
			s.resetPendingLocked()
			s.newCookie, s.dropCookie = false, true
			s.mu.Unlock()
		}
		return n, err
	}
	n, err := s.m.revokeUser(s.ctx, rec.UserID, ReasonCredentialsChanged, rec.Key)
	if err != nil {
		return n, err
	}
	return n, s.Renew()
}
