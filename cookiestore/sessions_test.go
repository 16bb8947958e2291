package cookiestore_test

import (
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/cookiestore"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

type recorder struct{ storetest.Events }

// app is one instance: a Manager with sealed sessions and its own
// revocation list over a store shared with other instances.
type app struct {
	t      *testing.T
	m      *hallpass.Manager
	rev    *hallpass.Revocations
	events *recorder
	mux    *http.ServeMux
}

func newApp(t *testing.T, key []byte, store hallpass.Store, clock *storetest.Clock, poll time.Duration, cfg hallpass.Config) *app {
	t.Helper()
	rev, err := hallpass.NewRevocations(t.Context(), store, &hallpass.RevocationOptions{Now: clock.Now, PollInterval: poll})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rev.Close() })
	sealer, err := cookiestore.New(key)
	if err != nil {
		t.Fatal(err)
	}
	a := &app{t: t, rev: rev, events: &recorder{}, mux: http.NewServeMux()}
	cfg.Sealer, cfg.Revocations, cfg.Now, cfg.Events = sealer, rev, clock.Now, a.events
	if a.m, err = hallpass.New(cfg); err != nil {
		t.Fatal(err)
	}
	a.mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		n, _ := hallpass.Get[int](s, "n")
		if err := s.Set("n", n+1); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, s.UserID()+"|"+strconv.Itoa(n+1))
	})
	a.mux.HandleFunc("/who", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, hallpass.FromRequest(r).UserID())
	})
	a.mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login(r.FormValue("user"), hallpass.LoginOptions{}); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	a.mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	a.mux.HandleFunc("/renew", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Renew(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	a.mux.HandleFunc("/others", func(w http.ResponseWriter, r *http.Request) {
		if _, err := hallpass.FromRequest(r).RevokeOthers(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	return a
}

// do sends a request with cookie ("" for none) and returns the status,
// body and the cookie the browser holds afterwards.
func (a *app) do(cookie, path string) (int, string, string) {
	a.t.Helper()
	req := httptest.NewRequest("GET", "https://localhost"+path, nil)
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: a.m.CookieName(), Value: cookie})
	}
	rec := httptest.NewRecorder()
	a.m.Handler(a.mux).ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	held := cookie
	for _, c := range res.Cookies() {
		if c.Name == a.m.CookieName() {
			held = c.Value
			if c.MaxAge < 0 {
				held = ""
			}
			if len(c.String()) > hallpass.MaxCookieSize {
				a.t.Errorf("Set-Cookie of %d bytes", len(c.String()))
			}
		}
	}
	return res.StatusCode, string(body), held
}

func key32() []byte {
	k := make([]byte, cookiestore.KeySize)
	rand.Read(k)
	return k
}

func setup(t *testing.T, cfg hallpass.Config) (*app, *memstore.Store, *storetest.Clock) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { store.Close() })
	return newApp(t, key32(), store, clock, time.Hour, cfg), store, clock
}

func TestSessionsLiveInTheCookie(t *testing.T) {
	a, store, _ := setup(t, hallpass.Config{})
	_, body, c := a.do("", "/count")
	if body != "|1" || c == "" {
		t.Fatalf("first write: %q, cookie %q", body, c)
	}
	_, body, c = a.do(c, "/count")
	if body != "|2" {
		t.Fatalf("second write: %q", body)
	}
	_, _, c = a.do(c, "/login?user=alice")
	_, body, c = a.do(c, "/count")
	if body != "alice|3" {
		t.Errorf("after login: %q, want the guest's count kept", body)
	}
	if n := store.Len(); n != 0 {
		t.Errorf("the store holds %d records; sealed sessions keep none", n)
	}
	if strings.Contains(c, "alice") {
		t.Error("the cookie shows the user id")
	}
	if _, err := a.m.UserSessions(t.Context(), "alice"); !errors.Is(err, hallpass.ErrNoServerState) {
		t.Errorf("UserSessions: %v, want ErrNoServerState", err)
	}
}

func TestLogoutReplayGetsGuest(t *testing.T) {
	a, _, _ := setup(t, hallpass.Config{})
	_, _, c := a.do("", "/login?user=alice")
	_, _, c = a.do(c, "/count")
	captured := c
	_, _, after := a.do(c, "/logout")
	if after != "" {
		t.Errorf("logout left cookie %q", after)
	}
	if _, body, _ := a.do(captured, "/who"); body != "" {
		t.Errorf("a cookie captured before logout is still %q", body)
	}
	if a.events.Count(hallpass.EventSuspicious, hallpass.ReasonRevokedCookie) != 1 {
		t.Error("no revoked_cookie event for the replay")
	}
	// A guest's cookie captured before logout gets no data back either.
	_, _, g := a.do("", "/count")
	a.do(g, "/logout")
	if _, body, _ := a.do(g, "/count"); body != "|1" {
		t.Errorf("a guest cookie replayed after logout: %q, want a fresh guest", body)
	}
}

