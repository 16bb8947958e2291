package pgstore

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Rows are decoded from their raw column values rather than through
// pgx's Scan, which plans a conversion for every column of every row it
// is handed (QueryRow makes a new one each time) and boxes every
// destination: on a Load, that was a third of the client's time and most
// of its allocations. Either wire format is accepted, since an
// application's pool may use any query mode, the simple protocol
// included.

// column kinds, in the order of columns.
const (
	colKey = iota
	colText
	colNullText
	colInt8 // NULL allowed: a zero time
	colBool
	colJSONB
)

// columnKinds are the kinds of columns, then expires_at.
var columnKinds = [...]struct {
	kind int
	oid  uint32
}{
	{colKey, pgtype.ByteaOID}, {colText, pgtype.TextOID}, {colNullText, pgtype.TextOID},
	{colInt8, pgtype.Int8OID}, {colText, pgtype.TextOID}, {colBool, pgtype.BoolOID},
	{colInt8, pgtype.Int8OID}, {colBool, pgtype.BoolOID}, {colInt8, pgtype.Int8OID},
	{colInt8, pgtype.Int8OID}, {colInt8, pgtype.Int8OID}, {colText, pgtype.TextOID},
	{colText, pgtype.TextOID}, {colInt8, pgtype.Int8OID}, {colText, pgtype.TextOID},
	{colText, pgtype.TextOID}, {colJSONB, pgtype.JSONBOID}, {colInt8, pgtype.Int8OID},
	{colInt8, pgtype.Int8OID},
}

// Positions of the columns in a row.
const (
	iKey = iota
	iHandle
	iUserID
	iAuthTime
	iAuthLevel
	iRemembered
	iReauthAt
	iPersistent
	iAbsolute
	iLastSeen
	iIdle
	iLastIP
	iLastUA
	iCreatedAt
	iCreatedIP
	iCreatedUA
	iData
	iVersion
	iExpiresAt
	nColumns = iExpiresAt // without expires_at
)

// textColumns are the text columns, copied into one string.
var textColumns = [...]int{iHandle, iUserID, iAuthLevel, iLastIP, iLastUA, iCreatedIP, iCreatedUA}

var errBadRow = errors.New("a stored row does not have the expected columns")

// readRecord reads the current row of rows, a row of columns followed by
// expires_at if withExpiry.
func readRecord(rows pgx.Rows, withExpiry bool) (scanned, error) {
	return decodeRecord(rows.FieldDescriptions(), rows.RawValues(), withExpiry)
}

func decodeRecord(fds []pgconn.FieldDescription, vals [][]byte, withExpiry bool) (scanned, error) {
	n := nColumns
	if withExpiry {
		n++
	}
	if len(fds) != n || len(vals) != n {
		return scanned{}, errBadRow
	}
	var ints [len(columnKinds)]int64
	var valid [len(columnKinds)]bool
	var sc scanned
	r := new(hallpass.Record)
	textLen := 0
	for i := range n {
		fd, v := &fds[i], vals[i]
		if fd.DataTypeOID != columnKinds[i].oid {
			return scanned{}, errBadRow
		}
		bin := fd.Format == pgtype.BinaryFormatCode
		switch columnKinds[i].kind {
		case colKey:
			if bin {
				if len(v) != len(r.Key) {
					return scanned{}, errors.New("stored key has the wrong length")
				}
				copy(r.Key[:], v)
			} else if len(v) != 2+2*len(r.Key) || v[0] != '\\' || v[1] != 'x' {
				return scanned{}, errors.New("stored key has the wrong length")
			} else if _, err := hex.Decode(r.Key[:], v[2:]); err != nil {
				return scanned{}, errBadRow
			}
		case colText, colNullText:
			if v == nil && columnKinds[i].kind == colText {
				return scanned{}, errBadRow
			}
			textLen += len(v)
		case colInt8:
			if v == nil {
				continue
			}
			var err error
			if ints[i], err = decodeInt8(v, bin); err != nil {
				return scanned{}, err
			}
			valid[i] = true
		case colBool:
			b, err := decodeBool(v, bin)
			if err != nil {
				return scanned{}, err
			}
			if i == iRemembered {
				r.Remembered = b
			} else {
				r.Persistent = b
			}
		case colJSONB:
			if bin {
				if len(v) == 0 || v[0] != 1 { // jsonb's binary format version
					return scanned{}, errBadRow
				}
				v = v[1:]
			}
			m, err := decodeData(v)
			if err != nil {
				return scanned{}, err
			}
			r.Data, sc.dataSize = m, len(v)
		}
	}
	if !valid[iVersion] || withExpiry && !valid[iExpiresAt] {
		return scanned{}, errBadRow
	}

	// One allocation for all the strings of the record.
	var b strings.Builder
	b.Grow(textLen)
	for _, i := range textColumns {
		b.Write(vals[i])
	}
	all := b.String()
	off := 0
	for _, i := range textColumns {
		s := all[off : off+len(vals[i])]
		off += len(vals[i])
		switch i {
		case iHandle:
			r.Handle = s
		case iUserID:
			r.UserID = s
		case iAuthLevel:
			r.AuthLevel = s
		case iLastIP:
			r.LastIP = s
		case iLastUA:
			r.LastUA = s
		case iCreatedIP:
			r.CreatedIP = s
		case iCreatedUA:
			r.CreatedUA = s
		}
	}

	ms := func(i int) time.Time { return sqlvalue.FromMillis(ints[i], valid[i]) }
	r.AuthTime = ms(iAuthTime)
	r.ReauthAt = ms(iReauthAt)
	r.AbsoluteDeadline = ms(iAbsolute)
	r.LastSeen = ms(iLastSeen)
	r.IdleDeadline = ms(iIdle)
	r.CreatedAt = ms(iCreatedAt)
	r.Version = ints[iVersion]
	sc.expiresAt = ints[iExpiresAt]
	sc.r = r
	return sc, nil
}

