package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

// Timeouts of the store under fault: the connection's write timeout and
// ping interval decide how soon a stalled connection is declared dead, the
// request's timeout how long any one request may take.
const (
	faultConnTimeout = 300 * time.Millisecond
	faultPing        = 100 * time.Millisecond
	faultRequest     = time.Second
	// faultLimit is the longest a request may take under fault: its
	// deadline, and then a reconnect another request started, as rueidis
	// dials once for all of them and the dial has its own timeout.
	faultLimit = faultRequest + faultConnTimeout + 200*time.Millisecond
)

// viaProxy makes a client connect through p with the options Open would
// use, but shorter timeouts.
func viaProxy(p *storetest.Proxy) func(*rueidis.ClientOption) {
	return func(o *rueidis.ClientOption) {
		co, err := clientOption("redis://"+p.Addr(), nil)
		if err != nil {
			panic(err)
		}
		o.RetryDelay = co.RetryDelay
		o.InitAddress = []string{p.Addr()}
		o.Dialer.Timeout = faultConnTimeout
		o.Dialer.KeepAlive = faultPing
		o.ConnWriteTimeout = faultConnTimeout
	}
}

// app is one app instance under test: a Manager with a handler per path.
type app struct {
	t      *testing.T
	h      http.Handler
	cookie string
}

func newApp(t *testing.T, s hallpass.Store) *app {
	m, err := hallpass.New(hallpass.Config{
		Store:  s,
		Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login(r.URL.Query().Get("user"), hallpass.LoginOptions{}); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		n, _ := hallpass.Get[int](s, "a")
		fmt.Fprintf(w, "%s|%d", s.UserID(), n)
	})
	// /write sets three keys in one request: one delta, one script, so
	// after any failure they must all be equal.
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		v := r.URL.Query().Get("v")
		for _, k := range []string{"a", "b", "c"} {
			if err := s.Set(k, json.RawMessage(v)); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		fmt.Fprint(w, s.UserID())
	})
	h := m.Handler(mux)
	// A request-level timeout, as a server would set.
	timeout := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), faultRequest)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
	return &app{t: t, h: timeout, cookie: m.CookieName()}
}

type response struct {
	code   int
	body   string
	cookie string
	took   time.Duration
}

func (a *app) do(path, cookie string) response {
	req := httptest.NewRequest("GET", "http://localhost"+path, nil)
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: a.cookie, Value: cookie})
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	a.h.ServeHTTP(rec, req)
	out := response{code: rec.Code, body: rec.Body.String(), cookie: cookie, took: time.Since(start)}
	for _, c := range rec.Result().Cookies() {
		if c.Name == a.cookie && c.MaxAge >= 0 {
			out.cookie = c.Value
		}
	}
	return out
}

func (a *app) login(user string) string {
	a.t.Helper()
	r := a.do("/login?user="+user, "")
	if r.code != 200 || r.cookie == "" {
		a.t.Fatalf("login: %d %s", r.code, r.body)
	}
	return r.cookie
}

// waitFor repeats a request until ok accepts its response, failing after
// limit.
func (a *app) waitFor(what, path, cookie string, limit time.Duration, ok func(response) bool) response {
	a.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r := a.do(path, cookie)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s: still %d %q after %v", what, r.code, r.body, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// faultSetup returns an app whose store reaches Redis through a proxy, an
// admin client that reaches Redis directly, and the store's prefix.
func faultSetup(t *testing.T) (*app, *storetest.Proxy, *Store, rueidis.Client) {
	raw := testURL(t)
	p := storetest.NewProxy(t, serverAddr(t, raw))
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, viaProxy(p))
	admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
	return newApp(t, s), p, s, admin
}

// writers runs /write requests on sessions until stopped and reports the
// codes seen.
type writers struct {
	stop  atomic.Bool
	wg    sync.WaitGroup
	mu    sync.Mutex
	codes map[int]int
	slow  time.Duration
}

func startWriters(a *app, cookies []string) *writers {
	w := &writers{codes: map[int]int{}}
	for _, c := range cookies {
		w.wg.Go(func() {
			for i := 0; !w.stop.Load(); i++ {
				r := a.do(fmt.Sprintf("/write?v=%d", i), c)
				w.mu.Lock()
				w.codes[r.code]++
				w.slow = max(w.slow, r.took)
				w.mu.Unlock()
			}
		})
	}
	return w
}

func (w *writers) finish() (map[int]int, time.Duration) {
	w.stop.Store(true)
	w.wg.Wait()
	return w.codes, w.slow
}

// checkWhole fails unless every session's three keys are equal: each write
// applied whole or not at all.
func checkWhole(t *testing.T, s *Store, cookies []string) {
	t.Helper()
	for _, c := range cookies {
		key, err := hallpass.ParseToken(c)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Load(t.Context(), key)
		if err != nil {
			t.Fatalf("Load after restore: %v", err)
		}
		a, b, cc := string(r.Data["a"]), string(r.Data["b"]), string(r.Data["c"])
		if a != b || b != cc {
			t.Errorf("half-written session: a=%s b=%s c=%s", a, b, cc)
		}
	}
}

