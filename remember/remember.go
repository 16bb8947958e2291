// Package remember keeps users signed in between visits ("keep me signed
// in") without the server holding a password or any secret a cookie could
// be made from.
//
// After a password sign-in with the box ticked, Issue starts a series for
// the browser and sets its cookie. Later, when a request has no signed-in
// session but has that cookie (the session expired, the browser was
// restarted), Handler checks the cookie, signs the user in, and gives the
// browser the series' next cookie. Forget ends this browser's series at
// logout; ForgetAll ends all of a user's series, for "sign out
// everywhere" and password changes:
//
//	rm, err := remember.New(remember.Config{Sessions: m, Key: key})
//	http.ListenAndServe(addr, m.Handler(rm.Handler(mux)))
//
//	// POST /login, after checking the password:
//	s.Login(user, hallpass.LoginOptions{Persistent: keep})
//	if keep {
//		rm.Issue(w, r)
//	}
//	// POST /logout:
//	rm.Forget(w, r)
//	s.Logout()
//	// password changed, or "sign out everywhere":
//	s.CredentialsChanged(false) // or m.RevokeAll(ctx, user)
//	rm.ForgetAll(ctx, user)
//
// A session Handler signs in has method hallpass.MethodRememberMe: its
// level is hallpass.LevelRemembered and it has had no credential check,
// so Manager.Require with FreshWithin (or a Level above remembered) asks
// for the password again before anything sensitive.
//
// # Cookies and series
//
// The cookie (default name "__Host-hallpass-remember"; HttpOnly, Secure,
// SameSite=Lax, Path=/, Max-Age the series' remaining life) is
// selector.validator: 16 and 32 bytes from crypto/rand in base64url
// without padding, parsed strictly. The selector names the series; the
// store keys it by SHA-256 of a domain-separated selector, so only the
// cookie holds the selector. The validator proves possession; the store
// keeps only its SHA-256, compared in constant time.
//
// A series lives Config.Lifetime (30 days) from its last use and never
// longer than Config.MaxLifetime (365 days) from its start. Series are
// ordinary hallpass.Records in any hallpass.Store, the session store by
// default: a record with no user id, so it is never listed as a device,
// never counted against a session limit and never ended by
// Manager.RevokeAll, and with the series' deadlines, so the store expires
// it. A second record per user indexes the user's series for ForgetAll.
// Sessions a series starts carry its public handle in the data key
// SessionKey.
//
// # Rotation and theft
//
// Every use replaces the validator with its successor,
// HMAC-SHA256(Config.Key, selector || validator), and the store keeps the
// hashes of the current and the previous validator and the time of the
// rotation. A request presenting the current validator rotates. One
// presenting the previous validator within Config.Grace (a minute) is a
// parallel request of the same browser: it is accepted and answered with
// the successor of what it presented, which is the current validator, so
// every parallel request gets the same new cookie, on any instance, with
// no compare-and-swap in the store: parallel rotations write identical
// values.
//
// Any other validator for a known selector (the previous one after the
// grace window, or a wrong one) means two browsers hold the series: the
// cookie was copied. The series is deleted, every session started from it
// (or in which it was issued) is revoked, a suspicious event with reason
// hallpass.ReasonRememberTheft is emitted carrying the series' handle and
// the user id (never a selector or validator), and the request continues
// as a guest. Whoever presents the series next, thief or owner, has to
// sign in with a password.
//
// A rotation whose write reached the store but whose reply was lost ends
// in a 503 without the new cookie; the browser's retry (Retry-After: 1)
// presents the previous validator within the grace window and gets the
// successor.
//
// One race remains. A request that read the series while its validator
// was current, and whose write reaches the store only after a later
// rotation, writes the older state back; the browser's newer cookie then
// looks stolen, and the series ends (safe, but the user must sign in
// again). For that, the write must be delayed past another use of the
// series, and a browser uses its series only when it has no signed-in
// session: after a sign-in by this package it has one for the Manager's
// persistent idle timeout (7 days by default), unless that session is
// revoked or logged out (logout forgets the series, and Update never
// recreates a deleted one). Store timeouts (seconds) end stalled requests
// long before.
//
// Parallel first requests of a browser that comes back (a page and its
// images, say) each sign in, so each starts a session; the browser keeps
// the last cookie and the others idle out. All are recorded in the series
// and end with it.
//
// # Threat model
//
// A stolen cookie gives its holder a remembered session (LevelRemembered:
// no fresh credential check, so no sensitive action guarded by
// Manager.Require) until the owner's browser next uses the series; then
// the series and the sessions from it end. An owner who stays signed in
// does not use the series, so the theft shows up in the owner's device
// list (a remembered session) before it is detected. Forget, ForgetAll
// and a password change end it at once.
//
// A copy of the store gives nothing that signs anyone in: keys are hashes
// of selectors, validators are stored as hashes of 256-bit values, and
// Config.Key is not in the store. It shows user ids, session handles,
// client addresses and when series were used. Write access to the store
// is another matter: whoever can write it can write sessions.
//
// A leaked Config.Key alone gives nothing either. Together with a stolen
// cookie it lets the thief compute the validators that follow the stolen
// one, so the thief can keep up with a series the owner has since used,
// until the owner's next use reveals the theft. Replace a leaked key:
// every series keeps working, since the key only derives successors.
//
// # Keys
//
// Config.Key must be at least 32 random bytes, the same on every
// instance, and secret. To replace it, make the new key Config.Key and
// move the old one to Config.PreviousKeys, on every instance, and drop it
// after Config.Grace. While instances disagree on Config.Key, two
// parallel requests of one browser served by different instances derive
// different successors and one of them looks stolen.
package remember

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
)

