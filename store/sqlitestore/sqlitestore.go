// Package sqlitestore is a persistent hallpass.Store in an SQLite file,
// on the pure-Go driver modernc.org/sqlite (no cgo).
//
// One table holds the sessions. Open and New create it if it is missing;
// with the default name it is:
//
//	CREATE TABLE IF NOT EXISTS hallpass_sessions (
//		key               BLOB NOT NULL PRIMARY KEY CHECK (length(key) = 32), -- hallpass.Key
//		handle            TEXT NOT NULL,
//		user_id           TEXT,              -- NULL for a guest
//		auth_time         INTEGER,           -- unix ms; NULL for the zero time
//		auth_level        TEXT NOT NULL DEFAULT '',
//		remembered        INTEGER NOT NULL DEFAULT 0,
//		reauth_at         INTEGER,
//		persistent        INTEGER NOT NULL DEFAULT 0,
//		absolute_deadline INTEGER,
//		last_seen         INTEGER,
//		idle_deadline     INTEGER,
//		last_ip           TEXT NOT NULL DEFAULT '',
//		last_ua           TEXT NOT NULL DEFAULT '',
//		created_at        INTEGER,
//		created_ip        TEXT NOT NULL DEFAULT '',
//		created_ua        TEXT NOT NULL DEFAULT '',
//		data              TEXT NOT NULL DEFAULT '{}', -- JSON object
//		version           INTEGER NOT NULL,
//		expires_at        INTEGER NOT NULL GENERATED ALWAYS AS (
//			coalesce(min(idle_deadline, absolute_deadline),
//				idle_deadline, absolute_deadline, 9223372036854775807)
//		) STORED
//	);
//	CREATE INDEX IF NOT EXISTS hallpass_sessions_user_id
//		ON hallpass_sessions (user_id) WHERE user_id IS NOT NULL;
//	CREATE INDEX IF NOT EXISTS hallpass_sessions_expires_at
//		ON hallpass_sessions (expires_at);
//
// Times are unix milliseconds: the store keeps times to the millisecond
// and no finer. A zero time is NULL. expires_at is Record.ExpiresAt
// computed by SQLite itself, so no write can leave it stale; a record with
// neither deadline never expires and gets the largest integer instead of
// NULL, so that "expires_at > now" alone tells a live row and the sweeper's
// index range never contains it.
//
// Every read and write treats a row whose expires_at is not after now as
// absent; a background sweeper deletes such rows in chunks. Until it does,
// Load reports such a row as a *hallpass.ExpiredError, which matches
// hallpass.ErrNotFound and carries the record, so the caller can tell
// which deadline passed.
//
// Data keys come back as JSON spells them: a key that is not valid UTF-8
// has each bad byte replaced by U+FFFD.
package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hallpass/hallpass"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Options configures a Store. The zero value, and a nil *Options, give the
// defaults.
type Options struct {
	// Table is the table's name, default "hallpass_sessions". Its indexes
	// are named after it. It must be a plain SQL identifier: ASCII letters,
	// digits and underscores, not starting with a digit.
	Table string
	// SweepInterval is how often expired rows are deleted, default one
	// minute. A negative interval disables the sweeper; call Sweep instead.
	SweepInterval time.Duration
	// SweepChunk is how many rows one sweep statement deletes at most,
	// default 500. Deleting in chunks keeps each write transaction short,
	// so requests are not held up behind a large sweep.
	SweepChunk int
	// Now returns the current time, default time.Now. Tests set it.
	Now func() time.Time
}

