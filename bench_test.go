package hallpass_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
)

// discard is a ResponseWriter that keeps nothing, so the benchmarks
// measure the middleware rather than httptest.ResponseRecorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func benchRequest(b *testing.B, f http.HandlerFunc) {
	store := memstore.New(nil)
	defer store.Close()
	m, err := hallpass.New(hallpass.Config{Store: store, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler(http.HandlerFunc(counter)).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	h := m.Handler(f)
	cookie := rec.Result().Cookies()[0]
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(cookie)
	w := &discard{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkReadRequest is a whole read-only request through the
// middleware with a memstore: load, one typed read, no write.
func BenchmarkReadRequest(b *testing.B) { benchRequest(b, reader) }

// BenchmarkWriteRequest increments a counter: load, read, one-key delta.
func BenchmarkWriteRequest(b *testing.B) { benchRequest(b, counter) }

// BenchmarkReadRequestSignedIn is BenchmarkReadRequest for a signed-in
// session, which also passes the rotation and client-change checks.
func BenchmarkReadRequestSignedIn(b *testing.B) {
	benchSignedIn(b, func(_ *hallpass.Manager, h http.Handler) http.Handler { return h })
}

// BenchmarkRequire is a signed-in read through Require, as every
// protected route is: the requirement adds its checks to the read.
func BenchmarkRequire(b *testing.B) {
	benchSignedIn(b, func(m *hallpass.Manager, h http.Handler) http.Handler {
		return m.Require(hallpass.Requirement{Level: hallpass.LevelSingleFactor, FreshWithin: time.Hour})(h)
	})
}

// benchSignedIn sends a signed-in session's reads through the handler
// wrap makes of reader, inside the Manager's middleware, after checking
// that the first one is served.
func benchSignedIn(b *testing.B, wrap func(*hallpass.Manager, http.Handler) http.Handler) {
	store := memstore.New(nil)
	defer store.Close()
	m, err := hallpass.New(hallpass.Config{Store: store, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler(login("alice", hallpass.LoginOptions{})).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(rec.Result().Cookies()[0])
	h := m.Handler(wrap(m, http.HandlerFunc(reader)))
	if first := serveOnce(h, req); first.Code != http.StatusOK {
		b.Fatalf("the first request was refused: %d", first.Code)
	}
	w := &discard{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

func serveOnce(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}
