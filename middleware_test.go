package hallpass_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

func TestLazyGuestWritesNothing(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	res, c := h.serve("", reader)
	if got := body(t, res); got != "|0" {
		t.Fatalf("body %q", got)
	}
	if v := res.Header.Values("Set-Cookie"); len(v) != 0 || c != "" {
		t.Fatalf("guest that wrote nothing got Set-Cookie %v", v)
	}
	if n := h.store.Len(); n != 0 {
		t.Fatalf("guest that wrote nothing left %d records", n)
	}
	if h.events.has(hallpass.EventCreated, "") {
		t.Fatal("created event for a lazy guest")
	}
}

func TestGuestWriteCreatesSession(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	res, c := h.serve("", counter)
	if c == "" || body(t, res) != "|1" {
		t.Fatal("first write did not create a session")
	}
	if h.store.Len() != 1 || !h.events.has(hallpass.EventCreated, "") {
		t.Fatal("no record or no created event")
	}
	for want := 2; want <= 4; want++ {
		res, c2 := h.serve(c, counter)
		if got := body(t, res); got != "|"+strconv.Itoa(want) {
			t.Fatalf("visit %d: body %q", want, got)
		}
		if c2 != c {
			t.Fatal("token changed without a reason")
		}
	}
}

func TestCookieDefaults(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	res, _ := h.serve("", counter)
	sc := setCookieHeader(res, "__Host-hallpass")
	for _, want := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	for _, bad := range []string{"Domain=", "Max-Age", "Expires"} {
		if strings.Contains(sc, bad) {
			t.Errorf("browser-session cookie %q has %s", sc, bad)
		}
	}
}

func TestCookieConfigErrors(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	bad := []hallpass.Cookie{
		{Name: "__Host-x", Domain: "example.com"},
		{Name: "__Host-x", Path: "/app"},
		{Name: "__Host-x", Insecure: true},
		{Name: "__Secure-x", Insecure: true},
		{Name: "bad name"},
		{Name: "semi;colon"},
		{SameSite: http.SameSiteNoneMode, Insecure: true},
	}
	for _, c := range bad {
		if _, err := hallpass.New(hallpass.Config{Store: h.store, Cookie: c}); err == nil {
			t.Errorf("New accepted cookie config %+v", c)
		}
	}
	m, err := hallpass.New(hallpass.Config{Store: h.store, Cookie: hallpass.Cookie{Domain: "example.com"}})
	if err != nil || m.CookieName() != "__Secure-hallpass" {
		t.Fatalf("Domain cookie: %v, name %q", err, m.CookieName())
	}
	if _, err := hallpass.New(hallpass.Config{}); err == nil {
		t.Fatal("New accepted a nil Store")
	}
}

func TestLoginRotatesAndKeepsGuestData(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, guest := h.serve("", counter) // cart: n=1
	res, user := h.serve(guest, login("alice", hallpass.LoginOptions{}))
	if res.StatusCode != 200 || user == "" || user == guest {
		t.Fatalf("login: status %d, token changed %v", res.StatusCode, user != guest)
	}
	if !h.events.has(hallpass.EventAuthenticated, "") {
		t.Fatal("no authenticated event")
	}
	// Fixation: the pre-login token is a guest now, with nothing in it.
	res, _ = h.serve(guest, reader)
	if got := body(t, res); got != "|0" {
		t.Fatalf("pre-login token still works: %q", got)
	}
	res, _ = h.serve(user, reader)
	if got := body(t, res); got != "alice|1" {
		t.Fatalf("after login: %q, want alice|1 (guest data kept)", got)
	}
}

func TestLoginAsAnotherUserDropsData(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	_, c = h.serve(c, counter)
	_, c = h.serve(c, login("bob", hallpass.LoginOptions{}))
	res, _ := h.serve(c, reader)
	if got := body(t, res); got != "bob|0" {
		t.Fatalf("bob sees %q: alice's data leaked", got)
	}
}