func TestRenewAndRevokeOthers(t *testing.T) {
	a, _, clock := setup(t, hallpass.Config{})
	_, _, laptop := a.do("", "/login?user=alice")
	_, _, phone := a.do("", "/login?user=alice")
	_, _, bob := a.do("", "/login?user=bob")

	_, _, renewed := a.do(laptop, "/renew")
	if renewed == laptop {
		t.Fatal("Renew kept the cookie")
	}
	if _, body, _ := a.do(laptop, "/who"); body != "" {
		t.Errorf("the cookie before Renew is still %q", body)
	}
	if _, body, _ := a.do(renewed, "/who"); body != "alice" {
		t.Errorf("the renewed cookie is %q", body)
	}

	clock.Add(time.Second) // a cutoff ends what was issued before it
	_, _, kept := a.do(renewed, "/others")
	if _, body, _ := a.do(kept, "/who"); body != "alice" {
		t.Errorf("RevokeOthers ended this session too: %q", body)
	}
	if _, body, _ := a.do(phone, "/who"); body != "" {
		t.Errorf("the other device is still %q after RevokeOthers", body)
	}
	if _, body, _ := a.do(bob, "/who"); body != "bob" {
		t.Errorf("another user's session is %q", body)
	}
	// Signing in again after the cutoff works.
	_, _, again := a.do("", "/login?user=alice")
	if _, body, _ := a.do(again, "/who"); body != "alice" {
		t.Errorf("a login after the cutoff is %q", body)
	}
}

// TestRevocationReachesOtherInstances logs out on one instance and replays
// the cookie on another, which shares only the store and the key.
func TestRevocationReachesOtherInstances(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	store := memstore.New(&memstore.Options{Now: clock.Now})
	defer store.Close()
	key := key32()
	a := newApp(t, key, store, clock, time.Hour, hallpass.Config{})
	b := newApp(t, key, store, clock, 5*time.Millisecond, hallpass.Config{})
	_, _, c := a.do("", "/login?user=alice")
	if _, body, _ := b.do(c, "/who"); body != "alice" {
		t.Fatalf("instance B does not open A's cookie: %q", body)
	}
	a.do(c, "/logout")
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, body, _ := b.do(c, "/who"); body == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance B still accepts the cookie 2s after logout on A")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTooLargeIsRefusedNotTruncated(t *testing.T) {
	a, _, _ := setup(t, hallpass.Config{})
	var setErr error
	a.mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		setErr = hallpass.FromRequest(r).Set("big", strings.Repeat("x", 5000))
	})
	_, _, c := a.do("", "/count")
	code, _, after := a.do(c, "/big")
	if !errors.Is(setErr, hallpass.ErrCookieTooLarge) {
		t.Fatalf("Set of 5000 bytes: %v, want ErrCookieTooLarge", setErr)
	}
	if code != 200 || after != c {
		t.Errorf("the refused write changed the response (%d) or the cookie", code)
	}
	if _, body, _ := a.do(c, "/count"); body != "|2" {
		t.Errorf("after the refused write: %q, want the session intact", body)
	}
	if a.events.Count(hallpass.EventWriteRefused, hallpass.ReasonCookieTooLarge) != 1 {
		t.Error("no write_refused event")
	}
}

func TestGarbledAndExpiredCookiesAreGuests(t *testing.T) {
	a, _, clock := setup(t, hallpass.Config{IdleTimeout: time.Minute})
	_, _, c := a.do("", "/login?user=alice")
	for _, v := range []string{"x", c[:len(c)-2], c + "AA", strings.Repeat("A", 5000), "%00", c[1:]} {
		code, body, _ := a.do(v, "/who")
		if code != 200 || body != "" {
			t.Errorf("cookie %.20q...: %d %q, want a guest", v, code, body)
		}
	}
	if a.events.Count(hallpass.EventSuspicious, hallpass.ReasonTamperedCookie) == 0 {
		t.Error("no tampered_cookie event")
	}
	clock.Add(2 * time.Minute)
	if _, body, _ := a.do(c, "/who"); body != "" {
		t.Errorf("an idle-expired cookie is %q", body)
	}
	if a.events.Count(hallpass.EventExpiredIdle, "") != 1 {
		t.Error("no expired_idle event")
	}
}

func TestSealedConfigErrors(t *testing.T) {
	clock := storetest.NewClock(time.Now())
	store := memstore.New(nil)
	defer store.Close()
	sealer, _ := cookiestore.New(key32())
	short, _ := hallpass.NewRevocations(t.Context(), store, &hallpass.RevocationOptions{Retain: time.Hour, Now: clock.Now})
	defer short.Close()
	for what, cfg := range map[string]hallpass.Config{
		"no revocations":    {Sealer: sealer},
		"store and sealer":  {Sealer: sealer, Store: store},
		"short retain":      {Sealer: sealer, Revocations: short},
		"session limit set": {Sealer: sealer, Revocations: short, MaxSessions: 2, Lifetime: time.Minute, PersistentLifetime: time.Minute},
	} {
		if _, err := hallpass.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", what)
		}
	}
}
