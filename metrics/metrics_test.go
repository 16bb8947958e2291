package metrics_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/metrics"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/sqlitestore"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func newMetrics(t testing.TB, opts *metrics.Options) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// value returns the value of the series of the family name whose labels
// are exactly the given name/value pairs: a counter's or gauge's value, a
// histogram's sample count. ok is false when there is no such series.
func value(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) (v float64, ok bool) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !sameLabels(m.GetLabel(), labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// snapshot scrapes reg once, for checking several values of one scrape.
func snapshot(t testing.TB, reg prometheus.Gatherer) prometheus.Gatherer {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return fams, nil })
}

func sameLabels(got []*dto.LabelPair, want []string) bool {
	if len(got)*2 != len(want) {
		return false
	}
	for i, l := range got {
		// Gather sorts labels by name; so do the callers.
		if l.GetName() != want[2*i] || l.GetValue() != want[2*i+1] {
			return false
		}
	}
	return true
}

func mustValue(t testing.TB, reg prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(t, reg, name, labels...)
	if !ok {
		t.Errorf("%s%v: no such series", name, labels)
	} else if got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func TestNewTwiceOnOneRegistry(t *testing.T) {
	_, reg := newMetrics(t, nil)
	if _, err := metrics.New(reg, nil); err == nil {
		t.Fatal("second New on the same registry succeeded")
	}
	// The failed New left nothing behind that would break a scrape.
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

func TestEvents(t *testing.T) {
	m, reg := newMetrics(t, nil)
	ctx := t.Context()
	sink := hallpass.Sinks{hallpass.SinkFunc(func(context.Context, hallpass.Event) {}), m}
	for range 3 {
		sink.Emit(ctx, hallpass.Event{Kind: hallpass.EventAuthenticated})
	}
	sink.Emit(ctx, hallpass.Event{Kind: hallpass.EventSuspicious, Reason: hallpass.ReasonTokenReuse})
	sink.Emit(ctx, hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonRevokeAll})
	sink.Emit(ctx, hallpass.Event{Kind: hallpass.EventRevoked, Reason: hallpass.ReasonRevokeAll})

	mustValue(t, reg, 3, "hallpass_events_total", "kind", "authenticated", "reason", "")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "suspicious", "reason", "token_reuse")
	mustValue(t, reg, 2, "hallpass_events_total", "kind", "revoked", "reason", "revoke_all")
	if n := testutil.CollectAndCount(reg, "hallpass_events_total"); n != 3 {
		t.Errorf("%d series, want 3", n)
	}
}

// TestEventsConcurrent counts from many goroutines at once, racing the
// first sighting of each pair (the slow path) with its cached use.
func TestEventsConcurrent(t *testing.T) {
	m, reg := newMetrics(t, nil)
	reasons := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.Emit(context.Background(), hallpass.Event{Kind: hallpass.EventSuspicious, Reason: reasons[i%len(reasons)]})
			}
		})
	}
	wg.Wait()
	for _, r := range reasons {
		mustValue(t, reg, 2000, "hallpass_events_total", "kind", "suspicious", "reason", r)
	}
}

