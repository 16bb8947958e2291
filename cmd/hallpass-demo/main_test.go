package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

const cookieName = "__Host-hallpass"

// testArgon2 makes hashing cheap, which -race otherwise makes slow.
var testArgon2 = argon2Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// env is one app on a real SQLite file behind an httptest.Server. The
// server is plain HTTP on 127.0.0.1: browsers, and net/http/cookiejar,
// count loopback as a secure context and send Secure cookies to it, just
// as in local development.
type env struct {
	t   *testing.T
	srv *httptest.Server
	app *app

	logs   syncBuffer
	mu     sync.Mutex
	tokens map[string]bool // every session token the server handed out
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvStore(t, "")
}

// newEnvStore is newEnv with sessions in the store that spec names (see
// openStore).
func newEnvStore(t *testing.T, spec string) *env {
	t.Helper()
	return newEnvOptions(t, options{Store: spec})
}

// newEnvOptions is newEnv with the app built from opts; the logger and the
// hash parameters are always the test's own.
func newEnvOptions(t *testing.T, opts options) *env {
	t.Helper()
	e := &env{t: t, tokens: make(map[string]bool)}
	db, err := openDB(filepath.Join(t.TempDir(), "demo.db"))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The flows do not depend on the hash's cost; password_test.go covers
	// the real parameters.
	opts.Logger, opts.Argon2 = logger, testArgon2
	a, err := newApp(t.Context(), db, opts)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	e.app = a
	e.srv = httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		e.srv.Close()
		if err := a.Close(); err != nil {
			t.Error(err)
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
		// The binary must never log a token: anyone who reads the log
		// could then take over the session.
		logs := e.logs.String()
		e.mu.Lock()
		defer e.mu.Unlock()
		for tok := range e.tokens {
			if strings.Contains(logs, tok) {
				t.Errorf("a session token appears in the log:\n%s", logs)
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return e
}

// client is a browser: it keeps cookies and does not follow redirects,
// so that tests see each response.
type client struct {
	e  *env
	c  *http.Client
	ua string // User-Agent of every request; "" for Go's default
}

// clientUA is a client that sends ua as its User-Agent on every request,
// as a real browser does. The session is bound to the browser family: a
// client whose family changes gets its session downgraded.
func (e *env) clientUA(ua string) *client {
	c := e.client()
	c.ua = ua
	return c
}

func (e *env) client() *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &client{e: e, c: &http.Client{
		Jar:           jar,
		Transport:     tokenRecorder{e},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// tokenRecorder notes every session token in a response.
type tokenRecorder struct{ e *env }

func (tr tokenRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		for _, c := range resp.Cookies() {
			if c.Name == cookieName && c.Value != "" {
				tr.e.mu.Lock()
				tr.e.tokens[c.Value] = true
				tr.e.mu.Unlock()
			}
		}
	}
	return resp, err
}

// response is what a test needs of an HTTP response.
type response struct {
	*http.Response
	body string
}

func (c *client) do(req *http.Request) response {
	c.e.t.Helper()
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	resp, err := c.c.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return response{resp, string(b)}
}

func (c *client) get(path string) response {
	c.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.e.srv.URL+path, nil)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return c.do(req)
}

// post sends a form as a browser would from one of the app's own pages:
// it loads one first, for a CSRF token of the client's current session.
func (c *client) post(path string, form url.Values) response {
	c.e.t.Helper()
	return c.postFrom("", path, form)
}

// postFrom is post from a form on page: the request's Referer names it,
// as a browser's would. An empty page sends no Referer.
func (c *client) postFrom(page, path string, form url.Values) response {
	c.e.t.Helper()
	form = maps.Clone(form)
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf_token", c.csrfToken())
	req := c.newPost(path, form)
	req.Header.Set("Origin", c.e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if page != "" {
		req.Header.Set("Referer", c.e.srv.URL+page)
	}
	return c.do(req)
}

// csrfToken loads the login page, which has no side effect on the
// session but its CSRF secret, and returns the token in its form.
func (c *client) csrfToken() string {
	c.e.t.Helper()
	r := c.get("/login")
	m := csrfFieldRE.FindStringSubmatch(r.body)
	if m == nil {
		c.e.t.Fatalf("GET /login: no CSRF field in\n%s", r.body)
	}
	return m[1]
}

var (
	csrfFieldRE = regexp.MustCompile(`<input type="hidden" name="csrf_token" value="([A-Za-z0-9_-]+)">`)
	csrfMetaRE  = regexp.MustCompile(`<meta name="csrf-token" content="[A-Za-z0-9_-]+">`)
)

// withoutTokens is body without its CSRF tokens, which are masked afresh
// on every page, so that two pages can be compared.
func withoutTokens(body string) string {
	return csrfMetaRE.ReplaceAllString(csrfFieldRE.ReplaceAllString(body, ""), "")
}

func (c *client) newPost(path string, form url.Values) *http.Request {
	c.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// sessionCookie returns the session token the client holds, or "".
func (c *client) sessionCookie() string {
	u, _ := url.Parse(c.e.srv.URL)
	for _, ck := range c.c.Jar.Cookies(u) {
		if ck.Name == cookieName {
			return ck.Value
		}
	}
	return ""
}

func (c *client) signup(name, password string) response {
	c.e.t.Helper()
	return c.post("/signup", url.Values{"username": {name}, "password": {password}})
}

func (c *client) login(name, password string, remember bool) response {
	c.e.t.Helper()
	f := url.Values{"username": {name}, "password": {password}}
	if remember {
		f.Set("remember", "1")
	}
	return c.post("/login", f)
}

func wantStatus(t *testing.T, r response, code int) {
	t.Helper()
	if r.StatusCode != code {
		t.Fatalf("%s %s: status %d, want %d; body:\n%s", r.Request.Method, r.Request.URL.Path, r.StatusCode, code, r.body)
	}
}

func wantRedirectHome(t *testing.T, r response) {
	t.Helper()
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/" {
		t.Fatalf("%s %s: Location %q, want /", r.Request.Method, r.Request.URL.Path, loc)
	}
}

func wantBody(t *testing.T, r response, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(r.body, w) {
			t.Errorf("%s %s: body lacks %q; body:\n%s", r.Request.Method, r.Request.URL.Path, w, r.body)
		}
	}
}

func wantNoBody(t *testing.T, r response, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(r.body, w) {
			t.Errorf("%s %s: body has %q; body:\n%s", r.Request.Method, r.Request.URL.Path, w, r.body)
		}
	}
}

// sessionSetCookie returns the response's Set-Cookie line for the
// session cookie.
func sessionSetCookie(t *testing.T, r response) string {
	t.Helper()
	for _, line := range r.Header.Values("Set-Cookie") {
		if strings.HasPrefix(line, cookieName+"=") {
			return line
		}
	}
	t.Fatalf("%s %s: no Set-Cookie for %s in %q", r.Request.Method, r.Request.URL.Path, cookieName, r.Header.Values("Set-Cookie"))
	return ""
}

func TestSignupSignsIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()

	r := c.get("/signup")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `action="/signup"`, `name="username"`, `name="password"`, `name="remember"`)

	r = c.signup("alice", "correct horse")
	wantRedirectHome(t, r)
	e.mu.Lock()
	n := len(e.tokens)
	e.mu.Unlock()
	if n == 0 {
		t.Fatal("no session token recorded; the log check in newEnv would prove nothing")
	}

	r = c.get("/")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "Signed in as alice", "Signed in.", `action="/logout"`)
	wantNoBody(t, r, "Guest")

	r = c.get("/")
	wantBody(t, r, "Signed in as alice")
	wantNoBody(t, r, "Signed in.</p>") // the flash shows once
}