func TestOnLoginMerge(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	m, err := hallpass.New(hallpass.Config{Store: h.store, Now: h.clock.Now, Events: h.events,
		OnLogin: func(ctx context.Context, s *hallpass.Session) error {
			cart, _ := hallpass.Get[[]string](s, "cart")
			if s.UserID() != "alice" {
				return errors.New("hook ran before the user id was set")
			}
			return s.Set("cart", append(cart, "saved-item"))
		}})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	_, c := h.serve("", func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Set("cart", []string{"guest-item"})
	})
	res, c := h.serve(c, login("alice", hallpass.LoginOptions{}))
	if res.StatusCode != 200 {
		t.Fatal(body(t, res))
	}
	res, _ = h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		cart, _ := hallpass.Get[[]string](hallpass.FromRequest(r), "cart")
		w.Write([]byte(strings.Join(cart, ",")))
	})
	if got := body(t, res); got != "guest-item,saved-item" {
		t.Fatalf("merged cart %q", got)
	}
}

func TestLogoutReplayIsGuest(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	_, c = h.serve(c, counter)
	res, after := h.serve(c, logout)
	if after != "" || !strings.Contains(setCookieHeader(res, h.m.CookieName()), "Max-Age=0") {
		t.Fatal("logout did not expire the cookie")
	}
	if h.store.Len() != 0 || !h.events.has(hallpass.EventLoggedOut, "") {
		t.Fatal("logout left the record or emitted no event")
	}
	h.events.reset()
	res, _ = h.serve(c, reader) // replay of the captured cookie
	if got := body(t, res); got != "|0" {
		t.Fatalf("replayed cookie after logout: %q", got)
	}
	if !h.events.has(hallpass.EventSuspicious, hallpass.ReasonUnknownToken) {
		t.Fatal("no event for the replayed token")
	}
}

func TestLogoutThenWriteStartsFreshGuest(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	res, c2 := h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		s.Logout()
		s.Set("flash", "Signed out.")
	})
	if c2 == "" || c2 == c {
		t.Fatal("write after logout did not start a new session")
	}
	// One Set-Cookie, the new guest's: a clearing one beside it would let
	// the browser keep whichever it applies last.
	if sc := res.Header.Values("Set-Cookie"); len(sc) != 1 || strings.Contains(sc[0], "Max-Age=0") {
		t.Fatalf("Set-Cookie %q, want only the new session's", sc)
	}
	res, _ = h.serve(c2, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		msg, _ := hallpass.Pop[string](s, "flash")
		w.Write([]byte(s.UserID() + "|" + msg))
	})
	if got := body(t, res); got != "|Signed out." {
		t.Fatalf("got %q", got)
	}
}

func TestIdleExpiry(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 10 * time.Minute, Lifetime: time.Hour})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(9 * time.Minute)
	res, c := h.serve(c, reader) // slides the deadline to 19m
	if body(t, res) != "alice|0" {
		t.Fatal("session ended before its idle timeout")
	}
	h.clock.Add(9 * time.Minute)
	res, c = h.serve(c, reader)
	if body(t, res) != "alice|0" {
		t.Fatal("activity did not slide the idle deadline")
	}
	h.clock.Add(10 * time.Minute)
	res, _ = h.serve(c, reader)
	if got := body(t, res); got != "|0" {
		t.Fatalf("after idle timeout: %q", got)
	}
	if !h.events.has(hallpass.EventExpiredIdle, "") {
		t.Fatal("no expired_idle event")
	}
	if recs, _ := h.store.ListUser(context.Background(), "alice"); len(recs) != 0 {
		t.Fatal("expired session left in the store")
	}
}

