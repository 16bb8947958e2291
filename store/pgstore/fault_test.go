package pgstore

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// faultTimeout is Options.Timeout in the fault tests: what a request may
// wait for the database per store call.
const faultTimeout = 500 * time.Millisecond

// app is one app instance whose database connections go through a proxy
// the test can cut or stall.
type app struct {
	t     *testing.T
	proxy *storetest.Proxy
	store *Store
	h     http.Handler
	name  string // the session cookie's name
}

// proxied returns a Store whose connections go through a proxy, closed
// when the test ends. As with open, it logs nothing unless o has a
// Logger, and with a cache it waits for the listener.
func proxied(t *testing.T, url string, o Options) (*storetest.Proxy, *Store) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	p := storetest.NewProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, fmt.Sprint(cfg.ConnConfig.Port)))
	host, port, _ := net.SplitHostPort(p.Addr())
	cfg.ConnConfig.Host = host
	fmt.Sscan(port, &cfg.ConnConfig.Port)
	cfg.ConnConfig.Fallbacks = nil
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if o.Logger == nil {
		o.Logger = quiet
	}
	s, err := New(t.Context(), pool, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.cache != nil {
		waitLive(t, s, true)
	}
	return p, s
}

func newApp(t *testing.T, url string) *app {
	p, s := proxied(t, url, Options{Table: newTable(t, url), CacheTTL: time.Minute, Timeout: faultTimeout})
	m, err := hallpass.New(hallpass.Config{
		Store:  s,
		Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {}),
		Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	// /write sets a and b to one new value in one request: if a write
	// were ever half-done they would differ.
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		n, err := hallpass.Get[int](s, "a")
		if err != nil {
			t.Error(err)
		}
		if r.URL.Path == "/write" {
			s.Set("a", n+1)
			s.Set("b", n+1)
		}
		fmt.Fprint(w, n)
	}))
	return &app{t: t, proxy: p, store: s, h: h, name: m.CookieName()}
}

