package storetest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// Pair returns two stores that share one server, as two app instances
// would: separate clients, separate local caches.
type Pair func(t testing.TB) (a, b hallpass.Store)

// instance is one app instance: a Manager over its own store.
type instance struct {
	m *hallpass.Manager
}

func newInstance(t testing.TB, s hallpass.Store) instance {
	m, err := hallpass.New(hallpass.Config{
		Store:  s,
		Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return instance{m: m}
}

// do runs f as one request carrying cookie and returns the cookie the
// client holds afterwards and the signed-in user seen by the handler.
func (in instance) do(t testing.TB, cookie string, f func(*hallpass.Session) error) (newCookie, user string) {
	req := httptest.NewRequest("GET", "http://localhost/", nil)
	if cookie != "" {
		req.Header.Set("Cookie", in.m.CookieName()+"="+cookie)
	}
	rec := httptest.NewRecorder()
	in.m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		user = s.UserID()
		if f != nil {
			if err := f(s); err != nil {
				t.Errorf("handler: %v", err)
			}
		}
	})).ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("request on instance: status %d: %s", rec.Code, rec.Body.String())
	}
	newCookie = cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == in.m.CookieName() {
			newCookie = c.Value
			if c.MaxAge < 0 {
				newCookie = ""
			}
		}
	}
	return newCookie, user
}

// ending is one way instance B ends a session that instance A serves.
type ending struct {
	name string
	end  func(t testing.TB, b instance, cookie, user, handle string)
}

var endings = []ending{
	{"Logout", func(t testing.TB, b instance, cookie, _, _ string) {
		b.do(t, cookie, func(s *hallpass.Session) error { return s.Logout() })
	}},
	{"Revoke", func(t testing.TB, b instance, _, user, handle string) {
		if err := b.m.Revoke(context.Background(), user, handle); err != nil {
			t.Fatal(err)
		}
	}},
	{"RevokeAll", func(t testing.TB, b instance, _, user, _ string) {
		if _, err := b.m.RevokeAll(context.Background(), user); err != nil {
			t.Fatal(err)
		}
	}},
}

// visibleAfter signs a fresh user in on a, reads the session on a (so a
// cache, if any, holds it), ends it on b, and returns how long after b's
// call returned a first served the cookie as a guest. It fails the test if
// that takes longer than limit.
func visibleAfter(t testing.TB, a, b instance, e ending, limit time.Duration) time.Duration {
	user := newUser()
	cookie, _ := a.do(t, "", func(s *hallpass.Session) error { return s.Login(user, hallpass.LoginOptions{}) })
	var handle string
	for range 3 { // warm any cache on a
		_, seen := a.do(t, cookie, func(s *hallpass.Session) error { handle = s.Handle(); return nil })
		if seen != user {
			t.Fatalf("instance A does not see its own sign-in: %q", seen)
		}
	}
	e.end(t, b, cookie, user, handle)
	start := time.Now()
	for {
		_, seen := a.do(t, cookie, nil)
		if seen == "" {
			return time.Since(start)
		}
		if d := time.Since(start); d > limit {
			t.Fatalf("%s on instance B: instance A still served the user %v later (limit %v)", e.name, d, limit)
		}
		// No sleep: a timer's granularity (about 1 ms here) would be
		// most of what this measures. Yield so the invalidation can land.
		runtime.Gosched()
	}
}

// RunInstances checks that two instances sharing a server agree: a session
// signed in on A and ended on B (logout, revoke by handle, revoke all) is a
// guest on A within maxStale, the store's bound on cache staleness, plus
// slack for a slow machine; and data written on one instance is read on
// the other. It logs the median and worst time to visibility. Use 0 for
// maxStale when the store has no local cache.
func RunInstances(t *testing.T, pair Pair, maxStale time.Duration) {
	t.Helper()
	limit := maxStale + 250*time.Millisecond
	for _, e := range endings {
		t.Run(e.name, func(t *testing.T) {
			sa, sb := pair(t)
			a, b := newInstance(t, sa), newInstance(t, sb)
			var ds []time.Duration
			for range 20 {
				ds = append(ds, visibleAfter(t, a, b, e, limit))
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			t.Logf("%s on B visible on A: median %v, worst %v (20 runs)", e.name, ds[len(ds)/2], ds[len(ds)-1])
		})
	}
	t.Run("DataAcross", func(t *testing.T) {
		sa, sb := pair(t)
		a, b := newInstance(t, sa), newInstance(t, sb)
		cookie, _ := a.do(t, "", func(s *hallpass.Session) error { return s.Set("n", 1) })
		a.do(t, cookie, nil) // cache it on a
		b.do(t, cookie, func(s *hallpass.Session) error { return s.Set("n", 2) })
		deadline := time.Now().Add(limit)
		for {
			var n int
			a.do(t, cookie, func(s *hallpass.Session) (err error) { n, err = hallpass.Get[int](s, "n"); return err })
			if n == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("write on B not seen on A after %v: n=%d", limit, n)
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// BenchInstances measures the time from instance B ending a session
// (RevokeAll) until instance A serves its cookie as a guest, reported as
// the custom metric "visible-µs" (mean over b.N). Each iteration also signs
// a user in and warms A's cache, so ns/op is not the latency; read
// visible-µs.
func BenchInstances(b *testing.B, pair Pair, maxStale time.Duration) {
	sa, sb := pair(b)
	ia, ib := newInstance(b, sa), newInstance(b, sb)
	limit := maxStale + 250*time.Millisecond
	var total time.Duration
	n := 0
	for b.Loop() {
		total += visibleAfter(b, ia, ib, endings[2], limit)
		n++
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n), "visible-µs")
}