func TestLabelBounds(t *testing.T) {
	m, reg := newMetrics(t, &metrics.Options{MaxLabelValues: 3})
	emit := func(kind, reason string) {
		m.Emit(context.Background(), hallpass.Event{Kind: hallpass.EventKind(kind), Reason: reason})
	}
	emit("suspicious", "r1")
	emit("suspicious", "r2")
	emit("suspicious", "r3")
	emit("suspicious", "r4")                         // a fourth reason
	emit("suspicious", strings.Repeat("x", 65))      // too long
	emit("suspicious", "bad \xff utf-8")             // not valid UTF-8 (Prometheus refuses it)
	emit("suspicious", "r1")                         // admitted before: still its own
	emit("revoked", "r2")                            // a known reason under a second kind
	emit("k3", "")                                   // a fourth reason: ""
	emit("k4", "r3")                                 // a fourth kind
	emit(strings.Repeat("k", 65), "r1")              // a kind too long
	emit("suspicious", strings.Repeat("x", 64))      // exactly 64 bytes, but the reasons are full
	emit("suspicious", "r2"+strings.Repeat("", 100)) // the same string built anew

	mustValue(t, reg, 2, "hallpass_events_total", "kind", "suspicious", "reason", "r1")
	mustValue(t, reg, 2, "hallpass_events_total", "kind", "suspicious", "reason", "r2")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "suspicious", "reason", "r3")
	mustValue(t, reg, 4, "hallpass_events_total", "kind", "suspicious", "reason", metrics.Other)
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "revoked", "reason", "r2")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "k3", "reason", metrics.Other)
	mustValue(t, reg, 1, "hallpass_events_total", "kind", metrics.Other, "reason", "r3")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", metrics.Other, "reason", "r1")

	// However many odd values arrive, the series stay bounded by
	// (MaxLabelValues+1)² and nothing is lost.
	for i := range 1000 {
		emit(string(rune('A'+i%50))+"kind", strings.Repeat("y", i%100))
	}
	if n := testutil.CollectAndCount(reg, "hallpass_events_total"); n > 16 {
		t.Errorf("%d series, want at most 16", n)
	}
	total := 0.0
	fams, _ := reg.Gather()
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			total += s.GetCounter().GetValue()
		}
	}
	if total != 1013 {
		t.Errorf("counted %v events, want 1013", total)
	}
}

func TestEmitAllocs(t *testing.T) {
	m, _ := newMetrics(t, nil)
	ctx := context.Background()
	e := hallpass.Event{Kind: hallpass.EventSuspicious, Reason: hallpass.ReasonUnknownToken, Handle: "h", UserID: "u"}
	m.Emit(ctx, e)
	if n := testing.AllocsPerRun(1000, func() { m.Emit(ctx, e) }); n != 0 {
		t.Errorf("Emit of a seen kind and reason: %v allocations, want 0", n)
	}
}

// opCount returns the sample count of one op/result series of store.
func opCount(t testing.TB, reg prometheus.Gatherer, store, op, result string) float64 {
	t.Helper()
	v, _ := value(t, reg, "hallpass_store_operation_duration_seconds", "op", op, "result", result, "store", store)
	return v
}

func key(s string) hallpass.Key { return sha256.Sum256([]byte(s)) }

func record(name, user string, now time.Time) *hallpass.Record {
	return &hallpass.Record{
		Key: key(name), Handle: "h-" + name,
		Meta:  hallpass.Meta{UserID: user, AbsoluteDeadline: now.Add(time.Hour)},
		Touch: hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)},
	}
}

// TestStoreOperations runs every method, to every result it can have,
// through wrapped real stores, and checks each histogram series.
func TestStoreOperations(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) hallpass.Store
	}{
		{"memstore", func(t *testing.T) hallpass.Store {
			s := memstore.New(nil)
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"sqlitestore", func(t *testing.T) hallpass.Store {
			s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "s.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, reg := newMetrics(t, nil)
			st := m.Store(tc.name, tc.open(t))
			ctx := t.Context()
			now := time.Now()

			// Before any call, the ok series are there, at zero.
			for _, op := range []string{"create", "load", "update", "rotate", "delete", "list_user", "delete_user"} {
				mustValue(t, reg, 0, "hallpass_store_operation_duration_seconds", "op", op, "result", "ok", "store", tc.name)
			}

			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(st.Create(ctx, record("a", "alice", now)))
			must(st.Create(ctx, record("b", "alice", now)))
			must(st.Create(ctx, record("c", "bob", now)))
			if err := st.Create(ctx, record("a", "alice", now)); !errors.Is(err, hallpass.ErrExists) {
				t.Fatalf("Create of a taken key: %v", err)
			}
			r, err := st.Load(ctx, key("a"))
			must(err)
			if r.Handle != "h-a" || r.UserID != "alice" {
				t.Fatalf("Load returned %+v", r)
			}
			if _, err := st.Load(ctx, key("missing")); !errors.Is(err, hallpass.ErrNotFound) {
				t.Fatalf("Load of a missing key: %v", err)
			}
			must(st.Update(ctx, key("a"), hallpass.Delta{Set: map[string]json.RawMessage{"x": json.RawMessage(`1`)}}))
			if err := st.Update(ctx, key("missing"), hallpass.Delta{}); !errors.Is(err, hallpass.ErrNotFound) {
				t.Fatalf("Update of a missing key: %v", err)
			}
			must(st.Rotate(ctx, key("a"), key("a2"), hallpass.Delta{}))
			lim := &hallpass.Limit{Max: 1, RefuseNew: true}
			if err := st.Rotate(ctx, key("b"), key("b2"), hallpass.Delta{Limit: lim}); !errors.Is(err, hallpass.ErrTooManySessions) {
				t.Fatalf("Rotate over the limit: %v", err)
			}
			recs, err := st.ListUser(ctx, "alice")
			must(err)
			if len(recs) != 2 {
				t.Fatalf("ListUser: %d records, want 2", len(recs))
			}
			n, err := st.DeleteUser(ctx, "alice", key("a2"))
			must(err)
			if n != 1 {
				t.Fatalf("DeleteUser removed %d, want 1", n)
			}
			must(st.Delete(ctx, key("c"), key("missing")))
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := st.Load(cancelled, key("a2")); !errors.Is(err, context.Canceled) {
				t.Fatalf("Load with a cancelled context: %v", err)
			}

			for _, c := range []struct {
				op, result string
				want       float64
			}{
				{"create", "ok", 3}, {"create", "exists", 1},
				{"load", "ok", 1}, {"load", "not_found", 1}, {"load", "canceled", 1},
				{"update", "ok", 1}, {"update", "not_found", 1},
				{"rotate", "ok", 1}, {"rotate", "too_many", 1},
				{"list_user", "ok", 1}, {"delete_user", "ok", 1}, {"delete", "ok", 1},
			} {
				if got := opCount(t, reg, tc.name, c.op, c.result); got != c.want {
					t.Errorf("op=%s result=%s: %v samples, want %v", c.op, c.result, got, c.want)
				}
			}
			if _, ok := value(t, reg, "hallpass_store_operation_duration_seconds", "op", "load", "result", "error", "store", tc.name); ok {
				t.Error("a series for a result that never happened")
			}
			// Both stores count their sessions (Count); neither has a cache.
			if n := testutil.CollectAndCount(reg, "hallpass_sessions_active"); n != 1 {
				t.Errorf("hallpass_sessions_active: %d series, want 1", n)
			}
			if n := testutil.CollectAndCount(reg, "hallpass_cache_hits_total"); n != 0 {
				t.Errorf("hallpass_cache_hits_total: %d series, want none", n)
			}
		})
	}
}

// TestStoreError checks the error result, and that errors come back as
// the very values the store returned.
func TestStoreError(t *testing.T) {
	m, reg := newMetrics(t, nil)
	boom := errors.New("boom")
	expired := &hallpass.ExpiredError{Record: record("x", "alice", time.Now())}
	fs := &failing{errs: []error{boom, expired, context.DeadlineExceeded}}
	st := m.Store("failing", fs)
	ctx := t.Context()
	if _, err := st.Load(ctx, key("x")); err != boom {
		t.Errorf("got %v, want the store's error itself", err)
	}
	_, err := st.Load(ctx, key("x"))
	var ee *hallpass.ExpiredError
	if !errors.As(err, &ee) || ee != expired || !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("got %v, want the store's *ExpiredError", err)
	}
	if _, err := st.Load(ctx, key("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v", err)
	}
	if got := opCount(t, reg, "failing", "load", "error"); got != 2 {
		t.Errorf("load errors: %v, want 2 (one failure, one timeout)", got)
	}
	if got := opCount(t, reg, "failing", "load", "not_found"); got != 1 {
		t.Errorf("load not_found: %v, want 1", got)
	}
}

// failing is a Store whose Load returns errs in turn.
type failing struct {
	hallpass.Store
	errs []error
}

