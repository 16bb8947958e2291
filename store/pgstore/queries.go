package pgstore

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// columns are the stored columns in the order scanRecord reads them and
// Create writes them. expires_at is not among them: PostgreSQL computes
// it.
const columns = `key, handle, user_id, auth_time, auth_level, remembered,
	reauth_at, persistent, absolute_deadline, last_seen, idle_deadline,
	last_ip, last_ua, created_at, created_ip, created_ua, data, version`

// never is expires_at for a record with no deadline.
const never = math.MaxInt64

// keysPerNotify bounds the keys one notification names: 100 keys of 64
// hex digits and their commas make 6499 bytes, under PostgreSQL's limit of
// 8000 bytes per payload.
const keysPerNotify = 100

// queries holds the fixed SQL for one table name.
type queries struct {
	table   string // as given, for names derived from it
	t       string // quoted
	channel string // notification channel, as pg_notify takes it
	listen  string
	notify  bool // writes send notifications

	tableIdent, userIndexIdent, expiresIndexIdent string // quoted, for to_regclass
	schemaExists                                  string
	schema                                        []string

	load, liveKey, create, listUser string
	deleteKeys, deleteUser          string
	dropExpired, sweep              string
	lockSweep, unlockSweep          string
	sweepLock                       string // advisory lock name
}