const (
	defaultTable         = "hallpass_sessions"
	defaultSweepInterval = time.Minute
	defaultSweepChunk    = 500

	// busyTimeoutMS is how long a connection waits for another's write
	// lock before failing with SQLITE_BUSY. Writes within this process are
	// queued by the single writer connection and never reach it; it is for
	// other processes, or other pools, writing the same file.
	busyTimeoutMS = 10000

	// never is expires_at for a record with no deadline.
	never = math.MaxInt64
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Store is a hallpass.Store in an SQLite database. It is safe for
// concurrent use.
type Store struct {
	w     *sql.DB // writes; at most one connection when Open made it
	r     *sql.DB // reads; the same as w when New was given a *sql.DB
	owned bool    // Close closes w and r
	now   func() time.Time
	chunk int
	q     queries
	ws    *stmtCache // statements prepared on w
	rs    *stmtCache // statements prepared on r

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ hallpass.Store = (*Store)(nil)

// Open opens or creates the SQLite database at path and returns a Store
// that keeps its sessions there. Close closes the database.
//
// The file is put in WAL mode, so reads never wait for writes. Writes go
// through a single connection, so concurrent writers queue in Go instead
// of polling SQLite's lock; reads use a pool of their own. A new file is
// created readable by its owner only, as it holds session data. The path
// ":memory:" gives a private in-memory database on one connection.
func Open(path string, opts *Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlitestore: open: empty path")
	}
	if path == ":memory:" {
		db, err := sql.Open("sqlite", "file::memory:?"+dsnParams(false))
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: open: %w", err)
		}
		// Every connection to :memory: is a database of its own.
		db.SetMaxOpenConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
		s, err := newStore(db, db, true, opts)
		if err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}

	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	// A file: URI, so that '?', '#' and '%' in the path stay part of it;
	// absolute, because in "file://rel.db" SQLite reads rel.db as a host.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	uri := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
	if !strings.HasPrefix(uri, "file:") {
		return nil, errors.New("sqlitestore: open: cannot make a URI of the path")
	}

	w, err := sql.Open("sqlite", uri+"?"+dsnParams(false))
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)

	r, err := sql.Open("sqlite", uri+"?"+dsnParams(true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitestore: open: %w", err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)

	// newStore creates the schema through w before any reader connects, so
	// the readers find the file already in WAL mode.
	s, err := newStore(w, r, true, opts)
	if err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	return s, nil
}

// dsnParams returns the connection parameters. WAL lets readers work while
// a write is under way. synchronous stays at SQLite's default, FULL: with
// NORMAL a power cut could undo a committed logout and bring the session
// back.
func dsnParams(readOnly bool) string {
	v := url.Values{}
	v.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	if readOnly {
		v.Add("_pragma", "query_only(1)")
	} else {
		v.Add("_pragma", "journal_mode(WAL)")
	}
	return v.Encode()
}

// New returns a Store that keeps its sessions in db, which must be opened
// with the driver of modernc.org/sqlite, for example an application's own
// database that also holds its users. Close does not close db.
//
// The Store works with any pool settings, as it takes its write locks with
// BEGIN IMMEDIATE itself, but db should be opened with a busy timeout, or
// concurrent writers fail with SQLITE_BUSY instead of waiting, and should
// be in WAL mode, or reads wait for writes:
//
//	sql.Open("sqlite", "file:app.db?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
func New(db *sql.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlitestore: new: nil *sql.DB")
	}
	return newStore(db, db, false, opts)
}

func newStore(w, r *sql.DB, owned bool, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Table == "" {
		o.Table = defaultTable
	}
	if !identRE.MatchString(o.Table) {
		return nil, errors.New("sqlitestore: Options.Table must be letters, digits and underscores, not starting with a digit")
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.SweepChunk <= 0 {
		o.SweepChunk = defaultSweepChunk
	}
	if o.Now == nil {
		o.Now = time.Now
	}

	ctx := context.Background()
	if _, err := w.ExecContext(ctx, schema(o.Table)); err != nil {
		return nil, fmt.Errorf("sqlitestore: create schema: %w", err)
	}

	s := &Store{
		w:     w,
		r:     r,
		owned: owned,
		now:   o.Now,
		chunk: o.SweepChunk,
		q:     newQueries(o.Table),
		ws:    newStmtCache(w),
		rs:    newStmtCache(r),
		stop:  func() {},
		done:  make(chan struct{}),
	}
	if o.SweepInterval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		go s.sweepLoop(ctx, o.SweepInterval)
	} else {
		close(s.done)
	}
	return s, nil
}

