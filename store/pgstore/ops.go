package pgstore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Create implements hallpass.Store.
func (s *Store) Create(ctx context.Context, r *hallpass.Record) error {
	const op = "create"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	data, err := encodeObject(r.Data)
	if err != nil {
		return fail(ctx, op, err)
	}
	if data == nil {
		data = []byte("{}")
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	var tag pgconn.CommandTag
	err = retry(octx, func() (err error) {
		tag, err = s.pool.Exec(octx, s.q.create,
			r.Key[:], r.Handle, sqlvalue.NullString(r.UserID), sqlvalue.Millis(r.AuthTime), r.AuthLevel,
			r.Remembered, sqlvalue.Millis(r.ReauthAt), r.Persistent, sqlvalue.Millis(r.AbsoluteDeadline),
			sqlvalue.Millis(r.LastSeen), sqlvalue.Millis(r.IdleDeadline), r.LastIP, r.LastUA,
			sqlvalue.Millis(r.CreatedAt), r.CreatedIP, r.CreatedUA, data,
			s.nowMS())
		return err
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return hallpass.ErrExists
	}
	// The row may have replaced an expired one this cache still holds.
	s.cache.evict(r.Key)
	return nil
}

// Load implements hallpass.Store. A record that has expired but is not
// swept yet gives a *hallpass.ExpiredError, which matches
// hallpass.ErrNotFound and tells the caller which deadline passed.
//
// With the cache on, a hit costs no allocation and no round trip; a miss
// fills the cache unless the key was written, or the cache dropped,
// while the row was being read, so that a read that raced a write cannot
// put back what the write's eviction removed.
func (s *Store) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	const op = "load"
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	// Reading the clock is most of what a hit costs, so with the default
	// clock one reading serves both the TTL and expiry.
	wall := time.Now()
	now := wall
	if !s.realClock {
		now = s.now()
	}
	gen, r := s.cache.get(key, wall)
	if r != nil {
		if !r.Expired(now) {
			s.cache.hit()
			return r, nil
		}
		s.cache.evict(key) // the database knows whether it is still expired
		gen, _ = s.cache.get(key, wall)
	}
	s.cache.miss()
	return s.load(ctx, key, now, gen)
}

// load is Load's database half. It is a function of its own so that key,
// which the query needs on the heap, is copied there only on a miss.
func (s *Store) load(ctx context.Context, key hallpass.Key, now time.Time, gen uint64) (*hallpass.Record, error) {
	const op = "load"
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	var sc scanned
	err := retry(octx, func() error {
		rows, err := s.pool.Query(octx, s.q.load, key[:])
		if err != nil {
			return err
		}
		defer rows.Close()
		if !rows.Next() {
			if err := rows.Err(); err != nil {
				return err
			}
			return pgx.ErrNoRows
		}
		if sc, err = readRecord(rows, true); err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, hallpass.ErrNotFound
	}
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	if sc.expiresAt <= now.UnixMilli() {
		return nil, &hallpass.ExpiredError{Record: sc.r}
	}
	s.cache.put(key, sc.r, gen, sc.dataSize)
	return sc.r, nil
}

// Update implements hallpass.Store in one statement; see buildUpdate.
// With the cache on, the statement returns the updated row, and the cache
// keeps it, so that the session's next request need not read it.
func (s *Store) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	const op = "update"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	patch, remove, err := encodeDelta(d.Set, d.Remove, d.Clear)
	if err != nil {
		return fail(ctx, op, err)
	}
	fill := s.cache != nil
	u := s.q.buildUpdate(key, nil, &d, patch, remove, s.nowMS(), s.payload(key), fill)
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	s.cache.beginWrite(key)
	var (
		sc      scanned
		changed bool
	)
	if fill {
		err = retry(octx, func() error {
			sc = scanned{}
			rows, err := s.pool.Query(octx, u.sql, u.args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			if rows.Next() {
				if sc, err = readRecord(rows, true); err != nil {
					return err
				}
			}
			rows.Close()
			return rows.Err()
		})
		changed = sc.r != nil
	} else {
		var tag pgconn.CommandTag
		err = retry(octx, func() (err error) {
			tag, err = s.pool.Exec(octx, u.sql, u.args...)
			return err
		})
		changed = tag.RowsAffected() > 0
	}
	if err != nil || !changed {
		s.cache.endWrite(key, nil, 0)
		// Even a failed write may have committed.
		s.cache.evict(key)
	} else {
		s.cache.endWrite(key, sc.r, sc.dataSize)
	}
	if err != nil {
		return fail(ctx, op, err)
	}
	if !changed {
		return hallpass.ErrNotFound
	}
	return nil
}

// Rotate implements hallpass.Store. It updates the row's key rather than
// copying the row and deleting the old one: under READ COMMITTED a
// concurrent DeleteUser that finds the old row waits for the rotation and
// then follows the update to the new row, where it would miss a row
// inserted anew. An expired row at to is absent, so it is deleted first,
// in the same implicit transaction. A Rotate with a Limit is a
// transaction of its own; see rotateLimited.
func (s *Store) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	const op = "rotate"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	patch, remove, err := encodeDelta(d.Set, d.Remove, d.Clear)
	if err != nil {
		return fail(ctx, op, err)
	}
	now := s.nowMS()
	octx, cancel := s.opCtx(ctx)
	defer cancel()

	if from == to {
		// Updating a key to itself conflicts with nothing, so the check
		// the contract asks for (a live from is a taken to) is made here.
		var live bool
		err := retry(octx, func() error {
			return s.pool.QueryRow(octx, s.q.liveKey, from[:], now).Scan(&live)
		})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return hallpass.ErrNotFound
		case err != nil:
			return fail(ctx, op, err)
		}
		return hallpass.ErrExists
	}

	if lim := d.Limit; lim != nil && lim.Max > 0 && (d.Meta == nil || d.Meta.UserID != "") {
		evicted, err := s.rotateLimited(octx, from, to, &d, patch, remove, now)
		switch {
		case err == nil:
			if lim.Evicted != nil {
				for _, h := range evicted {
					lim.Evicted(h)
				}
			}
			return nil
		case errors.Is(err, hallpass.ErrNotFound), errors.Is(err, hallpass.ErrExists), errors.Is(err, hallpass.ErrTooManySessions):
			return err
		}
		return fail(ctx, op, err)
	}

	u := s.q.buildUpdate(from, &to, &d, patch, remove, now, s.rotatePayload(from, to), false)
	var tag pgconn.CommandTag
	err = retry(octx, func() error {
		b := &pgx.Batch{}
		b.Queue(s.q.dropExpired, to[:], now)
		b.Queue(u.sql, u.args...)
		br := s.pool.SendBatch(octx, b)
		_, err := br.Exec()
		if err == nil {
			tag, err = br.Exec()
		}
		return errors.Join(err, br.Close())
	})
	s.cache.evict(from)
	s.cache.evict(to)
	switch {
	case isUniqueViolation(err):
		return hallpass.ErrExists
	case err != nil:
		return fail(ctx, op, err)
	case tag.RowsAffected() == 0:
		return hallpass.ErrNotFound
	}
	return nil
}

// payload returns the notification payload of a write of key, or "" if
// writes do not notify, so that a store that does not notify does not
// build it.
func (s *Store) payload(key hallpass.Key) string {
	if !s.q.notify {
		return ""
	}
	return key.String()
}

// rotatePayload is payload for a Rotate from one key to another.
func (s *Store) rotatePayload(from, to hallpass.Key) string {
	if !s.q.notify {
		return ""
	}
	return from.String() + "," + to.String()
}

// errUserChanged reports that the record a Rotate without Meta moves was
// given another user between the read that chose the lock and the lock.
var errUserChanged = errors.New("the session changed users during the rotation")

// limitedAttempts bounds how often rotateLimited starts over: after the
// record changed users under it, or after PostgreSQL broke a deadlock by
// failing it (two logins that each end a session the other is moving).
const limitedAttempts = 3

// rotateLimited is Rotate with a limit, in one transaction. It returns
// the handles of the sessions it ended.
//
// Limited Rotates into one user serialize on an advisory lock of that
// user, taken before anything else, so that the count of one sees the
// outcome of the others: row locks cannot do it, as a session rotated
// into the user is a row that was not the user's when the count began.
// Taking the lock first, rather than after the move, keeps a Rotate from
// waiting for the lock while it holds the row of a session that the
// holder of the lock is ending. Unlimited Rotates take no lock: they are
// not counted against anyone's limit, and pay nothing for it.
//
// Everything after BEGIN is sent as one pipeline: a login costs three
// round trips (BEGIN, the statements, COMMIT), four without Meta, where
// the user must be read first.
func (s *Store) rotateLimited(ctx context.Context, from, to hallpass.Key, d *hallpass.Delta, patch []byte, remove []string, now int64) ([]string, error) {
	byMeta := d.Meta != nil
	var user string
	if byMeta {
		user = d.Meta.UserID
	}
	u := s.q.buildUpdate(from, &to, d, patch, remove, now, s.rotatePayload(from, to), false)
	for attempt := 1; ; attempt++ {
		if !byMeta {
			// Unlocked: the transaction checks it once the lock is held.
			err := retry(ctx, func() error {
				return s.pool.QueryRow(ctx, s.q.userOf, from[:], now).Scan(&user)
			})
			if errors.Is(err, pgx.ErrNoRows) {
				return nil, hallpass.ErrNotFound
			}
			if err != nil {
				return nil, err
			}
			if rotateUserHook != nil {
				rotateUserHook()
			}
		}
		var evicted, payloads []string
		err := retry(ctx, func() error {
			return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) (err error) {
				evicted, payloads, err = s.rotateTx(ctx, tx, from, to, d.Limit, u, user, !byMeta, now)
				return err
			})
		})
		s.cache.evict(from)
		s.cache.evict(to)
		if err == nil {
			// After a failure, what was deleted is unknown; the
			// notifications, if it committed, tell this cache too.
			for _, p := range payloads {
				s.cache.evictPayload(p)
			}
		}
		if (errors.Is(err, errUserChanged) || isDeadlock(err)) && attempt < limitedAttempts {
			continue
		}
		return evicted, err
	}
}

// rotateTx runs rotateLimited's statements in tx: the lock, with check
// the check that the record at from still has user, the move u, and the
// count or the eviction. It returns the handles of the sessions it ended
// and the notification payloads naming their keys.
func (s *Store) rotateTx(ctx context.Context, tx pgx.Tx, from, to hallpass.Key, lim *hallpass.Limit, u update, user string, check bool, now int64) (evicted, payloads []string, err error) {
	b := &pgx.Batch{}
	limited := user != ""
	if limited {
		b.Queue(s.q.lockUser, s.q.userLock+user)
	}
	if check {
		b.Queue(s.q.userOfLocked, from[:], now)
	}
	b.Queue(s.q.dropExpired, to[:], now)
	b.Queue(u.sql, u.args...)
	if limited && lim.RefuseNew {
		b.Queue(s.q.countPeers, user, now, to[:])
	} else if limited {
		b.Queue(s.q.lockPeers, user, now, to[:])
		b.Queue(s.q.evict, user, now, to[:], int64(lim.Max-1), s.q.channel)
	}
	br := tx.SendBatch(ctx, b)
	defer br.Close()

	if limited {
		if _, err := br.Exec(); err != nil {
			return nil, nil, err
		}
	}
	if check {
		var got string
		err := br.QueryRow().Scan(&got)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, nil, hallpass.ErrNotFound
		case err != nil:
			return nil, nil, err
		case got != user:
			return nil, nil, errUserChanged
		}
	}
	if _, err := br.Exec(); err != nil {
		return nil, nil, err
	}
	tag, err := br.Exec()
	switch {
	case isUniqueViolation(err):
		return nil, nil, hallpass.ErrExists
	case err != nil:
		return nil, nil, err
	case tag.RowsAffected() == 0:
		return nil, nil, hallpass.ErrNotFound
	case !limited:
		return nil, nil, br.Close()
	}

	if lim.RefuseNew {
		var others int64
		if err := br.QueryRow().Scan(&others); err != nil {
			return nil, nil, err
		}
		if others >= int64(lim.Max) {
			return nil, nil, hallpass.ErrTooManySessions
		}
		return nil, nil, br.Close()
	}
	if _, err := br.Exec(); err != nil {
		return nil, nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var (
			payload string
			handles []string
		)
		if err := rows.Scan(&payload, &handles); err != nil {
			rows.Close()
			return nil, nil, err
		}
		payloads = append(payloads, payload)
		evicted = append(evicted, handles...)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	return evicted, payloads, br.Close()
}

// rotateUserHook, when set by a test, runs between rotateLimited's read
// of the user and its transaction.
var rotateUserHook func()

// isDeadlock reports whether err is PostgreSQL ending a transaction to
// break a deadlock: it was rolled back, and may run again.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

// Delete implements hallpass.Store.
func (s *Store) Delete(ctx context.Context, keys ...hallpass.Key) error {
	const op = "delete"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	if len(keys) == 0 {
		return nil
	}
	ks := make([][]byte, len(keys))
	for i := range keys {
		ks[i] = keys[i][:]
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	err := retry(octx, func() error {
		_, err := s.pool.Exec(octx, s.q.deleteKeys, ks, s.q.channel)
		return err
	})
	for _, k := range keys {
		s.cache.evict(k)
	}
	if err != nil {
		return fail(ctx, op, err)
	}
	return nil
}

// ListUser implements hallpass.Store. It reads through the partial index
// on user_id; an empty userID, a guest, matches nothing. It never reads
// the cache: listing is rare, and must see every session.
func (s *Store) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	const op = "list user"
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	if userID == "" {
		return nil, nil
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	var out []*hallpass.Record
	err := retry(octx, func() error {
		out = out[:0]
		rows, err := s.pool.Query(octx, s.q.listUser, userID, s.nowMS())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			sc, err := readRecord(rows, false)
			if err != nil {
				return err
			}
			out = append(out, sc.r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}

// DeleteUser implements hallpass.Store in one statement. It counts only
// live records; expired ones of the user are left to the sweeper, as they
// are already gone for every reader.
func (s *Store) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	const op = "delete user"
	if err := ctx.Err(); err != nil {
		return 0, fail(ctx, op, err)
	}
	if userID == "" {
		return 0, nil
	}
	ks := make([][]byte, len(keep))
	for i := range keep {
		ks[i] = keep[i][:]
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	var payloads []string
	err := retry(octx, func() error {
		payloads = payloads[:0]
		rows, err := s.pool.Query(octx, s.q.deleteUser, userID, s.nowMS(), ks, s.q.channel)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				return err
			}
			payloads = append(payloads, p)
		}
		return rows.Err()
	})
	if err != nil {
		// Whatever was deleted is unknown; the notifications, if it
		// committed, will tell this cache too.
		return 0, fail(ctx, op, err)
	}
	n := 0
	for _, p := range payloads {
		n += strings.Count(p, ",") + 1
		s.cache.evictPayload(p)
	}
	return n, nil
}

// Count returns how many live records the table holds, for package
// metrics (its Counter interface): every row whose expires_at is after
// the store's clock (Options.Now, as for every other read), whoever wrote
// it. The library's own records (revocation list, audit log) count too,
// and so do the sessions of every instance sharing the table. Expired
// rows that are not swept yet do not. It never reads the cache.
//
// It is one SELECT count(*) on a range of the expires_at index, which
// PostgreSQL reads as an index-only scan where the table's visibility map
// is mostly set, as autovacuum keeps it; where it is not, the planner may
// find the table itself cheaper to read. Either way the cost grows with
// the number of sessions, which is what a scrape pays: bound it with
// metrics' Options.ScrapeTimeout. Options.Timeout bounds it too.
func (s *Store) Count(ctx context.Context) (int, error) {
	const op = "count"
	if err := ctx.Err(); err != nil {
		return 0, fail(ctx, op, err)
	}
	now := s.nowMS()
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	var n int64
	err := retry(octx, func() error {
		return s.pool.QueryRow(octx, s.q.count, now).Scan(&n)
	})
	if err != nil {
		return 0, fail(ctx, op, err)
	}
	return int(n), nil
}

// CacheStats returns how many Loads the local cache answered (hits) and
// how many went to the database with the cache on (misses), since the
// store was opened, for package metrics (its CacheStatser interface). A
// Load whose cached record had expired by Options.Now, and so was read
// again, is a miss; so is a Load while the cache is not in use, its
// listening connection being down, and a Load that failed or found
// nothing once it asked the database. Loads refused before asking anyone
// (a context already ended) are neither, and other methods never count.
// With the cache off there is no cache to hit or miss, and both stay 0.
//
// It is two atomic loads, read one after the other rather than as one
// snapshot, so a scrape during Loads may pair counts a Load apart.
func (s *Store) CacheStats() (hits, misses uint64) {
	if s.cache == nil {
		return 0, 0
	}
	return s.cache.stats.hits.Load(), s.cache.stats.misses.Load()
}

// Sweep deletes expired rows, at most Options.SweepChunk per statement,
// until none is left, and returns how many it deleted. The background
// sweeper calls it every Options.SweepInterval. If another Store is
// sweeping the same table, in any process, it returns ErrSweepLocked at
// once: the session-level advisory lock it holds for the whole sweep
// keeps instances from deleting the same rows in turn.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	const op = "sweep"
	if err := ctx.Err(); err != nil {
		return 0, fail(ctx, op, err)
	}
	actx, cancel := s.opCtx(ctx)
	c, err := s.pool.Acquire(actx)
	if err != nil {
		cancel()
		return 0, fail(ctx, op, err)
	}
	var locked bool
	err = c.QueryRow(actx, s.q.lockSweep, s.q.sweepLock).Scan(&locked)
	cancel()
	if err != nil || !locked {
		c.Release()
		if err != nil {
			return 0, fail(ctx, op, err)
		}
		return 0, ErrSweepLocked
	}
	defer func() {
		uctx, cancel := s.opCtx(context.WithoutCancel(ctx))
		defer cancel()
		if _, err := c.Exec(uctx, s.q.unlockSweep, s.q.sweepLock); err != nil {
			// The lock ends with the session: a connection that may still
			// hold it must not go back to the pool.
			c.Conn().Close(uctx)
		}
		c.Release()
	}()

	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fail(ctx, op, err)
		}
		cctx, cancel := s.opCtx(ctx)
		tag, err := c.Exec(cctx, s.q.sweep, s.nowMS(), s.chunk)
		cancel()
		if err != nil {
			return total, fail(ctx, op, err)
		}
		n := int(tag.RowsAffected())
		total += n
		if n < s.chunk {
			return total, nil
		}
		if sweepChunkHook != nil {
			sweepChunkHook()
		}
	}
}

// sweepChunkHook, when set by a test, runs between chunks of a sweep.
var sweepChunkHook func()
