package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
)

// How Update changes Data.
//
// The data column is one JSON object, and a Delta names keys to remove and
// keys to replace. The UPDATE does that with SQLite's own functions,
//
//	data = json_set(json_remove(data, '$."k1"'), '$."k2"', json(?), ...)
//
// so two requests that change different keys of one session both win
// without either reading the data first. json_patch would be shorter but
// is wrong here: RFC 7396 merges a new object into the old value instead
// of replacing it, and drops null members at every depth.
//
// A key becomes a path label quoted as a JSON string ('$."a\"b"'). SQLite
// decodes the escapes in a quoted label and compares it with the object's
// keys decoded too, so every key, however odd (empty, '"', '\', '.', '[',
// '$', unicode), names itself and nothing else; TestJSONPathModel checks
// this against a Go model over thousands of generated keys. The one
// exception is U+0000: SQLite compares labels as C strings, so a label
// with a NUL stops at it, and "a\u0000b" would match, or be matched by,
// "a". Such keys, in the Delta or already in the stored object, take the
// fallback below; the UPDATE refuses rows whose data holds an escaped NUL
// (instr(data, '\u0000')), which catches every such key and now and then,
// harmlessly, a value or a key that merely contains the text \u0000.
//
// The fallback, also taken for very large Deltas that would strain
// SQLite's limits on parameters and function arguments, reads the data in
// a BEGIN IMMEDIATE transaction, applies the Delta in Go with Delta.Apply
// and writes the result. It is just as atomic, since the transaction holds
// SQLite's single write lock throughout, only slower.

const (
	// maxSQLKeys is the most keys one Delta may name for the SQL path.
	maxSQLKeys = 1000
	// pathsPerCall keeps each json_remove and json_set call within
	// SQLite's default limit of 127 arguments per function.
	pathsPerCall = 50
)

// errInvalidValue does not name the key: keys may be secrets of the
// application as much as values are.
var errInvalidValue = errors.New("a data value is not valid JSON")

func validateSet(set map[string]json.RawMessage) error {
	for _, v := range set {
		if len(v) != 0 && !json.Valid(v) {
			return errInvalidValue
		}
	}
	return nil
}