func schema(t string) string {
	return `CREATE TABLE IF NOT EXISTS ` + t + ` (
	key               BLOB NOT NULL PRIMARY KEY CHECK (length(key) = 32),
	handle            TEXT NOT NULL,
	user_id           TEXT,
	auth_time         INTEGER,
	auth_level        TEXT NOT NULL DEFAULT '',
	remembered        INTEGER NOT NULL DEFAULT 0,
	reauth_at         INTEGER,
	persistent        INTEGER NOT NULL DEFAULT 0,
	absolute_deadline INTEGER,
	last_seen         INTEGER,
	idle_deadline     INTEGER,
	last_ip           TEXT NOT NULL DEFAULT '',
	last_ua           TEXT NOT NULL DEFAULT '',
	created_at        INTEGER,
	created_ip        TEXT NOT NULL DEFAULT '',
	created_ua        TEXT NOT NULL DEFAULT '',
	data              TEXT NOT NULL DEFAULT '{}',
	version           INTEGER NOT NULL,
	expires_at        INTEGER NOT NULL GENERATED ALWAYS AS (
		coalesce(min(idle_deadline, absolute_deadline),
			idle_deadline, absolute_deadline, ` + strconv.FormatInt(never, 10) + `)
	) STORED
);
CREATE INDEX IF NOT EXISTS ` + t + `_user_id ON ` + t + ` (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ` + t + `_expires_at ON ` + t + ` (expires_at);`
}

// Close stops the sweeper and, if Open opened the database, closes it. It
// waits for a sweep under way to stop.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		<-s.done
		if err := errors.Join(s.ws.close(), s.rs.close()); err != nil {
			s.closeErr = fmt.Errorf("sqlitestore: close: %w", err)
		}
		if s.owned {
			err := s.w.Close()
			if s.r != s.w {
				err = errors.Join(err, s.r.Close())
			}
			if err != nil && s.closeErr == nil {
				s.closeErr = fmt.Errorf("sqlitestore: close: %w", err)
			}
		}
	})
	return s.closeErr
}

// nowMS is the store's current time. Rows with expires_at <= nowMS are
// expired.
func (s *Store) nowMS() int64 { return s.now().UnixMilli() }

// fail wraps err with what was being done. If ctx ended, the error says so
// too: SQLite reports an interrupted statement in its own words, and
// callers test for context.Canceled with errors.Is.
func fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlitestore: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, err)
}

// isPrimaryKeyViolation reports whether err is SQLite's refusal of a
// duplicate primary key.
func isPrimaryKeyViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// inTx runs fn in a write transaction on one connection of w. It issues
// BEGIN IMMEDIATE itself rather than relying on the DSN's _txlock, so that
// a *sql.DB given to New works too: a deferred transaction that reads
// before it writes can fail with SQLITE_BUSY without waiting, where an
// immediate one takes the write lock up front through the busy timeout.
func (s *Store) inTx(ctx context.Context, fn func(c *sql.Conn) error) error {
	c, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	bg := context.WithoutCancel(ctx)
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		// The driver may report ctx's end for a BEGIN that did run; the
		// connection must not go back to the pool inside a transaction.
		_, _ = c.ExecContext(bg, "ROLLBACK")
		return err
	}
	err = fn(c)
	if err == nil {
		// Once fn is done the outcome is decided: commit even if ctx ends
		// now, so the error returned tells the truth about what happened.
		if _, err = c.ExecContext(bg, "COMMIT"); err == nil {
			return nil
		}
	}
	// If ROLLBACK fails, SQLite may have rolled back already (an
	// interrupted statement can do that) or the connection may be stuck in
	// the transaction; discarding it is right either way.
	if _, rbErr := c.ExecContext(bg, "ROLLBACK"); rbErr != nil {
		_ = c.Raw(func(any) error { return driver.ErrBadConn })
	}
	return err
}
