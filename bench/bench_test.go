// Package bench compares the per-request cost of Hallpass with other Go
// session libraries. It is a module of its own so that the hallpass module
// never depends on them. See README.md for what is measured and how to run
// it.
package bench

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"

	"github.com/alexedwards/scs/v2"
	scsmem "github.com/alexedwards/scs/v2/memstore"
	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
)

// TestMain raises the process's slog level to Warn. Hallpass keeps its
// default Events sink (SlogSink, which logs to slog.Default), but each
// warm-up's "created" event is logged at Info, and go test merges the
// binary's stderr into its stdout, where such a line would split a
// benchmark result line and make it unreadable to benchstat. No event is
// emitted inside the measured loops.
func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// key is the session key every handler reads and increments.
const key = "n"

// stack is one library set up the way an application would deploy it: a
// read handler and a write handler behind the library's middleware,
// sharing one store, and the Cookie header of an existing session.
type stack struct {
	read, write http.Handler
	// cookie is the Cookie request header that names the session created
	// by the warm-up request ("" for Baseline).
	cookie string
	// wire counts the round trips of a server-backed stack's client to its
	// server (servers_test.go); nil for the in-process stacks.
	wire *wireCounter
	// setupReads is the number of read requests the setup sent after the
	// warm-up, to wait until a store's cache is in use.
	setupReads int
}

// lib names a library and builds its stack. tb is used for cleanup and
// for failing setup. Tests pass hooks to count store calls; the
// benchmarks pass nil hooks.
type lib struct {
	name string
	new  func(tb testing.TB, h hooks) *stack
}

// hooks lets the tests wrap a store, or the connections to a server, to
// count what a request does. The benchmarks pass the zero hooks.
type hooks struct {
	hallpass func(hallpass.Store) hallpass.Store
	scs      func(scs.Store) scs.Store
	// tracer, if set, is the pgx tracer of the PostgreSQL stacks' pool.
	tracer pgx.QueryTracer
	// pgParams are run-time parameters set on the PostgreSQL stacks'
	// connections (BenchmarkBreakdown's synchronous_commit=off).
	pgParams map[string]string
}

// libs are the stacks in the order they run. The ones after Gorilla need
// a server (servers_test.go) and skip, naming the environment variable,
// when it is not set (and fail under CI=true).
var libs = []lib{
	{"Baseline", newBaseline},
	{"Hallpass", newHallpass},
	{"SCS", newSCS},
	{"Gorilla", newGorilla},
	{"HallpassRedis", newHallpassRedis},
	{"HallpassRedisNoCache", newHallpassRedisNoCache},
	{"SCSRedis", newSCSRedis},
	{"HallpassPostgres", newHallpassPostgres},
	{"HallpassPostgresNoCache", newHallpassPostgresNoCache},
	{"SCSPostgres", newSCSPostgres},
}

// writeInt writes n as the response body. Every stack uses it, so its
// cost (one small allocation: the slice escapes through the interface
// call) is part of Baseline and cancels out of the added cost.
func writeInt(w http.ResponseWriter, n int) {
	w.Write(strconv.AppendInt(make([]byte, 0, 20), int64(n), 10))
}

// newBaseline is the same two handlers with no session library: the int
// lives in a variable of the handler.
func newBaseline(tb testing.TB, _ hooks) *stack {
	n := 0
	st := &stack{
		read: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeInt(w, n)
		}),
		write: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			writeInt(w, n)
		}),
	}
	warmUp(tb, st, "")
	return st
}

// newHallpass uses the default Config except Store: hallpass's memstore.
func newHallpass(tb testing.TB, h hooks) *stack {
	ms := memstore.New(nil)
	tb.Cleanup(func() { ms.Close() })
	return newHallpassOn(tb, ms, h)
}

// newHallpassOn is the Hallpass stack on store: the default Config except
// Store, and the same two handlers whatever the store.
func newHallpassOn(tb testing.TB, store hallpass.Store, h hooks) *stack {
	if h.hallpass != nil {
		store = h.hallpass(store)
	}
	m, err := hallpass.New(hallpass.Config{Store: store})
	if err != nil {
		tb.Fatal(err)
	}
	st := &stack{
		read: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := hallpass.Get[int](hallpass.FromRequest(r), key)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeInt(w, n)
		})),
		write: m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := hallpass.FromRequest(r)
			n, err := hallpass.Get[int](s, key)
			if err == nil {
				err = s.Set(key, n+1)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeInt(w, n+1)
		})),
	}
	warmUp(tb, st, m.CookieName())
	return st
}

// newSCS uses scs.New's defaults (24h lifetime, no idle timeout, gob
// codec) with scs's own memstore and a Secure cookie.
func newSCS(tb testing.TB, h hooks) *stack {
	// memstore.New starts a cleanup goroutine that ticks once a minute.
	// It is not stopped: MemStore.StopCleanup races with the goroutine's
	// start, and the ticker does not touch the measured requests.
	return newSCSOn(tb, scsmem.New(), h)
}

// newSCSOn is the SCS stack on store: scs.New's defaults, a Secure
// cookie, and the same two handlers whatever the store.
func newSCSOn(tb testing.TB, store scs.Store, h hooks) *stack {
	sm := scs.New()
	if h.scs != nil {
		store = h.scs(store)
	}
	sm.Store = store
	sm.Cookie.Secure = true
	st := &stack{
		read: sm.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeInt(w, sm.GetInt(r.Context(), key))
		})),
		write: sm.LoadAndSave(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := sm.GetInt(r.Context(), key) + 1
			sm.Put(r.Context(), key, n)
			writeInt(w, n)
		})),
	}
	warmUp(tb, st, sm.Cookie.Name)
	return st
}

