package main

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/pquerna/otp/totp"
)

// User-Agents of real browsers, one family each: the library downgrades a
// session that changes browser family, so each client keeps one.
const (
	uaFirefoxLinux  = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	uaChromeWindows = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36"
	uaSafariIOS     = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
	uaEdgeMac       = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36 Edg/128.0.0.0"
	uaChromeAndroid = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Mobile Safari/537.36"
)

var revokeFormRE = regexp.MustCompile(`action="/account/sessions/([A-Za-z0-9_-]+)/revoke"`)

// revokeHandles returns the handles of the revoke forms on a devices page.
func revokeHandles(body string) []string {
	var hs []string
	for _, m := range revokeFormRE.FindAllStringSubmatch(body, -1) {
		hs = append(hs, m[1])
	}
	return hs
}

func wantRedirect(t *testing.T, r response, loc string) {
	t.Helper()
	wantStatus(t, r, http.StatusSeeOther)
	if got := r.Header.Get("Location"); got != loc {
		t.Fatalf("%s %s: Location %q, want %q", r.Request.Method, r.Request.URL.Path, got, loc)
	}
}

// userSessions returns the live sessions of user name.
func (e *env) userSessions(name string) []hallpass.SessionInfo {
	e.t.Helper()
	u, err := e.app.users.ByName(e.t.Context(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	list, err := e.app.sessions.UserSessions(e.t.Context(), strconv.FormatInt(u.ID, 10))
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

// liveSessions returns how many live sessions user name has.
func (e *env) liveSessions(name string) int {
	e.t.Helper()
	return len(e.userSessions(name))
}

func TestParseUserAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ ua, browser, os string }{
		{uaFirefoxLinux, "Firefox", "Linux"},
		{uaChromeWindows, "Chrome", "Windows"},
		{uaSafariIOS, "Safari", "iOS"},
		{uaEdgeMac, "Edge", "macOS"},
		{uaChromeAndroid, "Chrome", "Android"},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15", "Safari", "macOS"},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/128.0 Mobile/15E148 Safari/605.1.15", "Firefox", "iOS"},
		{"curl/8.5.0", "Other", "Other"},
		{"", "Other", "Other"},
	} {
		if b, os := parseUserAgent(tc.ua); b != tc.browser || os != tc.os {
			t.Errorf("parseUserAgent(%q) = %q, %q; want %q, %q", tc.ua, b, os, tc.browser, tc.os)
		}
	}
}

func TestAccountPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("guest", func(t *testing.T) {
		c := e.client()
		wantRedirect(t, c.get("/account"), "/login?next=%2Faccount")
		wantRedirect(t, c.get("/account/sessions"), "/login?next=%2Faccount%2Fsessions")
		wantRedirect(t, c.get("/reauth"), "/login")
		wantRedirect(t, c.get("/reauth?next=%2Faccount%2Fmfa"), "/login?next=%2Faccount%2Fmfa")
		wantRedirect(t, c.post("/account/sessions/revoke-others", nil), "/login")
		wantRedirect(t, c.post("/reauth", url.Values{"password": {"correct horse"}}), "/login")
		r := c.post("/account/password", url.Values{"current_password": {"x"}, "new_password": {"new password"}})
		wantStatus(t, r, http.StatusSeeOther)
		if loc := r.Header.Get("Location"); !strings.HasPrefix(loc, "/login?") {
			t.Errorf("guest POST /account/password: Location %q; want the login page", loc)
		}
		wantNoBody(t, c.get("/"), `href="/account"`)
	})

	t.Run("signed in", func(t *testing.T) {
		c := e.client()
		wantRedirectHome(t, c.signup("alice", "correct horse"))
		r := c.get("/account")
		wantStatus(t, r, http.StatusOK)
		wantBody(t, r,
			"Signed in as alice",
			`<dd class="level">single_factor</dd>`,
			"password at ",
			"Idle deadline", "Absolute deadline",
			"no: it ends when you close the browser",
			`href="/account/sessions"`,
			`action="/account/password"`, `name="current_password"`, `name="new_password"`,
			"more than 5m0s ago",
		)
		wantBody(t, c.get("/"), `href="/account">Account</a>`, `href="/account/sessions">Devices</a>`)
	})

	t.Run("kept signed in", func(t *testing.T) {
		c := e.client()
		wantRedirectHome(t, c.login("alice", "correct horse", true))
		wantBody(t, c.get("/account"), "single_factor", "yes: it survives closing the browser")
	})
}

func TestDevicesRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.clientUA(uaFirefoxLinux)
	b := e.clientUA(uaChromeWindows)
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	wantRedirectHome(t, b.login("alice", "correct horse", false))

	r := a.get("/account/sessions")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "Firefox on Linux", "Chrome on Windows", "127.0.0.1", `action="/account/sessions/revoke-others"`)
	if n := strings.Count(r.body, `class="current"`); n != 1 {
		t.Fatalf("devices page marks %d devices as this one; want 1:\n%s", n, r.body)
	}
	if !regexp.MustCompile(`Firefox on Linux</strong> <strong class="current">This device`).MatchString(r.body) {
		t.Errorf("the device marked as this one is not client A's:\n%s", r.body)
	}
	hs := revokeHandles(r.body)
	if len(hs) != 1 {
		t.Fatalf("devices page has %d revoke forms; want 1, for the other device:\n%s", len(hs), r.body)
	}
	wantBody(t, b.get("/"), "Signed in as alice") // B was signed in

	t.Run("revoke one", func(t *testing.T) {
		r := a.post("/account/sessions/"+hs[0]+"/revoke", nil)
		wantRedirect(t, r, "/account/sessions")
		r = a.get("/account/sessions")
		wantBody(t, r, "Signed out 1 other device.", "Firefox on Linux", "No other device is signed in.")
		wantNoBody(t, r, "Chrome on Windows")
		wantBody(t, b.get("/"), "Guest")
		wantBody(t, a.get("/"), "Signed in as alice")
		// The same handle again names nothing.
		wantStatus(t, a.post("/account/sessions/"+hs[0]+"/revoke", nil), http.StatusNotFound)
	})

	t.Run("revoke others", func(t *testing.T) {
		c := e.clientUA(uaSafariIOS)
		wantRedirectHome(t, b.login("alice", "correct horse", false))
		wantRedirectHome(t, c.login("alice", "correct horse", true))
		r := a.get("/account/sessions")
		if hs := revokeHandles(r.body); len(hs) != 2 {
			t.Fatalf("devices page has %d revoke forms; want 2:\n%s", len(hs), r.body)
		}
		wantRedirect(t, a.post("/account/sessions/revoke-others", nil), "/account/sessions")
		r = a.get("/account/sessions")
		wantBody(t, r, "Signed out 2 other devices.", "No other device is signed in.")
		wantBody(t, b.get("/"), "Guest")
		wantBody(t, c.get("/"), "Guest")
		wantBody(t, a.get("/"), "Signed in as alice")
		if n := e.liveSessions("alice"); n != 1 {
			t.Errorf("alice has %d sessions after revoke-others; want 1", n)
		}
	})

	t.Run("unknown or other user's handle", func(t *testing.T) {
		bob := e.clientUA(uaEdgeMac)
		wantRedirectHome(t, bob.signup("bob", "battery staple"))
		wantRedirectHome(t, b.login("alice", "correct horse", false))
		bobs := e.userSessions("bob")
		if len(bobs) != 1 {
			t.Fatalf("bob has %d sessions; want 1", len(bobs))
		}
		for _, h := range []string{bobs[0].Handle, "no-such-handle"} {
			r := a.post("/account/sessions/"+h+"/revoke", nil)
			wantStatus(t, r, http.StatusNotFound)
			wantBody(t, r, "Not found")
		}
		wantBody(t, bob.get("/"), "Signed in as bob")
		wantBody(t, b.get("/"), "Signed in as alice")
		wantBody(t, a.get("/"), "Signed in as alice")
		if n := e.liveSessions("alice"); n != 2 {
			t.Errorf("alice has %d sessions; want 2", n)
		}
	})

	t.Run("revoke this device", func(t *testing.T) {
		d := e.clientUA(uaChromeAndroid)
		wantRedirectHome(t, d.login("alice", "correct horse", false))
		var self string
		for _, s := range e.userSessions("alice") {
			if s.UserAgent == uaChromeAndroid {
				self = s.Handle
			}
		}
		wantRedirectHome(t, d.post("/account/sessions/"+self+"/revoke", nil))
		wantBody(t, d.get("/"), "Guest", "Signed out.")
		wantBody(t, a.get("/"), "Signed in as alice")
	})
}