// encodeData returns m as a JSON object. Values are compacted, not
// HTML-escaped: they are stored as given, give or take whitespace.
func encodeData(m map[string]json.RawMessage) (string, error) {
	if len(m) == 0 {
		return "{}", nil
	}
	if err := validateSet(m); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		// Only an invalid value can fail, and validateSet ruled that out;
		// the encoder's message would quote it.
		return "", errInvalidValue
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// decodeData returns nil for an empty object, as a record created without
// data has a nil map.
func decodeData(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("stored data is not a JSON object")
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// jsonPath returns the JSON path that names key in the top-level object.
func jsonPath(key string) string {
	b, _ := json.Marshal(key) // a string always marshals
	return "$." + string(b)
}

// value returns v as the text bound to json(?). It must be text: SQLite
// reads a BLOB argument as JSONB.
func value(v json.RawMessage) string {
	if len(v) == 0 {
		return "null"
	}
	return string(v)
}

// dataExpr returns the SQL expression for the new data and its arguments,
// or ok false if the Delta must take the fallback.
func dataExpr(d *hallpass.Delta) (expr string, args []any, ok bool) {
	if len(d.Remove)+len(d.Set) > maxSQLKeys {
		return "", nil, false
	}
	expr = "data"
	if d.Clear {
		expr = "'{}'"
	}
	var remove []string
	if !d.Clear {
		for _, k := range d.Remove {
			if _, set := d.Set[k]; !set {
				remove = append(remove, k)
			}
		}
	}
	for len(remove) > 0 {
		n := min(len(remove), pathsPerCall*2)
		var b strings.Builder
		b.WriteString("json_remove(")
		b.WriteString(expr)
		for _, k := range remove[:n] {
			if strings.IndexByte(k, 0) >= 0 {
				return "", nil, false
			}
			b.WriteString(", ?")
			args = append(args, jsonPath(k))
		}
		b.WriteByte(')')
		expr, remove = b.String(), remove[n:]
	}
	var b strings.Builder
	i := 0
	for k, v := range d.Set {
		if strings.IndexByte(k, 0) >= 0 {
			return "", nil, false
		}
		if i%pathsPerCall == 0 {
			if i > 0 {
				b.WriteByte(')')
				expr = b.String()
				b.Reset()
			}
			b.WriteString("json_set(")
			b.WriteString(expr)
		}
		b.WriteString(", ?, json(?)")
		args = append(args, jsonPath(k), value(v))
		i++
	}
	if i > 0 {
		b.WriteByte(')')
		expr = b.String()
	}
	return expr, args, true
}

// update is one UPDATE statement for a Delta. argsFor appends the WHERE
// clause's arguments.
type update struct {
	sql     string
	args    []any
	guarded bool // refuses rows whose data holds a NUL in a key; see above
}

func (u *update) argsFor(key hallpass.Key, now int64) []any {
	return append(u.args[:len(u.args):len(u.args)], key[:], now)
}

// update builds the UPDATE for d on a live row. If data is not nil it is
// the new data object, computed in Go; otherwise d's data changes are
// expressed in SQL, and ok is false if they cannot be. The statement
// increments version, and SQLite recomputes expires_at from the new
// deadlines. Every expression in SET sees the row as it was, which is what
// the Touch rules compare against.
func (q *queries) update(d *hallpass.Delta, data *string) (u update, ok bool) {
	var b strings.Builder
	b.WriteString("UPDATE " + q.table + " SET version = version + 1")
	switch {
	case data != nil:
		b.WriteString(", data = ?")
		u.args = append(u.args, *data)
	case d.Clear || len(d.Remove) > 0 || len(d.Set) > 0:
		expr, args, ok := dataExpr(d)
		if !ok {
			return update{}, false
		}
		b.WriteString(", data = ")
		b.WriteString(expr)
		u.args = append(u.args, args...)
		u.guarded = true
	}
	if m := d.Meta; m != nil {
		b.WriteString(`, user_id = ?, auth_time = ?, auth_level = ?, remembered = ?,
			reauth_at = ?, persistent = ?, absolute_deadline = ?`)
		u.args = append(u.args, sqlvalue.NullString(m.UserID), sqlvalue.Millis(m.AuthTime), m.AuthLevel,
			m.Remembered, sqlvalue.Millis(m.ReauthAt), m.Persistent, sqlvalue.Millis(m.AbsoluteDeadline))
	}
	if t := d.Touch; t != nil && d.Meta != nil {
		// A new identity starts new timeouts: the Touch replaces the old.
		b.WriteString(", last_seen = ?, idle_deadline = ?, last_ip = ?, last_ua = ?")
		u.args = append(u.args, sqlvalue.Millis(t.LastSeen), sqlvalue.Millis(t.IdleDeadline), t.LastIP, t.LastUA)
	} else if t != nil {
		// A zero time is after nothing stored, so it moves nothing.
		if !t.LastSeen.IsZero() {
			seen := sqlvalue.Millis(t.LastSeen)
			const newer = "(last_seen IS NULL OR last_seen < ?)"
			if t.LastIP != "" {
				b.WriteString(", last_ip = CASE WHEN " + newer + " THEN ? ELSE last_ip END")
				u.args = append(u.args, seen, t.LastIP)
			}
			if t.LastUA != "" {
				b.WriteString(", last_ua = CASE WHEN " + newer + " THEN ? ELSE last_ua END")
				u.args = append(u.args, seen, t.LastUA)
			}
			b.WriteString(", last_seen = CASE WHEN " + newer + " THEN ? ELSE last_seen END")
			u.args = append(u.args, seen, seen)
		}
		if !t.IdleDeadline.IsZero() {
			idle := sqlvalue.Millis(t.IdleDeadline)
			b.WriteString(`, idle_deadline = CASE WHEN idle_deadline IS NULL OR idle_deadline < ?
				THEN ? ELSE idle_deadline END`)
			u.args = append(u.args, idle, idle)
		}
	}
	b.WriteString(" WHERE key = ? AND expires_at > ?")
	if u.guarded {
		b.WriteString(` AND instr(data, '\u0000') = 0`)
	}
	u.sql = b.String()
	return u, true
}

// applyTx applies d to the live row at key inside a write transaction on
// c. With trySQL it first tries the SQL path; the fallback reads the data
// and applies d's data changes in Go. Either way the transaction's write
// lock means nothing else changes the row in between.
func (s *Store) applyTx(ctx context.Context, c *sql.Conn, key hallpass.Key, d *hallpass.Delta, now int64, trySQL bool) error {
	if trySQL {
		if u, ok := s.q.update(d, nil); ok {
			res, err := c.ExecContext(ctx, u.sql, u.argsFor(key, now)...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if !u.guarded {
				return hallpass.ErrNotFound
			}
		}
	}

	var raw []byte
	err := c.QueryRowContext(ctx, s.q.loadData, key[:], now).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return hallpass.ErrNotFound
	}
	if err != nil {
		return err
	}
	var data *string
	if d.Clear || len(d.Remove) > 0 || len(d.Set) > 0 {
		m, err := decodeData(raw)
		if err != nil {
			return err
		}
		r := hallpass.Record{Data: m}
		dd := hallpass.Delta{Clear: d.Clear}
		for _, k := range d.Remove {
			dd.Remove = append(dd.Remove, sqlvalue.ValidKey(k))
		}
		if len(d.Set) > 0 {
			dd.Set = make(map[string]json.RawMessage, len(d.Set))
			for k, v := range d.Set {
				dd.Set[sqlvalue.ValidKey(k)] = v
			}
		}
		dd.Apply(&r)
		text, err := encodeData(r.Data)
		if err != nil {
			return err
		}
		data = &text
	}
	u, _ := s.q.update(d, data)
	res, err := c.ExecContext(ctx, u.sql, u.argsFor(key, now)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return errors.New("live row vanished inside the transaction")
	}
	return nil
}