func TestAbsoluteExpiry(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 10 * time.Minute, Lifetime: 30 * time.Minute})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	for range 5 { // busy all along: 5 x 5m = 25m
		h.clock.Add(5 * time.Minute)
		var res *http.Response
		if res, c = h.serve(c, reader); body(t, res) != "alice|0" {
			t.Fatal("ended early")
		}
	}
	h.clock.Add(5 * time.Minute) // 30m: absolute deadline
	res, _ := h.serve(c, reader)
	if got := body(t, res); got != "|0" {
		t.Fatalf("activity kept the session past its absolute deadline: %q", got)
	}
	if !h.events.has(hallpass.EventExpiredAbsolute, "") {
		t.Fatal("no expired_absolute event")
	}
}

func TestIdleDeadlineCappedByAbsolute(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 10 * time.Minute, Lifetime: 12 * time.Minute})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(8 * time.Minute)
	h.serve(c, reader)
	rec := h.only()
	if !rec.IdleDeadline.Equal(rec.AbsoluteDeadline) {
		t.Fatalf("idle deadline %v beyond absolute %v", rec.IdleDeadline, rec.AbsoluteDeadline)
	}
}

func TestRenewKeepsDeadlinesDataAndHandle(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: time.Hour, Lifetime: 2 * time.Hour})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	_, c = h.serve(c, counter)
	before := h.only()
	h.clock.Add(30 * time.Minute)
	res, renewed := h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Renew(); err != nil {
			t.Error(err)
		}
	})
	if res.StatusCode != 200 || renewed == c || renewed == "" {
		t.Fatal("renew issued no new token")
	}
	after := h.only()
	if after.Handle != before.Handle || !after.AbsoluteDeadline.Equal(before.AbsoluteDeadline) {
		t.Fatalf("renew changed handle or absolute deadline: %+v -> %+v", before.Meta, after.Meta)
	}
	if res, _ := h.serve(c, reader); body(t, res) != "|0" {
		t.Fatal("old token works after renew")
	}
	if res, _ := h.serve(renewed, reader); body(t, res) != "alice|1" {
		t.Fatal("renewed token lost data or user")
	}
	if !h.events.has(hallpass.EventRenewed, "") {
		t.Fatal("no renewed event")
	}
}

func TestBackgroundRequestsDoNotSlide(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 10 * time.Minute})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	deadline := h.only().IdleDeadline
	viaHeader := func(r *http.Request) { r.Header.Set("Hallpass-Background", "1") }
	bg := h.m.Background(http.HandlerFunc(reader))
	steps := []struct {
		after time.Duration
		serve http.HandlerFunc
		opts  []func(*http.Request)
	}{
		{4 * time.Minute, reader, []func(*http.Request){viaHeader}},
		{4 * time.Minute, reader, []func(*http.Request){viaHeader}},
		{time.Minute, bg.ServeHTTP, nil},
	}
	for i, st := range steps {
		h.clock.Add(st.after)
		res, _ := h.serve(c, st.serve, st.opts...)
		if got := body(t, res); got != "alice|0" {
			t.Fatalf("step %d: background request not authenticated: %q", i, got)
		}
		if got := h.only().IdleDeadline; !got.Equal(deadline) {
			t.Fatalf("step %d: background request slid the deadline %v -> %v", i, deadline, got)
		}
	}
	// 11 minutes of background polling only: the idle timeout has passed.
	h.clock.Add(2 * time.Minute)
	if res, _ := h.serve(c, reader, viaHeader); body(t, res) != "|0" {
		t.Fatal("background polling kept the session alive")
	}
}

func TestTouchIsThrottled(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 80 * time.Minute, TouchInterval: time.Minute})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	v := h.only().Version
	for range 5 {
		h.clock.Add(10 * time.Second)
		h.serve(c, reader)
	}
	if got := h.only().Version; got != v {
		t.Fatalf("read-only requests inside the touch interval wrote %d times", got-v)
	}
	h.clock.Add(20 * time.Second)
	h.serve(c, reader)
	if got := h.only().Version; got != v+1 {
		t.Fatalf("request after the touch interval: %d writes, want 1", got-v)
	}
}