func newQueries(table string, notify bool) queries {
	q := queries{
		table:             table,
		notify:            notify,
		t:                 pgx.Identifier{table}.Sanitize(),
		channel:           table + "_changes",
		tableIdent:        pgx.Identifier{table}.Sanitize(),
		userIndexIdent:    pgx.Identifier{table + "_user_id"}.Sanitize(),
		expiresIndexIdent: pgx.Identifier{table + "_expires_at"}.Sanitize(),
		sweepLock:         "hallpass-sweep:" + table,
	}
	t := q.t
	q.listen = "LISTEN " + pgx.Identifier{q.channel}.Sanitize()
	q.schemaExists = `SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL`
	q.schema = []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (
	key               bytea   NOT NULL PRIMARY KEY CHECK (length(key) = 32),
	handle            text    NOT NULL,
	user_id           text,
	auth_time         bigint,
	auth_level        text    NOT NULL DEFAULT '',
	remembered        boolean NOT NULL DEFAULT false,
	reauth_at         bigint,
	persistent        boolean NOT NULL DEFAULT false,
	absolute_deadline bigint,
	last_seen         bigint,
	idle_deadline     bigint,
	last_ip           text    NOT NULL DEFAULT '',
	last_ua           text    NOT NULL DEFAULT '',
	created_at        bigint,
	created_ip        text    NOT NULL DEFAULT '',
	created_ua        text    NOT NULL DEFAULT '',
	data              jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
	version           bigint  NOT NULL,
	expires_at        bigint  NOT NULL GENERATED ALWAYS AS (
		coalesce(least(idle_deadline, absolute_deadline), ` + strconv.FormatInt(never, 10) + `)
	) STORED
)`,
		`CREATE INDEX IF NOT EXISTS ` + q.userIndexIdent + ` ON ` + t + ` (user_id) WHERE user_id IS NOT NULL`,
		`CREATE INDEX IF NOT EXISTS ` + q.expiresIndexIdent + ` ON ` + t + ` (expires_at)`,
	}

	q.load = `SELECT ` + columns + `, expires_at FROM ` + t + ` WHERE key = $1`
	q.liveKey = `SELECT true FROM ` + t + ` WHERE key = $1 AND expires_at > $2`
	q.listUser = `SELECT ` + columns + ` FROM ` + t + ` WHERE user_id = $1 AND expires_at > $2`

	// The upsert replaces a row only if it has expired: an expired record
	// is absent, so its key is free, and taking it needs no separate
	// DELETE. A live row makes the upsert change nothing, which Create
	// reports as ErrExists; concurrent Creates of one key are settled by
	// the primary key, not by a read that could race.
	var set []string
	for c := range strings.SplitSeq(columns, ",") {
		if c = strings.TrimSpace(c); c != "key" {
			set = append(set, c+" = excluded."+c)
		}
	}
	q.create = `INSERT INTO ` + t + ` AS t (` + columns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb, 1)
	ON CONFLICT (key) DO UPDATE SET ` + strings.Join(set, ", ") + `
	WHERE t.expires_at <= $18`

	// Deletes return the keys they removed, grouped into notification
	// payloads, and notify each payload in the same statement, so that
	// the notifications go out exactly when the deletion commits. $n is
	// the channel; with notifications off it is a parameter left unused.
	deleting := func(where string, n int) string {
		notify := ` CROSS JOIN LATERAL pg_notify($` + strconv.Itoa(n) + `, g.p) AS n`
		if !q.notify {
			notify = ` WHERE $` + strconv.Itoa(n) + `::text IS NOT NULL`
		}
		return `WITH w AS (DELETE FROM ` + t + ` WHERE ` + where + ` RETURNING key),
	k AS (SELECT encode(key, 'hex') AS h, (row_number() OVER () - 1) / ` + strconv.Itoa(keysPerNotify) + ` AS n FROM w),
	g AS (SELECT string_agg(h, ',') AS p FROM k GROUP BY n)
	SELECT g.p FROM g` + notify
	}
	q.deleteKeys = deleting(`key = ANY($1::bytea[])`, 2)
	q.deleteUser = deleting(`user_id = $1 AND expires_at > $2 AND key <> ALL($3::bytea[])`, 4)

	q.dropExpired = `DELETE FROM ` + t + ` WHERE key = $1 AND expires_at <= $2`
	// FOR UPDATE SKIP LOCKED: a row someone else is deleting or replacing
	// right now is theirs; the next sweep gets it if it is still there.
	// ORDER BY makes the inner plan an index range scan that stops after
	// LIMIT rows however many have expired; = ANY(ARRAY(...)) makes the
	// outer one primary-key lookups, where IN (SELECT ...) lets the
	// planner hash-join against a scan of the whole table.
	q.sweep = `DELETE FROM ` + t + ` WHERE key = ANY(ARRAY(
	SELECT key FROM ` + t + ` WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))
	AND expires_at <= $1`
	q.lockSweep = `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`
	q.unlockSweep = `SELECT pg_advisory_unlock(hashtextextended($1, 0))`
	return q
}

func fromMS(v pgtype.Int8) time.Time { return sqlvalue.FromMillis(v.Int64, v.Valid) }

// update is one UPDATE for a Delta, as a statement with its arguments.
type update struct {
	sql  string
	args []any
}

// arg adds v as the next parameter and returns its placeholder.
func (u *update) arg(v any) string {
	u.args = append(u.args, v)
	return "$" + strconv.Itoa(len(u.args))
}

// buildUpdate returns the statement that applies d to the live row at
// key, moving it to *to if to is not nil, and notifies payload. It
// increments version, and PostgreSQL recomputes expires_at from the new
// deadlines. Every expression in SET sees the row as it was, which is
// what the Touch rules compare against; and under concurrent updates
// PostgreSQL re-evaluates them on the newest row version, so no update is
// lost. A live-row check that fails makes the statement match nothing:
// the statement returns one row per row it changed.
//
// data is d's data change in JSON, from encodeDelta: patch is the object
// of keys to set, remove the keys to delete.
func (q *queries) buildUpdate(key hallpass.Key, to *hallpass.Key, d *hallpass.Delta, patch []byte, remove []string, now int64, payload string) update {
	var u update
	var b strings.Builder
	b.Grow(512)
	b.WriteString("WITH w AS (UPDATE " + q.t + " SET version = version + 1")
	if to != nil {
		b.WriteString(", key = " + u.arg(to[:]))
	}

	if d.Clear || len(remove) > 0 || patch != nil {
		expr := "data"
		if d.Clear {
			expr = "'{}'::jsonb"
		} else if len(remove) > 0 {
			expr = "(data - " + u.arg(remove) + "::text[])"
		}
		if patch != nil {
			expr += " || " + u.arg(patch) + "::jsonb"
		}
		b.WriteString(", data = " + expr)
	}

	if m := d.Meta; m != nil {
		b.WriteString(", user_id = " + u.arg(sqlvalue.NullString(m.UserID)) + "::text")
		b.WriteString(", auth_time = " + u.arg(sqlvalue.Millis(m.AuthTime)) + "::bigint")
		b.WriteString(", auth_level = " + u.arg(m.AuthLevel) + "::text")
		b.WriteString(", remembered = " + u.arg(m.Remembered) + "::boolean")
		b.WriteString(", reauth_at = " + u.arg(sqlvalue.Millis(m.ReauthAt)) + "::bigint")
		b.WriteString(", persistent = " + u.arg(m.Persistent) + "::boolean")
		b.WriteString(", absolute_deadline = " + u.arg(sqlvalue.Millis(m.AbsoluteDeadline)) + "::bigint")
	}
	if t := d.Touch; t != nil && d.Meta != nil {
		// A new identity starts new timeouts: the Touch replaces the old.
		b.WriteString(", last_seen = " + u.arg(sqlvalue.Millis(t.LastSeen)) + "::bigint")
		b.WriteString(", idle_deadline = " + u.arg(sqlvalue.Millis(t.IdleDeadline)) + "::bigint")
		b.WriteString(", last_ip = " + u.arg(t.LastIP) + "::text")
		b.WriteString(", last_ua = " + u.arg(t.LastUA) + "::text")
	} else if t != nil {
		// GREATEST ignores NULLs: a zero time in the Touch moves nothing,
		// and any time beats a zero (NULL) one in the row. IP and UA
		// follow LastSeen only when it is strictly newer, and only when
		// given.
		if !t.LastSeen.IsZero() {
			seen := u.arg(sqlvalue.Millis(t.LastSeen)) + "::bigint"
			newer := "(last_seen IS NULL OR last_seen < " + seen + ")"
			if t.LastIP != "" {
				b.WriteString(", last_ip = CASE WHEN " + newer + " THEN " + u.arg(t.LastIP) + "::text ELSE last_ip END")
			}
			if t.LastUA != "" {
				b.WriteString(", last_ua = CASE WHEN " + newer + " THEN " + u.arg(t.LastUA) + "::text ELSE last_ua END")
			}
			b.WriteString(", last_seen = GREATEST(last_seen, " + seen + ")")
		}
		if !t.IdleDeadline.IsZero() {
			b.WriteString(", idle_deadline = GREATEST(idle_deadline, " + u.arg(sqlvalue.Millis(t.IdleDeadline)) + "::bigint)")
		}
	}

	b.WriteString(" WHERE key = " + u.arg(key[:]) + " AND expires_at > " + u.arg(now) + "::bigint RETURNING 1) SELECT 1 FROM w")
	if q.notify {
		b.WriteString(" CROSS JOIN LATERAL pg_notify(" + u.arg(q.channel) + "::text, " + u.arg(payload) + "::text) AS n")
	}
	u.sql = b.String()
	return u
}

// keyScanner scans a bytea into a Key without allocating.
type keyScanner struct{ k *hallpass.Key }

func (s keyScanner) ScanBytes(src []byte) error {
	if len(src) != len(s.k) {
		return errors.New("stored key has the wrong length")
	}
	copy(s.k[:], src)
	return nil
}

// dataScanner decodes the data column while pgx still holds it, so the
// column's text is never copied whole.
type dataScanner struct {
	m    *map[string]json.RawMessage
	size *int
}

func (s dataScanner) ScanBytes(src []byte) error {
	m, err := decodeData(src)
	if err != nil {
		return err
	}
	*s.m, *s.size = m, len(src)
	return nil
}

// scanned is a record read from a row, with what the caller may need
// besides.
type scanned struct {
	r         *hallpass.Record
	dataSize  int   // bytes of the data column, for the cache's accounting
	expiresAt int64 // only when asked for
}

// scanRecord reads a row of columns, and expires_at after them if
// withExpiry. It allocates the record, its strings and its data, nothing
// else.
func scanRecord(row pgx.Row, withExpiry bool) (scanned, error) {
	var (
		sc                                              scanned
		r                                               = new(hallpass.Record)
		userID                                          pgtype.Text
		authTime, reauthAt, absolute, seen, idle, since pgtype.Int8
	)
	dest := [...]any{
		keyScanner{&r.Key}, &r.Handle, &userID, &authTime, &r.AuthLevel, &r.Remembered,
		&reauthAt, &r.Persistent, &absolute, &seen, &idle,
		&r.LastIP, &r.LastUA, &since, &r.CreatedIP, &r.CreatedUA,
		dataScanner{&r.Data, &sc.dataSize}, &r.Version, &sc.expiresAt,
	}
	n := len(dest)
	if !withExpiry {
		n--
	}
	if err := row.Scan(dest[:n]...); err != nil {
		return scanned{}, err
	}
	r.UserID = userID.String
	r.AuthTime = fromMS(authTime)
	r.ReauthAt = fromMS(reauthAt)
	r.AbsoluteDeadline = fromMS(absolute)
	r.LastSeen = fromMS(seen)
	r.IdleDeadline = fromMS(idle)
	r.CreatedAt = fromMS(since)
	sc.r = r
	return sc, nil
}
