package bench

// The server-backed stacks: Hallpass on redisstore (client-side cache on
// and off) and on pgstore (cache off, its default, and on), and SCS on its
// Redis store (redigo pool) and its pgx store (pgx/v5 pool), all on the
// servers named by HALLPASS_TEST_REDIS_URL and HALLPASS_TEST_POSTGRES_URL.
// Each stack gets names of its own on the server (a random Redis key
// prefix, a random PostgreSQL table or schema) and removes them when the
// benchmark or test ends, so runs never see each other's sessions and
// leave nothing behind.
//
// Every connection these stacks' clients open to a server is wrapped by a
// wireCounter, so that the benchmarks report round-trips/op and the tests
// can pin them. The wrapper adds an atomic add per write on the socket,
// nothing measurable next to a round trip.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"maps"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	scspgx "github.com/alexedwards/scs/pgxstore"
	scsredis "github.com/alexedwards/scs/redisstore"
	"github.com/gomodule/redigo/redis"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/rueidis"

	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// The environment variables naming the test servers, as in the store
// packages' own tests. Without one, the stacks that need it skip (with a
// message naming it), except under CI=true, where they fail: see
// storetest.ServiceURL.
const (
	redisURLVar    = "HALLPASS_TEST_REDIS_URL"
	postgresURLVar = "HALLPASS_TEST_POSTGRES_URL"
)

// randomName returns prefix followed by 12 random hex digits.
func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// wireCounter counts the writes on every connection it wraps. Each client
// here (rueidis, redigo, pgx) buffers what it sends and flushes it with
// one write before it waits for the answer, so that one write is one round
// trip. Only the stack's own connections are counted: other users of the
// server do not disturb the count. Background traffic of the stack's
// clients is counted too: rueidis's keep-alive PING (about once a second
// on an idle connection), pgxpool's ping of a connection idle for over a
// second before reuse, and the pgstore listener's check after a second
// without notifications.
type wireCounter struct{ writes atomic.Int64 }

func (w *wireCounter) wrap(c net.Conn) net.Conn { return &countedConn{Conn: c, w: w} }

type countedConn struct {
	net.Conn
	w *wireCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.w.writes.Add(1)
	return c.Conn.Write(p)
}

// setupCtx bounds setup and cleanup statements.
func setupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// ---- Redis ----

// redisPrefix returns a random key prefix starting with base, and deletes
// every key under it when tb ends (after the cleanups registered later,
// such as closing the store, have run).
func redisPrefix(tb testing.TB, url, base string) string {
	tb.Helper()
	prefix := randomName(base) + ":"
	co, err := rueidis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	co.DisableCache = true
	admin, err := rueidis.NewClient(co)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		defer admin.Close()
		deleteRedisPrefix(tb, admin, prefix)
	})
	return prefix
}

// deleteRedisPrefix deletes every key under prefix with SCAN and UNLINK,
// so that a shared server is never blocked.
func deleteRedisPrefix(tb testing.TB, c rueidis.Client, prefix string) {
	ctx, cancel := setupCtx()
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			tb.Errorf("deleting %s*: %v", prefix, err)
			return
		}
		if len(e.Elements) > 0 {
			if err := c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build()).Error(); err != nil {
				tb.Errorf("deleting %s*: %v", prefix, err)
				return
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
	}
}

// newHallpassRedis is Hallpass on redisstore with the default CacheTTL
// (one minute): reads are served by rueidis's server-assisted client-side
// cache.
func newHallpassRedis(tb testing.TB, h hooks) *stack {
	return newHallpassRedisTTL(tb, h, 0)
}

// newHallpassRedisNoCache is Hallpass on redisstore with CacheTTL -1: every
// Load is a round trip.
func newHallpassRedisNoCache(tb testing.TB, h hooks) *stack {
	return newHallpassRedisTTL(tb, h, -1)
}

