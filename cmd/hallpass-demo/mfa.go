package main

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/hallpass/hallpass"
)

// Two-step verification with TOTP (RFC 6238): enrolment on
// /account/mfa, a second step at login on /login/mfa, and a code in
// place of the password on /reauth. A code works once.

const (
	mfaPendingKey = "mfa.pending" // enrolment: the secret shown, not yet confirmed
	mfaLoginKey   = "mfa.login"   // login: the password was right, the code is due
	// mfaLoginWindow is how long the code may take after the password.
	mfaLoginWindow = 5 * time.Minute
	totpPeriod     = 30
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: 0, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// pendingLogin is what the session holds between the password and the
// code.
type pendingLogin struct {
	UserID   int64     `json:"user"`
	Remember bool      `json:"remember"`
	Next     string    `json:"next,omitempty"`
	At       time.Time `json:"at"`
}

// checkTOTP reports whether code is the user's current code (or the one
// before or after, for clocks a little off) and not used before, and if
// so records its time step as used.
func (a *app) checkTOTP(ctx context.Context, u *user, code string) (bool, error) {
	if u.MFASecret == "" {
		return false, nil
	}
	step, ok := a.totpStep(u.MFASecret, code)
	if !ok {
		return false, nil
	}
	return a.users.UseMFAStep(ctx, u.ID, step)
}

// totpStep returns the time step whose code for secret is code, trying
// the current step and the ones before and after it.
func (a *app) totpStep(secret, code string) (int64, bool) {
	code = strings.ReplaceAll(strings.TrimSpace(code), " ", "")
	if len(code) != 6 {
		return 0, false
	}
	now := a.now()
	for _, d := range []time.Duration{0, -totpPeriod * time.Second, totpPeriod * time.Second} {
		t := now.Add(d)
		if ok, err := totp.ValidateCustom(code, secret, t, totpOpts); err == nil && ok {
			return t.Unix() / totpPeriod, true
		}
	}
	return 0, false
}

// checkCode checks a two-step code of u within its own throttle: failed
// codes count apart from failed passwords, so a right password does not
// clear them, and only a right code does. It returns whether the code was
// right, or how long the client must wait.
func (a *app) checkCode(r *http.Request, u *user, code string) (bool, time.Duration, error) {
	at, wait := a.throttle.beginCode(u.Username, a.sessions.ClientIP(r))
	if wait > 0 {
		return false, wait, nil
	}
	ok, err := a.checkTOTP(r.Context(), u, code)
	switch {
	case err != nil:
		at.aborted()
		return false, 0, err
	case !ok:
		at.failed()
		return false, 0, nil
	}
	at.succeeded()
	return true, 0, nil
}

// retryAfter sets the Retry-After header of a throttled answer.
func retryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
}

type mfaPage struct {
	Enrolled bool
	URI      string
	Errors   []string
}

// mfaForm handles GET /account/mfa: the enrolment page, with a new secret
// kept in the session until confirmed.
func (a *app) mfaForm(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	if u.MFASecret != "" {
		a.render(w, r, http.StatusOK, "mfa", "Two-step verification", u, mfaPage{Enrolled: true})
		return
	}
	key, err := a.pendingKey(r, u, true)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, http.StatusOK, "mfa", "Two-step verification", u, mfaPage{URI: key.URL()})
}

// pendingKey returns the enrolment key in the session, making one if
// there is none and create is set.
func (a *app) pendingKey(r *http.Request, u *user, create bool) (*otp.Key, error) {
	s := hallpass.FromRequest(r)
	if uri, _ := hallpass.Get[string](s, mfaPendingKey); uri != "" {
		return otp.NewKeyFromURL(uri)
	}
	if !create {
		return nil, nil
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "hallpass-demo", AccountName: u.Username})
	if err != nil {
		return nil, err
	}
	return key, s.Set(mfaPendingKey, key.URL())
}

// mfaQR handles GET /account/mfa/qr.png: the pending secret as a QR code,
// drawn here, so that the secret never leaves for a third party.
func (a *app) mfaQR(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil {
		return
	}
	key, err := a.pendingKey(r, u, false)
	if err != nil || key == nil {
		http.NotFound(w, r)
		return
	}
	img, err := key.Image(240, 240)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		a.serverError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	buf.WriteTo(w)
}