func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	line := sessionSetCookie(t, c.signup("alice", "correct horse"))
	attrs := strings.Split(line, "; ")
	have := make(map[string]bool)
	for _, a := range attrs[1:] {
		have[a] = true
	}
	for _, want := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !have[want] {
			t.Errorf("Set-Cookie %q lacks %s", line, want)
		}
	}
	for a := range have {
		if strings.HasPrefix(a, "Domain=") {
			t.Errorf("Set-Cookie %q has a Domain; a __Host- cookie must not", line)
		}
		if strings.HasPrefix(a, "Max-Age=") || strings.HasPrefix(a, "Expires=") {
			t.Errorf("Set-Cookie %q outlives the browser without \"Keep me signed in\"", line)
		}
	}
	if tok := strings.TrimPrefix(attrs[0], cookieName+"="); len(tok) < 43 {
		t.Errorf("session token %d characters; want at least 43 (256 bits)", len(tok))
	}
}

func TestLogoutEndsSessionOnServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	old := c.sessionCookie()
	if old == "" {
		t.Fatal("no session cookie after signup")
	}

	wantRedirectHome(t, c.post("/logout", nil))
	r := c.get("/")
	wantBody(t, r, "Guest", "Signed out.")
	wantNoBody(t, r, "Signed in as")

	// Someone who copied the cookie before the logout gets a guest.
	thief := e.client()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/", nil)
	req.Header.Set("Cookie", cookieName+"="+old)
	r = thief.do(req)
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "Guest")
	wantNoBody(t, r, "Signed in as", "alice")
}

func TestLoginFailuresAreGeneric(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))

	c := e.client()
	wrong := c.login("alice", "wrong password", false)
	unknown := c.login("mallory", "wrong password", false)
	for _, r := range []response{wrong, unknown} {
		wantStatus(t, r, http.StatusUnauthorized)
		wantBody(t, r, "Invalid username or password.", `action="/login"`)
		wantNoBody(t, r, "Signed in as", "exist", "taken")
	}
	wantBody(t, wrong, `value="alice"`) // the form keeps the name typed
	// Apart from the name echoed back and the CSRF token, masked afresh
	// for every page, the two answers are the same page.
	same := withoutTokens
	if same(strings.ReplaceAll(wrong.body, "alice", "mallory")) != same(unknown.body) {
		t.Errorf("wrong-password and unknown-user pages differ:\n%s\n---\n%s", wrong.body, unknown.body)
	}
	if r := c.get("/"); !strings.Contains(r.body, "Guest") {
		t.Errorf("failed login signed the client in:\n%s", r.body)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("Alice", "correct horse"))

	t.Run("browser session", func(t *testing.T) {
		c := e.client()
		r := c.login("alice", "correct horse", false) // names ignore case
		wantRedirectHome(t, r)
		if line := sessionSetCookie(t, r); strings.Contains(line, "Max-Age=") {
			t.Errorf("Set-Cookie %q is persistent without \"Keep me signed in\"", line)
		}
		wantBody(t, c.get("/"), "Signed in as Alice", "Signed in.")
	})
	t.Run("remember", func(t *testing.T) {
		c := e.client()
		r := c.login("Alice", "correct horse", true)
		wantRedirectHome(t, r)
		if line := sessionSetCookie(t, r); !strings.Contains(line, "Max-Age=") {
			t.Errorf("Set-Cookie %q is not persistent with \"Keep me signed in\"", line)
		}
		wantBody(t, c.get("/"), "Signed in as Alice", "It survives closing the browser.")
	})
	t.Run("rotates token", func(t *testing.T) {
		c := e.client()
		c.get("/") // a guest session, with a visit in it
		guest := c.sessionCookie()
		wantRedirectHome(t, c.login("Alice", "correct horse", false))
		if now := c.sessionCookie(); now == "" || now == guest {
			t.Fatalf("session token did not change at login")
		}
		// The guest's data (the visit count) comes along.
		wantBody(t, c.get("/"), "Signed in as Alice", "visited this page 2 times")
	})
}

func TestSignupValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))
	for _, tc := range []struct {
		name, user, pass string
		code             int
		msg              string
	}{
		{"short username", "al", "correct horse", http.StatusUnprocessableEntity, "Username must be 3 to 32 characters"},
		{"long username", strings.Repeat("a", 33), "correct horse", http.StatusUnprocessableEntity, "Username must be 3 to 32 characters"},
		{"bad character", "bob smith", "correct horse", http.StatusUnprocessableEntity, "Username must be 3 to 32 characters"},
		{"non-ASCII", "bøb", "correct horse", http.StatusUnprocessableEntity, "Username must be 3 to 32 characters"},
		{"short password", "bob", "1234567", http.StatusUnprocessableEntity, "Password must be at least 8 characters."},
		{"long password", "bob", strings.Repeat("p", 257), http.StatusUnprocessableEntity, "Password must be at most 256 characters."},
		{"taken", "alice", "another password", http.StatusConflict, "The username alice is taken."},
		{"taken, other case", "ALICE", "another password", http.StatusConflict, "The username ALICE is taken."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.client()
			r := c.signup(tc.user, tc.pass)
			wantStatus(t, r, tc.code)
			wantBody(t, r, tc.msg, `action="/signup"`)
			if !strings.Contains(r.body, `value="`+tc.user+`"`) {
				t.Errorf("the form lost the username typed")
			}
			wantBody(t, c.get("/"), "Guest")
		})
	}
	// Both problems at once are both reported.
	r := e.client().signup("x", "short")
	wantBody(t, r, "Username must be", "Password must be")
}

func TestVisitCounter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantBody(t, c.get("/"), "Guest", "visited this page 1 time in this session")
	wantBody(t, c.get("/"), "visited this page 2 times in this session")
	wantBody(t, c.get("/"), "visited this page 3 times in this session")

	// Each browser has its own count.
	wantBody(t, e.client().get("/"), "visited this page 1 time in this session")

	// Signing up keeps the session's data; signing out ends it.
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	wantBody(t, c.get("/"), "Signed in as alice", "visited this page 4 times")
	wantRedirectHome(t, c.post("/logout", nil))
	wantBody(t, c.get("/"), "Guest", "visited this page 1 time in this session")
}

func TestCrossOriginPostRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))

	for _, path := range []string{"/logout", "/session/extend", "/login"} {
		t.Run(path, func(t *testing.T) {
			req := c.newPost(path, url.Values{"username": {"alice"}, "password": {"correct horse"}})
			req.Header.Set("Origin", "http://evil.example")
			req.Header.Set("Sec-Fetch-Site", "cross-site")
			wantStatus(t, c.do(req), http.StatusForbidden)

			// A browser too old for Sec-Fetch-Site is judged by Origin.
			req = c.newPost(path, nil)
			req.Header.Set("Origin", "http://evil.example")
			wantStatus(t, c.do(req), http.StatusForbidden)
		})
	}
	wantBody(t, c.get("/"), "Signed in as alice")

	// A same-origin form without a token, or with one from another
	// browser's session, is refused too.
	other := e.client().csrfToken()
	for _, form := range []url.Values{nil, {"csrf_token": {other}}} {
		req := c.newPost("/logout", form)
		req.Header.Set("Origin", c.e.srv.URL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		wantStatus(t, c.do(req), http.StatusForbidden)
	}
	wantBody(t, c.get("/"), "Signed in as alice")
}

func TestSessionStatusAndExtend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))

	var st hallpass.Status
	r := c.get("/session")
	wantStatus(t, r, http.StatusOK)
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("GET /session: %v; body %s", err, r.body)
	}
	if !st.Authenticated || st.User != "1" || st.IdleExpiresAt == nil {
		t.Errorf("GET /session = %+v; want authenticated user 1 with an idle deadline", st)
	}

	r = c.post("/session/extend", nil)
	wantStatus(t, r, http.StatusOK)
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("POST /session/extend: %v; body %s", err, r.body)
	}
	if !st.Authenticated {
		t.Errorf("POST /session/extend = %+v; want authenticated", st)
	}
}

func TestDeletedUserIsSignedOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	if _, err := e.app.db.Exec(`DELETE FROM users WHERE username = 'alice'`); err != nil {
		t.Fatal(err)
	}
	r := c.get("/")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "Guest")
	n, err := e.app.sessions.UserSessions(t.Context(), "1")
	if err != nil || len(n) != 0 {
		t.Errorf("sessions of the deleted user: %v, %v; want none", n, err)
	}
}

func TestPagesAndAssets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	r := c.get("/")
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q; want no-store on a page that shows who is signed in", cc)
	}
	wantBody(t, r, `href="/static/style.css"`)
	// One script of its own (the live session script); nothing from elsewhere.
	wantNoBody(t, r, "http://", "https://")
	if n := strings.Count(r.body, "<script"); n != 1 || !strings.Contains(r.body, `<script src="/hallpass-live.js" defer`) {
		t.Errorf("page has %d scripts; want only /hallpass-live.js", n)
	}

	r = c.get("/static/style.css")
	wantStatus(t, r, http.StatusOK)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") {
		t.Errorf("style.css Content-Type = %q", ct)
	}
	wantStatus(t, c.get("/login"), http.StatusOK)
	wantStatus(t, c.get("/nope"), http.StatusNotFound)
	wantStatus(t, c.get("/logout"), http.StatusMethodNotAllowed)
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := run(t.Context(), []string{"-h"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h = %v; want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"-addr", "localhost:8080", "HALLPASS_ADDR", "-db", "hallpass-demo.db", "HALLPASS_DB", "-idle-timeout", "-lifetime",
		"-rotate-every", "HALLPASS_ROTATE_EVERY", "-rotate-grace", "HALLPASS_ROTATE_GRACE",
		"-reauth-window", "HALLPASS_REAUTH_WINDOW", "(default 5m0s)",
		"-max-sessions", "HALLPASS_MAX_SESSIONS", "-tls-cert", "HALLPASS_TLS_CERT", "-tls-key", "HALLPASS_TLS_KEY",
		"-tls-self-signed", "HALLPASS_TLS_SELF_SIGNED", "-redirect-http", "HALLPASS_REDIRECT_HTTP",
		"-trusted-proxy", "HALLPASS_TRUSTED_PROXY", "-log-file", "HALLPASS_LOG_FILE",
		"-remember-for", "-access-ttl", "-admin", "HALLPASS_ADMIN", "-metrics-addr", "HALLPASS_METRICS_ADDR",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-h output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunBadEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env, value string }{
		{"HALLPASS_IDLE_TIMEOUT", "soon"},
		{"HALLPASS_ROTATE_EVERY", "soon"},
		{"HALLPASS_ROTATE_GRACE", "1 minute"},
		{"HALLPASS_ROTATE_GRACE", "-1s"},
		{"HALLPASS_REAUTH_WINDOW", "later"},
		{"HALLPASS_REAUTH_WINDOW", "0"},
		{"HALLPASS_REAUTH_WINDOW", "-5m"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			env := map[string]string{tc.env: tc.value}
			err := run(t.Context(), nil, func(k string) string { return env[k] }, &out)
			if !errors.Is(err, errUsage) || !strings.Contains(out.String(), tc.env) {
				t.Fatalf("run with $%s=%q = %v, output %q; want a usage error naming it", tc.env, tc.value, err, out.String())
			}
		})
	}
}

func TestRunBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-rotate-every", "often"},
		{"-rotate-grace", "-1m"},
		{"-reauth-window", "0s"},
		{"-reauth-window", "-1m"},
		{"-reauth-window", "5"},
		{"-max-sessions", "-1"},
		{"-tls-cert", "cert.pem"},
		{"-tls-self-signed", "-tls-cert", "c.pem", "-tls-key", "k.pem"},
		{"-redirect-http", "127.0.0.1:0"},
		{"-trusted-proxy", "not-an-address"},
	} {
		t.Run(strings.Join(args, "="), func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(t.Context(), args, func(string) string { return "" }, &out)
			if !errors.Is(err, errUsage) || !strings.Contains(out.String(), args[0]) {
				t.Fatalf("run %q = %v, output %q; want a usage error naming %s", args, err, out.String(), args[0])
			}
		})
	}
}

// TestRunShutsDown starts the real server from the environment, checks
// that it answers, and stops it as a signal would.
func TestRunShutsDown(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"HALLPASS_ADDR": "127.0.0.1:0",
		"HALLPASS_DB":   filepath.Join(t.TempDir(), "run.db"),
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &watchWriter{want: "hallpass-demo listening", seen: make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, logs) }()

	var line string
	select {
	case line = <-logs.seen:
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	}
	_, addr, _ := strings.Cut(line, "url=")
	addr, _, _ = strings.Cut(addr, " ")
	resp, err := http.Get(addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET / on the running server: %s", resp.Status)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// watchWriter sends the first line containing want to seen.
type watchWriter struct {
	want string
	seen chan string
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	if line := string(p); strings.Contains(line, w.want) {
		w.once.Do(func() { w.seen <- line })
	}
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMaxSessionsSignsOutTheOldest(t *testing.T) {
	t.Parallel()
	e := newEnvOptions(t, options{MaxSessions: 1})
	first := e.client()
	wantRedirectHome(t, first.signup("alice", "correct horse"))
	wantBody(t, first.get("/"), "Signed in as alice")
	second := e.client()
	wantRedirectHome(t, second.login("alice", "correct horse", false))
	wantBody(t, second.get("/"), "Signed in as alice")
	if r := first.get("/"); !strings.Contains(r.body, "Guest") {
		t.Errorf("with -max-sessions 1 the first browser is still signed in:\n%s", r.body)
	}
}

// TestRunTLSRedirectProxyAndEventLog starts the real server with a
// self-signed certificate, a plain-HTTP redirect listener, a trusted proxy
// and an event log file, and checks each.
func TestRunTLSRedirectProxyAndEventLog(t *testing.T) {
	t.Parallel()
	logFile := filepath.Join(t.TempDir(), "events.jsonl")
	args := []string{
		"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "run.db"),
		"-tls-self-signed", "-redirect-http", "127.0.0.1:0",
		"-trusted-proxy", "127.0.0.1/32", "-log-file", logFile,
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, func(string) string { return "" }, logs) }()
	field := func(msg, key string) string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, msg) {
					_, v, _ := strings.Cut(line, key+"=")
					v, _, _ = strings.Cut(v, " ")
					return v
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no %q line in the logs:\n%s", msg, logs.String())
		return ""
	}
	url := field("hallpass-demo listening", "url")
	redirectAddr := field("redirecting plain HTTP", "addr")
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("listening on %q, want https", url)
	}
	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, _ := http.NewRequest("GET", url+"/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Cookie", "__Host-hallpass=garbage")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("GET / over TLS: %s, HSTS %q", resp.Status, resp.Header.Get("Strict-Transport-Security"))
	}

	resp, err = client.Get("http://" + redirectAddr + "/account?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := url + "/account?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %s to %q, want 308 to %q", resp.Status, resp.Header.Get("Location"), want)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	events, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Kind, Reason, IP, ForwardedFor string }
	line, _, _ := strings.Cut(string(events), "\n")
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("event log line %q: %v", line, err)
	}
	if e.Reason != "malformed_cookie" || e.IP != "203.0.113.9" {
		t.Errorf("event log: %s; want malformed_cookie from the client behind the trusted proxy, 203.0.113.9", line)
	}
}

// restart is the client after the browser closed: its cookies without a
// session cookie, as when the session has ended.
func (c *client) restart() *client {
	u, _ := url.Parse(c.e.srv.URL)
	n := c.e.client()
	n.ua = c.ua
	var keep []*http.Cookie
	for _, ck := range c.c.Jar.Cookies(u) {
		if ck.Name != cookieName {
			keep = append(keep, &http.Cookie{Name: ck.Name, Value: ck.Value, Path: "/"})
		}
	}
	n.c.Jar.SetCookies(u, keep)
	return n
}

