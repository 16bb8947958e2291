package hallpass_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// recorder keeps every event emitted.
type recorder struct{ storetest.Events }

func (r *recorder) has(kind hallpass.EventKind, reason string) bool { return r.Count(kind, reason) > 0 }

func (r *recorder) reset() { r.Reset() }

// harness runs requests through a Manager over a real memstore.
type harness struct {
	t      *testing.T
	m      *hallpass.Manager
	store  *memstore.Store
	clock  *storetest.Clock
	events *recorder
	// clients remembers the client (address, User-Agent) that signed in
	// with each cookie, so later requests with it come from the same one.
	clients map[string]func(*http.Request)
}

func newHarness(t *testing.T, cfg hallpass.Config) *harness {
	t.Helper()
	h := &harness{t: t, clock: storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), events: &recorder{}}
	h.store = memstore.New(&memstore.Options{Now: h.clock.Now})
	t.Cleanup(func() { h.store.Close() })
	if cfg.Store == nil {
		cfg.Store = h.store
	}
	cfg.Now = h.clock.Now
	if cfg.Events == nil {
		cfg.Events = h.events
	}
	m, err := hallpass.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

// serve sends one request with the given cookie value ("" for none) to
// handler f wrapped by the Manager, and returns the response and the
// cookie value the client holds afterwards.
func (h *harness) serve(cookie string, f http.HandlerFunc, opts ...func(*http.Request)) (*http.Response, string) {
	h.t.Helper()
	req := httptest.NewRequest("GET", "http://localhost/", nil)
	if cookie != "" {
		req.Header.Set("Cookie", h.m.CookieName()+"="+cookie)
		if client := h.clients[cookie]; client != nil {
			client(req)
		}
	}
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	h.m.Handler(f).ServeHTTP(rec, req)
	res := rec.Result()
	return res, clientCookie(res, h.m.CookieName(), cookie)
}

// clientCookie applies the response's Set-Cookie for name to the value the
// client held.
func clientCookie(res *http.Response, name, held string) string {
	for _, c := range res.Cookies() {
		if c.Name != name {
			continue
		}
		if c.MaxAge < 0 || c.Value == "" {
			return ""
		}
		return c.Value
	}
	return held
}

func setCookieHeader(res *http.Response, name string) string {
	for _, v := range res.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, name+"=") {
			return v
		}
	}
	return ""
}

// Handlers used across the tests.

func counter(w http.ResponseWriter, r *http.Request) {
	s := hallpass.FromRequest(r)
	n, err := hallpass.Get[int](s, "n")
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	if err := s.Set("n", n+1); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Write([]byte(s.UserID() + "|"))
	w.Write([]byte(strconv.Itoa(n + 1)))
}

func reader(w http.ResponseWriter, r *http.Request) {
	s := hallpass.FromRequest(r)
	n, _ := hallpass.Get[int](s, "n")
	w.Write([]byte(s.UserID() + "|" + strconv.Itoa(n)))
}

func login(user string, opts hallpass.LoginOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login(user, opts); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write([]byte("ok"))
	}
}

func logout(w http.ResponseWriter, r *http.Request) {
	if err := hallpass.FromRequest(r).Logout(); err != nil {
		http.Error(w, err.Error(), 500)
	}
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
