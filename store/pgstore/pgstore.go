// Package pgstore is a hallpass.Store in PostgreSQL, on
// github.com/jackc/pgx/v5, for any number of app instances sharing one
// database.
//
// # Schema
//
// One table holds the sessions. New and Open create it if it is missing;
// with the default name it is:
//
//	CREATE TABLE IF NOT EXISTS "hallpass_sessions" (
//		key               bytea   NOT NULL PRIMARY KEY CHECK (length(key) = 32), -- hallpass.Key
//		handle            text    NOT NULL,
//		user_id           text,            -- NULL for a guest
//		auth_time         bigint,          -- unix ms; NULL for the zero time
//		auth_level        text    NOT NULL DEFAULT '',
//		remembered        boolean NOT NULL DEFAULT false,
//		reauth_at         bigint,
//		persistent        boolean NOT NULL DEFAULT false,
//		absolute_deadline bigint,
//		last_seen         bigint,
//		idle_deadline     bigint,
//		last_ip           text    NOT NULL DEFAULT '',
//		last_ua           text    NOT NULL DEFAULT '',
//		created_at        bigint,
//		created_ip        text    NOT NULL DEFAULT '',
//		created_ua        text    NOT NULL DEFAULT '',
//		data              jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
//		version           bigint  NOT NULL,
//		expires_at        bigint  NOT NULL GENERATED ALWAYS AS (
//			coalesce(least(idle_deadline, absolute_deadline), 9223372036854775807)
//		) STORED
//	);
//	CREATE INDEX IF NOT EXISTS "hallpass_sessions_user_id"
//		ON "hallpass_sessions" (user_id) WHERE user_id IS NOT NULL;
//	CREATE INDEX IF NOT EXISTS "hallpass_sessions_expires_at"
//		ON "hallpass_sessions" (expires_at);
//
// Times are unix milliseconds, the precision the Store contract asks for,
// so that what is compared in SQL is exactly what comes back; a zero time
// is NULL. expires_at is Record.ExpiresAt computed by PostgreSQL, so no
// write can leave it stale (least ignores NULLs, so one deadline is
// enough); a record with neither deadline gets the largest bigint, so that
// "expires_at > now" alone tells a live row and the sweeper's index range
// never contains it.
//
// # Whose clock
//
// The app's: every statement that tests expiry takes the current time as
// a parameter from Options.Now, the clock the hallpass.Manager uses too, so
// that the store and the engine agree on when a session ends and tests can
// drive both with one fake clock. Instances should keep their clocks in
// sync (NTP); one that runs ahead sees sessions end early.
//
// # Writes
//
// Every write is one statement, or for Rotate one batch that PostgreSQL
// runs as one implicit transaction (one explicit transaction with a
// Limit, see Session limits), so nothing is ever half-written. Update
// merges a Delta into the row in SQL,
//
//	data = ((data - $removed::text[]) || $patch::jsonb)   -- or '{}'::jsonb || $patch with Clear
//
// with forward-only GREATEST for the activity times, and only on a row
// that is live at that moment (WHERE key = $1 AND expires_at > $now): it
// can never bring back a session that was deleted or expired. Rotate
// moves a row by updating its key, which keeps the row one row for
// concurrent readers and for a concurrent DeleteUser. Expired rows are
// invisible to every method and are deleted by a sweeper in chunks, by
// one instance at a time (a PostgreSQL advisory lock).
//
// # Durability
//
// Create, Rotate, Delete, DeleteUser and an Update that changes Meta
// commit as the server is configured to (synchronous_commit, on by
// default): when they return, they survive a crash. An Update of data and
// activity alone, what most requests write, sets synchronous_commit off
// for its own transaction, so it does not wait for the WAL flush, about
// half of what a write costs on a disk that honors fsync. It is visible
// to everyone at once and cannot be lost half-way; what a crash may lose
// is the last few hundred milliseconds of such updates, never a
// revocation or a login: the WAL is written in order, so the flush a
// later synchronous commit waits for (a logout, say) makes every earlier
// update durable with it, and a lost update cannot bring back what a
// delete removed. Options.SyncUpdates turns this off. With synchronous
// replication, such updates do not wait for standbys either.
//
// # Session limits
//
// A Rotate whose Delta carries a hallpass.Limit runs as one transaction,
// whose statements after BEGIN go out in one pipeline. It first takes a
// transaction-level advisory lock named after the table and the user the
// record has afterwards, pg_advisory_xact_lock(hashtextextended(name, 0));
// then it moves the row as any Rotate does, locks the user's other live
// rows (FOR UPDATE, so that one being rotated meanwhile is seen under its
// new key), and either counts them, refusing with
// hallpass.ErrTooManySessions and rolling back when there are Max or more
// (RefuseNew), or deletes all but the newest Max-1 of them: earliest
// auth_time first (NULL, the zero time, before any other), ties broken by
// the handle compared bytewise, whatever the database's collation. The
// deletion notifies the deleted keys as Delete does, so that every cache
// drops them, and Limit.Evicted gets their handles once the transaction
// has committed. The user's other rows are read through the user_id
// index.
//
// The lock makes limited Rotates into one user, on any instance, run one
// at a time, so that each counts what the others did; a row lock could
// not, since a session signed in meanwhile was not the user's row when
// the count began. It is taken before the move: a Rotate that held the
// row it moves while waiting for the lock could deadlock with the
// holder, which may be ending that very session. Rotates without a Limit
// take no lock and cost what they always did; a session that becomes the
// user's through one of them, or through Create, is not held back. A
// limited Rotate costs three round trips (BEGIN, the pipeline, COMMIT),
// and one more without Meta, where the record's user is read first (and
// checked again under the lock; if it changed meanwhile, the Rotate
// starts over). Two limited Rotates that each end a session the other is
// moving can still deadlock; PostgreSQL then fails one after
// deadlock_timeout (1 s by default), and it starts over.
//
// Until it is swept, Load reports an expired row as a
// *hallpass.ExpiredError, which matches hallpass.ErrNotFound and carries
// the record, so the engine can say which deadline passed.
//
// # Data
//
// Data is a jsonb object, so values come back as equal JSON, not as the
// same bytes: whitespace, key order, escapes and number spelling may
// change. jsonb cannot hold the character U+0000 (\u0000 in JSON) in a
// string, key or value: a write with one fails with ErrNUL and changes
// nothing. Keys that are not valid UTF-8 are stored, and removed, with
// each bad byte replaced by U+FFFD, as encoding/json does.
//
// # Failures
//
// Every call is bounded by Options.Timeout, so a database that stops
// answering makes calls fail, and the Manager answer 503, instead of
// hanging requests. A statement that failed before anything was sent, as
// on a pooled connection that died while idle, is retried once on another
// connection; nothing else is retried. A write that fails may still have
// been applied (a timeout cannot tell), but only whole.
//
// # Local cache and notifications
//
// Load serves records from an in-process cache, as package redisstore's
// does from rueidis's: a read-only request normally costs no round trip,
// and a record stays cached at most Options.CacheTTL (one minute by
// default) unless a notification evicts it first. A negative CacheTTL
// turns the cache off, and every Load reads the database.
//
// Every write that changes or removes existing rows (Update, Rotate and
// the sessions a limited Rotate ends, Delete, DeleteUser) sends a NOTIFY
// in the same statement, so it fires
// only if the write commits, naming the changed keys in hex, at most 100
// per notification; an Update names its key with the version it made,
// "<hex>:<version>". Each Store LISTENs on a dedicated connection and
// evicts the keys it hears about, except for an update whose version it
// already holds; the other writes also evict their keys from their own
// Store's cache at once. Entries live at most CacheTTL, which bounds staleness even if
// a notification is lost. The cache is used only once a notification
// sent from another connection of the pool has reached the listening
// connection (a probe, on a channel of that connection's own), so that a
// connection that LISTENs without error but is never told anything, as
// through PgBouncer in transaction mode, keeps the cache off instead of
// serving stale records; such a failure is logged (once at Warn) and
// tried again about once a minute. While the listening connection is down
// (or stops answering its pings) the cache is emptied and not used; it is
// used again once LISTEN is re-established and the probe has arrived,
// with reconnects backing off up to 5 s. The listening connection is
// taken out of the pool for good: it is a connection beyond the pool's
// MaxConns, closed by Close.
//
// What the cache cannot hear, it serves for up to CacheTTL: a change made
// to the table by other means than a Store (SQL by hand, a cascade), or
// by a Store with DisableNotify. After such a change, run
//
//	SELECT pg_notify('hallpass_sessions_changes', '*')
//
// (the table's name followed by "_changes") to empty every instance's
// cache. Until this release the cache was off unless CacheTTL was set; a
// CacheTTL of 0 now means the default, one minute.
//
// With the cache on, an Update's statement also returns the row it made,
// and the Store caches it, so that a session's next request reads
// nothing: a write request is one round trip, not two. The row is cached
// only if nothing happened to the key while the write was in flight that
// the row would not include (a delete, a rotation, a newer update, the
// cache dropped); its own notification, which may arrive before or after
// the row, carries the version the cache holds and is ignored. A later
// change by any instance evicts it as any other entry. Instances of an
// earlier release, which know only plain keys, empty their whole cache on
// a versioned notification: safe, but slow, until all are upgraded.
//
// Create sends no notification: it only ever replaces a row that has
// expired, which caches already treat as absent. The sweeper sends none
// either, for the same reason. Sending NOTIFY costs every write a little,
// and concurrent writes more: PostgreSQL holds a database-wide lock from
// just before a notifying transaction commits until after its commit
// record is flushed, so notifying commits cannot share a WAL flush. The
// updates that commit without waiting for the flush (see Durability)
// hold it only briefly. A writer cannot tell whether anyone listens, so
// notifications are not skipped on its own judgement: a deployment where
// every instance turns its cache off can turn them off with
// Options.DisableNotify.
//
// # Broadcasts
//
// A Store is a hallpass.Broadcaster, so that hallpass.Revocations on
// every instance learns of a revocation at once. Broadcast sends the
// message as the payload of a NOTIFY on a channel of its own,
// "hallpass_broadcast_" followed by 32 hex digits of a SHA-256 of the
// table's name: stores on other tables of the database do not hear it,
// and any table name gives a valid channel. Messages are what the
// interface promises to carry, JSON in valid UTF-8 without NUL, of at
// most 1 KiB; Broadcast refuses anything else with ErrBroadcastMessage,
// the same error as package redisstore's. Where notifications do not
// reach the listening connection (see the probe above), broadcasts are
// not heard either, and hallpass.Revocations learns of revocations only
// by its reloads.
//
// Subscribers hear broadcasts over the listening connection, the one the
// cache uses, which LISTENs on both channels; without a cache the first
// Subscribe starts it, and it LISTENs for broadcasts only. Broadcasts
// therefore follow the connection's fortunes as the cache does: whenever
// LISTEN takes effect (and the probe has arrived), at the start or after
// the connection was lost or stopped answering, every subscriber is
// called with nil, the
// interface's "reload", since what was broadcast meanwhile was heard by
// nobody. Each subscriber is called from a goroutine of its own, with
// its own queue of at most 1024 messages, so a slow one delays neither
// the others nor the cache's invalidations; one that falls further
// behind loses what waits and gets nil instead. DisableNotify does not
// concern broadcasts: it only stops writes from notifying.
//
// The listener and the sweeper's advisory lock need session-level
// connections: behind PgBouncer, use session pooling, or a direct
// connection.
//
// # Metrics
//
// A Store is a metrics.Counter and a metrics.CacheStatser (package
// github.com/hallpass/hallpass/metrics). Count counts the live rows of
// the table, the library's own records included, with one SELECT
// count(*) on the expires_at index. CacheStats counts the Loads the local
// cache answered and those that went to the database with the cache on,
// at the cost of one atomic add per Load; with the cache off both stay 0.
package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configures a Store. The zero value, and a nil *Options, give the
// defaults.
type Options struct {
	// Table is the table's name, default "hallpass_sessions". Its indexes
	// and its notification channels are named after it (the broadcast
	// channel after a hash of it). It is quoted as an identifier, so any
	// name works, case and all, up to 52 bytes.
	Table string

	// Now returns the current time, default time.Now. Expiry is decided by
	// this clock; see the package doc.
	Now func() time.Time

	// Timeout bounds each call to the store, so that a database that stops
	// answering makes requests fail instead of hang. Default 5 s; negative
	// means no bound beyond the caller's context.
	Timeout time.Duration

	// SweepInterval is how often an instance tries to delete expired rows,
	// default one minute. Only one instance sweeps at a time. A negative
	// interval disables the sweeper; call Sweep instead.
	SweepInterval time.Duration
	// SweepChunk is how many rows one sweep statement deletes at most,
	// default 1000. Small chunks keep each statement's locks short.
	SweepChunk int

	// CacheTTL is how long the local read cache may serve a record after
	// it was read, unless a notification evicts it first. Default one
	// minute; negative turns the cache off, so that every Load reads the
	// database. The cache needs a session-level connection to LISTEN on;
	// see the package doc.
	CacheTTL time.Duration
	// CacheEntries bounds the number of cached records, default 10000.
	CacheEntries int
	// CacheBytes bounds the cache's approximate size, default 64 MiB.
	CacheBytes int64

	// SyncUpdates makes Update wait, like every other write, for its
	// commit to reach disk. By default an Update that changes only data
	// and activity (no Meta) commits with synchronous_commit off: it is
	// visible to every other transaction at once, but a database crash
	// may lose the last such updates (up to three times PostgreSQL's
	// wal_writer_delay, 600 ms by default), as Redis's default
	// appendfsync everysec may. Set it if session data carries what must
	// survive a crash, or to keep synchronous replication for updates.
	SyncUpdates bool

	// DisableNotify stops writes from sending notifications. Set it only
	// if no instance sharing the table uses the cache: it turns this
	// Store's cache off too, and cannot be combined with a positive
	// CacheTTL. Broadcast and Subscribe work as ever.
	DisableNotify bool

	// Logger receives the listener's and the sweeper's troubles, default
	// slog.Default(). Messages never contain keys or data.
	Logger *slog.Logger

	// For tests: while loseProbes holds true, the listener's probe goes
	// where it cannot arrive; probeBackoff replaces the wait after a
	// probe that did not.
	loseProbes   *atomic.Bool
	probeBackoff time.Duration
}