// do runs one request and returns its status, the cookie the client
// holds afterwards, and how long it took.
func (a *app) do(cookie, path string) (int, string, time.Duration) {
	req := httptest.NewRequest("GET", "http://localhost"+path, nil)
	if cookie != "" {
		req.Header.Set("Cookie", a.name+"="+cookie)
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	a.h.ServeHTTP(rec, req)
	elapsed := time.Since(start)
	for _, c := range rec.Result().Cookies() {
		if c.Name == a.name {
			cookie = c.Value
		}
	}
	return rec.Code, cookie, elapsed
}

// sessions signs up n sessions and checks they are served.
func (a *app) sessions(n int) []string {
	cookies := make([]string, n)
	for i := range cookies {
		code, c, _ := a.do("", "/write")
		if code != 200 || c == "" {
			a.t.Fatalf("creating a session: status %d", code)
		}
		cookies[i] = c
		if code, _, _ := a.do(c, "/read"); code != 200 {
			a.t.Fatalf("reading a session: status %d", code)
		}
	}
	return cookies
}

type result struct {
	start   time.Time
	elapsed time.Duration
	code    int
}

// load writes to every session over and over until stop is closed.
func (a *app) load(cookies []string, stop <-chan struct{}) func() []result {
	var (
		mu  sync.Mutex
		all []result
		wg  sync.WaitGroup
	)
	for _, c := range cookies {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				code, _, elapsed := a.do(c, "/write")
				mu.Lock()
				all = append(all, result{start, elapsed, code})
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	return func() []result { wg.Wait(); return all }
}

// waitServed waits until a write is served again after the fault ends,
// and returns how long that took.
func (a *app) waitServed(cookie string) time.Duration {
	start := time.Now()
	for {
		if code, _, _ := a.do(cookie, "/write"); code == 200 {
			return time.Since(start)
		}
		if time.Since(start) > 20*time.Second {
			a.t.Fatal("not served 20 s after the fault ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check checks the requests of a fault between from and to: every one
// that ran wholly inside it failed closed, within bound; every one ended
// in 200 or 503. It also checks that each session's a and b agree, read
// directly from the database.
func (a *app) check(url string, results []result, cookies []string, from, to time.Time, bound time.Duration) {
	t := a.t
	inside, worst := 0, time.Duration(0)
	for _, r := range results {
		if r.code != 200 && r.code != 503 {
			t.Errorf("status %d", r.code)
		}
		if r.start.After(from) && r.start.Add(r.elapsed).Before(to) {
			inside++
			worst = max(worst, r.elapsed)
			if r.code != 503 {
				t.Errorf("a write during the fault got %d, want 503", r.code)
			}
			if r.elapsed > bound {
				t.Errorf("a write during the fault took %v, want at most %v", r.elapsed, bound)
			}
		}
	}
	if inside == 0 {
		t.Error("no request ran during the fault")
	}
	t.Logf("%d requests during the fault, slowest %v", inside, worst)

	direct := open(t, url, Options{Table: a.store.q.table, SweepInterval: -1})
	for _, c := range cookies {
		key, err := hallpass.ParseToken(c)
		if err != nil {
			t.Fatal(err)
		}
		r, err := direct.Load(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Data["a"]) != string(r.Data["b"]) {
			t.Errorf("half-written session: a = %s, b = %s", r.Data["a"], r.Data["b"])
		}
	}
}

// TestCut cuts the database off while requests run: they fail closed
// with 503 at once, the cache is dropped with the listener's connection,
// and after Restore the app serves again and caches again by itself.
func TestCut(t *testing.T) {
	url := testURL(t)
	a := newApp(t, url)
	cookies := a.sessions(8)
	stop := make(chan struct{})
	wait := a.load(cookies, stop)
	time.Sleep(100 * time.Millisecond)

	cutAt := time.Now()
	a.proxy.Cut()
	waitLiveWithin(t, a.store, false, time.Second)
	if n := a.store.cache.len(); n != 0 {
		t.Errorf("%d records still cached after the listener's connection died", n)
	}
	time.Sleep(500 * time.Millisecond)
	if code, _, took := a.do(cookies[0], "/read"); code != 503 || took > faultTimeout {
		t.Errorf("a read during the cut: status %d after %v; want 503 at once", code, took)
	}

	restoreAt := time.Now()
	a.proxy.Restore()
	t.Logf("served again %v after Restore", a.waitServed(cookies[0]))
	waitLiveWithin(t, a.store, true, 10*time.Second)
	t.Logf("cache back %v after Restore", time.Since(restoreAt))
	time.Sleep(100 * time.Millisecond)
	close(stop)
	// Refused connections fail at once; a write that was in flight waits
	// at most one timeout.
	a.check(url, wait(), cookies, cutAt.Add(50*time.Millisecond), restoreAt, faultTimeout+200*time.Millisecond)
	if code, _, _ := a.do(cookies[0], "/read"); code != 200 {
		t.Errorf("read after recovery: status %d", code)
	}
}

// TestStall makes the database stop answering while requests run: they
// fail closed with 503 within the timeout, the listener notices within a
// couple of seconds and drops the cache, and after Restore the app
// recovers by itself.
func TestStall(t *testing.T) {
	url := testURL(t)
	a := newApp(t, url)
	cookies := a.sessions(8)
	stop := make(chan struct{})
	wait := a.load(cookies, stop)
	time.Sleep(100 * time.Millisecond)

	stallAt := time.Now()
	a.proxy.Stall()
	waitLiveWithin(t, a.store, false, listenPingEvery+listenPingTimeout+2*time.Second)
	t.Logf("cache dropped %v after the stall began", time.Since(stallAt))
	time.Sleep(300 * time.Millisecond)
	if code, _, took := a.do(cookies[0], "/read"); code != 503 || took > 2*faultTimeout {
		t.Errorf("a read during the stall: status %d after %v; want 503 within the timeout", code, took)
	}

	restoreAt := time.Now()
	a.proxy.Restore()
	t.Logf("served again %v after Restore", a.waitServed(cookies[0]))
	waitLiveWithin(t, a.store, true, 10*time.Second)
	t.Logf("cache back %v after Restore", time.Since(restoreAt))
	time.Sleep(100 * time.Millisecond)
	close(stop)
	// A request makes two store calls at most (Load, then Update), each
	// bounded by the timeout.
	a.check(url, wait(), cookies, stallAt, restoreAt, 2*faultTimeout+500*time.Millisecond)
}

// waitLiveWithin is waitLive with a deadline of its own.
func waitLiveWithin(t *testing.T, s *Store, live bool, within time.Duration) {
	t.Helper()
	start := time.Now()
	for s.cache.live.Load() != live {
		if time.Since(start) > within {
			t.Fatalf("cache live = %v after %v, want %v", !live, within, live)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCutBroadcast cuts the listener's connection of a Store with
// subscribers: once it is back, every subscriber gets nil, since what was
// broadcast meanwhile is lost, and later broadcasts arrive again. With a
// cache the listener is the cache's; without one, Subscribe started it.
func TestCutBroadcast(t *testing.T) {
	url := testURL(t)
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"Cache", time.Minute}, {"NoCache", -1}} {
		t.Run(c.name, func(t *testing.T) {
			table := newTable(t, url)
			p, a := proxied(t, url, Options{Table: table, CacheTTL: c.ttl, Timeout: faultTimeout})
			b := open(t, url, Options{Table: table})
			r1, r2 := newRecorder(), newRecorder()
			defer a.Subscribe(r1.receive)()
			defer a.Subscribe(r2.receive)()
			settled(t, b, r1, r2)

			p.Cut()
			if c.ttl > 0 {
				waitLiveWithin(t, a, false, time.Second)
			} else {
				time.Sleep(200 * time.Millisecond)
			}
			if err := b.Broadcast(t.Context(), []byte(`"lost"`)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			restoreAt := time.Now()
			p.Restore()
			for i, r := range []*recorder{r1, r2} {
				got := r.waitFor(t, fmt.Sprintf("subscriber %d: nil after the reconnect", i+1), 10*time.Second, hasNil)
				if has(`"lost"`)(got) {
					t.Errorf("subscriber %d got a message broadcast while the listener was cut off", i+1)
				}
			}
			t.Logf("subscribers told to reload %v after Restore", time.Since(restoreAt))
			if c.ttl > 0 && !a.cache.live.Load() {
				t.Error("subscribers were told before the cache was back")
			}
			if err := b.Broadcast(t.Context(), []byte(`"after"`)); err != nil {
				t.Fatal(err)
			}
			for i, r := range []*recorder{r1, r2} {
				r.waitFor(t, fmt.Sprintf("subscriber %d: a broadcast after the reconnect", i+1), time.Second, has(`"after"`))
			}
		})
	}
}
