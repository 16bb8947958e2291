package hallpass

import (
	"context"
	"log/slog"
	"time"
)

// EventKind names a step in a session's life.
type EventKind string

// The kinds of Event a Manager emits.
const (
	EventCreated         EventKind = "created"          // a new session was stored
	EventAuthenticated   EventKind = "authenticated"    // Login succeeded
	EventRenewed         EventKind = "renewed"          // Renew issued a new token
	EventRotated         EventKind = "rotated"          // periodic rotation issued a new token
	EventExtended        EventKind = "extended"         // Extend pushed the idle deadline
	EventExpiredIdle     EventKind = "expired_idle"     // idle deadline passed
	EventExpiredAbsolute EventKind = "expired_absolute" // absolute deadline passed
	EventRevoked         EventKind = "revoked"          // ended by Revoke, RevokeAll or RevokeOthers
	EventLoggedOut       EventKind = "logged_out"       // Logout
	EventLoginRefused    EventKind = "login_refused"    // Login over Config.MaxSessions with RefuseNewSessions
	EventWriteRefused    EventKind = "write_refused"    // a change that would not fit in a sealed cookie
	EventSuspicious      EventKind = "suspicious"       // see the Reason* constants
)

// Reasons carried by suspicious and revoked events.
const (
	ReasonMalformedCookie    = "malformed_cookie" // wrong length or not canonical base64url
	ReasonDuplicateCookie    = "duplicate_cookie" // more than one session cookie in a request
	ReasonUnknownToken       = "unknown_token"    // well-formed token with no live session (also: already expired and swept)
	ReasonTokenFlood         = "token_flood"      // many bad cookies from one address
	ReasonTokenReuse         = "token_reuse"      // a rotated-out token used after the grace window
	ReasonWriteAfterStart    = "write_after_response_started"
	ReasonGone               = "gone_during_request" // revoked or expired while a request was running
	ReasonRevoke             = "revoke"
	ReasonRevokeAll          = "revoke_all"
	ReasonRevokeOthers       = "revoke_others"
	ReasonCredentialsChanged = "credentials_changed"
	ReasonSessionLimit       = "session_limit"    // ended, or refused, to keep a user within Config.MaxSessions
	ReasonRememberTheft      = "remember_theft"   // a remember-me series presented with a wrong validator: see package remember
	ReasonTamperedCookie     = "tampered_cookie"  // a sealed cookie that does not open: forged, altered, or sealed with a retired key
	ReasonRevokedCookie      = "revoked_cookie"   // a sealed cookie replayed after Logout or a revocation
	ReasonCookieTooLarge     = "cookie_too_large" // see ErrCookieTooLarge
)

// Event describes one session lifecycle step. It carries the public
// handle, never the token.
type Event struct {
	Kind      EventKind
	Reason    string
	Handle    string
	UserID    string
	Time      time.Time
	IP        string // from Config.ClientIP
	UserAgent string
	// ForwardedFor is the request's X-Forwarded-For as received, trusted
	// or not: for investigating, never for deciding.
	ForwardedFor string
}

// Sink receives events. Emit must be safe for concurrent use and should
// not block: it runs on the request path.
type Sink interface {
	Emit(ctx context.Context, e Event)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, e Event)

// Emit calls f(ctx, e).
func (f SinkFunc) Emit(ctx context.Context, e Event) { f(ctx, e) }

// SlogSink writes events to a slog.Logger: suspicious events at Warn,
// everything else at Info.
type SlogSink struct {
	Logger *slog.Logger // nil means slog.Default()
}

// Emit logs e.
func (s SlogSink) Emit(ctx context.Context, e Event) {
	l := s.Logger
	if l == nil {
		l = slog.Default()
	}
	level := slog.LevelInfo
	if e.Kind == EventSuspicious {
		level = slog.LevelWarn
	}
	if !l.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("kind", string(e.Kind))}
	for _, a := range [...]struct{ k, v string }{
		{"reason", e.Reason}, {"handle", e.Handle}, {"user", e.UserID}, {"ip", e.IP},
		{"forwarded_for", e.ForwardedFor}, {"user_agent", e.UserAgent},
	} {
		if a.v != "" {
			attrs = append(attrs, slog.String(a.k, a.v))
		}
	}
	l.LogAttrs(ctx, level, "hallpass session event", attrs...)
}

// Sinks fans every event out to each sink in turn.
type Sinks []Sink

// Emit sends e to every sink.
func (ss Sinks) Emit(ctx context.Context, e Event) {
	for _, s := range ss {
		s.Emit(ctx, e)
	}
}

// Report emits an event about this session, with its handle, user and
// client filled in, for companion packages (csrf, say) and applications.
func (s *Session) Report(kind EventKind, reason string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	s.m.emit(s.ctx, kind, reason, rec, s.ip, s.ua)
}