const (
	defaultTable          = "hallpass_sessions"
	defaultTimeout        = 5 * time.Second
	defaultConnectTimeout = 10 * time.Second
	defaultSweepInterval  = time.Minute
	defaultSweepChunk     = 1000
	defaultCacheTTL       = time.Minute
	defaultCacheEntries   = 10000
	defaultCacheBytes     = 64 << 20

	// maxTableLen leaves room for the longest suffix, "_expires_at", in
	// PostgreSQL's 63-byte identifiers, which it would silently truncate.
	maxTableLen = 63 - len("_expires_at")
)

// ErrNUL is the error, wrapped, of a write whose data holds the character
// U+0000 in a key or anywhere in a value: PostgreSQL's jsonb cannot store
// it. The write changes nothing.
var ErrNUL = errors.New("data holds the character U+0000, which jsonb cannot store")

// ErrSweepLocked is what Sweep returns when another Store, in this
// process or another, is sweeping the table.
var ErrSweepLocked = errors.New("pgstore: sweep: another instance is sweeping")

// errInvalidData does not say which field or value: those may be secrets.
var errInvalidData = errors.New("the record holds a value PostgreSQL cannot store (invalid JSON, invalid UTF-8, or NUL in text)")

// Store is a hallpass.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	owned     bool // Close closes pool
	now       func() time.Time
	realClock bool // now is time.Now
	timeout   time.Duration
	chunk     int
	log       *slog.Logger
	q         queries
	cache     *cache // nil when the cache is off
	subs      subscribers
	subQueue  int // bound of each subscriber's queue

	loseProbes   *atomic.Bool // see Options
	probeBackoff time.Duration

	bg        context.Context // the background goroutines', until Close
	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ hallpass.Store = (*Store)(nil)