func TestPersistentCookieFollowsDeadline(t *testing.T) {
	h := newHarness(t, hallpass.Config{PersistentIdleTimeout: 24 * time.Hour, PersistentLifetime: 1000 * 24 * time.Hour})
	res, c := h.serve("", login("alice", hallpass.LoginOptions{Persistent: true}))
	sc := setCookieHeader(res, h.m.CookieName())
	if !strings.Contains(sc, "Max-Age=86400") {
		t.Fatalf("persistent cookie %q, want Max-Age=86400", sc)
	}
	h.clock.Add(2 * time.Hour)
	res, c = h.serve(c, reader)
	if sc := setCookieHeader(res, h.m.CookieName()); !strings.Contains(sc, "Max-Age=86400") {
		t.Fatalf("cookie not re-issued when the deadline moved: %q", sc)
	}
	res, _ = h.serve(c, reader) // same instant: deadline unchanged, no cookie
	if sc := setCookieHeader(res, h.m.CookieName()); sc != "" {
		t.Fatalf("cookie re-issued although nothing moved: %q", sc)
	}
	m2, _ := hallpass.New(hallpass.Config{Store: h.store, Now: h.clock.Now, PersistentIdleTimeout: 2000 * 24 * time.Hour, PersistentLifetime: 3000 * 24 * time.Hour})
	h.m = m2
	res, _ = h.serve("", login("bob", hallpass.LoginOptions{Persistent: true}))
	if sc := setCookieHeader(res, h.m.CookieName()); !strings.Contains(sc, "Max-Age=34560000") {
		t.Fatalf("Max-Age not capped at 400 days: %q", sc)
	}
}

func TestGarbledCookiesAreGuests(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, valid := h.serve("", login("alice", hallpass.LoginOptions{}))
	raw, _ := base64.RawURLEncoding.DecodeString(valid)
	name := h.m.CookieName()
	cases := map[string]string{
		"oversized":         name + "=" + strings.Repeat("A", 8000),
		"bad base64":        name + "=" + strings.Repeat("*", 43),
		"std base64":        name + "=" + base64.StdEncoding.EncodeToString(raw),
		"padded":            name + "=" + valid + "=",
		"non-canonical":     name + "=" + valid[:42] + string(valid[42]^1),
		"NUL":               name + "=" + valid[:42] + "\x00",
		"unicode":           name + "=" + valid[:40] + "é",
		"empty":             name + "=",
		"quoted":            name + "=\"" + valid + "\"",
		"duplicates":        name + "=" + valid + "; " + name + "=" + valid,
		"duplicate headers": "",
	}
	for label, header := range cases {
		t.Run(label, func(t *testing.T) {
			h.events.reset()
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Cookie", header)
			if label == "duplicate headers" {
				req.Header["Cookie"] = []string{name + "=" + valid, name + "=" + hallpass.NewToken()}
			}
			h.m.Handler(http.HandlerFunc(reader)).ServeHTTP(rec, req)
			if rec.Code != 200 || rec.Body.String() != "|0" {
				t.Fatalf("status %d body %q, want a guest", rec.Code, rec.Body.String())
			}
			if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
				t.Fatalf("garbled cookie answered with Set-Cookie %q", sc)
			}
			if !h.events.has(hallpass.EventSuspicious, "") {
				t.Fatal("no suspicious event")
			}
		})
	}
	// Nothing was lost: the real session still works.
	if res, _ := h.serve(valid, reader); body(t, res) != "alice|0" {
		t.Fatal("garbled cookies damaged the stored session")
	}
}