func TestRememberMe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))

	c := e.client()
	wantRedirectHome(t, c.login("alice", "correct horse", true))
	back := c.restart()
	wantBody(t, back.get("/"), "Signed in as alice")
	wantBody(t, back.get("/account"), "yes: signed in by a remember-me token")

	// Sign out other devices ends their series too: the first browser
	// does not come back.
	d := e.client()
	wantRedirectHome(t, d.login("alice", "correct horse", false))
	wantRedirect(t, d.post("/account/sessions/revoke-others", nil), "/account/sessions")
	wantBody(t, c.restart().get("/"), "Guest")

	// Logout ends this device's series.
	e2 := e.client()
	wantRedirectHome(t, e2.login("alice", "correct horse", true))
	gone := e2.restart() // a copy of the cookies from before the logout
	wantRedirectHome(t, e2.post("/logout", nil))
	wantBody(t, gone.restart().get("/"), "Guest")
	wantBody(t, e2.restart().get("/"), "Guest")
}

func TestCart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	add := func(c *client, id string) { wantRedirect(t, c.post("/cart/add", url.Values{"item": {id}}), "/") }

	// alice has a saved cart from another device.
	other := e.client()
	wantRedirectHome(t, other.signup("alice", "correct horse"))
	add(other, "socks")

	guest := e.client()
	r := guest.get("/") // the guest's session starts here
	if line := sessionSetCookie(t, r); !strings.Contains(line, "Max-Age=") {
		t.Errorf("a guest's session (its cart) is in a browser-session cookie %q; it must survive closing the browser", line)
	}
	add(guest, "mug")
	add(guest, "mug")
	add(guest, "lamp")
	wantBody(t, guest.get("/"), "Cart (3)")
	wantBody(t, guest.get("/cart"), "Enamel mug", "Desk lamp", "Total: €63.00")
	wantStatus(t, guest.post("/cart/add", url.Values{"item": {"piano"}}), http.StatusNotFound)

	// At login the guest's cart joins the saved one, on every device.
	wantRedirectHome(t, guest.login("alice", "correct horse", false))
	r = guest.get("/cart")
	wantBody(t, r, "Enamel mug", "Desk lamp", "Wool socks", "Total: €78.00")
	third := e.client()
	wantRedirectHome(t, third.login("alice", "correct horse", false))
	wantBody(t, third.get("/cart"), "Enamel mug", "Desk lamp", "Wool socks")

	// Removing counts down and then drops the line, saved too.
	wantRedirect(t, third.post("/cart/remove", url.Values{"item": {"mug"}, "from": {"cart"}}), "/cart")
	wantRedirect(t, third.post("/cart/remove", url.Values{"item": {"mug"}, "from": {"cart"}}), "/cart")
	wantNoBody(t, third.get("/cart"), "Enamel mug")
	fourth := e.client()
	wantRedirectHome(t, fourth.login("alice", "correct horse", false))
	wantBody(t, fourth.get("/cart"), "Desk lamp", "Wool socks", "Total: €54.00")
	wantNoBody(t, fourth.get("/cart"), "Enamel mug")
}

func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))
	c := e.client()
	for range maxFailAccount {
		wantStatus(t, c.login("alice", "wrong", false), http.StatusUnauthorized)
	}
	// Now even the right password waits, with the same page for a name
	// that exists and one that does not.
	r := c.login("alice", "correct horse", false)
	wantStatus(t, r, http.StatusTooManyRequests)
	wantBody(t, r, "Too many failed attempts")
	if r.Header.Get("Retry-After") == "" {
		t.Error("a throttled login has no Retry-After")
	}
	for range maxFailAccount {
		c.login("nobody", "wrong", false)
	}
	r2 := c.login("nobody", "wrong", false)
	wantStatus(t, r2, http.StatusTooManyRequests)
	same := withoutTokens
	if same(strings.ReplaceAll(r.body, "alice", "nobody")) != same(r2.body) {
		t.Errorf("throttled pages differ for an existing and a missing user:\n%s\n---\n%s", r.body, r2.body)
	}

	clock.Add(failWindow + time.Second)
	wantRedirectHome(t, c.login("alice", "correct horse", false))

	// Per address: many names from one client.
	d := e.client()
	for i := range maxFailAddr {
		d.login(fmt.Sprintf("user%d", i), "wrong", false)
	}
	wantStatus(t, d.login("alice", "correct horse", false), http.StatusTooManyRequests)
}

// TestSignupThrottled: one address gets maxSignupAddr signups in the
// window, names taken or not, so that it can neither make accounts in
// bulk nor ask about many names; a form with errors does not count.
func TestSignupThrottled(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))
	c := e.client()
	wantStatus(t, c.signup("x", "short"), http.StatusUnprocessableEntity)
	wantStatus(t, c.signup("alice", "correct horse"), http.StatusConflict)
	for i := range maxSignupAddr - 2 {
		wantRedirectHome(t, e.client().signup(fmt.Sprintf("user%d", i), "correct horse"))
	}
	for _, name := range []string{"alice", "newcomer"} {
		r := c.signup(name, "correct horse")
		wantStatus(t, r, http.StatusTooManyRequests)
		wantBody(t, r, "Too many signups")
		wantNoBody(t, r, "taken")
		if r.Header.Get("Retry-After") == "" {
			t.Error("a throttled signup has no Retry-After")
		}
	}
	clock.Add(failWindow + time.Second)
	wantRedirectHome(t, c.signup("newcomer", "correct horse"))
}

// api calls the API as a non-browser client: no cookies, no CSRF token.
func (e *env) api(method, path, bearer string, form url.Values) (int, map[string]any, http.Header) {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m, res.Header
}

func TestAPITokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))

	code, m, _ := e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"wrong"}})
	if code != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("wrong password: %d %v", code, m)
	}
	code, m, _ = e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"correct horse"}})
	access, _ := m["access_token"].(string)
	refresh, _ := m["refresh_token"].(string)
	if code != 200 || access == "" || refresh == "" || m["token_type"] != "Bearer" {
		t.Fatalf("POST /api/token: %d %v", code, m)
	}
	if code, m, _ := e.api("GET", "/api/me", access, nil); code != 200 || m["username"] != "alice" {
		t.Errorf("GET /api/me: %d %v", code, m)
	}
	if code, _, h := e.api("GET", "/api/me", "", nil); code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("GET /api/me without a token: %d, WWW-Authenticate %q", code, h.Get("WWW-Authenticate"))
	}

	code, m, _ = e.api("POST", "/api/token/refresh", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
	access2, _ := m["access_token"].(string)
	refresh2, _ := m["refresh_token"].(string)
	if code != 200 || access2 == "" || refresh2 == "" || refresh2 == refresh {
		t.Fatalf("refresh: %d %v", code, m)
	}

	// The client signs out: its pair stops working.
	if code, _, _ := e.api("POST", "/api/token/revoke", access2, url.Values{}); code != http.StatusNoContent {
		t.Fatalf("revoke: %d", code)
	}
	if code, _, _ := e.api("GET", "/api/me", access2, nil); code != 401 {
		t.Errorf("a revoked access token still works: %d", code)
	}
	if code, _, _ := e.api("POST", "/api/token/refresh", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh2}}); code != 400 {
		t.Errorf("a revoked family still refreshes: %d", code)
	}
}

// TestLogoutAll signs out every browser, remember-me series and API token
// of the user.
func TestLogoutAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	b := e.client()
	wantRedirectHome(t, b.login("alice", "correct horse", true))
	bob := e.client()
	wantRedirectHome(t, bob.signup("bob", "battery staple"))
	_, m, _ := e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"correct horse"}})
	access, _ := m["access_token"].(string)
	refresh, _ := m["refresh_token"].(string)

	wantRedirectHome(t, a.post("/logout/all", nil))
	wantBody(t, a.get("/"), "Guest", "Signed out everywhere")
	wantBody(t, b.get("/"), "Guest")
	wantBody(t, b.restart().get("/"), "Guest") // its remember-me series is gone too
	wantBody(t, bob.get("/"), "Signed in as bob")
	if code, _, _ := e.api("GET", "/api/me", access, nil); code != 401 {
		t.Errorf("an access token from before sign-out-everywhere still works: %d", code)
	}
	if code, _, _ := e.api("POST", "/api/token/refresh", "", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}}); code != 400 {
		t.Errorf("a refresh token from before sign-out-everywhere still refreshes: %d", code)
	}
	// Signing in again works.
	wantRedirectHome(t, a.login("alice", "correct horse", false))
	wantBody(t, a.get("/"), "Signed in as alice")
}

