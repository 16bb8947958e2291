package pgstore

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
	"github.com/jackc/pgx/v5"
)

// columns are the stored columns in the order decodeRecord reads them and
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
	updates *updateCache
	// asyncUpdates lets Update commit without waiting for its WAL flush;
	// see Options.SyncUpdates.
	asyncUpdates bool

	tableIdent, userIndexIdent, expiresIndexIdent string // quoted, for to_regclass
	schemaExists                                  string
	schema                                        []string

	load, liveKey, create, listUser string
	count                           string
	deleteKeys, deleteUser          string
	dropExpired, sweep              string
	lockSweep, unlockSweep          string
	sweepLock                       string // advisory lock name

	// For a Rotate with a Limit; see rotateLimited.
	userOf, userOfLocked, lockUser string
	lockPeers, countPeers, evict   string
	userLock                       string // advisory lock name, the user id appended

	// For Broadcast and Subscribe: a channel of their own, so that
	// neither side mistakes the other's payloads for its own.
	broadcastChannel string
	listenBroadcast  string
}

func newQueries(table string, notify, asyncUpdates bool) queries {
	q := queries{
		table:             table,
		notify:            notify,
		asyncUpdates:      asyncUpdates,
		updates:           new(updateCache),
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
	// Nothing but expires_at is read, so that the expires_at index alone
	// can answer it (an index-only scan).
	q.count = `SELECT count(*) FROM ` + t + ` WHERE expires_at > $1`

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

	q.userOf = `SELECT coalesce(user_id, '') FROM ` + t + ` WHERE key = $1 AND expires_at > $2`
	q.userOfLocked = q.userOf + ` FOR UPDATE`
	// The table name's length keeps the name unambiguous whatever the
	// table and user are called; 64 bits of hash make two users that
	// share a lock unlikely, and harmless: they only wait for each other.
	q.userLock = "hallpass-limit:" + strconv.Itoa(len(table)) + ":" + table + ":"
	q.lockUser = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`
	peers := `FROM ` + t + ` WHERE user_id = $1 AND expires_at > $2 AND key <> $3`
	// Locks the user's other sessions, waiting for writes in flight to
	// them: a session being rotated meanwhile is then seen, by the
	// statements after this one, under its new key, which the eviction
	// would otherwise look for under the old one and miss.
	q.lockPeers = `SELECT 1 ` + peers + ` FOR UPDATE`
	q.countPeers = `SELECT count(*) ` + peers
	// Newest first, skipping those that may stay ($4 of them): the rest
	// are the oldest, as Limit orders them. A NULL auth_time is the zero
	// time, the earliest of all; handles compare bytewise, as Go's
	// strings do, whatever the database's collation. The deleted keys
	// are notified as a Delete's are, and their handles returned.
	evictNotify := ` CROSS JOIN LATERAL pg_notify($5, g.p) AS n`
	if !q.notify {
		evictNotify = ` WHERE $5::text IS NOT NULL`
	}
	q.evict = `WITH w AS (DELETE FROM ` + t + ` WHERE key = ANY(ARRAY(
	SELECT key ` + peers + ` ORDER BY auth_time DESC NULLS LAST, handle COLLATE "C" DESC OFFSET $4))
	RETURNING key, handle),
	k AS (SELECT encode(key, 'hex') AS h, handle, (row_number() OVER () - 1) / ` + strconv.Itoa(keysPerNotify) + ` AS n FROM w),
	g AS (SELECT string_agg(h, ',') AS p, array_agg(handle) AS hs FROM k GROUP BY n)
	SELECT g.p, g.hs FROM g` + evictNotify

	q.broadcastChannel = broadcastChannel(table)
	q.listenBroadcast = "LISTEN " + pgx.Identifier{q.broadcastChannel}.Sanitize()
	return q
}

// broadcastChannel returns the channel of Broadcast for table: a hash,
// since the table's name may take up most of the 63 bytes PostgreSQL
// keeps of an identifier, and the hash of a name is the same on every
// instance.
func broadcastChannel(table string) string {
	h := sha256.Sum256([]byte("hallpass broadcast\x00" + table))
	return "hallpass_broadcast_" + hex.EncodeToString(h[:16])
}

// update is one UPDATE for a Delta, as a statement with its arguments.
type update struct {
	sql  string
	args []any

	b     *strings.Builder // nil when only the arguments are wanted
	shape uint32           // the choices made, which decide the text
}

// Update statements differ only in which parts a Delta has, so their text
// is built once per combination (shape) and the rest of the time only
// the arguments are gathered: building it was most of what Update
// allocated. shapeBits bounds the bits choose sets.
const shapeBits = 13

type updateCache [1 << shapeBits]atomic.Pointer[string]

// choose records the choice c, the n-th of the builder's, and returns it.
func (u *update) choose(n int, c bool) bool {
	if c {
		u.shape |= 1 << n
	}
	return c
}

// text adds s to the statement, if it is being built.
func (u *update) text(s ...string) {
	if u.b != nil {
		for _, s := range s {
			u.b.WriteString(s)
		}
	}
}

// arg adds v as the next parameter and returns its number.
func (u *update) arg(v any) int {
	u.args = append(u.args, v)
	return len(u.args)
}

// ref adds a placeholder for parameter n with a cast (or none).
func (u *update) ref(n int, cast string) {
	if u.b != nil {
		u.b.WriteByte('$')
		u.b.WriteString(strconv.Itoa(n))
		u.b.WriteString(cast)
	}
}

// param adds v as the next parameter and a placeholder for it.
func (u *update) param(v any, cast string) { u.ref(u.arg(v), cast) }

// buildUpdate returns the statement that applies d to the live row at
// key, moving it to *to if to is not nil, and notifies payload, followed
// by the new version unless the row moves. With fill, which is only for
// an update in place, it returns the changed row (columns and
// expires_at), for the cache. It
// increments version, and PostgreSQL recomputes expires_at from the new
// deadlines. Every expression in SET sees the row as it was, which is
// what the Touch rules compare against; and under concurrent updates
// PostgreSQL re-evaluates them on the newest row version, so no update is
// lost. A live-row check that fails makes the statement match nothing:
// the statement returns one row per row it changed.
//
// data is d's data change in JSON, from encodeDelta: patch is the object
// of keys to set, remove the keys to delete.
func (q *queries) buildUpdate(key hallpass.Key, to *hallpass.Key, d *hallpass.Delta, patch []byte, remove []string, now int64, payload string, fill bool) update {
	u := update{args: make([]any, 0, 16)}
	q.writeUpdate(&u, key, to, d, patch, remove, now, payload, fill)
	if p := q.updates[u.shape].Load(); p != nil {
		u.sql = *p
		return u
	}
	// Same choices again, this time writing the text.
	u = update{args: u.args[:0], b: new(strings.Builder)}
	u.b.Grow(512)
	q.writeUpdate(&u, key, to, d, patch, remove, now, payload, fill)
	u.sql = u.b.String()
	q.updates[u.shape].Store(&u.sql)
	u.b = nil
	return u
}

// writeUpdate gathers the arguments of buildUpdate's statement, and
// writes its text if u.b is set. Every choice that changes the text goes
// through u.choose, with a number of its own.
func (q *queries) writeUpdate(u *update, key hallpass.Key, to *hallpass.Key, d *hallpass.Delta, patch []byte, remove []string, now int64, payload string, fill bool) {
	u.text("WITH w AS (UPDATE ", q.t, " SET version = version + 1")
	if u.choose(0, to != nil) {
		u.text(", key = ")
		u.param(to[:], "")
	}

	if d.Clear || len(remove) > 0 || patch != nil {
		u.text(", data = ")
		switch {
		case u.choose(1, d.Clear):
			u.text("'{}'::jsonb")
		case u.choose(2, len(remove) > 0):
			u.text("(data - ")
			u.param(remove, "::text[])")
		default:
			u.text("data")
		}
		if u.choose(3, patch != nil) {
			u.text(" || ")
			u.param(patch, "::jsonb")
		}
	}

	if m := d.Meta; u.choose(4, m != nil) {
		u.text(", user_id = ")
		u.param(sqlvalue.NullString(m.UserID), "::text")
		u.text(", auth_time = ")
		u.param(sqlvalue.Millis(m.AuthTime), "::bigint")
		u.text(", auth_level = ")
		u.param(m.AuthLevel, "::text")
		u.text(", remembered = ")
		u.param(m.Remembered, "::boolean")
		u.text(", reauth_at = ")
		u.param(sqlvalue.Millis(m.ReauthAt), "::bigint")
		u.text(", persistent = ")
		u.param(m.Persistent, "::boolean")
		u.text(", absolute_deadline = ")
		u.param(sqlvalue.Millis(m.AbsoluteDeadline), "::bigint")
	}
	if t := d.Touch; u.choose(5, t != nil && d.Meta != nil) {
		// A new identity starts new timeouts: the Touch replaces the old.
		u.text(", last_seen = ")
		u.param(sqlvalue.Millis(t.LastSeen), "::bigint")
		u.text(", idle_deadline = ")
		u.param(sqlvalue.Millis(t.IdleDeadline), "::bigint")
		u.text(", last_ip = ")
		u.param(t.LastIP, "::text")
		u.text(", last_ua = ")
		u.param(t.LastUA, "::text")
	} else if t != nil {
		// GREATEST ignores NULLs: a zero time in the Touch moves nothing,
		// and any time beats a zero (NULL) one in the row. IP and UA
		// follow LastSeen only when it is strictly newer, and only when
		// given.
		if u.choose(6, !t.LastSeen.IsZero()) {
			seen := u.arg(sqlvalue.Millis(t.LastSeen))
			newer := func() {
				u.text("(last_seen IS NULL OR last_seen < ")
				u.ref(seen, "::bigint")
				u.text(")")
			}
			if u.choose(7, t.LastIP != "") {
				u.text(", last_ip = CASE WHEN ")
				newer()
				u.text(" THEN ")
				u.param(t.LastIP, "::text")
				u.text(" ELSE last_ip END")
			}
			if u.choose(8, t.LastUA != "") {
				u.text(", last_ua = CASE WHEN ")
				newer()
				u.text(" THEN ")
				u.param(t.LastUA, "::text")
				u.text(" ELSE last_ua END")
			}
			u.text(", last_seen = GREATEST(last_seen, ")
			u.ref(seen, "::bigint")
			u.text(")")
		}
		if u.choose(9, !t.IdleDeadline.IsZero()) {
			u.text(", idle_deadline = GREATEST(idle_deadline, ")
			u.param(sqlvalue.Millis(t.IdleDeadline), "::bigint")
			u.text(")")
		}
	}

	u.text(" WHERE key = ")
	u.param(key[:], "")
	u.text(" AND expires_at > ")
	u.param(now, "::bigint")
	if u.choose(10, q.asyncUpdates && to == nil && d.Meta == nil) {
		// The statement is its own transaction, so a setting local to the
		// transaction holds exactly for this write's commit, and a pooled
		// connection goes back unchanged. In the WHERE clause it runs
		// before any row is changed, which is all a commit needs; a row
		// that does not match writes nothing that would need a flush.
		u.text(" AND set_config('synchronous_commit', 'off', true) = 'off'")
	}
	notify, versioned := u.choose(11, q.notify), to == nil
	switch {
	case u.choose(12, fill):
		u.text(" RETURNING ", columns, ", expires_at) SELECT w.* FROM w")
	case notify && versioned:
		u.text(" RETURNING version) SELECT 1 FROM w")
	default:
		u.text(" RETURNING 1) SELECT 1 FROM w")
	}
	if notify {
		u.text(" CROSS JOIN LATERAL pg_notify(")
		u.param(q.channel, "::text")
		u.text(", ")
		u.param(payload, "::text")
		if versioned {
			// The version lets the instance that wrote it, which caches
			// the row it got back, tell its own update from a newer one.
			u.text(" || ':' || w.version")
		}
		u.text(") AS n")
	}
}

// scanned is a record read from a row, with what the caller may need
// besides.
type scanned struct {
	r         *hallpass.Record
	dataSize  int   // bytes of the data column, for the cache's accounting
	expiresAt int64 // only when asked for
}
