package hallpass_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

func TestAuthLevelsAndMethods(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	auth := func(c string) (a hallpass.AuthInfo) {
		h.serve(c, func(w http.ResponseWriter, r *http.Request) { a = hallpass.FromRequest(r).Auth() })
		return a
	}
	if a := auth(""); a.Level != hallpass.LevelNone {
		t.Fatalf("guest level %v", a.Level)
	}
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	a := auth(c)
	if a.Level != hallpass.LevelSingleFactor || len(a.Methods) != 1 || a.Methods[0].Method != hallpass.MethodPassword || a.ReauthAt.IsZero() {
		t.Fatalf("after password login: %+v", a)
	}
	if rec := h.only(); rec.AuthLevel != "single_factor" {
		t.Fatalf("stored level %q", rec.AuthLevel)
	}
	h.clock.Add(time.Minute)
	res, c2 := h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Reauthenticate(hallpass.MethodTOTP); err != nil {
			t.Error(err)
		}
	})
	if res.StatusCode != 200 || c2 == c {
		t.Fatal("step-up did not rotate the token")
	}
	if res, _ := h.serve(c, reader); body(t, res) != "|0" {
		t.Fatal("pre-step-up token still works")
	}
	a = auth(c2)
	if a.Level != hallpass.LevelMultiFactor || len(a.Methods) != 2 || !a.ReauthAt.Equal(h.clock.Now()) {
		t.Fatalf("after TOTP step-up: %+v", a)
	}
	if !h.events.has(hallpass.EventAuthenticated, "reauthenticated_totp") {
		t.Fatal("no event for the step-up")
	}
	// A guest cannot re-authenticate.
	h.serve("", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Reauthenticate(hallpass.MethodPassword); err == nil {
			t.Error("guest re-authenticated")
		}
	})
}

func TestRememberedSessionIsNeverFresh(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{Method: hallpass.MethodRememberMe}))
	var a hallpass.AuthInfo
	h.serve(c, func(w http.ResponseWriter, r *http.Request) { a = hallpass.FromRequest(r).Auth() })
	if a.Level != hallpass.LevelRemembered || !a.Remembered || !a.ReauthAt.IsZero() {
		t.Fatalf("remembered sign-in: %+v", a)
	}
	sensitive := h.m.Require(hallpass.Requirement{FreshWithin: time.Hour})(http.HandlerFunc(reader))
	res, _ := h.serve(c, sensitive.ServeHTTP, func(r *http.Request) { r.Header.Set("Accept", "application/json") })
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("remembered session passed a freshness check: %d", res.StatusCode)
	}
	_, c = h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Reauthenticate(hallpass.MethodPassword)
	})
	if res, _ := h.serve(c, sensitive.ServeHTTP); res.StatusCode != 200 {
		t.Fatalf("after re-authentication: %d", res.StatusCode)
	}
}