func TestPasswordChangeNeedsFreshReauth(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now, ReauthWindow: time.Minute})
	a := e.clientUA(uaFirefoxLinux)
	b := e.clientUA(uaChromeWindows)
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	wantRedirectHome(t, b.login("alice", "correct horse", false))
	change := url.Values{"current_password": {"correct horse"}, "new_password": {"battery staple"}}

	// The password was typed at signup, longer ago than the window.
	clock.Add(2 * time.Minute)
	r := a.postFrom("/account", "/account/password", change)
	wantRedirect(t, r, "/reauth?next=%2Faccount")
	r = a.get(r.Header.Get("Location"))
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `action="/reauth"`, `name="next" value="/account"`, `name="password"`)

	// A wrong password is refused like a failed login.
	r = a.post("/reauth", url.Values{"password": {"wrong password"}, "next": {"/account"}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, loginFailed, `name="next" value="/account"`)
	wantRedirect(t, a.postFrom("/account", "/account/password", change), "/reauth?next=%2Faccount")

	before := a.sessionCookie()
	wantRedirect(t, a.post("/reauth", url.Values{"password": {"correct horse"}, "next": {"/account"}}), "/account")
	if now := a.sessionCookie(); now == before {
		t.Error("re-authentication did not rotate the session token")
	}
	wantBody(t, a.get("/account"), "Password confirmed.", "single_factor")

	// Fresh now, but the current password must still be right, and the
	// new one valid; neither failure changes anything.
	r = a.postFrom("/account", "/account/password", url.Values{"current_password": {"wrong password"}, "new_password": {"battery staple"}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, "Your current password is not correct.", `action="/account/password"`)
	r = a.postFrom("/account", "/account/password", url.Values{"current_password": {"correct horse"}, "new_password": {"short"}})
	wantStatus(t, r, http.StatusUnprocessableEntity)
	wantBody(t, r, "Password must be at least 8 characters.")
	wantBody(t, b.get("/"), "Signed in as alice")
	if n := e.liveSessions("alice"); n != 2 {
		t.Fatalf("alice has %d sessions after failed changes; want 2", n)
	}

	before = a.sessionCookie()
	wantRedirect(t, a.postFrom("/account", "/account/password", change), "/account")
	if now := a.sessionCookie(); now == before {
		t.Error("the password change did not rotate the session token")
	}
	wantBody(t, a.get("/account"), "Password changed; other devices signed out.", "Signed in as alice")
	wantBody(t, b.get("/"), "Guest")
	if n := e.liveSessions("alice"); n != 1 {
		t.Errorf("alice has %d sessions after the change; want 1", n)
	}

	old := e.client()
	wantStatus(t, old.login("alice", "correct horse", false), http.StatusUnauthorized)
	wantBody(t, old.get("/"), "Guest")
	wantRedirectHome(t, e.client().login("alice", "battery staple", false))
}

func TestReauthRejectsOffsiteNext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	for _, tc := range []struct{ next, want string }{
		{"//evil.example", "/"},
		{"//evil.example/account", "/"},
		{"https://evil.example/", "/"},
		{`/\evil.example`, "/"},
		{"javascript:alert(1)", "/"},
		{"", "/"},
		{"/account/sessions", "/account/sessions"},
	} {
		r := c.post("/reauth", url.Values{"password": {"correct horse"}, "next": {tc.next}})
		wantRedirect(t, r, tc.want)
	}
	// The form itself never carries an offsite next.
	r := c.get("/reauth?next=" + url.QueryEscape("//evil.example"))
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `name="next" value="/"`)
	wantNoBody(t, r, "evil.example")
}

// TestPasswordChangeKeepsThisDevice: a password change ends the other
// devices' remember-me series, but this device's series still signs it
// back in.
func TestPasswordChangeKeepsThisDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.clientUA(uaFirefoxLinux)
	b := e.clientUA(uaChromeWindows)
	wantRedirectHome(t, a.signup("alice", "correct horse"))
	wantRedirectHome(t, a.login("alice", "correct horse", true))
	wantRedirectHome(t, b.login("alice", "correct horse", true))
	change := url.Values{"current_password": {"correct horse"}, "new_password": {"battery staple"}}
	wantRedirect(t, a.postFrom("/account", "/account/password", change), "/account")
	wantBody(t, b.get("/"), "Guest")
	wantBody(t, b.restart().get("/"), "Guest")
	wantBody(t, a.restart().get("/"), "Signed in as alice")
}

// TestLoginReturnsToNext: a guest sent to the login page from a page that
// needs a user comes back to that page once signed in, with or without
// the second step, and ?next= cannot send anyone to another site.
func TestLoginReturnsToNext(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	a := e.client()
	wantRedirectHome(t, a.signup("alice", "correct horse"))

	g := e.client()
	wantRedirect(t, g.get("/account"), "/login?next=%2Faccount")
	wantBody(t, g.get("/login?next=%2Faccount"), `name="next" value="/account"`, `href="/signup?next=%2faccount"`)
	wantNoBody(t, g.get("/login"), `name="next"`, `/signup?next`)
	wantBody(t, g.get("/signup?next=%2Faccount"), `name="next" value="/account"`, `href="/login?next=%2faccount"`)
	wantRedirect(t, g.post("/signup", url.Values{"username": {"bob"}, "password": {"battery staple"}, "next": {"/account"}}), "/account")
	g = e.client()

	// A wrong password keeps where to go.
	r := g.post("/login", url.Values{"username": {"alice"}, "password": {"wrong horse"}, "next": {"/account"}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, `name="next" value="/account"`)
	wantRedirect(t, g.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse"}, "next": {"/account"}}), "/account")
	wantBody(t, g.get("/account"), "Signed in as alice")

	for _, evil := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example"} {
		c := e.client()
		wantBody(t, c.get("/login?next="+url.QueryEscape(evil)), "Log in")
		wantRedirectHome(t, c.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse"}, "next": {evil}}))
	}

	// With two-step verification, next waits in the session for the code.
	secret := enrolMFA(t, a, clock)
	m := e.client()
	wantRedirect(t, m.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse"}, "next": {"/account"}}), "/login/mfa")
	clock.Add(30 * time.Second)
	code, _ := totp.GenerateCode(secret, clock.Now())
	wantRedirect(t, m.post("/login/mfa", url.Values{"code": {code}}), "/account")
}