func TestMFA(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	other := e.client()
	wantRedirectHome(t, other.login("alice", "correct horse", true))

	r := a.get("/account/mfa")
	wantStatus(t, r, http.StatusOK)
	m := regexp.MustCompile(`otpauth://totp/[^<"]*secret=([A-Z2-7]+)`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no otpauth URI on the enrolment page:\n%s", r.body)
	}
	secret := m[1]
	qr := a.get("/account/mfa/qr.png")
	if qr.StatusCode != 200 || qr.Header.Get("Content-Type") != "image/png" || !strings.HasPrefix(qr.body, "\x89PNG") {
		t.Errorf("QR code: %d %s", qr.StatusCode, qr.Header.Get("Content-Type"))
	}
	wantStatus(t, a.post("/account/mfa", url.Values{"code": {"000000"}}), http.StatusUnprocessableEntity)
	code, _ := totp.GenerateCode(secret, clock.Now())
	wantRedirect(t, a.post("/account/mfa", url.Values{"code": {code}}), "/account")
	wantBody(t, a.get("/account"), "multi_factor", "Two-step verification</dt><dd>on")
	wantBody(t, other.get("/"), "Guest")           // enrolling signed the other device out...
	wantBody(t, other.restart().get("/"), "Guest") // ...and ended its remember-me series

	// Login now takes the password, then a code.
	b := e.client()
	wantRedirect(t, b.login("alice", "correct horse", false), "/login/mfa")
	wantBody(t, b.get("/"), "Guest")
	wantStatus(t, b.post("/login/mfa", url.Values{"code": {"123456"}}), http.StatusUnauthorized)
	clock.Add(30 * time.Second)
	code, _ = totp.GenerateCode(secret, clock.Now())
	wantRedirectHome(t, b.post("/login/mfa", url.Values{"code": {code}}))
	wantBody(t, b.get("/account"), "Signed in as alice", "multi_factor")

	// A code works once.
	c := e.client()
	wantRedirect(t, c.login("alice", "correct horse", false), "/login/mfa")
	r = c.post("/login/mfa", url.Values{"code": {code}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, "used already")

	// The step after the password expires.
	clock.Add(6 * time.Minute)
	wantRedirect(t, c.post("/login/mfa", url.Values{"code": {"123456"}}), "/login")

	// Re-authentication takes a code in place of the password.
	clock.Add(30 * time.Second)
	code, _ = totp.GenerateCode(secret, clock.Now())
	wantRedirect(t, b.post("/reauth", url.Values{"code": {code}, "next": {"/account"}}), "/account")
	wantBody(t, b.get("/account"), "Code confirmed.")
}

// enrolMFA turns two-step verification on for c's signed-in user with a
// code for clock's time, and returns the secret.
func enrolMFA(t *testing.T, c *client, clock *storetest.Clock) string {
	t.Helper()
	r := c.get("/account/mfa")
	wantStatus(t, r, http.StatusOK)
	m := regexp.MustCompile(`otpauth://totp/[^<"]*secret=([A-Z2-7]+)`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no otpauth URI on the enrolment page:\n%s", r.body)
	}
	code, _ := totp.GenerateCode(m[1], clock.Now())
	wantRedirect(t, c.post("/account/mfa", url.Values{"code": {code}}), "/account")
	return m[1]
}

// TestMFAEnrolmentCodeIsUsed: the code that confirmed enrolment does not
// also pass at login.
func TestMFAEnrolmentCodeIsUsed(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	secret := enrolMFA(t, a, clock)
	code, _ := totp.GenerateCode(secret, clock.Now())

	b := e.client()
	wantRedirect(t, b.login("alice", "correct horse", false), "/login/mfa")
	r := b.post("/login/mfa", url.Values{"code": {code}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, "used already")
	clock.Add(30 * time.Second)
	code, _ = totp.GenerateCode(secret, clock.Now())
	wantRedirectHome(t, b.post("/login/mfa", url.Values{"code": {code}}))
}

// TestMFACodeThrottleSurvivesPassword: failed codes count apart from
// passwords, so signing in with the right password again does not reset
// them.
func TestMFACodeThrottleSurvivesPassword(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	secret := enrolMFA(t, a, clock)
	clock.Add(30 * time.Second)
	wrong := "000000"
	if c, _ := totp.GenerateCode(secret, clock.Now()); c == wrong {
		wrong = "111111"
	}

	b := e.client()
	fails := 0
	wantRedirect(t, b.login("alice", "correct horse", false), "/login/mfa")
	for range maxFailAccount - 1 {
		wantStatus(t, b.post("/login/mfa", url.Values{"code": {wrong}}), http.StatusUnauthorized)
		fails++
	}
	// The right password again, from a fresh client, then more guesses.
	b = e.client()
	wantRedirect(t, b.login("alice", "correct horse", false), "/login/mfa")
	var r response
	for fails <= maxFailAccount {
		r = b.post("/login/mfa", url.Values{"code": {wrong}})
		if r.StatusCode == http.StatusTooManyRequests {
			break
		}
		wantStatus(t, r, http.StatusUnauthorized)
		fails++
	}
	wantStatus(t, r, http.StatusTooManyRequests)
	if fails > maxFailAccount || r.Header.Get("Retry-After") == "" {
		t.Errorf("throttled after %d failed codes (Retry-After %q); want at most %d", fails, r.Header.Get("Retry-After"), maxFailAccount)
	}
	// Even the right code waits now, on every path that takes one.
	code, _ := totp.GenerateCode(secret, clock.Now())
	wantStatus(t, b.post("/login/mfa", url.Values{"code": {code}}), http.StatusTooManyRequests)
	wantStatus(t, a.post("/reauth", url.Values{"code": {code}, "next": {"/account"}}), http.StatusTooManyRequests)
	if st, m, h := e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"correct horse"}, "code": {code}}); st != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Errorf("API with a code while throttled: %d %v", st, m)
	}

	// Once the window passes, a right code gets in and clears the count.
	clock.Add(failWindow + time.Second)
	code, _ = totp.GenerateCode(secret, clock.Now())
	b = e.client()
	wantRedirect(t, b.login("alice", "correct horse", false), "/login/mfa")
	wantRedirectHome(t, b.post("/login/mfa", url.Values{"code": {code}}))
}

// TestAPITokenNeedsCode: a user with two-step verification gets tokens
// only with a current code.
func TestAPITokenNeedsCode(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	secret := enrolMFA(t, a, clock)
	clock.Add(30 * time.Second)
	code, _ := totp.GenerateCode(secret, clock.Now())
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}

	for name, form := range map[string]url.Values{
		"password only": {"username": {"alice"}, "password": {"correct horse"}},
		"wrong code":    {"username": {"alice"}, "password": {"correct horse"}, "code": {wrong}},
	} {
		st, m, _ := e.api("POST", "/api/token", "", form)
		if st != http.StatusBadRequest || m["error"] != "invalid_grant" ||
			m["error_description"] != "two-step verification code required or wrong" || m["access_token"] != nil {
			t.Errorf("%s: %d %v", name, st, m)
		}
	}
	// A code does not make up for a wrong password.
	st, m, _ := e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"wrong"}, "code": {code}})
	if st != http.StatusBadRequest || m["error_description"] != loginFailed {
		t.Errorf("wrong password with a code: %d %v", st, m)
	}

	st, m, _ = e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"correct horse"}, "code": {code}})
	access, _ := m["access_token"].(string)
	if st != 200 || access == "" {
		t.Fatalf("password and code: %d %v", st, m)
	}
	if st, m, _ := e.api("GET", "/api/me", access, nil); st != 200 || m["username"] != "alice" {
		t.Errorf("GET /api/me: %d %v", st, m)
	}
	// The code works once.
	if st, m, _ := e.api("POST", "/api/token", "", url.Values{"username": {"alice"}, "password": {"correct horse"}, "code": {code}}); st != http.StatusBadRequest || m["access_token"] != nil {
		t.Errorf("a used code: %d %v", st, m)
	}
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now, Admin: "root"})
	root := e.clientUA(uaFirefoxLinux)
	wantRedirectHome(t, root.signup("root", "root password"))
	alice := e.clientUA(uaChromeWindows)
	wantRedirectHome(t, alice.signup("alice", "correct horse"))
	alice2 := e.clientUA(uaSafariIOS)
	wantRedirectHome(t, alice2.login("alice", "correct horse", true))
	alice.login("alice", "wrong", false) // a security event to show

	wantStatus(t, alice.get("/admin"), http.StatusForbidden)
	wantRedirect(t, e.client().get("/admin"), "/login?next=%2Fadmin")

	r := root.get("/admin")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "alice", "root (admin)", "3 signed-in sessions", "authenticated", "success: 0")
	hs := regexp.MustCompile(`/admin/users/(\d+)/sessions/([^/]+)/revoke`).FindAllStringSubmatch(r.body, -1)
	var aliceID, phone string
	for _, d := range e.userSessions("alice") {
		if strings.Contains(d.UserAgent, "iPhone") {
			phone = d.Handle
		}
		aliceID = d.UserID
	}
	if len(hs) != 3 || phone == "" {
		t.Fatalf("admin page lists %d revocable sessions, want 3", len(hs))
	}
	wantRedirect(t, root.post("/admin/users/"+aliceID+"/sessions/"+phone+"/revoke", nil), "/admin")
	wantBody(t, alice2.get("/"), "Guest")
	wantBody(t, alice2.restart().get("/"), "Guest") // its remember-me series went with it
	wantBody(t, alice.get("/"), "Signed in as alice")
	wantRedirect(t, root.post("/admin/users/"+aliceID+"/revoke-all", nil), "/admin")
	wantBody(t, alice.get("/"), "Guest")
	wantBody(t, root.get("/admin"), "Signed the user out everywhere (1 sessions)", "1 signed-in session")

	// Admin pages need a recent password too.
	clock.Add(defaultReauthWindow + time.Minute)
	wantRedirect(t, root.get("/admin"), "/reauth?next=%2Fadmin")
}

