// Package hallpass manages server-side sessions for net/http applications.
//
// A Manager keeps each session in a Store under SHA-256 of a 256-bit
// random token; only the browser's cookie holds the token. Its Handler
// middleware loads the session into the request context, and saves what
// the handler changed before the first byte of the response, merged with
// what other requests changed meanwhile.
//
//	m, err := hallpass.New(hallpass.Config{Store: memstore.New(nil)})
//	...
//	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
//		s := hallpass.FromRequest(r)
//		n, _ := hallpass.Get[int](s, "visits")
//		s.Set("visits", n+1)
//		fmt.Fprintf(w, "visit %d", n+1)
//	})
//	http.ListenAndServe("localhost:8080", m.Handler(mux))
//
// Guests cost nothing until a handler writes to their session. Login
// rotates the token (no session fixation) and keeps the guest's data;
// Logout and the Revoke methods end sessions on the server, so a replayed
// cookie gets a guest. Sessions have both an idle timeout, which slides on
// activity, and an absolute lifetime, which never moves.
package hallpass

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultIdleTimeout           = 30 * time.Minute
	DefaultLifetime              = 12 * time.Hour
	DefaultPersistentIdleTimeout = 7 * 24 * time.Hour
	DefaultPersistentLifetime    = 30 * 24 * time.Hour
	DefaultBackgroundHeader      = "Hallpass-Background"
	DefaultRotateEvery           = 15 * time.Minute
	DefaultRotateGrace           = time.Minute
	DefaultTheftWindow           = 24 * time.Hour
	maxTouchInterval             = time.Minute
)