// gorillaName is the session (and cookie) name used with gorilla.
const gorillaName = "session"

// newGorilla uses a CookieStore that signs (HMAC-SHA256, 32-byte hash key)
// and encrypts (AES-256, 32-byte block key) the session, as deployed. The
// session lives in the cookie: there is no server-side store, and every
// write re-encodes the whole session into a new Set-Cookie.
func newGorilla(tb testing.TB, _ hooks) *stack {
	hashKey := []byte("0123456789abcdef0123456789abcdef")  // 32 bytes
	blockKey := []byte("fedcba9876543210fedcba9876543210") // 32 bytes: AES-256
	cs := sessions.NewCookieStore(hashKey, blockKey)
	cs.Options.HttpOnly = true
	cs.Options.SameSite = http.SameSiteLaxMode
	st := &stack{
		read: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := cs.Get(r, gorillaName)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			n, _ := s.Values[key].(int)
			writeInt(w, n)
		}),
		write: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s, err := cs.Get(r, gorillaName)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			n, _ := s.Values[key].(int)
			s.Values[key] = n + 1
			if err := s.Save(r, w); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeInt(w, n+1)
		}),
	}
	warmUp(tb, st, gorillaName)
	return st
}

// target is the URL of every request. It is https, as deployed, so the
// request has TLS state and Hallpass's Secure __Host- cookie is at home.
const target = "https://example.com/"

// warmUp sends one write request without a cookie through st, which
// creates the session with n = 1, and keeps the session cookie it set in
// st.cookie. An empty cookieName means no cookie is expected.
func warmUp(tb testing.TB, st *stack, cookieName string) {
	tb.Helper()
	w := serve(st.write, newRequest(""))
	if w.Code != http.StatusOK || w.Body.String() != "1" {
		tb.Fatalf("warm-up: got %d %q, want 200 \"1\"", w.Code, w.Body.String())
	}
	if cookieName == "" {
		return
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName && c.Value != "" {
			st.cookie = c.Name + "=" + c.Value
		}
	}
	if st.cookie == "" {
		tb.Fatalf("warm-up: no %s cookie in %q", cookieName, w.Header().Values("Set-Cookie"))
	}
}

// newRequest returns a GET request for target carrying the Cookie header
// cookie (none if empty).
func newRequest(cookie string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench")
	if cookie != "" {
		r.Header.Set("Cookie", cookie)
	}
	return r
}

// serve sends one request through h and returns the recorded response.
func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// run measures h with the request tmpl. Each iteration serves a shallow
// copy of tmpl (one allocation, the same for every stack) into a fresh
// httptest.ResponseRecorder (a few allocations, the same for every
// stack), so all that differs between stacks is the library's work.
//
// The copy is needed for fairness, not only for realism: gorilla's
// sessions.GetRegistry overwrites *r with a request whose context caches
// the decoded sessions, so a reused request would let gorilla skip the
// decoding from the second iteration on. The recorder is not reused
// because its header map would accumulate SCS's "Vary: Cookie" and every
// Set-Cookie, and it cannot be reset (its wroteHeader flag is unexported);
// a real server also starts each response with an empty header map.
//
// For a server-backed stack it also reports round-trips/op: the writes on
// its client's connections during the loop per iteration (see
// wireCounter), keep-alive pings included.
//
// It returns the last response and the number of iterations, which the
// caller checks so that the benchmark fails if the loop did not do what
// it claims (read an existing session; increment it).
func run(b *testing.B, st *stack, h http.Handler, tmpl *http.Request) (*httptest.ResponseRecorder, int) {
	b.ReportAllocs()
	ctx := context.Background()
	var w *httptest.ResponseRecorder
	iters := 0
	var trips int64
	if st.wire != nil {
		trips = st.wire.writes.Load()
	}
	for b.Loop() {
		w = httptest.NewRecorder()
		h.ServeHTTP(w, tmpl.WithContext(ctx))
		iters++
	}
	if st.wire != nil {
		b.ReportMetric(float64(st.wire.writes.Load()-trips)/float64(iters), "round-trips/op")
	}
	if w.Code != http.StatusOK {
		b.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
	return w, iters
}

// BenchmarkRead measures a request whose handler reads n from an existing
// session and writes it in the body. Nothing changes, so Hallpass and SCS
// write nothing to their store and set no cookie.
func BenchmarkRead(b *testing.B) {
	for _, l := range libs {
		b.Run(l.name, func(b *testing.B) {
			st := l.new(b, hooks{})
			w, _ := run(b, st, st.read, newRequest(st.cookie))
			if got := w.Body.String(); got != "1" {
				b.Fatalf("read %q, want \"1\" from the warm-up session", got)
			}
		})
	}
}

// BenchmarkWrite measures a request whose handler reads n from an existing
// session, stores n+1 and writes it in the body. Every iteration sends the
// warm-up's cookie. For Hallpass and SCS the session keeps its token, so n
// grows by one each request. Gorilla's session is the cookie itself: each
// request decodes the warm-up cookie (n = 1) and encodes a new one
// (n = 2), which is the same work as following the cookie chain.
func BenchmarkWrite(b *testing.B) {
	for _, l := range libs {
		b.Run(l.name, func(b *testing.B) {
			st := l.new(b, hooks{})
			w, iters := run(b, st, st.write, newRequest(st.cookie))
			want := 1 + iters
			if l.name == "Gorilla" {
				want = 2
			}
			if got := w.Body.String(); got != strconv.Itoa(want) {
				b.Fatalf("last write %q, want %d", got, want)
			}
		})
	}
}