func (f *failing) Load(context.Context, hallpass.Key) (*hallpass.Record, error) {
	err := f.errs[0]
	f.errs = f.errs[1:]
	return nil, err
}

func TestConformance(t *testing.T) {
	m, reg := newMetrics(t, nil)
	storetest.Run(t, func(t *testing.T) hallpass.Store {
		s := memstore.New(nil)
		t.Cleanup(func() { s.Close() })
		return m.Store("conformance", s)
	})
	if got := opCount(t, reg, "conformance", "load", "ok"); got == 0 {
		t.Error("the suite's Loads were not timed")
	}
}

// counting is a memstore that counts its sessions, as a store might.
type counting struct {
	*memstore.Store
	mu    sync.Mutex
	err   error
	delay time.Duration
}

func (c *counting) Count(ctx context.Context) (int, error) {
	c.mu.Lock()
	err, delay := c.err, c.delay
	c.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if err != nil {
		return 0, err
	}
	return c.Len(), nil
}

func (c *counting) set(err error, delay time.Duration) {
	c.mu.Lock()
	c.err, c.delay = err, delay
	c.mu.Unlock()
}

func TestActiveSessions(t *testing.T) {
	m, reg := newMetrics(t, &metrics.Options{ScrapeTimeout: 50 * time.Millisecond})
	inner := &counting{Store: memstore.New(nil)}
	t.Cleanup(func() { inner.Close() })
	st := m.Store("mem", inner)
	plain := memstore.New(nil)
	t.Cleanup(func() { plain.Close() })
	// Only the Store methods: a store without Count has no gauge.
	m.Store("plain", struct{ hallpass.Store }{plain})

	ctx := t.Context()
	now := time.Now()
	for _, name := range []string{"a", "b", "c"} {
		if err := st.Create(ctx, record(name, "alice", now)); err != nil {
			t.Fatal(err)
		}
	}
	mustValue(t, reg, 3, "hallpass_sessions_active", "store", "mem")
	if n := testutil.CollectAndCount(reg, "hallpass_sessions_active"); n != 1 {
		t.Errorf("%d gauges, want 1 (the store without Count has none)", n)
	}
	if err := st.Delete(ctx, key("a")); err != nil {
		t.Fatal(err)
	}
	mustValue(t, reg, 2, "hallpass_sessions_active", "store", "mem")

	// A failing or slow Count drops the gauge from that scrape, counts an
	// error, and does not fail (or stall) the scrape.
	inner.set(errors.New("down"), 0)
	scrape := snapshot(t, reg)
	if _, ok := value(t, scrape, "hallpass_sessions_active", "store", "mem"); ok {
		t.Error("gauge reported for a store whose Count failed")
	}
	mustValue(t, scrape, 1, "hallpass_store_count_errors_total", "store", "mem")
	inner.set(nil, time.Minute)
	start := time.Now()
	scrape = snapshot(t, reg)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the scrape took %v with a 50 ms ScrapeTimeout", d)
	}
	if _, ok := value(t, scrape, "hallpass_sessions_active", "store", "mem"); ok {
		t.Error("gauge reported for a store whose Count timed out")
	}
	mustValue(t, scrape, 2, "hallpass_store_count_errors_total", "store", "mem")
	inner.set(nil, 0)
	scrape = snapshot(t, reg)
	mustValue(t, scrape, 2, "hallpass_sessions_active", "store", "mem")
	mustValue(t, scrape, 2, "hallpass_store_count_errors_total", "store", "mem")
}

// cached is a store with a local cache, as redisstore or pgstore may
// become: hits and misses are counted by Load.
type cached struct {
	hallpass.Store
	mu           sync.Mutex
	hits, misses uint64
}

func (c *cached) CacheStats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