// Defaults for the zero values of Config.
const (
	DefaultCookieName  = "__Host-hallpass-remember"
	DefaultLifetime    = 30 * 24 * time.Hour
	DefaultMaxLifetime = 365 * 24 * time.Hour
	DefaultGrace       = time.Minute
)

// SessionKey is the session data key holding the handle of the series
// that started the session, or that was issued in it.
const SessionKey = "remember.series"

// minKeyLen is the least length of Config.Key, in bytes.
const minKeyLen = 32

// maxCookieAge is the longest Max-Age browsers honour (RFC 6265bis).
const maxCookieAge = 400 * 24 * time.Hour

// Config configures a Remember. Sessions and Key are required; every zero
// value means the documented default.
type Config struct {
	// Sessions is the Manager whose Handler runs around Remember's
	// Handler. Theft revokes its sessions.
	Sessions *hallpass.Manager
	// Store keeps the series. Default: Sessions.Store().
	Store hallpass.Store

	// Key derives each validator's successor. It must be at least 32
	// random bytes, the same on every instance, and kept secret, like a
	// password hash's pepper. Generate one with
	//
	//	head -c 32 /dev/urandom | base64
	//
	// and decode it from the application's secret configuration.
	Key []byte
	// PreviousKeys are keys Key replaced, still accepted for requests in
	// the grace window of a rotation made with them. See "Keys" in the
	// package documentation.
	PreviousKeys [][]byte

	// CookieName defaults to "__Host-hallpass-remember", or to
	// "hallpass-remember" when Insecure is set.
	CookieName string
	// Insecure omits the cookie's Secure attribute, for apps served over
	// plain HTTP on a host other than localhost. Anyone on the network
	// path can then copy the cookie. New logs a warning when it is set.
	Insecure bool

	// Lifetime ends a series this long after its last use. Default 30
	// days.
	Lifetime time.Duration
	// MaxLifetime ends a series this long after Issue, however often it
	// is used. Default 365 days.
	MaxLifetime time.Duration
	// Grace is how long after a rotation the previous validator is still
	// accepted, for requests the browser sent in parallel. Default one
	// minute.
	Grace time.Duration

	// Events receives the suspicious events of this package. Default:
	// the Manager's sink (Sessions.Events()).
	Events hallpass.Sink
	// Logger receives store errors and warnings (never a cookie).
	// Default slog.Default().
	Logger *slog.Logger
	// ClientIP returns the address recorded in series and events.
	// Default: the Manager's (Sessions.ClientIP).
	ClientIP func(r *http.Request) string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Remember issues, checks and ends remember-me series. It is safe for
// concurrent use.
type Remember struct {
	m        *hallpass.Manager
	store    hallpass.Store
	keys     [][]byte // keys[0] derives
	name     string
	insecure bool

	lifetime, maxLifetime, grace time.Duration

	events   hallpass.Sink
	logger   *slog.Logger
	clientIP func(*http.Request) string
	now      func() time.Time
}

// New returns a Remember for cfg, or an error saying what to fix.
func New(cfg Config) (*Remember, error) {
	if cfg.Sessions == nil {
		return nil, errors.New("remember: Config.Sessions is nil; pass the hallpass.Manager whose Handler wraps Remember's")
	}
	if len(cfg.Key) == 0 {
		return nil, errors.New("remember: Config.Key is missing; generate 32 random bytes (head -c 32 /dev/urandom | base64) and keep them in the app's secrets")
	}
	keys := [][]byte{cfg.Key}
	keys = append(keys, cfg.PreviousKeys...)
	for i, k := range keys {
		if len(k) < minKeyLen {
			what := "Config.Key"
			if i > 0 {
				what = fmt.Sprintf("Config.PreviousKeys[%d]", i-1)
			}
			return nil, fmt.Errorf("remember: %s has %d bytes; use at least %d random bytes (head -c 32 /dev/urandom | base64)", what, len(k), minKeyLen)
		}
		keys[i] = slices.Clone(k) // the caller may reuse its slice
	}
	for _, d := range []time.Duration{cfg.Lifetime, cfg.MaxLifetime, cfg.Grace} {
		if d < 0 {
			return nil, fmt.Errorf("remember: negative duration %v in Config", d)
		}
	}
	rm := &Remember{
		m:           cfg.Sessions,
		store:       cfg.Store,
		keys:        keys,
		insecure:    cfg.Insecure,
		lifetime:    cmp.Or(cfg.Lifetime, DefaultLifetime),
		maxLifetime: cmp.Or(cfg.MaxLifetime, DefaultMaxLifetime),
		grace:       cmp.Or(cfg.Grace, DefaultGrace),
		logger:      cmp.Or(cfg.Logger, slog.Default()),
		clientIP:    cfg.ClientIP,
		now:         cfg.Now,
		events:      cfg.Events,
	}
	if rm.lifetime > rm.maxLifetime {
		return nil, fmt.Errorf("remember: Config.Lifetime (%v) is longer than MaxLifetime (%v); shorten it or raise MaxLifetime", rm.lifetime, rm.maxLifetime)
	}
	rm.name = cfg.CookieName
	if rm.name == "" {
		rm.name = DefaultCookieName
		if cfg.Insecure {
			rm.name = "hallpass-remember"
		}
	}
	if !validCookieName(rm.name) {
		return nil, errors.New("remember: Config.CookieName must be an HTTP token (letters, digits, and !#$%&'*+-.^_`|~)")
	}
	if lower := strings.ToLower(rm.name); cfg.Insecure && (strings.HasPrefix(lower, "__host-") || strings.HasPrefix(lower, "__secure-")) {
		return nil, errors.New("remember: a __Host- or __Secure- cookie needs Secure; rename the cookie or drop Insecure")
	}
	if rm.name == cfg.Sessions.CookieName() {
		return nil, errors.New("remember: Config.CookieName is the session cookie's name; pick another")
	}
	if rm.store == nil {
		rm.store = cfg.Sessions.Store()
	}
	if rm.store == nil {
		return nil, errors.New("remember: the Manager keeps sessions in cookies (Config.Sealer); set Config.Store to keep series in")
	}
	if rm.clientIP == nil {
		rm.clientIP = cfg.Sessions.ClientIP
	}
	if rm.now == nil {
		rm.now = time.Now
	}
	if rm.events == nil {
		rm.events = cfg.Sessions.Events()
	}
	if cfg.Insecure {
		rm.logger.Warn("remember: remember-me cookie without Secure (Config.Insecure); anyone on the network path can copy it and sign in. Use only for plain-HTTP development hosts.")
	}
	return rm, nil
}

// CookieName returns the remember-me cookie's name.
func (rm *Remember) CookieName() string { return rm.name }

// Issue starts a series for the signed-in user of r's session and sets its
// cookie on w. Call it after Session.Login, in a handler inside the
// Manager's Handler, before writing the response. A series the browser
// already holds is forgotten first: a browser holds one series.
func (rm *Remember) Issue(w http.ResponseWriter, r *http.Request) error {
	s := hallpass.FromRequest(r)
	if s == nil {
		return hallpass.ErrNoSession
	}
	user, sessionHandle := s.UserID(), s.Handle()
	if user == "" || sessionHandle == "" {
		return errors.New("remember: Issue needs a signed-in session; call it after Session.Login succeeded")
	}
	ctx := r.Context()
	if err := rm.forget(ctx, r); err != nil {
		return err
	}
	handle := hallpass.NewHandle()
	// Setting the session key first also fails early if the response
	// has started, when the cookie could not be set either.
	if err := s.Set(SessionKey, handle); err != nil {
		return err
	}
	now := rm.now()
	abs := now.Add(rm.maxLifetime)
	expires := minTime(now.Add(rm.lifetime), abs)
	tok := newToken()
	key := seriesKey(tok.selector)
	// The index entry goes first: one naming a series that was never
	// stored is harmless, a series ForgetAll cannot find is not.
	if err := rm.index(ctx, user, handle, key, abs); err != nil {
		_ = s.Delete(SessionKey)
		return err
	}
	ip, ua := rm.clientIP(r), r.UserAgent()
	rec := &hallpass.Record{
		Key:       key,
		Handle:    handle,
		Meta:      hallpass.Meta{AbsoluteDeadline: abs},
		Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: expires, LastIP: ip, LastUA: ua},
		CreatedAt: now,
		CreatedIP: ip,
		CreatedUA: ua,
		Data: map[string]json.RawMessage{
			dataUser:                    stringValue(user),
			dataCurrent:                 hashValue(validatorHash(tok.validator)),
			dataSession + sessionHandle: timeValue(now),
		},
	}
	if err := rm.store.Create(ctx, rec); err != nil {
		_ = s.Delete(SessionKey)
		if errors.Is(err, hallpass.ErrExists) {
			return fmt.Errorf("%w: remember: a new series' key is taken; is crypto/rand broken?", hallpass.ErrStore)
		}
		return fmt.Errorf("%w: remember: issue: %w", hallpass.ErrStore, err)
	}
	rm.setCookie(w, tok.String(), expires, now)
	return nil
}

