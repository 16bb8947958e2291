package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
)

// accountPage is the data of account.html.
type accountPage struct {
	Level      string // s.Auth().Level.String()
	Methods    []hallpass.MethodUse
	AuthTime   time.Time
	ReauthAt   time.Time // zero if the password was never typed in this session
	Remembered bool
	Status     hallpass.Status
	CreatedAt  time.Time
	// ReauthWindow is how recently the password must have been typed for
	// a password change.
	ReauthWindow time.Duration
	Errors       []string
}

// devicesPage is the data of sessions.html.
type devicesPage struct {
	Devices []device
	Others  int // devices other than this one
}

// device is one of the user's sessions as the devices page shows it.
type device struct {
	Handle     string
	Browser    string
	OS         string
	IP         string
	CreatedAt  time.Time
	LastSeen   time.Time
	Persistent bool
	Current    bool
}

// reauthPage is the data of reauth.html.
type reauthPage struct {
	Next   string // already checked by hallpass.SafeNext
	Errors []string
}

// requireUser returns the signed-in user. For a guest it redirects to the
// login page, which comes back to the page asked for (a GET), on an error
// it answers 500, and it returns nil either way.
func (a *app) requireUser(w http.ResponseWriter, r *http.Request) *user {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return nil
	}
	if u == nil {
		to, next := "/login", "/"
		switch {
		case r.Method != http.MethodGet:
		case r.URL.Path == "/reauth":
			// Signing in is as fresh as re-authenticating.
			next = hallpass.SafeNext(r.URL.Query().Get("next"))
		default:
			next = r.URL.RequestURI()
		}
		if next != "/" {
			to += "?next=" + url.QueryEscape(next)
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return nil
	}
	return u
}

// account shows how the user signed in, the session's deadlines, and the
// password change form.
func (a *app) account(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	a.renderAccount(w, r, http.StatusOK, u, nil)
}

func (a *app) renderAccount(w http.ResponseWriter, r *http.Request, status int, u *user, errs []string) {
	s := hallpass.FromRequest(r)
	auth := s.Auth()
	p := accountPage{
		Level:        auth.Level.String(),
		Methods:      auth.Methods,
		AuthTime:     auth.AuthTime,
		ReauthAt:     auth.ReauthAt,
		Remembered:   auth.Remembered,
		Status:       s.Status(),
		ReauthWindow: a.reauthWindow,
		Errors:       errs,
	}
	if rec := s.Record(); rec != nil {
		p.CreatedAt = rec.CreatedAt
	}
	a.render(w, r, status, "account", "Account", u, p)
}

// changePassword replaces the signed-in user's password and signs out
// every other session of theirs. Require has already checked that the
// password was typed recently; the form asks for it once more, as the
// page may have been left open.
func (a *app) changePassword(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil || !parseForm(w, r) {
		return
	}
	current := r.PostFormValue("current_password")
	next := r.PostFormValue("new_password")
	ok, err := a.passwords.Verify(r.Context(), current, u.PasswordHash)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	if !ok {
		a.renderAccount(w, r, http.StatusUnauthorized, u, []string{"Your current password is not correct."})
		return
	}
	if errs := validatePassword(next); len(errs) > 0 {
		a.renderAccount(w, r, http.StatusUnprocessableEntity, u, errs)
		return
	}
	hash, err := a.passwords.Hash(r.Context(), next)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	// The new hash goes in first: a session signed in with the old
	// password between the two steps is then ended by the second.
	if err := a.users.SetPassword(r.Context(), u.ID, hash); err != nil {
		a.serverError(w, r, err)
		return
	}
	// Other devices' remember-me series end before their sessions, so
	// none can sign back in between the two, or after a failed second
	// step; this device keeps its series.
	if _, err := a.remember.ForgetOthers(r); err != nil {
		a.serverError(w, r, fmt.Errorf("password changed, but ending remember-me series failed: %w", err))
		return
	}
	s := hallpass.FromRequest(r)
	if _, err := s.CredentialsChanged(true); err != nil {
		a.serverError(w, r, fmt.Errorf("password changed, but signing out other sessions failed: %w", err))
		return
	}
	a.flashTo(w, r, "Password changed; other devices signed out.", "/account")
}

// devices lists the user's sessions, this one marked.
func (a *app) devices(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	list, err := hallpass.FromRequest(r).Devices()
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	p := devicesPage{Devices: make([]device, 0, len(list))}
	for _, d := range list {
		browser, os := parseUserAgent(d.UserAgent)
		p.Devices = append(p.Devices, device{
			Handle: d.Handle, Browser: browser, OS: os, IP: d.IP,
			CreatedAt: d.CreatedAt, LastSeen: d.LastSeen, Persistent: d.Persistent, Current: d.Current,
		})
		if !d.Current {
			p.Others++
		}
	}
	a.render(w, r, http.StatusOK, "sessions", "Your devices", u, p)
}

