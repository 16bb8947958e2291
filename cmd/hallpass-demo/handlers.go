package main

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/live"
)

// Session keys.
const (
	visitsKey = "visits"
	flashKey  = "flash"
)

// Credential rules.
const (
	minUsernameLen = 3
	maxUsernameLen = 32
	minPasswordLen = 8
	// maxPasswordLen bounds the work a request can ask of the hasher and
	// still allows any passphrase a person would type.
	maxPasswordLen = 256
	maxFormBytes   = 16 << 10
)

// loginFailed is the only thing a failed login says, so that it does not
// tell an attacker which usernames exist.
const loginFailed = "Invalid username or password."

// indexPage is the data of index.html.
type indexPage struct {
	Visits int
	Status hallpass.Status
	Items  []item
	InCart int // things in the cart
}

// authPage is the data of login.html and signup.html.
type authPage struct {
	Username string
	Remember bool
	Next     string // where to go once signed in, checked by hallpass.SafeNext; "/" is home
	Errors   []string
	Ended    string // why the page's script sent the browser here: revoked, expired, logged_out
}

// index shows who is signed in and counts the session's visits.
func (a *app) index(w http.ResponseWriter, r *http.Request) {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	s := hallpass.FromRequest(r)
	n, err := hallpass.Get[int](s, visitsKey)
	if err != nil {
		// A value of another type is a bug elsewhere, not a reason to
		// refuse the page: start counting again.
		a.log.WarnContext(r.Context(), "visit counter", "err", err)
	}
	n++
	if err := s.Set(visitsKey, n); err != nil {
		a.serverError(w, r, err)
		return
	}
	// Holds that ran out give their stock back before it is shown.
	if _, err := a.reservations.releaseExpired(r.Context()); err != nil {
		a.serverError(w, r, err)
		return
	}
	items, err := a.shop.items(r.Context())
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, http.StatusOK, "index", "Home", u, indexPage{Visits: n, Status: s.Status(), Items: items, InCart: cartCount(s)})
}

// signupForm shows the empty signup form.
func (a *app) signupForm(w http.ResponseWriter, r *http.Request) {
	a.renderAuth(w, r, http.StatusOK, "signup", "Sign up", authPage{Next: hallpass.SafeNext(r.URL.Query().Get("next"))})
}

// loginForm shows the empty login form.
func (a *app) loginForm(w http.ResponseWriter, r *http.Request) {
	p := authPage{Next: hallpass.SafeNext(r.URL.Query().Get("next"))}
	switch e := r.URL.Query().Get("ended"); e {
	case live.ReasonRevoked, live.ReasonExpired, live.ReasonLoggedOut:
		p.Ended = e
	}
	a.renderAuth(w, r, http.StatusOK, "login", "Log in", p)
}

// renderAuth renders the login or signup form. The layout still shows who
// is signed in, as one may sign in as someone else.
func (a *app) renderAuth(w http.ResponseWriter, r *http.Request, status int, name, title string, p authPage) {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, status, name, title, u, p)
}