// index adds a series to its user's index, creating the index if needed.
func (rm *Remember) index(ctx context.Context, user, handle string, key hallpass.Key, abs time.Time) error {
	ik := userKey(user)
	// Touch only moves deadlines forward, so of two devices issuing at
	// once the later deadline stands, and each adds its own entry.
	d := hallpass.Delta{
		Set:   map[string]json.RawMessage{handle: keyValue(key)},
		Touch: &hallpass.Touch{IdleDeadline: abs},
	}
	for range 3 {
		err := rm.store.Update(ctx, ik, d)
		if !errors.Is(err, hallpass.ErrNotFound) {
			return wrapStore("index series", err)
		}
		err = rm.store.Create(ctx, &hallpass.Record{Key: ik, Touch: hallpass.Touch{IdleDeadline: abs}, Data: d.Set})
		if !errors.Is(err, hallpass.ErrExists) {
			return wrapStore("index series", err)
		}
		// Another device created it meanwhile: add to theirs.
	}
	return fmt.Errorf("%w: remember: the user's series index keeps vanishing", hallpass.ErrStore)
}

// Handler returns middleware that signs in requests that have no
// signed-in session but carry a remember-me cookie. It must run inside
// the Manager's Handler. A malformed, unknown or expired cookie is
// dropped and the request goes on as a guest; a stolen one also ends its
// series (see the package documentation). If the store or the sign-in
// fails, the request gets 503 Service Unavailable with Retry-After and
// nobody is signed in.
func (rm *Remember) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if s == nil {
			http.Error(w, hallpass.ErrNoSession.Error(), http.StatusInternalServerError)
			return
		}
		if !s.IsAuthenticated() {
			if err := rm.signIn(w, r, s); err != nil {
				// Fail closed the way the app's sessions do (its
				// ErrorHandler, which logs and answers 503 by default).
				rm.m.Error(w, r, fmt.Errorf("remember: sign-in unavailable: %w", err))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// verdict is what a presented cookie turned out to be.
type verdict int

const (
	stale    verdict = iota // no live series, or one this cookie can no longer use
	current                 // the current validator: rotate
	previous                // the previous one within the grace window
	stolen                  // another browser holds the series
)

// check looks tok's series up and judges tok. For current and previous it
// also returns the validator the browser gets next.
func (rm *Remember) check(ctx context.Context, tok token, now time.Time) (series, verdict, [validatorBytes]byte, error) {
	var next [validatorBytes]byte
	rec, err := rm.store.Load(ctx, seriesKey(tok.selector))
	if errors.Is(err, hallpass.ErrNotFound) {
		return series{}, stale, next, nil
	}
	if err != nil {
		return series{}, stale, next, wrapStore("load series", err)
	}
	if rec.Expired(now) {
		return series{}, stale, next, nil
	}
	ser, err := decodeSeries(rec)
	if err != nil {
		rm.logger.Warn("remember: ignoring a damaged series", "handle", rec.Handle)
		return series{}, stale, next, nil
	}
	h := validatorHash(tok.validator)
	if equalHash(h, ser.current) {
		return ser, current, successor(rm.keys[0], tok.selector, tok.validator), nil
	}
	if !ser.hasPrev || !equalHash(h, ser.previous) {
		return ser, stolen, next, nil
	}
	if now.Sub(ser.rotatedAt) >= rm.grace {
		return ser, stolen, next, nil
	}
	for _, k := range rm.keys {
		next = successor(k, tok.selector, tok.validator)
		if equalHash(validatorHash(next), ser.current) {
			return ser, previous, next, nil
		}
	}
	// Rotated by a key no longer configured, or rotated twice within the
	// window: this cookie is spent, but proved it was the owner's.
	return ser, stale, [validatorBytes]byte{}, nil
}

// signIn signs s in from the request's remember-me cookie, if it has a
// good one. An error means the store or the sign-in failed: answer 503.
func (rm *Remember) signIn(w http.ResponseWriter, r *http.Request, s *hallpass.Session) error {
	value, n := hallpass.ReadCookie(r.Header, rm.name)
	if n == 0 {
		return nil
	}
	ctx := r.Context()
	if n > 1 {
		// Cookie tossing from a sibling host, or a confused browser:
		// either copy might be an attacker's.
		rm.emit(ctx, r, hallpass.EventSuspicious, hallpass.ReasonDuplicateCookie, "", "")
		rm.clearCookie(w)
		return nil
	}
	tok, err := parseToken(value)
	if err != nil {
		rm.emit(ctx, r, hallpass.EventSuspicious, hallpass.ReasonMalformedCookie, "", "")
		rm.clearCookie(w)
		return nil
	}
	now := rm.now()
	ser, v, next, err := rm.check(ctx, tok, now)
	if err != nil {
		return err // the cookie stays: the store may be back in a moment
	}
	switch v {
	case stale:
		rm.clearCookie(w)
		return nil
	case stolen:
		return rm.theft(ctx, w, r, ser)
	}

	expires := ser.expires
	if v == current {
		// Touch never moves a deadline back; neither does the cookie.
		if e := minTime(now.Add(rm.lifetime), ser.absolute); e.After(expires) {
			expires = e
		}
		err := rm.store.Update(ctx, ser.key, hallpass.Delta{
			Set: map[string]json.RawMessage{
				dataCurrent:  hashValue(validatorHash(next)),
				dataPrevious: hashValue(validatorHash(tok.validator)),
				dataRotated:  timeValue(now),
			},
			Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: expires, LastIP: rm.clientIP(r), LastUA: r.UserAgent()},
		})
		if errors.Is(err, hallpass.ErrNotFound) { // forgotten meanwhile
			rm.clearCookie(w)
			return nil
		}
		if err != nil {
			return wrapStore("rotate series", err)
		}
	}
	// The series has moved on: the browser needs the new cookie whatever
	// happens to the sign-in, or its next visit would look like theft.
	rm.setCookie(w, token{selector: tok.selector, validator: next}.String(), expires, now)

	// Setting SessionKey before Login stores it in the same write as the
	// sign-in, so theft finds the session even if recording its handle
	// below fails.
	if err := s.Set(SessionKey, ser.handle); err != nil {
		return err
	}
	err = s.Login(ser.user, hallpass.LoginOptions{Method: hallpass.MethodRememberMe, Persistent: true})
	if err != nil {
		_ = s.Delete(SessionKey)
		if errors.Is(err, hallpass.ErrTooManySessions) {
			return nil // reported by the Manager; the user signs in by password
		}
		return err
	}

	set := map[string]json.RawMessage{dataSession + s.Handle(): timeValue(now)}
	err = rm.store.Update(ctx, ser.key, hallpass.Delta{Set: set, Remove: oldSessions(ser.sessions)})
	switch {
	case errors.Is(err, hallpass.ErrNotFound):
		// The series ended during the sign-in (theft, Forget): a
		// revocation that listed the user's sessions before this one
		// existed missed it, so end it here.
		rm.clearCookie(w)
		if err := s.Logout(); err != nil {
			// The response would carry the new session's cookie: drop the
			// response instead. The client sees a broken connection.
			rm.logger.Error("remember: could not end a session whose series ended during sign-in; aborting the response", "handle", s.Handle(), "error", err)
			panic(http.ErrAbortHandler)
		}
	case err != nil:
		// SessionKey in the session still ties it to the series.
		rm.logger.Warn("remember: could not record a session in its series", "handle", ser.handle, "error", err)
	}
	return nil
}

// oldSessions returns the handles to drop so that one more fits within
// maxSessions: the oldest first.
func oldSessions(sessions map[string]int64) []string {
	extra := len(sessions) + 1 - maxSessions
	if extra <= 0 {
		return nil
	}
	handles := slices.SortedFunc(maps.Keys(sessions), func(a, b string) int {
		return cmp.Or(cmp.Compare(sessions[a], sessions[b]), strings.Compare(a, b))
	})
	out := make([]string, extra)
	for i, h := range handles[:extra] {
		out[i] = dataSession + h
	}
	return out
}

// theft ends a series presented by a second browser, and every session
// it started.
func (rm *Remember) theft(ctx context.Context, w http.ResponseWriter, r *http.Request, ser series) error {
	// The alert goes out first: it matters even if the store fails next.
	rm.emit(ctx, r, hallpass.EventSuspicious, hallpass.ReasonRememberTheft, ser.handle, ser.user)
	if err := rm.store.Delete(ctx, ser.key); err != nil {
		return wrapStore("delete stolen series", err)
	}
	rm.unindex(ctx, ser.user, ser.handle)
	if err := rm.revokeSessions(ctx, ser); err != nil {
		return err
	}
	rm.clearCookie(w)
	return nil
}

// revokeSessions ends the sessions a series started or was issued in:
// those it recorded, and those that carry its handle.
func (rm *Remember) revokeSessions(ctx context.Context, ser series) error {
	st := rm.m.Store()
	if st == nil {
		// Sessions sealed in cookies: there is no list to search, but the
		// series recorded the handles it started, and revoking a handle
		// works without one.
		for h := range ser.sessions {
			if err := rm.m.Revoke(ctx, ser.user, h); err != nil && !errors.Is(err, hallpass.ErrUnknownHandle) {
				return err
			}
		}
		return nil
	}
	recs, err := st.ListUser(ctx, ser.user)
	if err != nil {
		return wrapStore("list sessions", err)
	}
	for _, rec := range recs {
		_, recorded := ser.sessions[rec.Handle]
		if !recorded && string(rec.Data[SessionKey]) != string(stringValue(ser.handle)) {
			continue
		}
		err := rm.m.Revoke(ctx, ser.user, rec.Handle)
		if err != nil && !errors.Is(err, hallpass.ErrUnknownHandle) {
			return err
		}
	}
	return nil
}

// unindex removes a series from its user's index. A failure only leaves
// an entry naming a series that no longer exists.
func (rm *Remember) unindex(ctx context.Context, user string, handles ...string) {
	err := rm.store.Update(ctx, userKey(user), hallpass.Delta{Remove: handles})
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) {
		rm.logger.Warn("remember: could not update a user's series index", "user", user, "error", err)
	}
}