// Open connects to the database at url (a PostgreSQL URL or keyword/value
// string, as pgxpool.ParseConfig reads it) and returns a Store on a pool
// of its own, which Close closes. Unless url sets connect_timeout, a
// connection attempt gives up after 10 s.
func Open(ctx context.Context, url string, opts *Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL, password and all.
		return nil, errors.New("pgstore: open: cannot parse the connection string")
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "hallpass"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// pgxpool finishes a connection attempt in the background after
		// the request that wanted it gave up, holding a place in the pool
		// meanwhile: without a bound of its own (pgxpool's default is two
		// minutes), a database that was unreachable for a moment could
		// keep the pool full of dead attempts long after it is back.
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	s, err := newStore(ctx, pool, true, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// New returns a Store on pool, which may be shared with the application.
// Close does not close pool, so close the Store first. The listener, when
// the cache is on (the default) or once Subscribe is called, takes one
// connection out of pool for good: a connection beyond the pool's
// MaxConns, which Close closes.
func New(ctx context.Context, pool *pgxpool.Pool, opts *Options) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: new: nil pool")
	}
	return newStore(ctx, pool, false, opts)
}

func newStore(ctx context.Context, pool *pgxpool.Pool, owned bool, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Table == "" {
		o.Table = defaultTable
	}
	if len(o.Table) > maxTableLen || !utf8.ValidString(o.Table) || hasNUL(o.Table) {
		return nil, fmt.Errorf("pgstore: Options.Table must be valid UTF-8 without NUL, at most %d bytes", maxTableLen)
	}
	switch {
	case o.CacheTTL > 0 && o.DisableNotify:
		return nil, errors.New("pgstore: Options.CacheTTL needs notifications; do not set DisableNotify with it")
	case o.CacheTTL == 0 && !o.DisableNotify:
		o.CacheTTL = defaultCacheTTL
	}
	realClock := o.Now == nil
	if realClock {
		o.Now = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.SweepChunk <= 0 {
		o.SweepChunk = defaultSweepChunk
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = defaultCacheEntries
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}

	s := &Store{
		pool:      pool,
		owned:     owned,
		now:       o.Now,
		realClock: realClock,
		timeout:   o.Timeout,
		chunk:     o.SweepChunk,
		log:       o.Logger,
		q:         newQueries(o.Table, !o.DisableNotify, !o.SyncUpdates),
		subQueue:  defaultSubscriberQueue,

		loseProbes:   o.loseProbes,
		probeBackoff: cmp.Or(o.probeBackoff, probeBackoff),
	}
	if err := s.createSchema(ctx); err != nil {
		return nil, fail(ctx, "create schema", err)
	}

	s.bg, s.stop = context.WithCancel(context.Background())
	if o.CacheTTL > 0 {
		s.cache = newCache(o.CacheTTL, o.CacheEntries, o.CacheBytes)
		s.subs.started()
		s.startListener()
	}
	if o.SweepInterval > 0 {
		s.wg.Go(func() { s.sweepLoop(s.bg, o.SweepInterval) })
	}
	return s, nil
}

// startListener starts the listener, which runs until Close. It runs
// once per Store: for the cache from the start, or for the first
// Subscribe.
func (s *Store) startListener() { s.wg.Go(func() { s.listenLoop(s.bg) }) }

// createSchema creates the table and its indexes unless they all exist.
// It checks first because CREATE INDEX IF NOT EXISTS still takes a lock
// that blocks writers, which every instance starting up would cause; and
// it serializes creators on an advisory lock, because two concurrent
// CREATE TABLE IF NOT EXISTS can both try and one fail.
func (s *Store) createSchema(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var exists bool
	err := s.pool.QueryRow(ctx, s.q.schemaExists, s.q.tableIdent, s.q.userIndexIdent, s.q.expiresIndexIdent).Scan(&exists)
	if err != nil || exists {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "hallpass-schema:"+s.q.table); err != nil {
			return err
		}
		for _, stmt := range s.q.schema {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close stops the sweeper and the listener, waiting for them, ends every
// subscription (without waiting for a subscriber's call in progress), and
// closes the pool if Open made it. It always returns nil; the error is
// there for io.Closer.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// First, so that no Subscribe starts the listener after the
		// wait below.
		s.subs.close()
		s.stop()
		s.wg.Wait()
		if s.owned {
			s.pool.Close()
		}
	})
	return nil
}