func decodeInt8(v []byte, bin bool) (int64, error) {
	if bin {
		if len(v) != 8 {
			return 0, errBadRow
		}
		return int64(binary.BigEndian.Uint64(v)), nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, errBadRow
	}
	return n, nil
}

func decodeBool(v []byte, bin bool) (bool, error) {
	switch {
	case bin && len(v) == 1:
		return v[0] != 0, nil
	case !bin && len(v) == 1 && (v[0] == 't' || v[0] == 'f'):
		return v[0] == 't', nil
	}
	return false, errBadRow
}

// decodeData returns the data column's object as a map, or nil for an
// empty object, as a record created without data has a nil map. The
// values share one copy of the column, each capped at its own length so
// that an append to one cannot write over the next.
func decodeData(b []byte) (map[string]json.RawMessage, error) {
	if len(b) == 2 && b[0] == '{' && b[1] == '}' {
		return nil, nil
	}
	if m, ok := splitObject(b); ok {
		return m, nil
	}
	// Not in jsonb's own spelling: let encoding/json judge it.
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, errors.New("stored data is not a JSON object")
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// splitObject splits a JSON object as jsonb prints it, {"k": v, "k2": v2},
// into its members. It reports false for anything it does not expect,
// which then goes to encoding/json. PostgreSQL has validated the text, so
// finding where each value ends is enough.
func splitObject(src []byte) (map[string]json.RawMessage, bool) {
	if len(src) < 2 || src[0] != '{' || src[len(src)-1] != '}' {
		return nil, false
	}
	b := make([]byte, len(src))
	copy(b, src)
	n := 1
	for _, c := range b { // an upper bound: every member has a colon
		if c == ':' {
			n++
		}
	}
	m := make(map[string]json.RawMessage, min(n, 64))
	i := 1
	for {
		i = skipSpace(b, i)
		if i < len(b) && b[i] == '}' && len(m) == 0 {
			i++
			break
		}
		// Key.
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		end, escaped := skipString(b, i)
		if end < 0 {
			return nil, false
		}
		var key string
		if escaped {
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return nil, false
			}
		} else if kb := b[i+1 : end-1]; utf8.Valid(kb) {
			key = string(kb)
		} else {
			return nil, false // encoding/json spells bad bytes as U+FFFD
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		// Value.
		end = skipValue(b, i)
		if end < 0 {
			return nil, false
		}
		m[key] = json.RawMessage(b[i:end:end])
		i = skipSpace(b, end)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return nil, false
		}
		i++
	}
	if i != len(b) {
		return nil, false
	}
	if len(m) == 0 {
		return nil, true
	}
	return m, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i], a
// quote, and whether it holds escapes; -1 if it does not end.
func skipString(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, false
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := skipString(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := skipString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) {
		c := b[j]
		if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		j++
	}
	if j == i {
		return -1
	}
	return j
}