// Forget ends the series of the request's remember-me cookie and tells the
// browser to drop the cookie: call it at logout, next to Session.Logout.
// The cookie is dropped even if the store fails.
func (rm *Remember) Forget(w http.ResponseWriter, r *http.Request) error {
	if _, n := hallpass.ReadCookie(r.Header, rm.name); n == 0 {
		return nil
	}
	rm.clearCookie(w)
	return rm.forget(r.Context(), r)
}

// forget deletes the series of the request's cookie, if the cookie is one
// of the last two of its series. Other cookies are left to Handler to
// judge.
func (rm *Remember) forget(ctx context.Context, r *http.Request) error {
	value, n := hallpass.ReadCookie(r.Header, rm.name)
	if n != 1 {
		return nil
	}
	tok, err := parseToken(value)
	if err != nil {
		return nil
	}
	rec, err := rm.store.Load(ctx, seriesKey(tok.selector))
	if errors.Is(err, hallpass.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrapStore("forget", err)
	}
	ser, err := decodeSeries(rec)
	if err != nil {
		return nil
	}
	h := validatorHash(tok.validator)
	if !equalHash(h, ser.current) && !(ser.hasPrev && equalHash(h, ser.previous)) {
		return nil
	}
	if err := rm.store.Delete(ctx, ser.key); err != nil {
		return wrapStore("forget", err)
	}
	rm.unindex(ctx, ser.user, ser.handle)
	return nil
}

