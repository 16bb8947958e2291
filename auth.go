package hallpass

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Level is how strongly the user of a session has proved who they are.
type Level int

// Levels, weakest first.
const (
	LevelNone         Level = iota // a guest
	LevelRemembered                // signed in by a remember-me token only
	LevelSingleFactor              // one factor checked in this session (a password, say)
	LevelMultiFactor               // a knowledge and a possession factor
)

func (l Level) String() string {
	switch l {
	case LevelRemembered:
		return "remembered"
	case LevelSingleFactor:
		return "single_factor"
	case LevelMultiFactor:
		return "multi_factor"
	}
	return "none"
}

// Ways of proving identity that Login and Reauthenticate know. Other
// names are recorded but count as no factor.
const (
	MethodPassword   = "password"    // something the user knows
	MethodTOTP       = "totp"        // something the user has
	MethodWebAuthn   = "webauthn"    // something the user has
	MethodRememberMe = "remember_me" // a long-lived device token: proves little
)

// MethodUse records one successful check of a method.
type MethodUse struct {
	Method string    `json:"method"`
	At     time.Time `json:"at"`
}

// authKey keeps the methods used in the session's data, so every store
// keeps them without a schema of its own; Meta holds the summary.
const authKey = "hallpass.auth"

type authData struct {
	Methods []MethodUse `json:"methods"`
	// ReauthRequired caps the level at LevelRemembered until the next
	// Reauthenticate (see ClientChangeReauth).
	ReauthRequired bool `json:"reauth_required,omitempty"`
}

func (a authData) level() Level {
	l := levelOf(a.Methods)
	if a.ReauthRequired {
		l = min(l, LevelRemembered)
	}
	return l
}

// levelOf derives the level from the methods used.
func levelOf(methods []MethodUse) Level {
	var knows, has, remembered bool
	for _, m := range methods {
		switch m.Method {
		case MethodPassword:
			knows = true
		case MethodTOTP, MethodWebAuthn:
			has = true
		case MethodRememberMe:
			remembered = true
		}
	}
	switch {
	case knows && has:
		return LevelMultiFactor
	case knows || has:
		return LevelSingleFactor
	case remembered:
		return LevelRemembered
	}
	return LevelNone
}

// AuthInfo describes how the session's user authenticated.
type AuthInfo struct {
	UserID     string
	Level      Level
	Methods    []MethodUse // oldest first
	AuthTime   time.Time   // sign-in
	ReauthAt   time.Time   // last credential check; zero if only remembered
	Remembered bool        // the session started from a remember-me token
}