func TestNoTokenInLogsEventsOrErrors(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var events []hallpass.Event
	var mu sync.Mutex
	sink := hallpass.Sinks{hallpass.SlogSink{Logger: logger}, hallpass.SinkFunc(func(_ context.Context, e hallpass.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	})}
	h := newHarness(t, hallpass.Config{Events: sink, IdleTimeout: time.Minute, Lifetime: time.Hour})
	var tokens []string
	var errs []string
	track := func(c string) {
		if c != "" {
			tokens = append(tokens, c)
		}
	}
	_, c := h.serve("", counter)
	track(c)
	_, c = h.serve(c, login("alice", hallpass.LoginOptions{}))
	track(c)
	_, c = h.serve(c, func(w http.ResponseWriter, r *http.Request) { hallpass.FromRequest(r).Renew() })
	track(c)
	old := tokens[0]
	h.serve(old, reader) // replay
	h.serve(old[:42]+"!", reader)
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		w.Write([]byte("x"))
		if err := s.Set("late", 1); err != nil {
			errs = append(errs, err.Error())
		}
	})
	h.serve(c, logout)
	h.clock.Add(2 * time.Minute)
	h.serve(c, reader)
	if len(tokens) != 3 {
		t.Fatalf("tracked %d tokens", len(tokens))
	}
	var all strings.Builder
	all.WriteString(logs.String())
	for _, e := range events {
		all.WriteString(e.Handle + e.UserID + e.Reason + e.IP + e.UserAgent)
	}
	all.WriteString(strings.Join(errs, "\n"))
	if len(events) < 6 || logs.Len() == 0 || len(errs) != 1 {
		t.Fatalf("the scenario produced too little to check: %d events, %d log bytes, %d errors", len(events), logs.Len(), len(errs))
	}
	for _, tok := range tokens {
		for _, probe := range []string{tok, tok[:16], hallpass.KeyOf(tok).String()} {
			if strings.Contains(all.String(), probe) {
				t.Fatalf("token material %q appears in logs/events/errors", probe)
			}
		}
	}
}

func TestWriteAfterResponseStartedIsReported(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	var setErr error
	res, c := h.serve("", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		s.Set("a", 1)
		w.WriteHeader(200)
		setErr = s.Set("b", 2)
	})
	if res.StatusCode != 200 || c == "" {
		t.Fatalf("status %d: the write before the response was not saved", res.StatusCode)
	}
	if !errors.Is(setErr, hallpass.ErrResponseStarted) {
		t.Fatalf("late Set returned %v", setErr)
	}
	if !h.events.has(hallpass.EventSuspicious, hallpass.ReasonWriteAfterStart) {
		t.Fatal("no event for the late write")
	}
	res, _ = h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		w.Write([]byte(strconv.Itoa(len(s.Keys()))))
	})
	if got := body(t, res); got != "1" {
		t.Fatalf("%s keys saved, want 1 (only the write before the response)", got)
	}
}

func TestConcurrentRequestsMergeDistinctKeys(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", counter)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.serve(c, func(w http.ResponseWriter, r *http.Request) {
				hallpass.FromRequest(r).Set("k"+strconv.Itoa(i), i)
			})
		}()
	}
	wg.Wait()
	res, _ := h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strconv.Itoa(len(hallpass.FromRequest(r).Keys()))))
	})
	if got := body(t, res); got != "21" {
		t.Fatalf("%s keys after 20 parallel writers, want 21", got)
	}
}

func TestRevokedDuringRequestIsNotResurrected(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	res, after := h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if _, err := h.m.RevokeAll(r.Context(), "alice"); err != nil { // another device, meanwhile
			t.Error(err)
		}
		s.Set("cart", "x")
	})
	if res.StatusCode != 200 || after != c || len(res.Header.Values("Set-Cookie")) != 0 {
		t.Fatalf("status %d, Set-Cookie %q", res.StatusCode, res.Header.Values("Set-Cookie"))
	}
	if h.store.Len() != 0 {
		t.Fatal("in-flight write resurrected a revoked session")
	}
	if !h.events.has(hallpass.EventRevoked, hallpass.ReasonGone) {
		t.Fatal("no event for the session that ended mid-request")
	}
}