// newHallpassRedisTTL is Hallpass on a redisstore with a random KeyPrefix
// and CacheTTL cacheTTL. The store is redisstore.New on a rueidis client
// made with the options redisstore.Open sets (copied from its unexported
// clientOption: 2 s dial and write timeouts, reads retried twice after a
// network error, and DisableCache when CacheTTL is negative), plus a
// dialer that counts round trips, which Open has no way to take.
func newHallpassRedisTTL(tb testing.TB, h hooks, cacheTTL time.Duration) *stack {
	tb.Helper()
	url := storetest.ServiceURL(tb, redisURLVar)
	opts := &redisstore.Options{KeyPrefix: redisPrefix(tb, url, "hallpass-bench-"), CacheTTL: cacheTTL}
	co, err := rueidis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	if co.Dialer.Timeout == 0 {
		co.Dialer.Timeout = 2 * time.Second
	}
	if co.ConnWriteTimeout == 0 {
		co.ConnWriteTimeout = 2 * time.Second
	}
	co.RetryDelay = func(attempts int, _ rueidis.Completed, _ error) time.Duration {
		if attempts > 2 {
			return -1
		}
		return time.Duration(attempts) * time.Millisecond
	}
	co.DisableCache = cacheTTL < 0
	wire := &wireCounter{}
	orig := co.DialCtxFn // set by ParseURL for unix://
	co.DialCtxFn = func(ctx context.Context, dst string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		if orig != nil {
			c, err := orig(ctx, dst, d, cfg)
			if err != nil {
				return nil, err
			}
			return wire.wrap(c), nil
		}
		c, err := d.DialContext(ctx, "tcp", dst)
		if err != nil {
			return nil, err
		}
		c = wire.wrap(c) // below TLS: count what goes on the wire
		if cfg != nil {
			c = tls.Client(c, cfg)
		}
		return c, nil
	}
	client, err := rueidis.NewClient(co)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(client.Close) // after the store's Close
	s, err := redisstore.New(client, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	st := newHallpassOn(tb, s, h)
	st.wire = wire
	return st
}

// newSCSRedis is SCS on github.com/alexedwards/scs/redisstore, on a redigo
// pool as in its README (MaxIdle 10), with a random key prefix.
func newSCSRedis(tb testing.TB, h hooks) *stack {
	tb.Helper()
	url := storetest.ServiceURL(tb, redisURLVar)
	prefix := redisPrefix(tb, url, "scs-bench-")
	wire := &wireCounter{}
	dial := redis.DialNetDial(func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err != nil {
			return nil, err
		}
		return wire.wrap(c), nil
	})
	pool := &redis.Pool{
		MaxIdle:     10,
		IdleTimeout: 240 * time.Second,
		Dial:        func() (redis.Conn, error) { return redis.DialURL(url, dial) },
	}
	tb.Cleanup(func() { pool.Close() })
	st := newSCSOn(tb, scsredis.NewWithPrefix(pool, prefix), h)
	st.wire = wire
	return st
}

// ---- PostgreSQL ----

// newPool makes a pgx pool for url whose connections wire counts, with
// the tracer and run-time parameters of h. mod, if not nil, adjusts the configuration first. The
// pool is closed when tb ends, after the cleanups registered later.
func newPool(tb testing.TB, url string, h hooks, wire *wireCounter, mod func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("%s: cannot parse the connection string", postgresURLVar)
	}
	if mod != nil {
		mod(cfg)
	}
	if h.tracer != nil {
		cfg.ConnConfig.Tracer = h.tracer
	}
	maps.Copy(cfg.ConnConfig.RuntimeParams, h.pgParams)
	orig := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := orig(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wire.wrap(c), nil
	}
	ctx, cancel := setupCtx()
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// newHallpassPostgres is Hallpass on pgstore with its defaults: reads are
// served from the local cache (CacheTTL one minute), kept fresh by
// LISTEN/NOTIFY.
func newHallpassPostgres(tb testing.TB, h hooks) *stack {
	return newHallpassPostgresOpts(tb, h, pgstore.Options{})
}

// newHallpassPostgresNoCache is Hallpass on pgstore with CacheTTL -1: no
// cache, every Load is a query.
func newHallpassPostgresNoCache(tb testing.TB, h hooks) *stack {
	return newHallpassPostgresOpts(tb, h, pgstore.Options{CacheTTL: -1})
}

