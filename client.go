package hallpass

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ClientChange says what happens when a signed-in session shows up from
// a different client than it last did.
type ClientChange int

// Policies for Config.OnIPChange and Config.OnUserAgentChange. The zero
// value means the field's default.
const (
	ClientChangeDefault ClientChange = iota
	// ClientChangeIgnore does nothing.
	ClientChangeIgnore
	// ClientChangeLog emits a suspicious event and carries on.
	ClientChangeLog
	// ClientChangeReauth emits the event and downgrades the session to
	// LevelRemembered, never fresh, until Session.Reauthenticate: routes
	// behind Require ask for the password again, others still work.
	ClientChangeReauth
	// ClientChangeRevoke emits the event and ends the session; the
	// request goes on as a guest.
	ClientChangeRevoke
)

// Reasons of client-change events.
const (
	ReasonIPChanged        = "ip_changed"
	ReasonUserAgentChanged = "user_agent_changed"
)

// BrowserFamily reduces a User-Agent to the browser that sent it
// ("firefox", "chrome", "safari", "edge", "opera", or the product name of
// anything else, "curl" say), so an update from Firefox 130 to 131 is no
// change and a switch to Chrome is. It is what OnUserAgentChange
// compares.
func BrowserFamily(ua string) string {
	// Order matters: Edge and Opera also say Chrome, Chrome also says
	// Safari.
	for _, f := range [...]struct{ marker, family string }{
		{"Edg/", "edge"}, {"EdgA/", "edge"}, {"EdgiOS/", "edge"},
		{"OPR/", "opera"}, {"Firefox/", "firefox"}, {"FxiOS/", "firefox"},
		{"Chrome/", "chrome"}, {"CriOS/", "chrome"}, {"Chromium/", "chrome"},
		{"Safari/", "safari"},
	} {
		if strings.Contains(ua, f.marker) {
			return f.family
		}
	}
	// Not a browser we know: the product name ("curl/8.5.0" → "curl").
	product, _, _ := strings.Cut(ua, "/")
	product, _, _ = strings.Cut(product, " ")
	return strings.ToLower(product)
}

// checkClient applies the client-change policies to a signed-in session
// just loaded. It returns false if the session was revoked.
func (m *Manager) checkClient(ctx context.Context, s *Session) (bool, error) {
	rec := s.rec
	if rec.UserID == "" {
		return true, nil
	}
	var reasons []string
	policy := ClientChangeIgnore
	if rec.LastIP != "" && s.ip != "" && rec.LastIP != s.ip && m.onIP != ClientChangeIgnore {
		reasons, policy = append(reasons, ReasonIPChanged), m.onIP
	}
	if rec.LastUA != "" && BrowserFamily(rec.LastUA) != BrowserFamily(s.ua) && m.onUA != ClientChangeIgnore {
		reasons, policy = append(reasons, ReasonUserAgentChanged), max(policy, m.onUA)
	}
	if len(reasons) == 0 {
		return true, nil
	}
	for _, r := range reasons {
		m.emit(ctx, EventSuspicious, r, rec, s.ip, s.ua)
	}
	now := s.requestTime
	switch policy {
	case ClientChangeRevoke:
		if err := m.remove(ctx, rec); err != nil {
			return false, fmt.Errorf("%w: revoke on client change: %w", ErrStore, err)
		}
		m.emit(ctx, EventRevoked, reasons[len(reasons)-1], rec, s.ip, s.ua)
		return false, nil
	case ClientChangeReauth:
		var a authData
		if raw, ok := rec.Data[authKey]; ok {
			_ = json.Unmarshal(raw, &a)
		}
		a.ReauthRequired = true
		raw, err := json.Marshal(a)
		if err != nil {
			return false, err
		}
		meta := rec.Meta
		meta.AuthLevel, meta.ReauthAt = min(levelOf(a.Methods), LevelRemembered).String(), time.Time{}
		// The new client becomes the last one seen, so the change is
		// acted on once.
		touch := Touch{LastSeen: now, IdleDeadline: rec.IdleDeadline, LastIP: s.ip, LastUA: s.ua}
		d := Delta{Set: map[string]json.RawMessage{authKey: raw}, Meta: &meta, Touch: &touch}
		if m.sealer != nil {
			s.reseal = true
		} else if err := m.store.Update(ctx, rec.Key, d); errors.Is(err, ErrNotFound) {
			return false, nil // ended meanwhile: a guest, as if revoked
		} else if err != nil {
			return false, fmt.Errorf("%w: downgrade on client change: %w", ErrStore, err)
		}
		next := rec.Clone()
		d.Apply(next)
		next.Version++
		s.rec, s.data = next, next.Data
	default:
		// Logged only: record the new client in this request's touch, so
		// the change is reported once rather than on every request until
		// the next touch. (The downgrade above recorded it already.)
		s.clientChanged = true
	}
	return true, nil
}