// A request sent with the old cookie just before a Login (a status poll,
// another tab) can be answered after the login response. It must not send
// a Set-Cookie, which would overwrite the new cookie and sign the user out.
func TestInFlightOldCookieDoesNotClobberLogin(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, guest := h.serve("", counter)
	_, user := h.serve(guest, login("alice", hallpass.LoginOptions{}))
	res, _ := h.serve(guest, reader)
	if sc := res.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Fatalf("request with the pre-login cookie sent Set-Cookie %q", sc)
	}
	if res, _ := h.serve(user, reader); body(t, res) != "alice|1" {
		t.Fatal("the new session was damaged by requests with the old cookie")
	}
}

func TestTypedAccess(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	type prefs struct {
		Theme string
		Size  int
	}
	_, c := h.serve("", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		s.Set("prefs", prefs{"dark", 3})
		s.Set("name", "ünï")
		s.Set("gone", true)
		s.Delete("gone")
	})
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if p, err := hallpass.Get[prefs](s, "prefs"); err != nil || p != (prefs{"dark", 3}) {
			t.Errorf("prefs %+v %v", p, err)
		}
		if _, err := hallpass.Get[int](s, "name"); err == nil || !strings.Contains(err.Error(), `"name"`) {
			t.Errorf("wrong type gave %v", err)
		}
		if v, err := hallpass.Get[int](s, "missing"); err != nil || v != 0 {
			t.Errorf("missing key gave %v %v", v, err)
		}
		if s.Has("gone") {
			t.Error("deleted key still there")
		}
		if err := s.Set("bad", func() {}); err == nil {
			t.Error("Set accepted a func")
		}
		if err := s.Set("v", "a\x00b"); err == nil || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("Set accepted a value with NUL: %v", err)
		}
		if err := s.Set("v", `literal \u0000 text`); err != nil {
			t.Errorf("Set refused an escaped backslash: %v", err)
		}
		for _, k := range []string{"nul\x00key", "bad\xffutf8"} {
			if err := s.Set(k, 1); err == nil {
				t.Errorf("Set accepted key %q", k)
			}
		}
		s.Clear()
	})
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		if k := hallpass.FromRequest(r).Keys(); len(k) != 0 {
			t.Errorf("Clear left %v", k)
		}
	})
	var nilSession *hallpass.Session
	if _, err := hallpass.Get[int](nilSession, "x"); !errors.Is(err, hallpass.ErrNoSession) {
		t.Fatal("nil session Get")
	}
	if err := nilSession.Set("x", 1); !errors.Is(err, hallpass.ErrNoSession) {
		t.Fatal("nil session Set")
	}
}

// failingStore fails every call once broken is set, to show the engine
// fails closed.
type failingStore struct {
	hallpass.Store
	mu     sync.Mutex
	broken bool
}

var errDown = errors.New("store unreachable")

func (f *failingStore) down() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.broken }
func (f *failingStore) set(b bool) { f.mu.Lock(); f.broken = b; f.mu.Unlock() }
func (f *failingStore) Load(ctx context.Context, k hallpass.Key) (*hallpass.Record, error) {
	if f.down() {
		return nil, errDown
	}
	return f.Store.Load(ctx, k)
}
func (f *failingStore) Create(ctx context.Context, r *hallpass.Record) error {
	if f.down() {
		return errDown
	}
	return f.Store.Create(ctx, r)
}
func (f *failingStore) Update(ctx context.Context, k hallpass.Key, d hallpass.Delta) error {
	if f.down() {
		return errDown
	}
	return f.Store.Update(ctx, k, d)
}

