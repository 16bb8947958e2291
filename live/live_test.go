package live_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/cookiestore"
	"github.com/hallpass/hallpass/live"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// soon is how quickly an end must reach an open stream.
const soon = time.Second

// app is a real Manager and Hub behind a real HTTP server.
type app struct {
	t   *testing.T
	m   *hallpass.Manager
	hub *live.Hub
	srv *httptest.Server
}

// newApp serves routes to sign in and out and to revoke over store, with
// the events handler at /events.
func newApp(t *testing.T, store hallpass.Store, bc hallpass.Broadcaster, clock *storetest.Clock, opts live.Options, cfg hallpass.Config) *app {
	t.Helper()
	if clock != nil { // else the real one
		opts.Now, cfg.Now = clock.Now, clock.Now
	}
	hub := live.NewHub(bc, &opts)
	cfg.Store, cfg.Events = store, hub
	m, err := hallpass.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &app{t: t, m: m, hub: hub}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login(r.FormValue("user"), hallpass.LoginOptions{}); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("POST /revoke-others", func(w http.ResponseWriter, r *http.Request) {
		if _, err := hallpass.FromRequest(r).RevokeOthers(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("POST /credentials", func(w http.ResponseWriter, r *http.Request) {
		if _, err := hallpass.FromRequest(r).CredentialsChanged(r.FormValue("keep") == "1"); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, r *http.Request) {})
	mux.Handle("GET /status", m.StatusHandler())
	mux.Handle("GET /events", hub.Handler(m))
	a.srv = httptest.NewServer(m.Handler(mux))
	t.Cleanup(func() {
		a.srv.CloseClientConnections()
		a.srv.Close()
		hub.Close()
	})
	return a
}

func newClock() *storetest.Clock {
	return storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// newMemApp is one instance over a memstore.
func newMemApp(t *testing.T, opts live.Options, cfg hallpass.Config) (*app, *storetest.Clock) {
	clock := newClock()
	store := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { store.Close() })
	return newApp(t, store, nil, clock, opts, cfg), clock
}

// do sends a request with the session cookie (none if "") and returns the
// response's status and the cookie the client holds afterwards.
func (a *app) do(method, path, cookie string) (int, string) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", a.m.CookieName()+"="+cookie)
	}
	res, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	for _, c := range res.Cookies() {
		if c.Name == a.m.CookieName() {
			if c.MaxAge < 0 || c.Value == "" {
				return res.StatusCode, ""
			}
			return res.StatusCode, c.Value
		}
	}
	return res.StatusCode, cookie
}

// login signs user in to a new session (a new device) and returns its
// cookie.
func (a *app) login(user string) string {
	a.t.Helper()
	code, cookie := a.do("POST", "/login?user="+user, "")
	if code != 200 || cookie == "" {
		a.t.Fatalf("login %s: %d, cookie %q", user, code, cookie)
	}
	return cookie
}

func (a *app) status(cookie string) hallpass.Status {
	a.t.Helper()
	req, _ := http.NewRequest("GET", a.srv.URL+"/status", nil)
	req.Header.Set("Cookie", a.m.CookieName()+"="+cookie)
	res, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	var st hallpass.Status
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		a.t.Fatal(err)
	}
	return st
}

// event is one server-sent event; a comment has Name ":".
type event struct{ Name, Data string }

// stream is an events response read over a real connection.
type stream struct {
	t      *testing.T
	code   int
	events chan event // closed at the end of the response
	cancel context.CancelFunc
}

// open requests the events stream with cookie. A refused request
// returns a stream with its status code and no events.
func (a *app) open(cookie string) *stream {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", a.srv.URL+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	if cookie != "" {
		req.Header.Set("Cookie", a.m.CookieName()+"="+cookie)
	}
	res, err := a.srv.Client().Do(req)
	if err != nil {
		cancel()
		a.t.Fatal(err)
	}
	s := &stream{t: a.t, code: res.StatusCode, events: make(chan event, 64), cancel: cancel}
	a.t.Cleanup(s.close)
	if res.StatusCode != 200 {
		res.Body.Close()
		close(s.events)
		return s
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		a.t.Errorf("Content-Type = %q", ct)
	}
	go func() {
		defer close(s.events)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var e event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e != (event{}) {
					s.events <- e
				}
				e = event{}
			case strings.HasPrefix(line, ":"):
				e.Name = ":"
			case strings.HasPrefix(line, "event: "):
				e.Name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				e.Data = strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, "retry: "):
				e.Name = "retry"
				e.Data = strings.TrimPrefix(line, "retry: ")
			}
		}
	}()
	if e := s.next(soon); e.Name != "retry" {
		a.t.Fatalf("first event %+v, want retry", e)
	}
	return s
}