// Config configures a Manager. Only Store (or Sealer) is required; every
// zero value means the documented default.
type Config struct {
	// Store keeps the sessions.
	Store Store
	// Sealer, set instead of Store, keeps each session sealed in its
	// cookie, with no server-side state (package cookiestore). It needs
	// Revocations. See Sealer for what changes.
	Sealer Sealer

	// IdleTimeout ends a browser-session (non-persistent) session after
	// this long without a request. Default 30 minutes.
	IdleTimeout time.Duration
	// Lifetime ends a non-persistent session this long after it was
	// created or signed in, whatever its activity. Default 12 hours.
	Lifetime time.Duration
	// PersistentIdleTimeout and PersistentLifetime are the same for
	// persistent sessions. Defaults 7 and 30 days.
	PersistentIdleTimeout time.Duration
	PersistentLifetime    time.Duration
	// GuestPersistent gives new guest sessions a persistent cookie, so
	// that a guest's cart survives closing the browser.
	GuestPersistent bool

	// TouchInterval throttles the sliding of the idle deadline: a session
	// is written for activity at most once per interval. Default: an
	// eighth of the idle timeout, at most one minute.
	TouchInterval time.Duration

	// RotateEvery gives a signed-in session a new token when its token is
	// this old, so a token copied from a browser stops working. Default 15
	// minutes; negative turns periodic rotation off. Login and Renew
	// always rotate, with no grace.
	RotateEvery time.Duration
	// RotateGrace is how long after a periodic rotation the old token
	// still works, for requests already in flight and other tabs; each
	// gets the same new token. Later use of the old token is treated as
	// theft: the session is revoked and a suspicious{token_reuse} event
	// emitted. Default one minute.
	RotateGrace time.Duration
	// TheftWindow is how long after a rotation reuse of the old token is
	// still recognised (its tombstone is kept). Default 24 hours.
	TheftWindow time.Duration

	// MaxSessions caps how many sessions one user may be signed in with
	// at once; zero means no limit. When a Login would go over it, the
	// user's oldest sessions (by sign-in time) end, each reported as a
	// revoked event with reason session_limit, or, with
	// RefuseNewSessions, the Login fails with ErrTooManySessions and the
	// user stays a guest. The store enforces it atomically: two logins at
	// the same moment cannot both slip past it.
	MaxSessions       int
	RefuseNewSessions bool

	// Revocations, if set, gets a cutoff for the user from RevokeAll and
	// CredentialsChanged, so that the user's stateless credentials issued
	// before (access tokens, sealed cookies) stop working on every
	// instance too.
	Revocations *Revocations

	// OnIPChange and OnUserAgentChange say what happens when a signed-in
	// session is used from another address, or from another browser
	// (family: Firefox to Chrome, not Firefox 130 to 131), than last time.
	// Defaults: log IP changes (mobile clients change address all the
	// time); require re-authentication on a browser change.
	OnIPChange        ClientChange
	OnUserAgentChange ClientChange

	// Cookie sets the session cookie's name and attributes.
	Cookie Cookie

	// BackgroundHeader names a request header which, when present with any
	// value, marks the request as background: it is authenticated but does
	// not slide the idle deadline. Default "Hallpass-Background"; "-"
	// disables the header (Manager.Background still works).
	BackgroundHeader string

	// OnLogin, if set, runs inside Login after the session has its new
	// user id and before it is saved; it may read the guest's data and
	// merge it with the user's (a saved cart, say). An error aborts Login.
	OnLogin func(ctx context.Context, s *Session) error

	// Events receives every session event. Default: SlogSink{Logger}.
	Events Sink

	// Logger receives the Manager's own warnings and store errors (never a
	// token). Default slog.Default().
	Logger *slog.Logger

	// ErrorHandler writes the response when the session cannot be loaded
	// or saved. Default: log the error, then 503 Service Unavailable with
	// Retry-After.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// ClientIP returns the address recorded in sessions and events.
	// Default: the host part of r.RemoteAddr. Behind a reverse proxy use
	// secure.Policy.ClientIP, which believes X-Forwarded-For only from
	// the proxies you list.
	ClientIP func(r *http.Request) string

	// UnknownTokenLimit is how many bad session cookies (malformed,
	// duplicated, unknown or expired) one client address may present in a
	// minute before a suspicious event with reason token_flood is
	// emitted. Default 30; negative turns counting off.
	UnknownTokenLimit int
	// ThrottleUnknownTokens answers 429 Too Many Requests, instead of
	// serving a guest, to requests that carry a bad cookie from an address
	// over UnknownTokenLimit. Requests with a valid cookie or none are
	// never throttled.
	ThrottleUnknownTokens bool

	// AllowCaching leaves Cache-Control alone. By default a response that
	// sets the session cookie gets "Cache-Control: no-store" (a shared
	// cache must never hand one user's cookie to another), and so does an
	// authenticated response that sets no Cache-Control of its own.
	AllowCaching bool

	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// ErrTooManyBadCookies is what the error handler gets for a request
// throttled by Config.ThrottleUnknownTokens.
var ErrTooManyBadCookies = errors.New("hallpass: too many invalid session cookies from this address; wait a minute")

// floodTableSize bounds the addresses the token-flood guard tracks.
const floodTableSize = 4096

// ErrStore wraps any failure of the Store, so error handlers can tell it
// from other errors with errors.Is.
var ErrStore = errors.New("hallpass: session store failed")

// Manager creates, loads, saves and ends sessions. It is safe for
// concurrent use.
type Manager struct {
	cfg    Config
	store  Store
	cookie Cookie
	now    func() time.Time
	events Sink

	touchEvery time.Duration
	warnOnce   sync.Once

	rotateEvery, rotateGrace, theftWindow time.Duration
	onIP, onUA                            ClientChange
	flood                                 *floodGuard // nil when counting is off

	sealer         Sealer // nil for a server-side Store
	cookieOverhead int    // Set-Cookie bytes besides the value, for sealed cookies
}

// New returns a Manager for cfg, or an error naming what is wrong with it.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.Store == nil && cfg.Sealer == nil:
		return nil, errors.New("hallpass: Config.Store is nil; use memstore.New(nil) for a single process")
	case cfg.Store != nil && cfg.Sealer != nil:
		return nil, errors.New("hallpass: set Config.Store or Config.Sealer, not both")
	}
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.Lifetime, DefaultLifetime)
	setDefault(&cfg.PersistentIdleTimeout, DefaultPersistentIdleTimeout)
	setDefault(&cfg.PersistentLifetime, DefaultPersistentLifetime)
	setDefault(&cfg.RotateEvery, DefaultRotateEvery)
	setDefault(&cfg.RotateGrace, DefaultRotateGrace)
	setDefault(&cfg.TheftWindow, DefaultTheftWindow)
	for _, d := range []time.Duration{cfg.IdleTimeout, cfg.Lifetime, cfg.PersistentIdleTimeout, cfg.PersistentLifetime, cfg.TouchInterval, cfg.RotateGrace, cfg.TheftWindow} {
		if d < 0 {
			return nil, fmt.Errorf("hallpass: negative duration %v in Config", d)
		}
	}
	if cfg.BackgroundHeader == "" {
		cfg.BackgroundHeader = DefaultBackgroundHeader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Events == nil {
		cfg.Events = SlogSink{Logger: cfg.Logger}
	}
	if cfg.ErrorHandler == nil {
		logger := cfg.Logger
		cfg.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, ErrTooManyBadCookies) { // already an event
				DefaultErrorHandler(w, r, err)
				return
			}
			logger.LogAttrs(r.Context(), slog.LevelError, "hallpass: session unavailable", slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
			DefaultErrorHandler(w, r, err)
		}
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = RemoteIP
	}
	cookie, err := cfg.Cookie.resolve()
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, store: cfg.Store, cookie: cookie, now: cfg.Now, events: cfg.Events}
	m.onIP, m.onUA = cmp.Or(cfg.OnIPChange, ClientChangeLog), cmp.Or(cfg.OnUserAgentChange, ClientChangeReauth)
	m.rotateEvery, m.rotateGrace, m.theftWindow = max(cfg.RotateEvery, 0), cfg.RotateGrace, cfg.TheftWindow
	m.touchEvery = cfg.TouchInterval
	if m.touchEvery == 0 {
		m.touchEvery = min(maxTouchInterval, min(cfg.IdleTimeout, cfg.PersistentIdleTimeout)/8)
	}
	switch {
	case cfg.UnknownTokenLimit == 0:
		m.flood = newFloodGuard(30, floodTableSize)
	case cfg.UnknownTokenLimit > 0:
		m.flood = newFloodGuard(cfg.UnknownTokenLimit, floodTableSize)
	}
	if cfg.Sealer != nil {
		if err := m.newSealed(); err != nil {
			return nil, err
		}
	}
	if cookie.Insecure {
		cfg.Logger.Warn("hallpass: session cookie without Secure (Cookie.Insecure); anyone on the network path can steal sessions. Use only for plain-HTTP development hosts.")
	}
	return m, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// Store returns the Manager's store, nil with a Sealer.
