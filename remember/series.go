package remember

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
)

// A cookie is selector.validator: 16 and 32 random bytes, each in
// base64url without padding.
const (
	selectorBytes  = 16
	validatorBytes = 32
	selectorLen    = (selectorBytes*8 + 5) / 6
	validatorLen   = (validatorBytes*8 + 5) / 6
	cookieLen      = selectorLen + 1 + validatorLen
)

// Domain separation: no string hashed or MACed here can be mistaken for
// another, nor for a session token, whose key is its bare SHA-256.
const (
	seriesDomain    = "hallpass remember series\x00"
	userDomain      = "hallpass remember user\x00"
	validatorDomain = "hallpass remember validator\x00"
	successorDomain = "hallpass remember successor\x00"
)

var strictB64 = base64.RawURLEncoding.Strict()

// errMalformed never quotes the cookie: it might be someone's valid one.
var errMalformed = errors.New("remember: cookie is not a canonical selector.validator pair")

// token is a parsed cookie.
type token struct {
	selector  string // as sent: canonical base64url, selectorLen characters
	validator [validatorBytes]byte
}

// newToken returns a token of a new series.
func newToken() token {
	var sel [selectorBytes]byte
	var t token
	rand.Read(sel[:]) // never fails; crashes the program if the kernel has no entropy
	rand.Read(t.validator[:])
	t.selector = base64.RawURLEncoding.EncodeToString(sel[:])
	return t
}

// parseToken accepts a cookie only as String spells it: exact length, one
// dot, canonical base64url on both sides. Every other spelling of the same
// bytes is refused, so one token has exactly one cookie value.
func parseToken(s string) (token, error) {
	if len(s) != cookieLen || s[selectorLen] != '.' {
		return token{}, errMalformed
	}
	// The decoder skips \r and \n, so a right-length input with them
	// decodes short: the byte counts catch it.
	var buf [validatorBytes + 3]byte
	n, err := strictB64.Decode(buf[:], []byte(s[:selectorLen]))
	if err != nil || n != selectorBytes {
		return token{}, errMalformed
	}
	n, err = strictB64.Decode(buf[:], []byte(s[selectorLen+1:]))
	if err != nil || n != validatorBytes {
		return token{}, errMalformed
	}
	t := token{selector: s[:selectorLen]}
	copy(t.validator[:], buf[:validatorBytes])
	return t, nil
}

// String returns the cookie value.
func (t token) String() string {
	return t.selector + "." + base64.RawURLEncoding.EncodeToString(t.validator[:])
}

// seriesKey is where a series is stored. Only the cookie holds the
// selector, so a leaked store names no series a cookie could be made for.
func seriesKey(selector string) hallpass.Key {
	return sha256.Sum256([]byte(seriesDomain + selector))
}

// userKey is where a user's index of series is stored.
func userKey(userID string) hallpass.Key {
	return sha256.Sum256([]byte(userDomain + userID))
}

func validatorHash(v [validatorBytes]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(validatorDomain))
	h.Write(v[:])
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// successor derives the validator that replaces v. It is a function of
// the presented cookie, so parallel requests presenting the same one
// agree on it without coordinating, and the key keeps it unpredictable
// to anyone who does not hold the server's key.
func successor(key []byte, selector string, v [validatorBytes]byte) [validatorBytes]byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(successorDomain))
	mac.Write([]byte(selector))
	mac.Write(v[:])
	var out [validatorBytes]byte
	mac.Sum(out[:0])
	return out
}

func equalHash(a, b [sha256.Size]byte) bool {
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Data keys of a series record.
const (
	dataUser     = "user"
	dataCurrent  = "current"    // validatorHash of the current validator
	dataPrevious = "previous"   // validatorHash of the one it replaced
	dataRotated  = "rotated_at" // unix ms of the last rotation
	// dataSession prefixes one key per session the series started (or was
	// issued in), holding unix ms: one key each, so that parallel sign-ins
	// add theirs with merged writes and none is lost.
	dataSession = "session:"
)

// maxSessions bounds the session handles a series keeps; the oldest go
// first. A series is used about once per persistent session lifetime, so
// the bound is reached only by sessions long gone.
const maxSessions = 32

// series is a decoded series record.
type series struct {
	key       hallpass.Key
	handle    string
	user      string
	current   [sha256.Size]byte
	previous  [sha256.Size]byte
	hasPrev   bool
	rotatedAt time.Time
	sessions  map[string]int64 // handle → unix ms
	absolute  time.Time        // never moves
	expires   time.Time        // sliding, at most absolute
}

var errDamaged = errors.New("remember: stored series is damaged")

func decodeSeries(rec *hallpass.Record) (series, error) {
	s := series{key: rec.Key, handle: rec.Handle, absolute: rec.AbsoluteDeadline, expires: rec.ExpiresAt()}
	if json.Unmarshal(rec.Data[dataUser], &s.user) != nil || s.user == "" {
		return s, errDamaged
	}
	if !decodeHash(rec.Data[dataCurrent], &s.current) {
		return s, errDamaged
	}
	if raw, ok := rec.Data[dataPrevious]; ok {
		if !decodeHash(raw, &s.previous) {
			return s, errDamaged
		}
		s.hasPrev = true
	}
	if raw, ok := rec.Data[dataRotated]; ok {
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return s, errDamaged
		}
		s.rotatedAt = time.UnixMilli(ms)
	}
	for k, raw := range rec.Data {
		if h, ok := strings.CutPrefix(k, dataSession); ok {
			ms, _ := strconv.ParseInt(string(raw), 10, 64)
			if s.sessions == nil {
				s.sessions = make(map[string]int64)
			}
			s.sessions[h] = ms
		}
	}
	return s, nil
}

func decodeHash(raw json.RawMessage, dst *[sha256.Size]byte) bool {
	var b []byte
	if json.Unmarshal(raw, &b) != nil || len(b) != sha256.Size {
		return false
	}
	copy(dst[:], b)
	return true
}

func hashValue(h [sha256.Size]byte) json.RawMessage {
	b, _ := json.Marshal(h[:]) // base64 in a JSON string
	return b
}

func stringValue(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

func timeValue(t time.Time) json.RawMessage {
	return strconv.AppendInt(nil, t.UnixMilli(), 10)
}

// keyValue and parseKeyValue spell a series key in the user index.
func keyValue(k hallpass.Key) json.RawMessage { return stringValue(k.String()) }

func parseKeyValue(raw json.RawMessage) (hallpass.Key, bool) {
	var s string
	var k hallpass.Key
	if json.Unmarshal(raw, &s) != nil || hex.DecodedLen(len(s)) != len(k) {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(s))
	return k, err == nil
}