func (s *stream) close() { s.cancel() }

// next returns the next event other than a heartbeat, or a zero event
// when the stream closed; it fails the test after d.
func (s *stream) next(d time.Duration) event {
	s.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return event{}
			}
			if e.Name != ":" {
				return e
			}
		case <-timeout:
			s.t.Fatalf("no event within %v", d)
		}
	}
}

// ended waits for the ended event and returns its reason, and checks
// that the stream closes after it.
func (s *stream) ended() string {
	s.t.Helper()
	e := s.next(soon)
	if e.Name != "ended" {
		s.t.Fatalf("got %+v, want an ended event", e)
	}
	var v struct{ Reason string }
	if err := json.Unmarshal([]byte(e.Data), &v); err != nil {
		s.t.Fatalf("ended data %q: %v", e.Data, err)
	}
	if e := s.next(soon); e != (event{}) {
		s.t.Fatalf("after ended: %+v, want the end of the stream", e)
	}
	return v.Reason
}

// live checks that the stream is still open, and sends no ended event,
// for d (heartbeats keep coming: Options.Heartbeat is short in tests).
func (s *stream) live(d time.Duration) {
	s.t.Helper()
	timeout := time.After(d)
	beats := 0
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatal("the stream closed")
			}
			if e.Name != ":" {
				s.t.Fatalf("unexpected event %+v", e)
			}
			beats++
		case <-timeout:
			if beats == 0 {
				s.t.Fatal("no heartbeat: is the stream open?")
			}
			return
		}
	}
}

// fast has heartbeats often enough to show a stream is open, and no
// periodic check: what ends a stream in these tests is an event.
var fast = live.Options{Heartbeat: 20 * time.Millisecond, CheckInterval: time.Hour}

func wantReason(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("ended with %q, want %q", got, want)
	}
}

