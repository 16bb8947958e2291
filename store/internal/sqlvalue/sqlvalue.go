// Package sqlvalue converts record fields to and from the column values
// the SQL stores (sqlitestore, pgstore) keep, so both spell them alike.
package sqlvalue

import (
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	minTime = time.UnixMilli(math.MinInt64)
	maxTime = time.UnixMilli(math.MaxInt64)
)

// Millis returns t in unix milliseconds, or nil (NULL) for the zero time.
// Times beyond what int64 milliseconds can hold are clamped rather than
// left to wrap around.
func Millis(t time.Time) any {
	switch {
	case t.IsZero():
		return nil
	case t.Before(minTime):
		return int64(math.MinInt64)
	case t.After(maxTime):
		return int64(math.MaxInt64)
	}
	return t.UnixMilli()
}

// FromMillis is the inverse of Millis: a NULL (valid false) is the zero
// time.
func FromMillis(ms int64, valid bool) time.Time {
	if !valid {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// NullString stores an empty user id as NULL, so that guests stay out of
// the partial index on user_id.
func NullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ValidKey returns a data key as it reads back from stored JSON, where
// each byte of invalid UTF-8 has become U+FFFD, as encoding/json writes
// it. Deltas must name keys the same way.
func ValidKey(k string) string {
	if utf8.ValidString(k) {
		return k
	}
	var b strings.Builder
	for _, r := range k { // an invalid byte comes out as one RuneError
		b.WriteRune(r)
	}
	return b.String()
}