func TestEmailChange(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	wantRedirect(t, c.post("/account/email", url.Values{"email": {"alice@example.com"}}), "/account")
	wantBody(t, c.get("/account"), "alice@example.com", "Email address changed.")
	wantStatus(t, c.post("/account/email", url.Values{"email": {"not an address"}}), http.StatusUnprocessableEntity)
	clock.Add(defaultReauthWindow + time.Minute)
	r := c.post("/account/email", url.Values{"email": {"mallory@example.com"}})
	if wantStatus(t, r, http.StatusSeeOther); !strings.HasPrefix(r.Header.Get("Location"), "/reauth?next=") {
		t.Errorf("a stale session changing its email goes to %q, want /reauth", r.Header.Get("Location"))
	}
	wantNoBody(t, c.get("/account"), "mallory@example.com")
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnvOptions(t, options{Admin: "root"})
	root := e.client()
	wantRedirectHome(t, root.signup("root", "root password"))
	alice := e.client()
	wantRedirectHome(t, alice.signup("alice", "correct horse"))
	wantStatus(t, alice.get("/metrics"), http.StatusForbidden)
	r := root.get("/metrics")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r,
		`hallpass_events_total{kind="authenticated",reason=""}`,
		`hallpass_store_operation_duration_seconds_count{op="create",result="ok",store="sqlite"}`,
		`hallpass_sessions_active{store="sqlite"}`,
		"hallpass_audit_dropped_total 0")
}

// TestLivePages checks the page script's wiring and that an open page's
// event stream ends when its session is revoked from another device.
func TestLivePages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.clientUA(uaFirefoxLinux)
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	b := e.clientUA(uaChromeWindows)
	wantRedirectHome(t, b.login("alice", "correct horse", false))

	r := a.get("/")
	wantBody(t, r, `<script src="/hallpass-live.js" defer`, `data-events-url="/session/events"`, `<meta name="csrf-token"`, "data-hallpass-signout")
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q does not let the page script and its requests through", csp)
	}
	wantBody(t, e.client().get("/"), "hallpass-live.js") // a guest page passes a logout on to the other tabs
	js := a.get("/hallpass-live.js")
	if js.StatusCode != 200 || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("script: %d %s", js.StatusCode, js.Header.Get("Content-Type"))
	}

	// b's page has its event stream open; a signs the other devices out.
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.srv.URL+"/session/events", nil)
	req.Header.Set("User-Agent", uaChromeWindows)
	req.Header.Set("Cookie", cookieName+"="+b.sessionCookie())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream: %s %q", res.Status, res.Header.Get("Content-Type"))
	}
	ended := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var got strings.Builder
		for {
			n, err := res.Body.Read(buf)
			got.Write(buf[:n])
			if strings.Contains(got.String(), "event: ended") || err != nil {
				ended <- got.String()
				return
			}
		}
	}()
	// The headers come with the stream's first write, after it has
	// registered with the hub: nothing from now on can be missed.
	wantRedirect(t, a.post("/account/sessions/revoke-others", nil), "/account/sessions")
	select {
	case got := <-ended:
		if !strings.Contains(got, `event: ended`) || !strings.Contains(got, `"revoked"`) {
			t.Errorf("stream ended without saying why: %q", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the revoked device's event stream did not end within 2s")
	}
	wantBody(t, e.client().get("/login?ended=revoked"), "You were signed out from another device")
}

// TestAdminLiveEvents: the admin page's event stream delivers what is
// kept after it opened.
func TestAdminLiveEvents(t *testing.T) {
	t.Parallel()
	e := newEnvOptions(t, options{Admin: "root"})
	root := e.client()
	wantRedirectHome(t, root.signup("root", "root password"))
	alice := e.client()
	wantRedirectHome(t, alice.signup("alice", "correct horse"))
	wantStatus(t, alice.get("/admin/events"), http.StatusForbidden)
	wantBody(t, root.get("/admin"), `id="audit-events"`, `/static/admin.js`)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/admin/events", nil)
	req.Header.Set("Cookie", cookieName+"="+root.sessionCookie())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("admin events: %s %q", res.Status, res.Header.Get("Content-Type"))
	}
	wantRedirectHome(t, alice.post("/logout", nil)) // a logged_out event, after the stream opened
	buf := make([]byte, 8192)
	var got strings.Builder
	for !strings.Contains(got.String(), `"kind":"logged_out"`) {
		n, err := res.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("stream ended before the logout showed: %v; got %q", err, got.String())
		}
	}
	if strings.Contains(got.String(), `"kind":"authenticated"`) {
		t.Errorf("the stream repeats events from before it opened: %q", got.String())
	}
}