func TestEndedOnRevokeOthers(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	phone, laptop := a.login("alice"), a.login("alice")
	bob := a.login("bob")
	onPhone, onLaptop, onLaptop2, ofBob := a.open(phone), a.open(laptop), a.open(laptop), a.open(bob)

	if code, _ := a.do("POST", "/revoke-others", laptop); code != 200 {
		t.Fatalf("revoke-others: %d", code)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	// The session that asked has no handle in the event, and keeps its
	// streams; so does everyone else.
	onLaptop.live(200 * time.Millisecond)
	onLaptop2.live(50 * time.Millisecond)
	ofBob.live(50 * time.Millisecond)
}

func TestEndedOnRevoke(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	phone, laptop := a.login("alice"), a.login("alice")
	onPhone, onLaptop := a.open(phone), a.open(laptop)
	if err := a.m.Revoke(t.Context(), "alice", a.status(phone).Handle); err != nil {
		t.Fatal(err)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(100 * time.Millisecond)
}

func TestEndedOnRevokeAll(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	phone, laptop, bob := a.login("alice"), a.login("alice"), a.login("bob")
	onPhone, onLaptop, ofBob := a.open(phone), a.open(laptop), a.open(bob)
	if n, err := a.m.RevokeAll(t.Context(), "alice"); err != nil || n != 2 {
		t.Fatalf("RevokeAll = %d, %v", n, err)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	wantReason(t, onLaptop.ended(), live.ReasonRevoked)
	ofBob.live(100 * time.Millisecond)
}

func TestEndedOnCredentialsChanged(t *testing.T) {
	t.Run("keep this", func(t *testing.T) {
		a, _ := newMemApp(t, fast, hallpass.Config{})
		phone, laptop := a.login("alice"), a.login("alice")
		onPhone, onLaptop := a.open(phone), a.open(laptop)
		code, renewed := a.do("POST", "/credentials?keep=1", laptop)
		if code != 200 || renewed == laptop {
			t.Fatalf("credentials: %d; token renewed: %v", code, renewed != laptop)
		}
		wantReason(t, onPhone.ended(), live.ReasonRevoked)
		// Renewed, not ended: the stream follows the handle, not the token.
		onLaptop.live(200 * time.Millisecond)
	})
	t.Run("end this too", func(t *testing.T) {
		a, _ := newMemApp(t, fast, hallpass.Config{})
		phone, laptop := a.login("alice"), a.login("alice")
		onPhone, onLaptop := a.open(phone), a.open(laptop)
		if code, _ := a.do("POST", "/credentials", laptop); code != 200 {
			t.Fatalf("credentials: %d", code)
		}
		wantReason(t, onPhone.ended(), live.ReasonRevoked)
		wantReason(t, onLaptop.ended(), live.ReasonRevoked)
	})
}

func TestEndedOnLogout(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	laptop, phone := a.login("alice"), a.login("alice")
	tab1, tab2, onPhone := a.open(laptop), a.open(laptop), a.open(phone)
	if code, _ := a.do("POST", "/logout", laptop); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	wantReason(t, tab1.ended(), live.ReasonLoggedOut)
	wantReason(t, tab2.ended(), live.ReasonLoggedOut)
	onPhone.live(100 * time.Millisecond)
}

func TestEndedOnSignInAsAnotherUser(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	cookie := a.login("alice")
	tab := a.open(cookie)
	// The same browser session signs in as bob: it keeps its handle, but
	// alice's page must go.
	if code, _ := a.do("POST", "/login?user=bob", cookie); code != 200 {
		t.Fatalf("login: %d", code)
	}
	wantReason(t, tab.ended(), live.ReasonLoggedOut)
}

func TestEndedAtDeadline(t *testing.T) {
	opts := live.Options{Heartbeat: 20 * time.Millisecond, CheckInterval: 20 * time.Millisecond}
	t.Run("idle", func(t *testing.T) {
		a, clock := newMemApp(t, opts, hallpass.Config{IdleTimeout: 10 * time.Minute})
		s := a.open(a.login("alice"))
		clock.Add(9 * time.Minute)
		s.live(100 * time.Millisecond)
		clock.Add(time.Minute)
		wantReason(t, s.ended(), live.ReasonExpired)
	})
	t.Run("absolute", func(t *testing.T) {
		a, clock := newMemApp(t, opts, hallpass.Config{IdleTimeout: 10 * time.Minute, Lifetime: 30 * time.Minute})
		cookie := a.login("alice")
		s := a.open(cookie)
		for range 3 { // busy all along: only the absolute deadline ends it
			clock.Add(9*time.Minute + 59*time.Second)
			var code int
			if code, cookie = a.do("GET", "/page", cookie); code != 200 { // rotated now and then
				t.Fatalf("page: %d", code)
			}
		}
		s.live(100 * time.Millisecond)
		clock.Add(3 * time.Second)
		wantReason(t, s.ended(), live.ReasonExpired)
	})
	t.Run("extended elsewhere", func(t *testing.T) {
		// Another tab slides the deadline the stream started with; the
		// periodic check finds the later one.
		a, clock := newMemApp(t, opts, hallpass.Config{IdleTimeout: 10 * time.Minute})
		cookie := a.login("alice")
		s := a.open(cookie)
		clock.Add(9 * time.Minute)
		if code, _ := a.do("GET", "/page", cookie); code != 200 {
			t.Fatalf("page: %d", code)
		}
		clock.Add(2 * time.Minute)
		s.live(100 * time.Millisecond)
		clock.Add(8 * time.Minute)
		wantReason(t, s.ended(), live.ReasonExpired)
	})
	t.Run("timer", func(t *testing.T) {
		// No periodic check, the real clock: the stream wakes at the
		// deadline it knows, finds it moved, and wakes again at the new one.
		store := memstore.New(nil)
		t.Cleanup(func() { store.Close() })
		a := newApp(t, store, nil, nil, fast, hallpass.Config{IdleTimeout: 400 * time.Millisecond})
		cookie := a.login("alice")
		s := a.open(cookie)
		time.Sleep(200 * time.Millisecond)
		if code, _ := a.do("GET", "/page", cookie); code != 200 { // slides it to about 600 ms
			t.Fatalf("page: %d", code)
		}
		s.live(300 * time.Millisecond) // past the first deadline
		wantReason(t, s.ended(), live.ReasonExpired)
	})
}

func TestStreamDoesNotSlideIdle(t *testing.T) {
	a, clock := newMemApp(t, fast, hallpass.Config{IdleTimeout: 10 * time.Minute})
	cookie := a.login("alice")
	before := a.status(cookie)
	clock.Add(2 * time.Minute) // past the touch interval: a normal request would slide it
	s := a.open(cookie)
	s.live(100 * time.Millisecond)
	s.close()
	if after := a.status(cookie); !after.IdleExpiresAt.Equal(*before.IdleExpiresAt) {
		t.Errorf("idle deadline moved from %v to %v by a stream", before.IdleExpiresAt, after.IdleExpiresAt)
	}
	// The test would pass vacuously if nothing could slide it now.
	a.do("GET", "/page", cookie)
	if after := a.status(cookie); !after.IdleExpiresAt.After(*before.IdleExpiresAt) {
		t.Errorf("a page request did not slide the idle deadline either: the test proves nothing")
	}
}

func TestStreamLimit(t *testing.T) {
	opts := fast
	opts.MaxStreams = 2
	a, _ := newMemApp(t, opts, hallpass.Config{})
	cookie, other := a.login("alice"), a.login("alice")
	first, second := a.open(cookie), a.open(cookie)
	if s := a.open(cookie); s.code != http.StatusTooManyRequests {
		t.Fatalf("third stream of a session: %d, want 429", s.code)
	}
	if s := a.open(other); s.code != 200 {
		t.Fatalf("another session's stream: %d, want 200", s.code)
	}
	// A closed stream frees its place once the server notices.
	first.close()
	deadline := time.Now().Add(soon)
	for {
		s := a.open(cookie)
		if s.code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream after one closed: %d", s.code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	second.live(50 * time.Millisecond)
}

func TestGuestRefused(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	for name, cookie := range map[string]string{
		"no cookie":      "",
		"unknown token":  hallpass.NewToken(),
		"garbled cookie": "not-a-token",
	} {
		if s := a.open(cookie); s.code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, s.code)
		}
	}
	cookie := a.login("alice")
	a.do("POST", "/logout", cookie)
	if s := a.open(cookie); s.code != http.StatusUnauthorized {
		t.Errorf("after logout: %d, want 401", s.code)
	}
	if code, _ := a.do("POST", "/events", a.login("alice")); code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", code)
	}
}

func TestHubClose(t *testing.T) {
	a, _ := newMemApp(t, fast, hallpass.Config{})
	cookie := a.login("alice")
	s := a.open(cookie)
	done := make(chan struct{})
	go func() {
		a.hub.Close()
		close(done)
	}()
	// No ended event: the session did not end, the browser reconnects.
	if e := s.next(soon); e != (event{}) {
		t.Fatalf("got %+v, want the stream to close without an event", e)
	}
	select {
	case <-done:
	case <-time.After(soon):
		t.Fatal("Close did not return")
	}
	if s := a.open(cookie); s.code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d, want 503", s.code)
	}
}