// ForgetAll ends every series of userID, for "sign out everywhere" and
// password changes, and returns how many it ended. Sessions the series
// started stay: end them with Manager.RevokeAll or
// Session.CredentialsChanged.
func (rm *Remember) ForgetAll(ctx context.Context, userID string) (int, error) {
	return rm.forgetWhere(ctx, userID, func(series) bool { return true })
}

// ForgetOthers ends every series of the request's signed-in user but the
// one of this browser's cookie, for "sign out other devices" (next to
// Session.RevokeOthers), and returns how many it ended.
func (rm *Remember) ForgetOthers(r *http.Request) (int, error) {
	s := hallpass.FromRequest(r)
	if s == nil {
		return 0, errors.New("remember: ForgetOthers outside hallpass's Handler")
	}
	var keep hallpass.Key
	if value, n := hallpass.ReadCookie(r.Header, rm.name); n == 1 {
		if tok, err := parseToken(value); err == nil {
			keep = seriesKey(tok.selector)
		}
	}
	return rm.forgetWhere(r.Context(), s.UserID(), func(ser series) bool { return ser.key != keep })
}

// ForgetSession ends the series of userID that started, or was issued in,
// the session with handle sessionHandle, for revoking one device (next
// to Session.Revoke), and returns how many it ended.
func (rm *Remember) ForgetSession(ctx context.Context, userID, sessionHandle string) (int, error) {
	return rm.forgetWhere(ctx, userID, func(ser series) bool {
		_, ok := ser.sessions[sessionHandle]
		return ok
	})
}