// Auth returns how the session's user authenticated, from the methods
// kept in the session. A guest has LevelNone. Require decides on the
// level the record's Meta holds, which the library keeps equal to this
// one.
func (s *Session) Auth() AuthInfo {
	if s == nil {
		return AuthInfo{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authLocked()
}

func (s *Session) authLocked() AuthInfo {
	if s.rec == nil || s.rec.UserID == "" {
		return AuthInfo{}
	}
	var a authData
	if raw, ok := s.data[authKey]; ok {
		_ = json.Unmarshal(raw, &a) // a damaged entry counts as no methods
	}
	return AuthInfo{
		UserID: s.rec.UserID, Level: a.level(), Methods: a.Methods,
		AuthTime: s.rec.AuthTime, ReauthAt: s.rec.ReauthAt, Remembered: s.rec.Remembered,
	}
}

// requireState is what Require checks. The level comes from Meta, which
// Login, Reauthenticate and the client-change downgrade keep in step with
// the methods in the data, so a protected request decodes nothing; a
// record whose AuthLevel is not a level's name falls back to the methods.
func (s *Session) requireState() (user string, level Level, reauthAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rec == nil || s.rec.UserID == "" {
		return "", LevelNone, time.Time{}
	}
	level, ok := levelNames[s.rec.AuthLevel]
	if !ok {
		level = s.authLocked().Level
	}
	return s.rec.UserID, level, s.rec.ReauthAt
}

// Reauthenticate records that the user has just proved who they are again
// with method: a password typed for a sensitive action, or a second factor
// for a step-up. The level may rise, the re-authentication time is now,
// and the token is rotated with no grace, as after any change of
// privilege. The session must be signed in.
func (s *Session) Reauthenticate(method string) error {
	if s == nil {
		return ErrNoSession
	}
	if method == "" || method == MethodRememberMe {
		return errors.New("hallpass: Reauthenticate needs a method the user just used, not remember-me")
	}
	now := s.m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed {
		return ErrResponseStarted
	}
	if s.rec == nil || s.rec.UserID == "" {
		return errors.New("hallpass: Reauthenticate on a session nobody is signed in to; use Login")
	}
	a := s.authLocked()
	methods := append(slices.Clone(a.Methods), MethodUse{Method: method, At: now})
	s.ownDataLocked()
	if err := s.setAuthLocked(methods, now); err != nil {
		return err
	}
	meta := s.rec.Meta
	meta.AuthLevel, meta.ReauthAt = levelOf(methods).String(), now
	touch := s.rec.Touch
	d := s.pendingLocked()
	d.Meta, d.Touch = &meta, &touch
	rec, token, err := s.m.rotate(s.ctx, s.rec, d)
	if errors.Is(err, ErrNotFound) {
		s.goneLocked()
		return ErrSessionEnded
	}
	if err != nil {
		return err
	}
	s.installLocked(rec, token)
	s.m.emit(s.ctx, EventAuthenticated, "reauthenticated_"+method, rec, s.ip, s.ua)
	return nil
}

// setAuthLocked stores the methods and the token's issue time in the
// pending changes.
func (s *Session) setAuthLocked(methods []MethodUse, now time.Time) error {
	raw, err := json.Marshal(authData{Methods: methods})
	if err != nil {
		return fmt.Errorf("hallpass: record authentication methods: %w", err)
	}
	s.setLocked(authKey, raw)
	s.setLocked(issuedKey, issuedValue(now))
	return nil
}

// Requirement is what Manager.Require asks of a request's session.
type Requirement struct {
	// Level is the least level accepted. Zero means any signed-in user.
	Level Level
	// FreshWithin, if positive, also asks that the user's last credential
	// check be at most this old ("sudo mode"). A session signed in by a
	// remember-me token has had none, so it is never fresh.
	FreshWithin time.Duration
	// ReauthURL is where browsers are sent when the requirement is not
	// met, with ?next= naming the page to return to. Empty: answer with a
	// status code (and JSON) instead. API clients (Accept:
	// application/json) always get the status and JSON.
	ReauthURL string
	// LoginURL, if set, is where browsers without a signed-in user go
	// instead of ReauthURL, also with ?next=.
	LoginURL string
}

// Refusal is the JSON body of a refused request.
type Refusal struct {
	Error         string `json:"error"` // authentication_required, step_up_required or reauth_required
	RequiredLevel string `json:"required_level"`
	CurrentLevel  string `json:"current_level"`
	MaxAgeSeconds int64  `json:"max_age_seconds,omitempty"`
	ReauthURL     string `json:"reauth_url,omitempty"`
}

// Require returns middleware that lets a request through only when its
// session meets req: 401 when nobody is signed in, 403 when the level is
// too low or the last credential check too old, or a redirect to
// req.ReauthURL for browsers. It must run inside Handler.
func (m *Manager) Require(req Requirement) func(http.Handler) http.Handler {
	need := max(req.Level, LevelRemembered)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := FromRequest(r)
			if s == nil {
				http.Error(w, ErrNoSession.Error(), http.StatusInternalServerError)
				return
			}
			user, level, reauthAt := s.requireState()
			ref := Refusal{RequiredLevel: need.String(), CurrentLevel: level.String()}
			if req.FreshWithin > 0 {
				ref.MaxAgeSeconds = int64(req.FreshWithin / time.Second)
			}
			switch {
			case user == "":
				ref.Error = "authentication_required"
			case level < need:
				ref.Error = "step_up_required"
			case req.FreshWithin > 0 && (reauthAt.IsZero() || m.now().Sub(reauthAt) > req.FreshWithin):
				ref.Error = "reauth_required"
			default:
				next.ServeHTTP(w, r)
				return
			}
			code := http.StatusForbidden
			if ref.Error == "authentication_required" {
				code = http.StatusUnauthorized
			}
			target := req.ReauthURL
			if code == http.StatusUnauthorized && req.LoginURL != "" {
				target = req.LoginURL
			}
			if target != "" {
				ref.ReauthURL = target + "?next=" + url.QueryEscape(returnTo(r))
				if !wantsJSON(r) {
					w.Header().Set("Cache-Control", "no-store")
					http.Redirect(w, r, ref.ReauthURL, http.StatusSeeOther)
					return
				}
			}
			writeJSON(w, code, ref)
		})
	}
}

// returnTo is where the user goes after re-authenticating: the page itself
// for a GET, else the same-origin page the form was on, else "/".
func returnTo(r *http.Request) string {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return r.URL.RequestURI()
	}
	if ref, err := url.Parse(r.Referer()); err == nil && ref.Host == r.Host {
		return SafeNext(ref.RequestURI())
	}
	return "/"
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

// SafeNext returns next if it is a path on this site, else "/": use it on
// the ?next= of a sign-in or re-auth page so it cannot send the user to
// another site. It refuses any backslash, not only a leading one:
// browsers read one as a slash, and http.Redirect cleans "." and ".."
// segments out of the path, so "/./\\evil.example" would go out as
// "/\\evil.example", which a browser follows to evil.example.
func SafeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

// levelNames is for parsing levels from configuration.
var levelNames = map[string]Level{"none": LevelNone, "remembered": LevelRemembered, "single_factor": LevelSingleFactor, "multi_factor": LevelMultiFactor}

// ParseLevel parses a level's name, or its number.
func ParseLevel(s string) (Level, error) {
	if l, ok := levelNames[s]; ok {
		return l, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= int(LevelNone) && n <= int(LevelMultiFactor) {
		return Level(n), nil
	}
	return 0, fmt.Errorf("hallpass: unknown level %q; want none, remembered, single_factor or multi_factor", s)
}
