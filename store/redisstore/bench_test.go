package redisstore

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// benchRecord is a typical signed-in session: every metadata field and a
// few small data keys.
func benchRecord() *hallpass.Record {
	r := liveRecord("user-1234")
	r.Data = map[string]json.RawMessage{
		"cart":   json.RawMessage(`{"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]}`),
		"locale": json.RawMessage(`"en-GB"`),
		"csrf":   json.RawMessage(`"c2VjcmV0LXRva2VuLXZhbHVl"`),
		"n":      json.RawMessage(`42`),
	}
	return r
}

func benchLoad(b *testing.B, s hallpass.Store) {
	r := benchRecord()
	if err := s.Create(context.Background(), r); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		if _, err := s.Load(ctx, r.Key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, r.Key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadCached is a Load served by the client-side cache and the
// memo: no round trip, no decode.
func BenchmarkLoadCached(b *testing.B) {
	raw := testURL(b)
	benchLoad(b, newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw)}, nil))
}

// BenchmarkLoadCachedNoMemo decodes the cached reply on every Load, which
// is what the memo saves.
func BenchmarkLoadCachedNoMemo(b *testing.B) {
	raw := testURL(b)
	s := newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw)}, nil)
	s.noMemo = true
	benchLoad(b, s)
}

// BenchmarkLoadUncached is one round trip per Load.
func BenchmarkLoadUncached(b *testing.B) {
	raw := testURL(b)
	benchLoad(b, newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw), CacheTTL: -1}, nil))
}

// BenchmarkLoadMemstore is the in-process reference.
func BenchmarkLoadMemstore(b *testing.B) {
	s := memstore.New(nil)
	b.Cleanup(func() { s.Close() })
	benchLoad(b, s)
}

// BenchmarkUpdate is a typical request's write: one key set and a touch.
func BenchmarkUpdate(b *testing.B) {
	raw := testURL(b)
	s := newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw)}, nil)
	r := benchRecord()
	ctx := context.Background()
	if err := s.Create(ctx, r); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		seen := t0.Add(time.Duration(i) * time.Millisecond)
		d := hallpass.Delta{
			Set:   map[string]json.RawMessage{"n": json.RawMessage(strconv.Itoa(i))},
			Touch: &hallpass.Touch{LastSeen: seen, IdleDeadline: seen.Add(time.Hour), LastIP: "192.0.2.1", LastUA: "bench"},
		}
		if err := s.Update(ctx, r.Key, d); err != nil {
			b.Fatal(err)
		}
	}
}

// discard is a ResponseWriter that keeps nothing, as in the root
// package's request benchmarks.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// benchReadRequest is a whole read-only request through the Manager: a
// signed-in session loaded, one typed read, nothing written.
func benchReadRequest(b *testing.B, s hallpass.Store) {
	m, err := hallpass.New(hallpass.Config{Store: s, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {})})
	if err != nil {
		b.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if err := s.Login("user-1234", hallpass.LoginOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := s.Set("n", 1); err != nil {
			b.Fatal(err)
		}
	})).ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/", nil))
	cookie := rec.Result().Cookies()[0]
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		n, _ := hallpass.Get[int](s, "n")
		w.Write([]byte(s.UserID() + "|" + strconv.Itoa(n)))
	}))
	// localhost, where browsers keep Secure cookies over plain HTTP, so
	// the Manager does not warn.
	req := httptest.NewRequest("GET", "http://localhost/", nil)
	req.AddCookie(cookie)
	w := &discard{h: make(http.Header)}
	for range 3 {
		h.ServeHTTP(w, req)
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkReadRequest compares a whole read-only request on a cached
// Redis store with the same request on a memstore.
func BenchmarkReadRequest(b *testing.B) {
	b.Run("memstore", func(b *testing.B) {
		s := memstore.New(nil)
		b.Cleanup(func() { s.Close() })
		benchReadRequest(b, s)
	})
	b.Run("redis-cached", func(b *testing.B) {
		raw := testURL(b)
		benchReadRequest(b, newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw)}, nil))
	})
	b.Run("redis-uncached", func(b *testing.B) {
		raw := testURL(b)
		benchReadRequest(b, newStore(b, raw, Options{KeyPrefix: testPrefix(b, raw), CacheTTL: -1}, nil))
	})
}

// BenchmarkInstances measures how soon a RevokeAll on one instance is seen
// by another that had the session cached (metric visible-µs).
func BenchmarkInstances(b *testing.B) {
	storetest.BenchInstances(b, pair(Options{}), defaultCacheTTL)
}