// forgetWhere ends the series of userID for which match is true.
func (rm *Remember) forgetWhere(ctx context.Context, userID string, match func(series) bool) (int, error) {
	if userID == "" {
		return 0, nil
	}
	idx, err := rm.store.Load(ctx, userKey(userID))
	if errors.Is(err, hallpass.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, wrapStore("forget", err)
	}
	var keys []hallpass.Key
	var handles []string
	for handle, raw := range idx.Data {
		key, ok := parseKeyValue(raw)
		if !ok {
			handles = append(handles, handle) // damaged entry: drop it
			continue
		}
		rec, err := rm.store.Load(ctx, key)
		if errors.Is(err, hallpass.ErrNotFound) {
			handles = append(handles, handle) // ended already: drop it
			continue
		}
		if err != nil {
			return 0, wrapStore("forget", err)
		}
		ser, err := decodeSeries(rec)
		if err != nil || ser.user != userID {
			handles = append(handles, handle)
			continue
		}
		if match(ser) {
			keys = append(keys, key)
			handles = append(handles, handle)
		}
	}
	if len(keys) > 0 {
		if err := rm.store.Delete(ctx, keys...); err != nil {
			return 0, wrapStore("forget", err)
		}
	}
	if len(handles) > 0 {
		// Removing only what was read keeps a series issued meanwhile.
		rm.unindex(ctx, userID, handles...)
	}
	return len(keys), nil
}