// revokeDevice signs out one of the user's sessions, by its public
// handle. A handle that is not one of the user's is a 404: the library
// looks it up among this user's sessions only, so another user's handle
// ends nothing.
func (a *app) revokeDevice(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	s := hallpass.FromRequest(r)
	handle := r.PathValue("handle")
	self := handle == s.Handle()
	// The device's remember-me series goes first: otherwise it would sign
	// the device straight back in.
	if _, err := a.remember.ForgetSession(r.Context(), s.UserID(), handle); err != nil {
		a.serverError(w, r, err)
		return
	}
	if self {
		// This browser's remember-me cookie goes too.
		if err := a.remember.Forget(w, r); err != nil {
			a.serverError(w, r, err)
			return
		}
	}
	err := s.Revoke(handle)
	if errors.Is(err, hallpass.ErrUnknownHandle) {
		a.render(w, r, http.StatusNotFound, "notfound", "Not found", u, "None of your devices has that id; it may be signed out already.")
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	msg, to := "Signed out 1 other device.", "/account/sessions"
	if self {
		// Revoking this very session is a logout.
		msg, to = "Signed out.", "/"
	}
	a.flashTo(w, r, msg, to)
}

// revokeOthers signs out every session of the user but this one.
func (a *app) revokeOthers(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	s := hallpass.FromRequest(r)
	if _, err := a.remember.ForgetOthers(r); err != nil {
		a.serverError(w, r, err)
		return
	}
	n, err := s.RevokeOthers()
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	var msg string
	switch n {
	case 0:
		msg = "No other device was signed in."
	case 1:
		msg = "Signed out 1 other device."
	default:
		msg = fmt.Sprintf("Signed out %d other devices.", n)
	}
	a.flashTo(w, r, msg, "/account/sessions")
}

// reauthForm asks the signed-in user for their password again, then goes
// on to ?next=.
func (a *app) reauthForm(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	p := reauthPage{Next: hallpass.SafeNext(r.URL.Query().Get("next"))}
	a.render(w, r, http.StatusOK, "reauth", "Confirm your password", u, p)
}

// reauth checks the password of the signed-in user, records the fresh
// check in the session (which rotates its token) and goes back to the page
// that asked for it, if that page is on this site.
func (a *app) reauth(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil || !parseForm(w, r) {
		return
	}
	p := reauthPage{Next: hallpass.SafeNext(r.FormValue("next"))}
	if code := r.PostFormValue("code"); code != "" && u.MFASecret != "" {
		a.reauthCode(w, r, u, code, p)
		return
	}
	// The same throttle as logins: a stolen session must not become a
	// way to guess the password.
	checked, wait, err := a.checkPassword(r, u.Username, r.PostFormValue("password"))
	switch {
	case err != nil:
		a.serverError(w, r, err)
		return
	case wait > 0:
		retryAfter(w, wait)
		p.Errors = []string{tooManyAttempts(wait)}
		a.render(w, r, http.StatusTooManyRequests, "reauth", "Confirm your password", u, p)
		return
	case checked == nil || checked.ID != u.ID:
		p.Errors = []string{loginFailed}
		a.render(w, r, http.StatusUnauthorized, "reauth", "Confirm your password", u, p)
		return
	}
	a.confirmed(w, r, hallpass.MethodPassword, p.Next)
}

// reauthCode is reauth with a TOTP code instead of the password.
func (a *app) reauthCode(w http.ResponseWriter, r *http.Request, u *user, code string, p reauthPage) {
	ok, wait, err := a.checkCode(r, u, code)
	switch {
	case err != nil:
		a.serverError(w, r, err)
		return
	case wait > 0:
		retryAfter(w, wait)
		p.Errors = []string{tooManyAttempts(wait)}
		a.render(w, r, http.StatusTooManyRequests, "reauth", "Confirm your password", u, p)
		return
	case !ok:
		p.Errors = []string{"That code is not right, or was used already."}
		a.render(w, r, http.StatusUnauthorized, "reauth", "Confirm your password", u, p)
		return
	}
	a.confirmed(w, r, hallpass.MethodTOTP, p.Next)
}

// confirmed records a fresh credential check made with method and goes
// on to next.
func (a *app) confirmed(w http.ResponseWriter, r *http.Request, method, next string) {
	s := hallpass.FromRequest(r)
	if err := s.Reauthenticate(method); err != nil {
		if !s.IsAuthenticated() {
			// The session ended (revoked, expired) during this request;
			// Reauthenticate has made it a guest.
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		a.serverError(w, r, err)
		return
	}
	msg := "Password confirmed."
	if method == hallpass.MethodTOTP {
		msg = "Code confirmed."
	}
	a.flashTo(w, r, msg, next)
}

// changeEmail handles POST /account/email: a sensitive action, so it sits
// behind the re-auth window like the password change.
func (a *app) changeEmail(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil || !parseForm(w, r) {
		return
	}
	email := strings.TrimSpace(r.PostFormValue("email"))
	if len(email) > 254 || strings.Count(email, "@") != 1 || strings.HasPrefix(email, "@") || strings.HasSuffix(email, "@") || strings.ContainsAny(email, " \t\r\n<>") {
		a.render(w, r, http.StatusUnprocessableEntity, "message", "Email", u, "That does not look like an email address.")
		return
	}
	if err := a.users.SetEmail(r.Context(), u.ID, email); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.flashTo(w, r, "Email address changed.", "/account")
}
