package remember_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/remember"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/sqlitestore"
	"github.com/hallpass/hallpass/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// testKey is a fixed server key: tests need reproducible successors only
// within one run, but a fixed key costs nothing.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// backend opens a real store on the clock.
type backend struct {
	name string
	open func(t *testing.T, clock *storetest.Clock) hallpass.Store
}

// backends are the stores every behaviour test runs against: memory and
// SQLite always, Redis and PostgreSQL when their URLs are set (see
// storetest.ServiceURL).
var backends = []backend{
	{"memstore", func(t *testing.T, clock *storetest.Clock) hallpass.Store {
		s := memstore.New(&memstore.Options{Now: clock.Now})
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"sqlitestore", func(t *testing.T, clock *storetest.Clock) hallpass.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "s.db"), clock)
	}},
	{"redisstore", func(t *testing.T, clock *storetest.Clock) hallpass.Store {
		url := storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_URL")
		return openRedis(t, url, clock)
	}},
	{"pgstore", func(t *testing.T, clock *storetest.Clock) hallpass.Store {
		url := storetest.ServiceURL(t, "HALLPASS_TEST_POSTGRES_URL")
		return openPostgres(t, url, clock)
	}},
}

func openSQLite(t *testing.T, path string, clock *storetest.Clock) *sqlitestore.Store {
	s, err := sqlitestore.Open(path, &sqlitestore.Options{Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openRedis opens a store under a key prefix of its own and deletes what
// the test stored when it ends.
func openRedis(t *testing.T, url string, clock *storetest.Clock) hallpass.Store {
	s, err := redisstore.Open(url, &redisstore.Options{
		KeyPrefix: "hallpass-test-remember-" + hallpass.NewHandle() + ":",
		Now:       clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return track(t, s)
}

// openPostgres opens a store on one table shared by runs of these tests
// (this package may not import a driver to drop a table of its own), and
// deletes what the test stored when it ends.
func openPostgres(t *testing.T, url string, clock *storetest.Clock) hallpass.Store {
	s, err := pgstore.Open(t.Context(), url, &pgstore.Options{
		Table: "hallpass_test_remember", Now: clock.Now, SweepInterval: -1, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return track(t, s)
}

// tracked is a real store that remembers every key and user written, to
// delete them when the test ends, on servers shared with other runs.
type tracked struct {
	hallpass.Store
	mu    sync.Mutex
	keys  []hallpass.Key
	users map[string]bool
}

func track(t *testing.T, s hallpass.Store) *tracked {
	tr := &tracked{Store: s, users: make(map[string]bool)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		// A test that cut the connection may leave the client a dead one
		// to find out about on its next write: try a few times.
		retry := func(f func() error) {
			var err error
			for range 3 {
				if err = f(); err == nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Errorf("cleaning up: %v", err)
		}
		retry(func() error { return s.Delete(ctx, tr.keys...) })
		for u := range tr.users {
			retry(func() error { _, err := s.DeleteUser(ctx, u); return err }) // drops stale index entries too
		}
	})
	return tr
}

func (tr *tracked) note(k hallpass.Key, user string) {
	tr.mu.Lock()
	tr.keys = append(tr.keys, k)
	if user != "" {
		tr.users[user] = true
	}
	tr.mu.Unlock()
}

func (tr *tracked) Create(ctx context.Context, r *hallpass.Record) error {
	tr.note(r.Key, r.UserID)
	return tr.Store.Create(ctx, r)
}

func (tr *tracked) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	user := ""
	if d.Meta != nil {
		user = d.Meta.UserID
	}
	tr.note(to, user)
	return tr.Store.Rotate(ctx, from, to, d)
}

// eachStore runs f against every backend.
func eachStore(t *testing.T, f func(t *testing.T, open func(t *testing.T, clock *storetest.Clock) hallpass.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open) })
	}
}

// recorder keeps every event emitted.
type recorder struct{ storetest.Events }

func (r *recorder) all() []hallpass.Event { return r.All() }

func (r *recorder) find(kind hallpass.EventKind, reason string) []hallpass.Event {
	var out []hallpass.Event
	for _, e := range r.all() {
		if e.Kind == kind && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// env is an application: a Manager, a Remember and a few routes, over a
// real store.
type env struct {
	t      *testing.T
	clock  *storetest.Clock
	store  hallpass.Store
	m      *hallpass.Manager
	rm     *remember.Remember
	events *recorder
	h      http.Handler
}

// start is the tests' clock at the beginning: real time, since Redis
// expires keys by its own clock.
func start() *storetest.Clock { return storetest.NewClock(time.Now().Truncate(time.Millisecond)) }

func newEnv(t *testing.T, store hallpass.Store, clock *storetest.Clock, mod func(*remember.Config)) *env {
	t.Helper()
	return newEnvWith(t, store, clock, mod, nil)
}

// newEnvWith is newEnv with the Manager's Config changed by mmod.
func newEnvWith(t *testing.T, store hallpass.Store, clock *storetest.Clock, mod func(*remember.Config), mmod func(*hallpass.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: clock, store: store, events: &recorder{}}
	mcfg := hallpass.Config{
		Store: store, Now: clock.Now, Events: e.events, Logger: quiet,
		RotateEvery: -1, // periodic session rotation is hallpass's business, tested there
	}
	if mmod != nil {
		mmod(&mcfg)
	}
	m, err := hallpass.New(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := remember.Config{Sessions: m, Key: testKey, Now: clock.Now, Events: e.events, Logger: quiet}
	if mod != nil {
		mod(&cfg)
	}
	rm, err := remember.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m, e.rm = m, rm

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		// The password was checked.
		s := hallpass.FromRequest(r)
		if err := s.Login(r.FormValue("user"), hallpass.LoginOptions{Persistent: true}); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if r.FormValue("remember") != "" {
			if err := rm.Issue(w, r); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := rm.Forget(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "bye")
	})
	mux.HandleFunc("POST /others", func(w http.ResponseWriter, r *http.Request) {
		n, err := rm.ForgetOthers(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		a := s.Auth()
		series, _ := hallpass.Get[string](s, remember.SessionKey)
		json.NewEncoder(w).Encode(me{User: a.UserID, Level: a.Level.String(), Remembered: a.Remembered, Handle: s.Handle(), Series: series})
	})
	mux.Handle("GET /sensitive", m.Require(hallpass.Requirement{FreshWithin: 5 * time.Minute})(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") })))
	e.h = m.Handler(rm.Handler(mux))
	return e
}

type me struct {
	User       string `json:"user"`
	Level      string `json:"level"`
	Remembered bool   `json:"remembered"`
	Handle     string `json:"handle"`
	Series     string `json:"series"` // remember.SessionKey
}

// browser is a cookie jar that sends requests to an env.
type browser struct {
	e   *env
	jar map[string]string
}

func (e *env) browser() *browser { return &browser{e: e, jar: make(map[string]string)} }

// clone is the same cookies in another browser: what a thief who copied
// them has.
func (b *browser) clone() *browser {
	c := b.e.browser()
	for k, v := range b.jar {
		c.jar[k] = v
	}
	return c
}

func (b *browser) remember() string     { return b.jar[b.e.rm.CookieName()] }
func (b *browser) session() string      { return b.jar[b.e.m.CookieName()] }
func (b *browser) dropSession()         { delete(b.jar, b.e.m.CookieName()) }
func (b *browser) setRemember(v string) { b.jar[b.e.rm.CookieName()] = v }

type response struct {
	code    int
	body    string
	header  http.Header
	cookies map[string]*http.Cookie
}

func newRequest(method, target string) *http.Request {
	return httptest.NewRequest(method, "https://localhost"+target, nil)
}

// do sends a request with the jar's cookies and applies the response's.
func (b *browser) do(method, target string) response {
	b.e.t.Helper()
	req := newRequest(method, target)
	var parts []string
	for k, v := range b.jar {
		parts = append(parts, k+"="+v)
	}
	if len(parts) > 0 {
		req.Header.Set("Cookie", strings.Join(parts, "; "))
	}
	return b.send(req)
}

func (b *browser) send(req *http.Request) response {
	b.e.t.Helper()
	rec := httptest.NewRecorder()
	b.e.h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	out := response{code: res.StatusCode, body: string(body), header: res.Header, cookies: make(map[string]*http.Cookie)}
	for _, c := range res.Cookies() {
		out.cookies[c.Name] = c
		if c.MaxAge < 0 {
			delete(b.jar, c.Name)
		} else {
			b.jar[c.Name] = c.Value
		}
	}
	return out
}

func (b *browser) login(user string, remember bool) {
	b.e.t.Helper()
	target := "/login?user=" + user
	if remember {
		target += "&remember=1"
	}
	if r := b.do("POST", target); r.code != http.StatusOK {
		b.e.t.Fatalf("login: %d %s", r.code, r.body)
	}
}

// whoami asks who the browser is signed in as.
func (b *browser) whoami() (me, response) {
	b.e.t.Helper()
	r := b.do("GET", "/me")
	var m me
	if r.code == http.StatusOK {
		if err := json.Unmarshal([]byte(r.body), &m); err != nil {
			b.e.t.Fatalf("/me: %v in %q", err, r.body)
		}
	}
	return m, r
}

// seriesKey is the documented store key of a cookie's series.
func seriesKey(cookie string) hallpass.Key {
	sel, _, _ := strings.Cut(cookie, ".")
	return sha256.Sum256([]byte("hallpass remember series\x00" + sel))
}

func userIndexKey(user string) hallpass.Key {
	return sha256.Sum256([]byte("hallpass remember user\x00" + user))
}

// series loads a cookie's series, or nil if it has none.
func (e *env) series(cookie string) *hallpass.Record {
	e.t.Helper()
	rec, err := e.store.Load(e.t.Context(), seriesKey(cookie))
	if err != nil {
		return nil
	}
	return rec
}

// user returns a user id no other test or run uses.
func user(name string) string { return name + "-" + hallpass.NewHandle() }