// signup creates an account and signs it in, or shows the form again
// with what is wrong.
func (a *app) signup(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	password := r.PostFormValue("password")
	p := authPage{Username: username, Remember: r.PostFormValue("remember") != "",
		Next: hallpass.SafeNext(r.PostFormValue("next"))}
	if p.Errors = validateSignup(username, password); len(p.Errors) > 0 {
		a.renderAuth(w, r, http.StatusUnprocessableEntity, "signup", "Sign up", p)
		return
	}
	if wait := a.throttle.signup(a.sessions.ClientIP(r)); wait > 0 {
		retryAfter(w, wait)
		p.Errors = []string{fmt.Sprintf("Too many signups from your address. Try again in %d minutes.", int(wait.Minutes())+1)}
		a.renderAuth(w, r, http.StatusTooManyRequests, "signup", "Sign up", p)
		return
	}
	hash, err := a.passwords.Hash(r.Context(), password)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	id, err := a.users.Create(r.Context(), username, hash)
	if errors.Is(err, errUsernameTaken) {
		p.Errors = []string{"The username " + username + " is taken. Please choose another."}
		a.renderAuth(w, r, http.StatusConflict, "signup", "Sign up", p)
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	if a.adminName != "" && strings.EqualFold(username, a.adminName) {
		if _, err := a.users.MakeAdmin(r.Context(), username); err != nil {
			a.serverError(w, r, err)
			return
		}
	}
	a.signIn(w, r, id, p.Remember, p.Next)
}

// validateSignup returns what is wrong with a new account's credentials,
// one message per problem, or nothing.
func validateSignup(username, password string) []string {
	var errs []string
	if n := len(username); n < minUsernameLen || n > maxUsernameLen || !validUsername(username) {
		errs = append(errs, "Username must be 3 to 32 characters: letters, digits, '.', '_' or '-'.")
	}
	return append(errs, validatePassword(password)...)
}

// validatePassword returns what is wrong with a new password, or nothing.
// Signup and the password change share it.
func validatePassword(password string) []string {
	switch n := utf8.RuneCountInString(password); {
	case n < minPasswordLen:
		return []string{"Password must be at least 8 characters."}
	case n > maxPasswordLen:
		return []string{"Password must be at most 256 characters."}
	}
	return nil
}

// validUsername reports whether s uses only ASCII letters, digits and
// ".", "_", "-". ASCII only, so that no two names look alike.
func validUsername(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// login signs a user in, or shows the form again with one message that
// does not say whether the username exists.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	if !parseForm(w, r) {
		return
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	password := r.PostFormValue("password")
	p := authPage{Username: username, Remember: r.PostFormValue("remember") != "",
		Next: hallpass.SafeNext(r.PostFormValue("next"))}

	u, wait, err := a.checkPassword(r, username, password)
	switch {
	case err != nil:
		a.serverError(w, r, err)
	case wait > 0:
		retryAfter(w, wait)
		p.Errors = []string{tooManyAttempts(wait)}
		a.renderAuth(w, r, http.StatusTooManyRequests, "login", "Log in", p)
	case u == nil:
		p.Errors = []string{loginFailed}
		a.renderAuth(w, r, http.StatusUnauthorized, "login", "Log in", p)
	case u.MFASecret != "":
		a.startMFALogin(w, r, u, p.Remember, p.Next)
	default:
		a.signIn(w, r, u.ID, p.Remember, p.Next)
	}
}

// checkPassword checks a username and password, within the login
// throttle. It returns the user, or nil for a failure that must be
// reported with loginFailed alone, or how long the client must wait.
func (a *app) checkPassword(r *http.Request, username, password string) (*user, time.Duration, error) {
	at, wait := a.throttle.beginPassword(username, a.sessions.ClientIP(r))
	if wait > 0 {
		return nil, wait, nil
	}
	u, err := a.users.ByName(r.Context(), username)
	if err != nil && !errors.Is(err, errNoUser) {
		at.aborted()
		return nil, 0, err
	}
	var hash string // "": Verify works on a dummy hash instead, taking as long
	if u != nil {
		hash = u.PasswordHash
	}
	ok, err := a.passwords.Verify(r.Context(), password, hash)
	switch {
	case err != nil:
		at.aborted()
		return nil, 0, err
	case !ok:
		at.failed()
		return nil, 0, nil
	}
	at.succeeded()
	return u, 0, nil
}

// tooManyAttempts is the message for a throttled login. It is the same
// for names that exist and names that do not.
func tooManyAttempts(wait time.Duration) string {
	return fmt.Sprintf("Too many failed attempts. Try again in %d minutes.", int(wait.Minutes())+1)
}

// signIn signs user id in to the request's session and sends the browser
// on to next, a path hallpass.SafeNext passed. Login rotates the session
// token, so a token planted before sign-in is worthless after it.
func (a *app) signIn(w http.ResponseWriter, r *http.Request, id int64, remember bool, next string) {
	s := hallpass.FromRequest(r)
	if err := s.Login(strconv.FormatInt(id, 10), hallpass.LoginOptions{Persistent: remember}); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.finishSignIn(w, r, remember, next)
}

// finishSignIn follows a successful Login: the remember-me series if
// asked for, a message, and on to next.
func (a *app) finishSignIn(w http.ResponseWriter, r *http.Request, remember bool, next string) {
	if remember {
		// The session is persistent, and when it ends (idle, lifetime,
		// a cleared cookie) the browser is signed in again by its
		// remember-me series, which never holds the password.
		if err := a.remember.Issue(w, r); err != nil {
			a.serverError(w, r, err)
			return
		}
	}
	a.flashTo(w, r, "Signed in.", hallpass.SafeNext(next))
}

// logoutAll signs the user out everywhere: every session, every
// remember-me series, every API token (through the user's revocation
// cutoff), this browser included.
func (a *app) logoutAll(w http.ResponseWriter, r *http.Request) {
	s := hallpass.FromRequest(r)
	user := s.UserID()
	if user == "" {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	if _, err := a.remember.ForgetAll(r.Context(), user); err != nil {
		a.serverError(w, r, err)
		return
	}
	if err := a.remember.Forget(w, r); err != nil { // this browser's cookie
		a.serverError(w, r, err)
		return
	}
	n, err := a.sessions.RevokeAll(r.Context(), user)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	if err := s.Logout(); err != nil {
		a.serverError(w, r, err)
		return
	}
	msg := fmt.Sprintf("Signed out everywhere (%d sessions).", n)
	a.flashTo(w, r, msg, "/")
}

// logout ends the session on the server, so that a copy of its cookie
// is worthless from now on.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	s := hallpass.FromRequest(r)
	// This device only: its remember-me series ends with the session.
	if err := a.remember.Forget(w, r); err != nil {
		a.serverError(w, r, err)
		return
	}
	if err := s.Logout(); err != nil {
		a.serverError(w, r, err)
		return
	}
	// This starts a fresh guest session just to carry the message; the
	// one signed out is already gone from the store.
	a.flashTo(w, r, "Signed out.", "/")
}

// parseForm reads a POSTed form of bounded size. On failure it has
// answered 400 and returns false.
func parseForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "The form could not be read.", http.StatusBadRequest)
		return false
	}
	return true
}

// flashTo leaves msg for the next page the session shows and sends the
// browser to to: how every form that changes something ends.
func (a *app) flashTo(w http.ResponseWriter, r *http.Request, msg, to string) {
	if err := hallpass.FromRequest(r).Set(flashKey, msg); err != nil {
		a.serverError(w, r, err)
		return
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}
