package pgstore

import (
	"encoding/json"
	"github.com/hallpass/hallpass/internal/jsontext"
	"github.com/hallpass/hallpass/store/internal/sqlvalue"
	"unicode/utf8"
)

// encodeObject returns m as one JSON object for a jsonb parameter, or nil
// for an empty map. Values are validated, not re-encoded: PostgreSQL
// parses the text anyway, and a 1 MiB value is not worth a second copy.
// It refuses, before anything is sent, what jsonb would refuse with a
// message quoting the data: invalid JSON or UTF-8, and U+0000.
func encodeObject(m map[string]json.RawMessage) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	n := 2
	for k, v := range m {
		n += len(k) + len(v) + 8
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	first := true
	for k, v := range m {
		if !first {
			b = append(b, ',')
		}
		first = false
		if hasNUL(k) {
			return nil, ErrNUL
		}
		b = appendString(b, k)
		b = append(b, ':')
		switch {
		case len(v) == 0:
			// What encoding/json makes of a nil RawMessage.
			b = append(b, "null"...)
		case !json.Valid(v):
			return nil, errInvalidData
		default:
			b = append(b, v...)
		}
	}
	b = append(b, '}')
	if !utf8.Valid(b) {
		return nil, errInvalidData
	}
	if jsontext.HasEscapedNUL(b) {
		return nil, ErrNUL
	}
	return b, nil
}

// appendString appends s as a JSON string, with each byte of invalid
// UTF-8 replaced by U+FFFD, as encoding/json does, so that validKey names
// the stored key.
func appendString(b []byte, s string) []byte {
	enc, err := json.Marshal(s)
	if err != nil { // a string always marshals
		panic(err)
	}
	return append(b, enc...)
}

// encodeDelta returns the data change of a Delta: patch, the object of
// keys to set (nil if none), and remove, the keys to delete first. Keys to
// remove that jsonb cannot hold are left out, as no row has them; with
// Clear nothing needs removing.
func encodeDelta(set map[string]json.RawMessage, removeKeys []string, clearAll bool) (patch []byte, remove []string, err error) {
	if patch, err = encodeObject(set); err != nil {
		return nil, nil, err
	}
	if clearAll {
		return patch, nil, nil
	}
	for _, k := range removeKeys {
		if _, ok := set[k]; ok || hasNUL(k) {
			continue
		}
		remove = append(remove, sqlvalue.ValidKey(k))
	}
	return patch, remove, nil
}