func TestStoreDownFailsClosed(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	fs := &failingStore{Store: h.store}
	m, _ := hallpass.New(hallpass.Config{Store: fs, Now: h.clock.Now, Events: h.events})
	h.m = m
	_, c := h.serve("", counter)
	fs.set(true)
	handlerRan := false
	res, _ := h.serve(c, func(w http.ResponseWriter, r *http.Request) { handlerRan = true; reader(w, r) })
	if res.StatusCode != 503 || handlerRan || res.Header.Get("Retry-After") == "" {
		t.Fatalf("load failure: status %d, handler ran %v", res.StatusCode, handlerRan)
	}
	fs.set(false)
	res, _ = h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Set("n", 99)
		fs.set(true) // the store dies mid-request
		w.Write([]byte("secret page"))
	})
	if got := body(t, res); res.StatusCode != 503 || strings.Contains(got, "secret") {
		t.Fatalf("save failure: status %d body %q", res.StatusCode, got)
	}
	fs.set(false)
	if res, _ := h.serve(c, reader); body(t, res) != "|1" {
		t.Fatal("failed save changed the stored session, or service did not resume")
	}
	// A guest's first write failing is a 503 too.
	fs.set(true)
	if res, _ := h.serve("", counter); res.StatusCode != 503 {
		t.Fatalf("create failure: status %d", res.StatusCode)
	}
}

func TestStreamingAndHijackSurvive(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	mux := http.NewServeMux()
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Set("streaming", true)
		w.Header().Set("Content-Type", "text/event-stream")
		if _, ok := w.(http.Flusher); !ok {
			t.Error("http.Flusher lost")
		}
		rc := http.NewResponseController(w)
		for i := range 3 {
			io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
			if err := rc.Flush(); err != nil {
				t.Errorf("ResponseController.Flush: %v", err)
			}
			if err := rc.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
				t.Errorf("ResponseController.SetWriteDeadline: %v", err)
			}
		}
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Set("hijacked", true)
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		buf.Flush()
	})
	srv := httptest.NewServer(h.m.Handler(mux))
	defer srv.Close()

	res, err := http.Get(srv.URL + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	if setCookieHeader(res, h.m.CookieName()) == "" {
		t.Fatal("streamed response carries no session cookie")
	}
	sc := bufio.NewScanner(res.Body)
	var lines []string
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	res.Body.Close()
	if strings.Join(lines, ",") != "data: 0,data: 1,data: 2" {
		t.Fatalf("stream %q", lines)
	}

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /hijack HTTP/1.1\r\nHost: localhost\r\n\r\n")
	got, _ := io.ReadAll(conn)
	if !bytes.HasSuffix(got, []byte("hi")) {
		t.Fatalf("hijacked response %q", got)
	}
	if h.store.Len() != 2 {
		t.Fatalf("%d sessions saved, want 2 (one per streamed/hijacked request)", h.store.Len())
	}
}

func TestNestedHandlerPassesThrough(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	inner := h.m.Handler(http.HandlerFunc(counter))
	res, c := h.serve("", inner.ServeHTTP)
	if body(t, res) != "|1" || len(res.Header.Values("Set-Cookie")) != 1 || c == "" {
		t.Fatal("nested Handler broke the session")
	}
}

// only returns alice's single session record.
func (h *harness) only() *hallpass.Record {
	h.t.Helper()
	recs, err := h.store.ListUser(context.Background(), "alice")
	if err != nil || len(recs) != 1 {
		h.t.Fatalf("alice has %d records (%v), want 1", len(recs), err)
	}
	return recs[0]
}