func wrapStore(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: remember: %s: %w", hallpass.ErrStore, op, err)
}

func (rm *Remember) emit(ctx context.Context, r *http.Request, kind hallpass.EventKind, reason, handle, user string) {
	rm.events.Emit(ctx, hallpass.Event{
		Kind: kind, Reason: reason, Handle: handle, UserID: user, Time: rm.now(),
		IP: rm.clientIP(r), UserAgent: r.UserAgent(), ForwardedFor: r.Header.Get("X-Forwarded-For"),
	})
}

// setCookie sets the cookie to value until expires, replacing any
// Set-Cookie for it this response already has.
func (rm *Remember) setCookie(w http.ResponseWriter, value string, expires, now time.Time) {
	age := min(expires.Sub(now), maxCookieAge)
	secs := int((age + time.Second - 1) / time.Second)
	if secs <= 0 {
		rm.clearCookie(w)
		return
	}
	rm.writeCookie(w, value, secs)
}

func (rm *Remember) clearCookie(w http.ResponseWriter) { rm.writeCookie(w, "", -1) }

func (rm *Remember) writeCookie(w http.ResponseWriter, value string, maxAge int) {
	h := w.Header()
	prefix := rm.name + "="
	h["Set-Cookie"] = slices.DeleteFunc(slices.Clone(h["Set-Cookie"]), func(v string) bool { return strings.HasPrefix(v, prefix) })
	c := &http.Cookie{
		Name: rm.name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: !rm.insecure, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}
	h.Add("Set-Cookie", c.String())
	h.Set("Cache-Control", "no-store")
}

// validCookieName reports whether s can name a cookie; net/http knows
// the grammar.
func validCookieName(s string) bool {
	return s != "" && (&http.Cookie{Name: s, Value: "v"}).Valid() == nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