// newHallpassPostgresOpts is Hallpass on a pgstore with the options opts,
// on a pool of its own configured as pgstore.Open configures its pool
// (application_name "hallpass", a 10 s connect timeout), through
// pgstore.New so that the pool can count round trips and the tests can set
// a tracer. The table has a random name and is dropped when tb ends.
func newHallpassPostgresOpts(tb testing.TB, h hooks, opts pgstore.Options) *stack {
	tb.Helper()
	url := storetest.ServiceURL(tb, postgresURLVar)
	wire := &wireCounter{}
	pool := newPool(tb, url, h, wire, func(cfg *pgxpool.Config) {
		if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
			cfg.ConnConfig.RuntimeParams["application_name"] = "hallpass"
		}
		if cfg.ConnConfig.ConnectTimeout == 0 {
			cfg.ConnConfig.ConnectTimeout = 10 * time.Second
		}
	})
	table := randomName("hallpass_bench_")
	tb.Cleanup(func() { // after the store's Close, before the pool's
		ctx, cancel := setupCtx()
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{table}.Sanitize()); err != nil {
			tb.Errorf("dropping table %s: %v", table, err)
		}
	})
	ctx, cancel := setupCtx()
	defer cancel()
	opts.Table = table
	s, err := pgstore.New(ctx, pool, &opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	st := newHallpassOn(tb, s, h)
	st.wire = wire
	if opts.CacheTTL >= 0 && !opts.DisableNotify { // the cache is on
		st.setupReads = waitNoRoundTrip(tb, st)
	}
	return st
}

// waitNoRoundTrip sends reads until one makes no round trip, for up to
// 15 s: pgstore's cache is used only once its listener has run LISTEN,
// which it does in the background after New, as when an app starts. It
// returns the number of reads sent.
func waitNoRoundTrip(tb testing.TB, st *stack) int {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for reads := 1; ; reads++ {
		before := st.wire.writes.Load()
		if w := serve(st.read, newRequest(st.cookie)); w.Code != http.StatusOK || w.Body.String() != "1" {
			tb.Fatalf("read: got %d %q, want 200 \"1\"", w.Code, w.Body.String())
		}
		if st.wire.writes.Load() == before {
			return reads
		}
		if time.Now().After(deadline) {
			tb.Fatal("reads still make round trips 15 s after the store's start")
		}
		time.Sleep(time.Millisecond)
	}
}

// newSCSPostgres is SCS on github.com/alexedwards/scs/pgxstore, on a pgx/v5
// pool. pgxstore's table is always "sessions", unqualified, so each stack
// creates a schema of its own with the table from pgxstore's README in it,
// puts it on the pool's search_path, and drops the schema at the end.
//
// The store is made with NewWithCleanupInterval(pool, 0), without
// pgxstore.New's sweeper goroutine (every 5 minutes): its StopCleanup
// races with the goroutine's start, and a goroutine left running would
// later sweep on a closed pool and log the error into the benchmark
// output. A sweep every 5 minutes would not touch the measured requests
// anyway.
func newSCSPostgres(tb testing.TB, h hooks) *stack {
	tb.Helper()
	url := storetest.ServiceURL(tb, postgresURLVar)
	schema := randomName("scs_bench_")
	qs := pgx.Identifier{schema}.Sanitize()
	ctx, cancel := setupCtx()
	defer cancel()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { // last: after the pool's Close
		ctx, cancel := setupCtx()
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+qs+" CASCADE"); err != nil {
			tb.Errorf("dropping schema %s: %v", schema, err)
		}
		admin.Close(ctx)
	})
	for _, stmt := range []string{
		"CREATE SCHEMA " + qs,
		`CREATE TABLE ` + qs + `.sessions (
			token TEXT PRIMARY KEY,
			data BYTEA NOT NULL,
			expiry TIMESTAMPTZ NOT NULL
		)`,
		"CREATE INDEX sessions_expiry_idx ON " + qs + ".sessions (expiry)",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			tb.Fatal(err)
		}
	}
	wire := &wireCounter{}
	pool := newPool(tb, url, h, wire, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
	})
	st := newSCSOn(tb, scspgx.NewWithCleanupInterval(pool, 0), h)
	st.wire = wire
	return st
}