func TestCacheStats(t *testing.T) {
	m, reg := newMetrics(t, nil)
	c := &cached{Store: memstore.New(nil)}
	m.Store("cached", c)
	c.mu.Lock()
	c.hits, c.misses = 30, 10
	c.mu.Unlock()
	want := `
# HELP hallpass_cache_hits_total Loads answered by the store's local cache.
# TYPE hallpass_cache_hits_total counter
hallpass_cache_hits_total{store="cached"} 30
# HELP hallpass_cache_misses_total Loads the store's local cache passed on to the server.
# TYPE hallpass_cache_misses_total counter
hallpass_cache_misses_total{store="cached"} 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hallpass_cache_hits_total", "hallpass_cache_misses_total"); err != nil {
		t.Error(err)
	}
}

// TestWrapTwice wraps a counting, caching store with two Metrics: the
// outer one still finds Count and CacheStats, through Unwrap.
func TestWrapTwice(t *testing.T) {
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	inner := &countingCached{counting: &counting{Store: mem}, hits: 7}
	m1, _ := newMetrics(t, nil)
	m2, reg2 := newMetrics(t, nil)
	st := m2.Store("outer", m1.Store("inner", inner))
	if err := st.Create(t.Context(), record("a", "alice", time.Now())); err != nil {
		t.Fatal(err)
	}
	mustValue(t, reg2, 1, "hallpass_sessions_active", "store", "outer")
	mustValue(t, reg2, 7, "hallpass_cache_hits_total", "store", "outer")
	u := st.(interface{ Unwrap() hallpass.Store }).Unwrap()
	if u.(interface{ Unwrap() hallpass.Store }).Unwrap() != hallpass.Store(inner) {
		t.Error("Unwrap twice does not give the original store")
	}
}

type countingCached struct {
	*counting
	hits uint64
}

func (c *countingCached) CacheStats() (uint64, uint64) { return c.hits, 0 }

// broadcaster is a Store that is a hallpass.Broadcaster (within one
// process), and not an io.Closer.
type broadcaster struct {
	hallpass.Store
	storetest.Bus
}

type broadcastCloser struct {
	*broadcaster
	closed bool
}

func (b *broadcastCloser) Close() error { b.closed = true; return nil }

func TestInterfacesKept(t *testing.T) {
	m, _ := newMetrics(t, nil)
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	hidden := struct{ hallpass.Store }{mem} // hides Close
	bc := &broadcaster{Store: hidden}
	bcc := &broadcastCloser{broadcaster: &broadcaster{Store: hidden}}
	for _, tc := range []struct {
		name          string
		s             hallpass.Store
		bc, closer    bool
		unwrappedFrom hallpass.Store
	}{
		{"plain", hidden, false, false, hidden},
		{"closer", mem, false, true, mem},
		{"broadcaster", bc, true, false, bc},
		{"both", bcc, true, true, bcc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := m.Store(tc.name, tc.s)
			if _, ok := w.(hallpass.Broadcaster); ok != tc.bc {
				t.Errorf("wrapper is a Broadcaster: %v, want %v", ok, tc.bc)
			}
			if _, ok := w.(io.Closer); ok != tc.closer {
				t.Errorf("wrapper is an io.Closer: %v, want %v", ok, tc.closer)
			}
			if got := w.(interface{ Unwrap() hallpass.Store }).Unwrap(); got != tc.unwrappedFrom {
				t.Errorf("Unwrap returned %T, not the store wrapped", got)
			}
		})
	}
	w := m.Store("both2", bcc).(io.Closer)
	if err := w.Close(); err != nil || !bcc.closed {
		t.Errorf("Close did not reach the store: %v", err)
	}
}

// TestRevocationsThroughWrapper checks that hallpass.NewRevocations, which
// asserts Broadcaster on the store it is given, still broadcasts through
// the wrapper, and that its records go through the timed methods.
func TestRevocationsThroughWrapper(t *testing.T) {
	m, reg := newMetrics(t, nil)
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	bc := &broadcaster{Store: mem}
	st := m.Store("rev", bc)
	rev, err := hallpass.NewRevocations(t.Context(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rev.Close()
	if subs := bc.Subscribers(); subs != 1 {
		t.Fatalf("NewRevocations subscribed %d times through the wrapper, want 1", subs)
	}
	if err := rev.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	sent := len(bc.Sent())
	if sent != 1 {
		t.Errorf("%d broadcasts, want 1", sent)
	}
	if got := opCount(t, reg, "rev", "create", "ok"); got != 1 {
		t.Errorf("create ok: %v, want 1", got)
	}
	if got := opCount(t, reg, "rev", "list_user", "ok"); got < 1 {
		t.Errorf("list_user ok: %v, want the first load", got)
	}
}

// TestManager runs a sign-in and sign-out through a Manager using a
// wrapped store and the Metrics as its sink, and serves /metrics.
func TestManager(t *testing.T) {
	m, reg := newMetrics(t, nil)
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	mgr, err := hallpass.New(hallpass.Config{Store: m.Store("sessions", &counting{Store: mem}), Events: m})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/cart", func(w http.ResponseWriter, r *http.Request) { hallpass.FromRequest(r).Set("cart", []string{"tea"}) })
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login("alice", hallpass.LoginOptions{}); err != nil {
			t.Error(err)
		}
	})
	mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			t.Error(err)
		}
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	h := mgr.Handler(mux)
	cookie := ""
	get := func(path string) string {
		req := httptest.NewRequest("GET", "http://localhost"+path, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: mgr.CookieName(), Value: cookie})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		for _, c := range rec.Result().Cookies() {
			if c.Name == mgr.CookieName() {
				cookie = c.Value
			}
		}
		return rec.Body.String()
	}
	get("/cart")
	get("/login")
	mustValue(t, reg, 1, "hallpass_sessions_active", "store", "sessions")
	get("/logout")

	mustValue(t, reg, 1, "hallpass_events_total", "kind", "created", "reason", "")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "authenticated", "reason", "")
	mustValue(t, reg, 1, "hallpass_events_total", "kind", "logged_out", "reason", "")
	mustValue(t, reg, 0, "hallpass_sessions_active", "store", "sessions")
	if got := opCount(t, reg, "sessions", "rotate", "ok"); got != 1 {
		t.Errorf("rotate ok: %v, want 1 (the login)", got)
	}
	body := get("/metrics")
	for _, want := range []string{
		`hallpass_events_total{kind="authenticated",reason=""} 1`,
		`hallpass_store_operation_duration_seconds_count{op="create",result="ok",store="sessions"} 1`,
		`hallpass_sessions_active{store="sessions"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestLoadAllocs(t *testing.T) {
	m, _ := newMetrics(t, nil)
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	st := m.Store("mem", mem)
	ctx := context.Background()
	if err := st.Create(ctx, record("a", "alice", time.Now())); err != nil {
		t.Fatal(err)
	}
	st.Load(ctx, key("missing")) // creates the not_found series
	for _, k := range []hallpass.Key{key("a"), key("missing")} {
		bare := testing.AllocsPerRun(1000, func() { mem.Load(ctx, k) })
		wrapped := testing.AllocsPerRun(1000, func() { st.Load(ctx, k) })
		if wrapped != bare {
			t.Errorf("wrapped Load: %v allocations, the store's own %v", wrapped, bare)
		}
	}
}

func BenchmarkEmit(b *testing.B) {
	m, _ := newMetrics(b, nil)
	ctx := context.Background()
	e := hallpass.Event{Kind: hallpass.EventSuspicious, Reason: hallpass.ReasonUnknownToken, Handle: "h", UserID: "u"}
	m.Emit(ctx, e)
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Emit(ctx, e)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Emit(ctx, e)
			}
		})
	})
}

func BenchmarkLoad(b *testing.B) {
	m, _ := newMetrics(b, nil)
	mem := memstore.New(nil)
	b.Cleanup(func() { mem.Close() })
	ctx := context.Background()
	if err := mem.Create(ctx, record("a", "alice", time.Now())); err != nil {
		b.Fatal(err)
	}
	for _, s := range []struct {
		name string
		st   hallpass.Store
	}{{"memstore", mem}, {"wrapped", m.Store("mem", mem)}} {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.st.Load(ctx, key("a")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