func TestEndedBeforeStreamStarts(t *testing.T) {
	// An end the Hub never heard of (its events went elsewhere) is found
	// by the check when the stream starts.
	clock := newClock()
	store := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { store.Close() })
	a := newApp(t, store, nil, clock, fast, hallpass.Config{})
	deaf, err := hallpass.New(hallpass.Config{Store: store, Now: clock.Now, Events: hallpass.Sinks{}})
	if err != nil {
		t.Fatal(err)
	}
	cookie := a.login("alice")
	handle := a.status(cookie).Handle
	srv := httptest.NewServer(deaf.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The session is loaded; now another device revokes it.
		if err := deaf.Revoke(r.Context(), "alice", handle); err != nil {
			t.Error(err)
		}
		a.hub.Handler(deaf).ServeHTTP(w, r)
	})))
	t.Cleanup(srv.Close)
	b := &app{t: t, m: deaf, hub: a.hub, srv: srv}
	s := b.open(cookie)
	wantReason(t, s.ended(), live.ReasonRevoked)
}

func TestRevokedEventConfirmed(t *testing.T) {
	// package token revokes a session's token family under the session's
	// handle; the session itself lives on, and so does its stream.
	a, _ := newMemApp(t, fast, hallpass.Config{})
	cookie := a.login("alice")
	s := a.open(cookie)
	a.hub.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonRevoke, Handle: a.status(cookie).Handle, UserID: "alice"})
	s.live(200 * time.Millisecond)
}

func TestSealedSessions(t *testing.T) {
	// No server-side list: ends that name the session are believed.
	clock := newClock()
	rvStore := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { rvStore.Close() })
	rv, err := hallpass.NewRevocations(t.Context(), rvStore, &hallpass.RevocationOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rv.Close() })
	sealer, err := cookiestore.New(bytes.Repeat([]byte{7}, cookiestore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(t, nil, nil, clock, fast, hallpass.Config{Sealer: sealer, Revocations: rv, Lifetime: time.Hour})
	phone, laptop := a.login("alice"), a.login("alice")
	onPhone, onLaptop := a.open(phone), a.open(laptop)
	if err := a.m.Revoke(t.Context(), "alice", a.status(phone).Handle); err != nil {
		t.Fatal(err)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(100 * time.Millisecond)
	if code, _ := a.do("POST", "/logout", laptop); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	wantReason(t, onLaptop.ended(), live.ReasonLoggedOut)
}
