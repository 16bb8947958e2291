// Package jsontext answers questions about encoded JSON that both the
// engine and the stores need answered the same way.
package jsontext

import "bytes"

// HasEscapedNUL reports whether the JSON text b has \u0000 in a string,
// which PostgreSQL's jsonb cannot hold. Outside strings JSON has no
// backslashes, and inside one a backslash always starts an escape of
// known length, so skipping escapes whole is enough to tell \u0000 from
// \\u0000. Encoders never write a raw NUL: it must be escaped.
func HasEscapedNUL(b []byte) bool {
	for {
		i := bytes.IndexByte(b, '\\')
		if i < 0 || i+1 >= len(b) {
			return false
		}
		if b[i+1] == 'u' && i+6 <= len(b) && string(b[i+2:i+6]) == "0000" {
			return true
		}
		b = b[i+2:]
	}
}