func TestRequire(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	mfa := h.m.Require(hallpass.Requirement{Level: hallpass.LevelMultiFactor})(http.HandlerFunc(reader))
	sudo := h.m.Require(hallpass.Requirement{FreshWithin: 5 * time.Minute, ReauthURL: "/reauth"})(http.HandlerFunc(reader))
	jsonReq := func(r *http.Request) { r.Header.Set("Accept", "application/json") }
	refusal := func(res *http.Response) (ref hallpass.Refusal) {
		json.NewDecoder(res.Body).Decode(&ref)
		return ref
	}

	// Nobody signed in: 401, or the login page for a browser.
	res, _ := h.serve("", mfa.ServeHTTP, jsonReq)
	if ref := refusal(res); res.StatusCode != 401 || ref.Error != "authentication_required" {
		t.Fatalf("guest: %d %+v", res.StatusCode, ref)
	}
	toLogin := h.m.Require(hallpass.Requirement{ReauthURL: "/reauth", LoginURL: "/login"})(http.HandlerFunc(reader))
	if res, _ := h.serve("", toLogin.ServeHTTP); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login?next=%2F" {
		t.Fatalf("guest browser: %d to %q, want the login page", res.StatusCode, res.Header.Get("Location"))
	}
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	// Too low a level: 403 naming what is needed.
	res, _ = h.serve(c, mfa.ServeHTTP, jsonReq)
	if ref := refusal(res); res.StatusCode != 403 || ref.Error != "step_up_required" || ref.RequiredLevel != "multi_factor" || ref.CurrentLevel != "single_factor" {
		t.Fatalf("single factor at an MFA route: %d %+v", res.StatusCode, ref)
	}
	// Fresh enough right after sign-in; stale later: browsers are sent to
	// re-authenticate and come back to the page, API clients get JSON.
	if res, _ := h.serve(c, sudo.ServeHTTP); res.StatusCode != 200 {
		t.Fatalf("fresh sign-in refused: %d", res.StatusCode)
	}
	h.clock.Add(6 * time.Minute)
	req := httptest.NewRequest("GET", "http://localhost/account/email?tab=1", nil)
	req.Header.Set("Cookie", h.m.CookieName()+"="+c)
	rec := httptest.NewRecorder()
	h.m.Handler(sudo).ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/reauth?next=%2Faccount%2Femail%3Ftab%3D1" {
		t.Fatalf("stale browser request: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	res, _ = h.serve(c, sudo.ServeHTTP, jsonReq)
	if ref := refusal(res); res.StatusCode != 403 || ref.Error != "reauth_required" || ref.MaxAgeSeconds != 300 || ref.ReauthURL == "" {
		t.Fatalf("stale API request: %d %+v", res.StatusCode, ref)
	}
	// A POST returns to the same-origin page the form was on, never elsewhere.
	for referer, want := range map[string]string{
		"http://localhost/account": "/reauth?next=%2Faccount",
		"https://evil.example/x":   "/reauth?next=%2F",
	} {
		req := httptest.NewRequest("POST", "http://localhost/account/email", nil)
		req.Header.Set("Cookie", h.m.CookieName()+"="+c)
		req.Header.Set("Referer", referer)
		rec := httptest.NewRecorder()
		h.m.Handler(sudo).ServeHTTP(rec, req)
		if got := rec.Header().Get("Location"); got != want {
			t.Errorf("POST with Referer %s: back to %q, want %q", referer, got, want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/account":              "/account",
		"/a?b=c#d":              "/a?b=c#d",
		"":                      "/",
		"//evil.example/":       "/",
		"/\\evil.example":       "/",
		"https://evil.example/": "/",
		"javascript:alert(1)":   "/",
		"account":               "/",
		"/a\r\nSet-Cookie: x":   "/",
		"/./\\evil.example":     "/",
		"/../\\evil.example":    "/",
		"/a/../\\evil.example":  "/",
		"/a\\b":                 "/",
		"/a/./b/../c":           "/a/./b/../c",
	} {
		if got := hallpass.SafeNext(in); got != want {
			t.Errorf("SafeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]hallpass.Level{"multi_factor": hallpass.LevelMultiFactor, "1": hallpass.LevelRemembered, "none": hallpass.LevelNone} {
		if got, err := hallpass.ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := hallpass.ParseLevel("admin"); err == nil {
		t.Error("ParseLevel accepted an unknown name")
	}
}

// FuzzSafeNext checks that whatever comes back is a local path: no
// scheme, no host, nothing a browser would resolve to another site.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/account", "//evil.example", "/\\evil", "https://x", "/a?b#c", "/%2F%2Fevil", " /x", "/\t/evil", "/./\\evil", "/a/../\\evil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := hallpass.SafeNext(next)
		if got != "/" && got != next {
			t.Fatalf("SafeNext(%q) = %q: neither the input nor /", next, got)
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(got, "/") ||
			strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
			t.Fatalf("SafeNext(%q) = %q, which can leave the site", next, got)
		}
		// Browsers strip tabs and newlines before resolving, and read a
		// backslash as a slash: check the Location http.Redirect sends,
		// after it cleaned the path, as a browser would follow it.
		w := httptest.NewRecorder()
		http.Redirect(w, httptest.NewRequest("GET", "/login", nil), got, http.StatusSeeOther)
		loc := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(w.Header().Get("Location"))
		if lu, err := url.Parse(loc); strings.HasPrefix(loc, "//") || err == nil && (lu.Scheme != "" || lu.Host != "") {
			t.Fatalf("SafeNext(%q) = %q, redirected to %q, which a browser reads as another site", next, got, w.Header().Get("Location"))
		}
	})
}

func TestReauthenticateAfterRevokeIsSessionEnded(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		h.m.RevokeAll(r.Context(), "alice") // another device, meanwhile
		if err := s.Reauthenticate(hallpass.MethodPassword); !errors.Is(err, hallpass.ErrSessionEnded) {
			t.Errorf("Reauthenticate on a revoked session: %v, want ErrSessionEnded", err)
		}
		if s.IsAuthenticated() {
			t.Error("session still signed in after it ended")
		}
	})
	if h.store.Len() != 0 {
		t.Fatal("re-authentication resurrected a revoked session")
	}
}

// TestRequireReadsMetaLevel: Require takes the level from the record's
// Meta, which the library keeps in step with the methods in the data (a
// downgrade lowers it without forgetting the methods), and falls back to
// the methods for a record whose Meta names no level.
func TestRequireReadsMetaLevel(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	single := h.m.Require(hallpass.Requirement{Level: hallpass.LevelSingleFactor})(http.HandlerFunc(reader))
	setLevel := func(level string) {
		t.Helper()
		k := hallpass.KeyOf(c)
		rec, err := h.store.Load(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		meta := rec.Meta
		meta.AuthLevel = level
		if err := h.store.Update(t.Context(), k, hallpass.Delta{Meta: &meta}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c2 := range []struct {
		level string
		want  int
	}{
		{"single_factor", http.StatusOK},
		{"remembered", http.StatusForbidden}, // the methods say password; Meta says downgraded
		{"", http.StatusOK},                  // no level in Meta: the methods decide
		{"bogus", http.StatusOK},
	} {
		setLevel(c2.level)
		if res, _ := h.serve(c, single.ServeHTTP); res.StatusCode != c2.want {
			t.Errorf("AuthLevel %q: status %d, want %d", c2.level, res.StatusCode, c2.want)
		}
	}
}