func (m *Manager) Store() Store { return m.store }

// Error answers r the way the Manager answers when a session cannot be
// loaded or saved (Config.ErrorHandler: 503 by default), for companion
// packages that fail on the session's behalf.
func (m *Manager) Error(w http.ResponseWriter, r *http.Request, err error) {
	m.cfg.ErrorHandler(w, r, err)
}

// Events returns the sink the Manager emits to, so that companion
// packages (remember, token) report to the same place by default.
func (m *Manager) Events() Sink { return m.events }

// ClientIP returns the client address the Manager records for r
// (Config.ClientIP).
func (m *Manager) ClientIP(r *http.Request) string { return m.cfg.ClientIP(r) }

// CookieName returns the session cookie's name.
func (m *Manager) CookieName() string { return m.cookie.Name }

func (m *Manager) timeouts(persistent bool) (idle, lifetime time.Duration) {
	if persistent {
		return m.cfg.PersistentIdleTimeout, m.cfg.PersistentLifetime
	}
	return m.cfg.IdleTimeout, m.cfg.Lifetime
}

func (m *Manager) emit(ctx context.Context, kind EventKind, reason string, rec *Record, ip, ua string) {
	e := Event{Kind: kind, Reason: reason, Time: m.now(), IP: ip, UserAgent: ua}
	if s := FromContext(ctx); s != nil {
		e.ForwardedFor = s.xff
	}
	if rec != nil {
		e.Handle, e.UserID = rec.Handle, rec.UserID
	}
	m.events.Emit(ctx, e)
}

// DefaultErrorHandler answers 503 Service Unavailable, asking the client
// to retry shortly. It does not reveal err to the client, nor log it: the
// Manager's default handler logs to Config.Logger first.
//
// For ErrTooManyBadCookies it answers 429 Too Many Requests instead.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Cache-Control", "no-store")
	if sealedErrorStatus(w, err) {
		return
	}
	if errors.Is(err, ErrTooManyBadCookies) {
		w.Header().Set("Retry-After", "60")
		http.Error(w, "too many invalid session cookies; wait a minute and retry", http.StatusTooManyRequests)
		return
	}
	w.Header().Set("Retry-After", "1")
	http.Error(w, "session service temporarily unavailable; please retry", http.StatusServiceUnavailable)
}

// RemoteIP returns the host part of r.RemoteAddr. It ignores
// X-Forwarded-For: trusting that header is a decision for a proxy-aware
// Config.ClientIP.
func RemoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// LoopbackHost reports whether host (a Host header, with or without a
// port) is one browsers treat as a secure context over plain HTTP:
// localhost, *.localhost, or a loopback address. They keep Secure and
// __Host- cookies from it.
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// warnPlainHTTP logs once when a Secure cookie is about to be sent over
// plain HTTP to a host the browser will not accept it from.
func (m *Manager) warnPlainHTTP(r *http.Request) {
	if m.cookie.Insecure || r.TLS != nil || LoopbackHost(r.Host) {
		return
	}
	m.warnOnce.Do(func() {
		m.cfg.Logger.Warn("hallpass: sending a Secure session cookie over plain HTTP; browsers will drop it and every request will be a guest. Serve HTTPS (or set Cookie.Insecure for a plain-HTTP development host).", "host", r.Host)
	})
}
