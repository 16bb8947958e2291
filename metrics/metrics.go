// Package metrics exports Hallpass's session events and store operations
// as Prometheus metrics. It lives outside the root package so that
// applications that do not use Prometheus do not pull it in.
//
//	reg := prometheus.NewRegistry()
//	met, err := metrics.New(reg, nil)
//	...
//	st := met.Store("sessions", sqliteStore) // timed; use st everywhere
//	m, err := hallpass.New(hallpass.Config{
//		Store:  st,
//		Events: hallpass.Sinks{hallpass.SlogSink{}, met},
//	})
//	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The metrics:
//
//	hallpass_events_total{kind,reason}                          counter
//	hallpass_store_operation_duration_seconds{store,op,result}  histogram
//	hallpass_sessions_active{store}                             gauge, for stores that are Counters
//	hallpass_store_count_errors_total{store}                    counter: Count failed or timed out at a scrape
//	hallpass_cache_hits_total{store}                            counter, for stores that are CacheStatsers
//	hallpass_cache_misses_total{store}                          counter, likewise
//
// op is one of create, load, update, rotate, delete, list_user and
// delete_user; result is ok, not_found, exists, too_many, canceled (the
// caller's context was cancelled: usually a client that went away) or
// error (anything else, timeouts included). The cache hit ratio is
//
//	rate(hallpass_cache_hits_total[5m])
//	  / (rate(hallpass_cache_hits_total[5m]) + rate(hallpass_cache_misses_total[5m]))
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/prometheus/client_golang/prometheus"
)

// Counter is implemented by stores that can count their live sessions
// cheaply enough to do so at every scrape (a SELECT COUNT(*) on an index,
// a counter kept in memory). Metrics calls it when Prometheus scrapes, with
// a context that ends after Options.ScrapeTimeout; a store that does not
// implement it has no hallpass_sessions_active gauge.
//
// Count counts live records only, but every live record: besides
// sessions, what the library keeps in the same store (the revocation
// list, remember-me series, refresh token families, the audit log, two
// records per kept event). So the gauge is sessions plus those; give the
// audit log a store of its own when the gauge should be close to the
// number of sessions.
type Counter interface {
	Count(ctx context.Context) (int, error)
}

// CacheStatser is implemented by stores with a local read cache (package
// redisstore's client-side cache, package pgstore's local cache). CacheStats
// returns how many Loads the cache has answered and how many it has
// passed on to the server since the store was opened. Both only grow.
// It is called at every scrape, so it must be cheap and must not block:
// two atomic loads.
type CacheStatser interface {
	CacheStats() (hits, misses uint64)
}

// Defaults for the zero values of Options.
const (
	DefaultMaxLabelValues = 64
	DefaultScrapeTimeout  = time.Second
)

// DefaultBuckets are the latency buckets of the store operation
// histogram, in seconds: from 100 µs (an in-memory store, a cache hit)
// to 5 s (a store that is failing slowly).
var DefaultBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// maxLabelLen bounds the length of a kind or reason used as a label value.
// Hallpass's own reasons are far shorter; anything longer is not a
// reason constant and would only bloat every scrape.
const maxLabelLen = 64

// Other is the label value that stands for every kind or reason beyond
// the bounds of Options.MaxLabelValues, longer than 64 bytes, or not
// valid UTF-8.
const Other = "other"

// Options configure New. The zero value, and a nil *Options, give the
// defaults.
type Options struct {
	// Buckets are the store latency histogram's upper bounds in seconds.
	// Default DefaultBuckets.
	Buckets []float64
	// MaxLabelValues bounds how many distinct event kinds, and separately
	// how many distinct reasons, get a label value of their own; later
	// ones count under Other. Reasons are a small fixed set in Hallpass
	// and its companions, but applications add their own through
	// Session.Report, and a reason built from input would otherwise make
	// a new time series per value. Default DefaultMaxLabelValues.
	MaxLabelValues int
	// ScrapeTimeout bounds the Count calls of one scrape. A store that
	// does not answer in time has no gauge in that scrape, and its
	// hallpass_store_count_errors_total goes up. Default
	// DefaultScrapeTimeout.
	ScrapeTimeout time.Duration
}