// opCtx bounds one call by Options.Timeout. A caller's deadline that
// comes first already bounds it, and a timer of our own would cost the
// call a few allocations and pgx a context to watch for nothing.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.timeout > 0 {
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > s.timeout {
			return context.WithTimeout(ctx, s.timeout)
		}
	}
	return ctx, noCancel
}

func noCancel() {}

// nowMS is the store's current time. Rows with expires_at <= nowMS are
// expired.
func (s *Store) nowMS() int64 { return s.now().UnixMilli() }

// fail wraps err with what was being done. If the caller's ctx ended, the
// error says so too, so errors.Is(err, context.Canceled) holds however
// pgx phrased it. PostgreSQL's complaints about data are replaced by a
// message of ours: theirs may quote the offending value.
func fail(ctx context.Context, op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "22P05": // untranslatable_character: \u0000 in jsonb
			err = ErrNUL
		case len(pe.Code) == 5 && pe.Code[:2] == "22": // data_exception
			err = fmt.Errorf("%w (SQLSTATE %s)", errInvalidData, pe.Code)
		}
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("pgstore: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// isUniqueViolation reports whether err is PostgreSQL refusing a duplicate
// key.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// retry runs f, and runs it once more if it failed before sending
// anything: typically on a pooled connection that died while idle, as
// after a network cut, which would otherwise fail one request per dead
// connection even though the database is back.
func retry(ctx context.Context, f func() error) error {
	err := f()
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		err = f()
	}
	return err
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }
