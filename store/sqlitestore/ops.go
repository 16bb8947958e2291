package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
)

// columns are the stored columns in the order scanRecord reads them and
// Create writes them. expires_at is not among them: SQLite computes it.
const columns = `key, handle, user_id, auth_time, auth_level, remembered,
	reauth_at, persistent, absolute_deadline, last_seen, idle_deadline,
	last_ip, last_ua, created_at, created_ip, created_ua, data, version`

// queries holds the fixed SQL for one table name.
type queries struct {
	table       string
	load        string
	create      string
	listUser    string
	deleteKeys  string
	deleteUser  string
	sweep       string
	dropExpired string
	copyTo      string
	drop        string
	loadData    string
	userOf      string
	peers       string
}

func newQueries(t string) queries {
	// The upsert replaces a row only if it has expired: an expired record
	// is absent, so its key is free, and taking it needs no separate
	// DELETE. A live row makes the upsert change nothing, which Create
	// reports as ErrExists.
	var upd []string
	for _, c := range strings.Split(columns, ",") {
		c = strings.TrimSpace(c)
		if c != "key" {
			upd = append(upd, c+" = excluded."+c)
		}
	}
	return queries{
		table: t,
		load:  `SELECT ` + columns + `, expires_at FROM ` + t + ` WHERE key = ?`,
		create: `INSERT INTO ` + t + ` (` + columns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
			ON CONFLICT (key) DO UPDATE SET ` + strings.Join(upd, ", ") + `
			WHERE ` + t + `.expires_at <= ?`,
		listUser: `SELECT ` + columns + ` FROM ` + t + ` WHERE user_id = ? AND expires_at > ?`,
		// Keys arrive as one JSON array of hex strings: one statement for
		// any number of keys, with no limit on bound parameters to mind.
		deleteKeys: `DELETE FROM ` + t + ` WHERE key IN (SELECT unhex(value) FROM json_each(?))`,
		deleteUser: `DELETE FROM ` + t + ` WHERE user_id = ? AND expires_at > ?
			AND key NOT IN (SELECT unhex(value) FROM json_each(?))`,
		sweep: `DELETE FROM ` + t + ` WHERE rowid IN
			(SELECT rowid FROM ` + t + ` WHERE expires_at <= ? LIMIT ?)`,
		dropExpired: `DELETE FROM ` + t + ` WHERE key = ? AND expires_at <= ?`,
		copyTo: `INSERT INTO ` + t + ` (` + columns + `)
			SELECT ?, ` + strings.TrimPrefix(columns, "key, ") + `
			FROM ` + t + ` WHERE key = ? AND expires_at > ?`,
		drop:     `DELETE FROM ` + t + ` WHERE key = ?`,
		loadData: `SELECT data FROM ` + t + ` WHERE key = ? AND expires_at > ?`,
		userOf:   `SELECT user_id FROM ` + t + ` WHERE key = ?`,
		// Oldest first, as Limit orders them: a NULL auth_time is the zero
		// time, and SQLite sorts NULL first; handles compare bytewise.
		peers: `SELECT key, handle FROM ` + t + ` WHERE user_id = ? AND key <> ? AND expires_at > ?
			ORDER BY auth_time, handle`,
	}
}

func fromMS(v sql.NullInt64) time.Time { return sqlvalue.FromMillis(v.Int64, v.Valid) }

// keyList returns keys as a JSON array of hex strings, for json_each.
func keyList(keys []hallpass.Key) string {
	var b strings.Builder
	b.Grow(2 + len(keys)*(2*len(hallpass.Key{})+3))
	b.WriteByte('[')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(hex.EncodeToString(k[:]))
		b.WriteByte('"')
	}
	b.WriteByte(']')
	return b.String()
}

type scanner interface{ Scan(dest ...any) error }

func scanRecord(sc scanner, extra ...any) (*hallpass.Record, error) {
	var (
		r                            hallpass.Record
		key, data                    []byte
		userID                       sql.NullString
		authTime, reauthAt, absolute sql.NullInt64
		lastSeen, idle, createdAt    sql.NullInt64
	)
	dest := []any{&key, &r.Handle, &userID, &authTime, &r.AuthLevel, &r.Remembered,
		&reauthAt, &r.Persistent, &absolute, &lastSeen, &idle,
		&r.LastIP, &r.LastUA, &createdAt, &r.CreatedIP, &r.CreatedUA, &data, &r.Version}
	err := sc.Scan(append(dest, extra...)...)
	if err != nil {
		return nil, err
	}
	if len(key) != len(r.Key) {
		return nil, errors.New("stored key has the wrong length")
	}
	copy(r.Key[:], key)
	r.UserID = userID.String
	r.AuthTime = fromMS(authTime)
	r.ReauthAt = fromMS(reauthAt)
	r.AbsoluteDeadline = fromMS(absolute)
	r.LastSeen = fromMS(lastSeen)
	r.IdleDeadline = fromMS(idle)
	r.CreatedAt = fromMS(createdAt)
	if r.Data, err = decodeData(data); err != nil {
		return nil, err
	}
	return &r, nil
}

// Create implements hallpass.Store.
func (s *Store) Create(ctx context.Context, r *hallpass.Record) error {
	const op = "create"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	data, err := encodeData(r.Data)
	if err != nil {
		return fail(ctx, op, err)
	}
	res, err := s.ws.exec(ctx, s.q.create,
		r.Key[:], r.Handle, sqlvalue.NullString(r.UserID), sqlvalue.Millis(r.AuthTime), r.AuthLevel,
		r.Remembered, sqlvalue.Millis(r.ReauthAt), r.Persistent, sqlvalue.Millis(r.AbsoluteDeadline),
		sqlvalue.Millis(r.LastSeen), sqlvalue.Millis(r.IdleDeadline), r.LastIP, r.LastUA,
		sqlvalue.Millis(r.CreatedAt), r.CreatedIP, r.CreatedUA, data,
		s.nowMS())
	if err != nil {
		return fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(ctx, op, err)
	}
	if n == 0 {
		return hallpass.ErrExists
	}
	return nil
}

// Load implements hallpass.Store. A record that has expired but is not
// swept yet gives a *hallpass.ExpiredError, which matches
// hallpass.ErrNotFound and tells the caller which deadline passed.
func (s *Store) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	const op = "load"
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	var expiresAt int64
	r, err := scanRecord(s.rs.queryRow(ctx, s.q.load, key[:]), &expiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, hallpass.ErrNotFound
	}
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	if expiresAt <= s.nowMS() {
		return nil, &hallpass.ExpiredError{Record: r}
	}
	return r, nil
}

// Update implements hallpass.Store. Data changes are made by SQLite's JSON
// functions inside the UPDATE where possible; see applyTx for when they
// are not.
func (s *Store) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	const op = "update"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	if err := validateSet(d.Set); err != nil {
		return fail(ctx, op, err)
	}
	now := s.nowMS()
	if u, ok := s.q.update(&d, nil); ok {
		res, err := s.ws.exec(ctx, u.sql, u.argsFor(key, now)...)
		if err != nil {
			return fail(ctx, op, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fail(ctx, op, err)
		}
		if n > 0 {
			return nil
		}
		if !u.guarded {
			return hallpass.ErrNotFound
		}
		// The guard refused the row, or there is no live row: the
		// transaction below tells which.
	}
	err := s.inTx(ctx, func(c *sql.Conn) error {
		return s.applyTx(ctx, c, key, &d, now, false)
	})
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) {
		return fail(ctx, op, err)
	}
	return err
}

// Rotate implements hallpass.Store. It copies the row to the new key,
// deletes the old one and applies d, all in one transaction.
func (s *Store) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	const op = "rotate"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	if err := validateSet(d.Set); err != nil {
		return fail(ctx, op, err)
	}
	now := s.nowMS()
	var evicted []string
	err := s.inTx(ctx, func(c *sql.Conn) error {
		// An expired row at to is absent: it must not make to look taken.
		if _, err := c.ExecContext(ctx, s.q.dropExpired, to[:], now); err != nil {
			return err
		}
		res, err := c.ExecContext(ctx, s.q.copyTo, to[:], from[:], now)
		if isPrimaryKeyViolation(err) {
			return hallpass.ErrExists
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return hallpass.ErrNotFound
		}
		if _, err := c.ExecContext(ctx, s.q.drop, from[:]); err != nil {
			return err
		}
		if err := s.applyTx(ctx, c, to, &d, now, true); err != nil {
			return err
		}
		evicted, err = s.limitTx(ctx, c, to, d.Limit, now)
		return err
	})
	if err == nil && d.Limit != nil && d.Limit.Evicted != nil {
		for _, h := range evicted {
			d.Limit.Evicted(h)
		}
	}
	if err != nil && !errors.Is(err, hallpass.ErrNotFound) && !errors.Is(err, hallpass.ErrExists) && !errors.Is(err, hallpass.ErrTooManySessions) {
		return fail(ctx, op, err)
	}
	return err
}

// limitTx enforces lim for the row just rotated to to, inside Rotate's
// transaction (BEGIN IMMEDIATE: no other writer runs until it commits).
// from is already gone, so the user's other live rows are the count.
func (s *Store) limitTx(ctx context.Context, c *sql.Conn, to hallpass.Key, lim *hallpass.Limit, now int64) ([]string, error) {
	if lim == nil || lim.Max <= 0 {
		return nil, nil
	}
	var user sql.NullString
	if err := c.QueryRowContext(ctx, s.q.userOf, to[:]).Scan(&user); err != nil {
		return nil, err
	}
	if !user.Valid || user.String == "" {
		return nil, nil
	}
	rows, err := c.QueryContext(ctx, s.q.peers, user.String, to[:], now)
	if err != nil {
		return nil, err
	}
	var keys []hallpass.Key
	var handles []string
	for rows.Next() {
		var k []byte
		var h string
		if err := rows.Scan(&k, &h); err != nil {
			rows.Close()
			return nil, err
		}
		keys, handles = append(keys, hallpass.Key(k)), append(handles, h)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	excess := len(keys) - lim.Max + 1
	if excess <= 0 {
		return nil, nil
	}
	if lim.RefuseNew {
		return nil, hallpass.ErrTooManySessions
	}
	if _, err := c.ExecContext(ctx, s.q.deleteKeys, keyList(keys[:excess])); err != nil {
		return nil, err
	}
	return handles[:excess], nil
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
	if _, err := s.ws.exec(ctx, s.q.deleteKeys, keyList(keys)); err != nil {
		return fail(ctx, op, err)
	}
	return nil
}

// ListUser implements hallpass.Store. It reads through the partial index
// on user_id; an empty userID, a guest, matches nothing.
func (s *Store) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	const op = "list user"
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	if userID == "" {
		return nil, nil
	}
	rows, err := s.rs.query(ctx, s.q.listUser, userID, s.nowMS())
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	defer rows.Close()
	var out []*hallpass.Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}

// DeleteUser implements hallpass.Store. It counts only live records;
// expired ones of the user are left to the sweeper, as they are already
// gone for every reader.
func (s *Store) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	const op = "delete user"
	if err := ctx.Err(); err != nil {
		return 0, fail(ctx, op, err)
	}
	if userID == "" {
		return 0, nil
	}
	res, err := s.ws.exec(ctx, s.q.deleteUser, userID, s.nowMS(), keyList(keep))
	if err != nil {
		return 0, fail(ctx, op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fail(ctx, op, err)
	}
	return int(n), nil
}

// Count returns how many live records the store holds, for package
// metrics (its Counter interface); the library's own records (revocation
// list, audit log) count too. It scans the expires_at index.
func (s *Store) Count(ctx context.Context) (int, error) {
	var n int
	if err := s.rs.queryRow(ctx, `SELECT count(*) FROM `+s.q.table+` WHERE expires_at > ?`, s.nowMS()).Scan(&n); err != nil {
		return 0, fail(ctx, "count", err)
	}
	return n, nil
}

// Sweep deletes expired rows, at most Options.SweepChunk per statement,
// until none is left, and returns how many it deleted. The background
// sweeper calls it every Options.SweepInterval.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	const op = "sweep"
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, fail(ctx, op, err)
		}
		res, err := s.ws.exec(ctx, s.q.sweep, s.nowMS(), s.chunk)
		if err != nil {
			return total, fail(ctx, op, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fail(ctx, op, err)
		}
		total += int(n)
		if n < int64(s.chunk) {
			return total, nil
		}
	}
}

func (s *Store) sweepLoop(ctx context.Context, every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A failed sweep is retried at the next tick; until then the
			// expired rows are invisible anyway.
			_, _ = s.Sweep(ctx)
		}
	}
}