// Metrics collects Hallpass's metrics for one Prometheus registry. It is a
// hallpass.Sink (add it to Config.Events) and wraps stores (Store). It is
// safe for concurrent use.
type Metrics struct {
	events      *prometheus.CounterVec
	ops         *prometheus.HistogramVec
	active      *prometheus.Desc
	countErrors *prometheus.Desc
	hits        *prometheus.Desc
	misses      *prometheus.Desc
	maxValues   int
	timeout     time.Duration

	// cache maps each (kind, reason) seen before to its counter, so that
	// Emit is one map lookup with no lock and no allocation. It is copied
	// on write: new pairs are rare and bounded (see admit).
	cache atomic.Pointer[map[eventKey]prometheus.Counter]

	mu      sync.Mutex // guards what follows and writes of cache
	kinds   map[string]bool
	reasons map[string]bool
	stores  map[string]watched

	failMu   sync.Mutex
	failures map[string]uint64 // failed Counts by store name
}

type eventKey struct {
	kind   hallpass.EventKind
	reason string
}

// watched is a store whose size or cache Collect reports.
type watched struct {
	count Counter      // nil if the store is not one
	cache CacheStatser // likewise
}

// New creates the metrics and registers them with reg (nil means
// prometheus.DefaultRegisterer). It fails if reg already holds metrics of
// the same names: use one Metrics per registry.
func New(reg prometheus.Registerer, opts *Options) (*Metrics, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if o.Buckets == nil {
		o.Buckets = DefaultBuckets
	}
	if o.MaxLabelValues <= 0 {
		o.MaxLabelValues = DefaultMaxLabelValues
	}
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = DefaultScrapeTimeout
	}
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallpass_events_total",
			Help: "Session events by kind and reason.",
		}, []string{"kind", "reason"}),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hallpass_store_operation_duration_seconds",
			Help:    "How long session store operations took, by store, operation and result.",
			Buckets: o.Buckets,
		}, []string{"store", "op", "result"}),
		active: prometheus.NewDesc("hallpass_sessions_active",
			"Live records in the store at scrape time: sessions, and the library's own records kept with them (revocations, remember-me series, token families, audit log).", []string{"store"}, nil),
		countErrors: prometheus.NewDesc("hallpass_store_count_errors_total",
			"Scrapes at which a store failed to count its sessions in time.", []string{"store"}, nil),
		hits: prometheus.NewDesc("hallpass_cache_hits_total",
			"Loads answered by the store's local cache.", []string{"store"}, nil),
		misses: prometheus.NewDesc("hallpass_cache_misses_total",
			"Loads the store's local cache passed on to the server.", []string{"store"}, nil),
		maxValues: o.MaxLabelValues,
		timeout:   o.ScrapeTimeout,
		kinds:     make(map[string]bool),
		reasons:   make(map[string]bool),
		stores:    make(map[string]watched),
		failures:  make(map[string]uint64),
	}
	m.cache.Store(&map[eventKey]prometheus.Counter{})
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.events, m.ops, (*collector)(m)} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// Emit counts e in hallpass_events_total. It takes no lock and allocates
// nothing for a kind and reason it has seen before.
func (m *Metrics) Emit(_ context.Context, e hallpass.Event) {
	if c, ok := (*m.cache.Load())[eventKey{e.Kind, e.Reason}]; ok {
		c.Inc()
		return
	}
	m.emitSlow(e.Kind, e.Reason)
}

func (m *Metrics) emitSlow(kind hallpass.EventKind, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cache := *m.cache.Load()
	if c, ok := cache[eventKey{kind, reason}]; ok { // added meanwhile
		c.Inc()
		return
	}
	k, kOK := admit(m.kinds, string(kind), m.maxValues)
	r, rOK := admit(m.reasons, reason, m.maxValues)
	c := m.events.WithLabelValues(k, r)
	c.Inc()
	if kOK && rOK {
		// Only pairs of admitted values are cached, so the cache holds at
		// most MaxLabelValues² entries however odd the input; the rest
		// take this path every time, which is slower but bounded.
		next := maps.Clone(cache)
		next[eventKey{hallpass.EventKind(strings.Clone(string(kind))), strings.Clone(reason)}] = c
		m.cache.Store(&next)
	}
}