// mfaEnrol handles POST /account/mfa: a code from the app confirms the
// secret. Turning two-step verification on is a credential change: every
// other session, remember-me series and token of the user ends, and this
// session steps up to multi-factor.
func (a *app) mfaEnrol(w http.ResponseWriter, r *http.Request) {
	u := a.requireUser(w, r)
	if u == nil || !parseForm(w, r) {
		return
	}
	key, err := a.pendingKey(r, u, false)
	if err != nil || key == nil {
		http.Redirect(w, r, "/account/mfa", http.StatusSeeOther)
		return
	}
	step, ok := a.totpStep(key.Secret(), r.PostFormValue("code"))
	if !ok {
		a.render(w, r, http.StatusUnprocessableEntity, "mfa", "Two-step verification", u,
			mfaPage{URI: key.URL(), Errors: []string{"That code is not right. Check the time on your phone and try the next one."}})
		return
	}
	if err := a.users.SetMFA(r.Context(), u.ID, key.Secret()); err != nil {
		a.serverError(w, r, err)
		return
	}
	// The confirming code is used: it must not also pass at login. (A
	// false here means a later step is already recorded, which refuses it
	// as well.)
	if _, err := a.users.UseMFAStep(r.Context(), u.ID, step); err != nil {
		a.serverError(w, r, err)
		return
	}
	s := hallpass.FromRequest(r)
	if err := s.Delete(mfaPendingKey); err != nil {
		a.serverError(w, r, err)
		return
	}
	if _, err := a.remember.ForgetOthers(r); err != nil {
		a.serverError(w, r, err)
		return
	}
	if _, err := s.CredentialsChanged(true); err != nil {
		a.serverError(w, r, err)
		return
	}
	if err := s.Reauthenticate(hallpass.MethodTOTP); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.flashTo(w, r, "Two-step verification is on. Other devices were signed out.", "/account")
}

// startMFALogin is login's second step: the password was right, the
// session remembers that for a few minutes, and the code comes next.
func (a *app) startMFALogin(w http.ResponseWriter, r *http.Request, u *user, remember bool, next string) {
	s := hallpass.FromRequest(r)
	if err := s.Set(mfaLoginKey, pendingLogin{UserID: u.ID, Remember: remember, Next: next, At: a.now()}); err != nil {
		a.serverError(w, r, err)
		return
	}
	http.Redirect(w, r, "/login/mfa", http.StatusSeeOther)
}

type mfaLoginPage struct{ Errors []string }

// mfaLoginForm handles GET /login/mfa.
func (a *app) mfaLoginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.pendingLogin(r); !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	a.render(w, r, http.StatusOK, "loginmfa", "Two-step verification", nil, mfaLoginPage{})
}

func (a *app) pendingLogin(r *http.Request) (pendingLogin, bool) {
	p, err := hallpass.Get[pendingLogin](hallpass.FromRequest(r), mfaLoginKey)
	if err != nil || p.UserID == 0 || a.now().Sub(p.At) > mfaLoginWindow {
		return pendingLogin{}, false
	}
	return p, true
}

// mfaLogin handles POST /login/mfa: the code completes the login, within
// the throttle for codes.
func (a *app) mfaLogin(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	p, ok := a.pendingLogin(r)
	if !ok {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	u, err := a.users.ByID(r.Context(), p.UserID)
	if err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	ok, wait, err := a.checkCode(r, u, r.PostFormValue("code"))
	switch {
	case err != nil:
		a.serverError(w, r, err)
		return
	case wait > 0:
		retryAfter(w, wait)
		a.render(w, r, http.StatusTooManyRequests, "loginmfa", "Two-step verification", nil, mfaLoginPage{Errors: []string{tooManyAttempts(wait)}})
		return
	case !ok:
		a.render(w, r, http.StatusUnauthorized, "loginmfa", "Two-step verification", nil, mfaLoginPage{Errors: []string{"That code is not right, or was used already."}})
		return
	}
	s := hallpass.FromRequest(r)
	if err := s.Delete(mfaLoginKey); err != nil {
		a.serverError(w, r, err)
		return
	}
	// Login records the password, then the code steps the session up to
	// multi-factor; both rotate the token.
	if err := s.Login(strconv.FormatInt(u.ID, 10), hallpass.LoginOptions{Persistent: p.Remember}); err != nil {
		a.serverError(w, r, err)
		return
	}
	if err := s.Reauthenticate(hallpass.MethodTOTP); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.finishSignIn(w, r, p.Remember, p.Next)
}