// TestFaultCut cuts the connection while requests run: they fail closed
// with 503, fast; nothing is half-written; a session revoked in Redis
// while the instance was cut off is not served from its cache afterwards;
// and service resumes by itself on Restore.
func TestFaultCut(t *testing.T) {
	a, p, s, admin := faultSetup(t)
	user := testUser()
	var cookies []string
	for range 4 {
		cookies = append(cookies, a.login(user))
	}
	revoked := a.login(testUser())
	for range 3 { // cache the session to be revoked
		if r := a.do("/read", revoked); r.code != 200 {
			t.Fatalf("read: %d", r.code)
		}
	}

	w := startWriters(a, cookies)
	time.Sleep(50 * time.Millisecond)
	p.Cut()
	time.Sleep(100 * time.Millisecond)

	// While cut, every request that needs the server fails closed, and
	// soon every request does: the cache went with the connection.
	if r := a.do("/write?v=1", cookies[0]); r.code != 503 || r.took > faultConnTimeout {
		t.Errorf("write while cut: %d after %v, want a 503 within %v", r.code, r.took, faultConnTimeout)
	}
	a.waitFor("read of a cached session while cut", "/read", revoked, 2*time.Second, func(r response) bool { return r.code == 503 })
	key, _ := hallpass.ParseToken(revoked)
	if err := admin.Do(t.Context(), admin.B().Del().Key(s.sessionKey(key)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	codes, slow := w.finish()
	if codes[503] == 0 {
		t.Errorf("no request failed during the cut: %v", codes)
	}
	for code := range codes {
		if code != 200 && code != 503 {
			t.Errorf("status %d during the cut (codes %v), want only 200 and 503", code, codes)
		}
	}
	if slow > faultLimit {
		t.Errorf("a request took %v during the cut, want at most %v", slow, faultLimit)
	}

	p.Restore()
	a.waitFor("writes after Restore", "/write?v=7", cookies[0], 5*time.Second, func(r response) bool { return r.code == 200 })
	if r := a.do("/read", revoked); r.code != 200 || r.body != "|0" {
		t.Errorf("session revoked while cut: %d %q after Restore, want a guest", r.code, r.body)
	}
	checkWhole(t, s, cookies)
	for _, c := range cookies {
		if r := a.do("/read", c); r.code != 200 || r.body[:len(user)] != user {
			t.Errorf("session after Restore: %d %q", r.code, r.body)
		}
	}
}

// TestFaultStall stalls the connection: requests fail with 503 within the
// request timeout rather than hang, the stalled connection is declared
// dead and its cache dropped, and service resumes after Restore.
func TestFaultStall(t *testing.T) {
	a, p, s, admin := faultSetup(t)
	user := testUser()
	var cookies []string
	for range 4 {
		cookies = append(cookies, a.login(user))
	}
	revoked := a.login(testUser())
	for range 3 {
		if r := a.do("/read", revoked); r.code != 200 {
			t.Fatalf("read: %d", r.code)
		}
	}

	w := startWriters(a, cookies)
	time.Sleep(50 * time.Millisecond)
	p.Stall()
	key, _ := hallpass.ParseToken(revoked)
	if err := admin.Do(t.Context(), admin.B().Del().Key(s.sessionKey(key)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if r := a.do("/write?v=1", cookies[0]); r.code != 503 || r.took > faultLimit {
		t.Errorf("write while stalled: %d after %v, want 503 within %v", r.code, r.took, faultLimit)
	}
	// A cached read may still be served until the connection is declared
	// dead (write timeout after a ping), then the cache is gone with it
	// and reads wait for the server until the request's deadline.
	a.waitFor("read of a cached session while stalled", "/read", revoked, 3*time.Second, func(r response) bool { return r.code == 503 })
	t.Logf("stall: cached reads failing %v after the stall began (connection timeout %v, ping %v, request timeout %v)",
		time.Since(start).Round(time.Millisecond), faultConnTimeout, faultPing, faultRequest)
	codes, slow := w.finish()
	if codes[503] == 0 {
		t.Errorf("no request failed during the stall: %v", codes)
	}
	if slow > faultLimit {
		t.Errorf("a request took %v during the stall, want at most %v", slow, faultLimit)
	}

	p.Restore()
	a.waitFor("writes after Restore", "/write?v=7", cookies[0], 5*time.Second, func(r response) bool { return r.code == 200 })
	if r := a.do("/read", revoked); r.code != 200 || r.body != "|0" {
		t.Errorf("session revoked during the stall: %d %q after Restore, want a guest", r.code, r.body)
	}
	checkWhole(t, s, cookies)
}