// admit returns the label value for v, and whether it is v itself,
// recording v in seen if there is room.
func admit(seen map[string]bool, v string, max int) (string, bool) {
	if len(v) > maxLabelLen || !utf8.ValidString(v) {
		return Other, false
	}
	if seen[v] {
		return v, true
	}
	if len(seen) >= max {
		return Other, false
	}
	seen[strings.Clone(v)] = true
	return v, true
}

// collector reports the gauges and cache counters of the watched stores.
// It is Metrics under another method set, so that Metrics itself does not
// show Describe and Collect in its API.
type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.countErrors
	ch <- c.hits
	ch <- c.misses
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	stores := maps.Clone(c.stores)
	c.mu.Unlock()

	type counted struct {
		name string
		n    int
		err  error
	}
	// Buffered for every answer, so that a Count that returns after the
	// scrape gave up on it does not block its goroutine.
	results := make(chan counted, len(stores))
	failed := make(map[string]bool) // until it answers
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for name, w := range stores {
		if w.cache != nil {
			h, mi := w.cache.CacheStats()
			ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(h), name)
			ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(mi), name)
		}
		if w.count != nil {
			failed[name] = true
			go func() {
				n, err := w.count.Count(ctx)
				results <- counted{name, n, err}
			}()
		}
	}
wait:
	for range len(failed) {
		select {
		case r := <-results:
			if r.err == nil {
				delete(failed, r.name)
				ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(r.n), r.name)
			}
		case <-ctx.Done():
			break wait
		}
	}
	// Counted here rather than in a CounterVec so that a scrape reports
	// its own failure, not only the ones before it.
	c.failMu.Lock()
	defer c.failMu.Unlock()
	for name := range failed {
		c.failures[name]++
	}
	for name, n := range c.failures {
		ch <- prometheus.MustNewConstMetric(c.countErrors, prometheus.CounterValue, float64(n), name)
	}
}

// Store returns s wrapped so that every call is timed in
// hallpass_store_operation_duration_seconds with store=name. Records and
// errors pass through unchanged. If s is a Counter or a CacheStatser,
// its gauge and cache counters are reported at each scrape under name;
// wrapping another store under the same name replaces it there.
//
// The returned Store is a hallpass.Broadcaster if s is one, and an
// io.Closer if s is one (Close closes s), so that it can stand in for s
// everywhere, hallpass.NewRevocations included. Anything else s offers
// is reached through the returned value's Unwrap method:
//
//	inner := st.(interface{ Unwrap() hallpass.Store }).Unwrap()
func (m *Metrics) Store(name string, s hallpass.Store) hallpass.Store {
	if s == nil {
		panic("metrics: Store of a nil hallpass.Store")
	}
	var w watched
	// Look through wrappers (another Metrics', say) for the optional
	// interfaces that are only read at scrape time, so that wrapping
	// twice still reports them.
	for in := s; in != nil; {
		if c, ok := in.(Counter); ok && w.count == nil {
			w.count = c
		}
		if c, ok := in.(CacheStatser); ok && w.cache == nil {
			w.cache = c
		}
		u, ok := in.(interface{ Unwrap() hallpass.Store })
		if !ok {
			break
		}
		in = u.Unwrap()
	}
	if w.count != nil || w.cache != nil {
		m.mu.Lock()
		m.stores[name] = w
		m.mu.Unlock()
	}

	t := &timed{inner: s, name: name, vec: m.ops}
	for op := range opCount {
		// The ok series exist from the start, so that dashboards show a
		// zero rate instead of no data; other results appear when they
		// happen, which keeps idle stores from exporting 42 histograms.
		t.observer(op, resultOK)
	}
	// One type per combination of the interfaces callers assert on the
	// store itself. The others (Counter, CacheStatser) are read by this
	// package at scrape time and need not show on the wrapper.
	bc, isBC := s.(hallpass.Broadcaster)
	cl, isCl := s.(io.Closer)
	switch {
	case isBC && isCl:
		return &timedBroadcasterCloser{t, bc, cl}
	case isBC:
		return &timedBroadcaster{t, bc}
	case isCl:
		return &timedCloser{t, cl}
	}
	return t
}