func TestCacheControl(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	cc := func(res *http.Response) string { return res.Header.Get("Cache-Control") }
	res, guest := h.serve("", counter)
	if cc(res) != "no-store" {
		t.Fatalf("response setting the session cookie: Cache-Control %q", cc(res))
	}
	if res, _ := h.serve(guest, reader); cc(res) != "" {
		t.Fatalf("guest page without a cookie change got Cache-Control %q", cc(res))
	}
	_, user := h.serve(guest, login("alice", hallpass.LoginOptions{}))
	if res, _ := h.serve(user, reader); cc(res) != "no-store" {
		t.Fatalf("authenticated page: Cache-Control %q", cc(res))
	}
	res, _ = h.serve(user, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, max-age=60")
	})
	if cc(res) != "private, max-age=60" {
		t.Fatalf("authenticated handler's own policy overridden: %q", cc(res))
	}
	if res, _ := h.serve(user, logout); cc(res) != "no-store" {
		t.Fatalf("logout response: Cache-Control %q", cc(res))
	}

	h2 := newHarness(t, hallpass.Config{AllowCaching: true})
	if res, _ := h2.serve("", counter); cc(res) != "" {
		t.Fatalf("AllowCaching still set Cache-Control %q", cc(res))
	}
}

func TestEventsCarryForwardedFor(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	h.serve("", counter, func(r *http.Request) { r.Header.Set("X-Forwarded-For", "203.0.113.9, 10.0.0.1") })
	events := h.events.All()
	if len(events) == 0 || events[0].ForwardedFor != "203.0.113.9, 10.0.0.1" {
		t.Fatalf("events %+v", events)
	}
	if events[0].IP != "192.0.2.1" {
		t.Fatalf("untrusted X-Forwarded-For changed the recorded IP: %q", events[0].IP)
	}
}

func TestTokenFlood(t *testing.T) {
	h := newHarness(t, hallpass.Config{UnknownTokenLimit: 5, ThrottleUnknownTokens: true})
	_, valid := h.serve("", login("alice", hallpass.LoginOptions{}))
	for i := range 5 {
		if res, _ := h.serve(hallpass.NewToken(), reader); res.StatusCode != 200 {
			t.Fatalf("bad cookie %d under the limit: status %d", i, res.StatusCode)
		}
	}
	if h.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenFlood) {
		t.Fatal("flood reported before the limit")
	}
	res, _ := h.serve(hallpass.NewToken(), reader)
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: status %d", res.StatusCode)
	}
	if !h.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenFlood) {
		t.Fatal("no token_flood event")
	}
	// Same address, valid cookie or none: served.
	if res, _ := h.serve(valid, reader); res.StatusCode != 200 || body(t, res) != "alice|0" {
		t.Fatal("valid cookie throttled")
	}
	if res, _ := h.serve("", reader); res.StatusCode != 200 {
		t.Fatal("request without a cookie throttled")
	}
	// Another address is not affected; the window passes.
	other := func(r *http.Request) { r.RemoteAddr = "198.51.100.50:1" }
	if res, _ := h.serve("garbled", reader, other); res.StatusCode != 200 {
		t.Fatal("another address throttled")
	}
	h.clock.Add(time.Minute)
	if res, _ := h.serve(hallpass.NewToken(), reader); res.StatusCode != 200 {
		t.Fatal("still throttled after the window")
	}

	// Without throttling, the event still fires but guests are served.
	h2 := newHarness(t, hallpass.Config{UnknownTokenLimit: 2})
	for range 4 {
		if res, _ := h2.serve(hallpass.NewToken(), reader); res.StatusCode != 200 {
			t.Fatal("throttled without ThrottleUnknownTokens")
		}
	}
	if !h2.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenFlood) {
		t.Fatal("no token_flood event without throttling")
	}
}

// net/http removes multipart temp files only for the request it made; the
// middleware hands handlers a copy, so it must clean up the copy's.
func TestMultipartTempFilesRemoved(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	srv := httptest.NewServer(h.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 10); err != nil { // small memory: the file goes to disk
			t.Error(err)
		}
		if len(r.MultipartForm.File["f"]) != 1 {
			t.Error("no file")
		}
	})))
	defer srv.Close()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("f", "big.bin")
	fw.Write(bytes.Repeat([]byte("x"), 64<<10))
	mw.Close()
	res, err := http.Post(srv.URL, mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("%d multipart temp files left behind", len(entries))
	}
}