// Operations and results, as indexes into timed.obs.
const (
	opCreate = iota
	opLoad
	opUpdate
	opRotate
	opDelete
	opListUser
	opDeleteUser
	opCount
)

var opNames = [opCount]string{"create", "load", "update", "rotate", "delete", "list_user", "delete_user"}

const (
	resultOK = iota
	resultNotFound
	resultExists
	resultTooMany
	resultCanceled
	resultError
	resultCount
)

var resultNames = [resultCount]string{"ok", "not_found", "exists", "too_many", "canceled", "error"}

func result(err error) int {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, hallpass.ErrNotFound):
		return resultNotFound
	case errors.Is(err, hallpass.ErrExists):
		return resultExists
	case errors.Is(err, hallpass.ErrTooManySessions):
		return resultTooMany
	case errors.Is(err, context.Canceled):
		return resultCanceled
	}
	return resultError
}

// timed is the wrapper Store returns for a store that is neither a
// Broadcaster nor an io.Closer, and the core of the others.
type timed struct {
	inner hallpass.Store
	name  string
	vec   *prometheus.HistogramVec
	// obs caches each series' observer: looking one up in the vector
	// hashes the labels on every call.
	obs [opCount][resultCount]atomic.Pointer[prometheus.Observer]
}

type timedCloser struct {
	*timed
	io.Closer
}

type timedBroadcaster struct {
	*timed
	hallpass.Broadcaster
}

type timedBroadcasterCloser struct {
	*timed
	hallpass.Broadcaster
	io.Closer
}

func (t *timed) observer(op, res int) prometheus.Observer {
	p := &t.obs[op][res]
	if o := p.Load(); o != nil {
		return *o
	}
	o := t.vec.WithLabelValues(t.name, opNames[op], resultNames[res])
	p.Store(&o)
	return o
}

func (t *timed) done(op int, start time.Time, err error) {
	t.observer(op, result(err)).Observe(time.Since(start).Seconds())
}

// Unwrap returns the wrapped store.
func (t *timed) Unwrap() hallpass.Store { return t.inner }

// Create implements hallpass.Store.
func (t *timed) Create(ctx context.Context, r *hallpass.Record) error {
	start := time.Now()
	err := t.inner.Create(ctx, r)
	t.done(opCreate, start, err)
	return err
}

// Load implements hallpass.Store.
func (t *timed) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	start := time.Now()
	r, err := t.inner.Load(ctx, key)
	t.done(opLoad, start, err)
	return r, err
}

// Update implements hallpass.Store.
func (t *timed) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	start := time.Now()
	err := t.inner.Update(ctx, key, d)
	t.done(opUpdate, start, err)
	return err
}

// Rotate implements hallpass.Store.
func (t *timed) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	start := time.Now()
	err := t.inner.Rotate(ctx, from, to, d)
	t.done(opRotate, start, err)
	return err
}

// Delete implements hallpass.Store.
func (t *timed) Delete(ctx context.Context, keys ...hallpass.Key) error {
	start := time.Now()
	err := t.inner.Delete(ctx, keys...)
	t.done(opDelete, start, err)
	return err
}

// ListUser implements hallpass.Store.
func (t *timed) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	start := time.Now()
	rs, err := t.inner.ListUser(ctx, userID)
	t.done(opListUser, start, err)
	return rs, err
}

// DeleteUser implements hallpass.Store.
func (t *timed) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	start := time.Now()
	n, err := t.inner.DeleteUser(ctx, userID, keep...)
	t.done(opDeleteUser, start, err)
	return n, err
}
