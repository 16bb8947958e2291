// Package cookiestore keeps Hallpass sessions sealed inside their
// cookies, with no session state on the server. Set a *Sealer as
// hallpass.Config.Sealer instead of a Store; handlers do not change.
//
//	rev, _ := hallpass.NewRevocations(ctx, store, nil) // shared revocation list
//	sealer, _ := cookiestore.New(key)                  // 32 bytes from crypto/rand
//	m, _ := hallpass.New(hallpass.Config{Sealer: sealer, Revocations: rev})
//
// A cookie is XChaCha20-Poly1305 over the whole session record (data,
// user, deadlines, the time its token was issued), with the cookie's name
// and the key's id as associated data, so a value cannot be moved to
// another cookie or opened with another key. The format is
//
//	base64url( version(1) | key id(4) | nonce(24) | ciphertext+tag )
//
// Keys rotate without signing anyone out: the first key of the ring seals,
// every key opens the values that name it. Add the new key in front,
// and drop the old one once every cookie sealed with it has expired (the
// session lifetime).
//
// What sealing cannot do alone, the Manager does with its Revocations:
// Logout puts the session's handle on the list until the cookie would
// have expired, so a cookie captured before Logout gets a guest; sign
// out everywhere and password changes cut off the user's older cookies.
// The revocation list lives in the store you give it (memory, SQLite,
// Redis or PostgreSQL), so that every instance refuses the same cookies.
//
// Threat model. Whoever reads a cookie (it is HttpOnly, Secure and
// SameSite by default) holds the session until it expires or is revoked,
// as with any bearer cookie; the sealing keeps its content secret from
// them and stops them changing it. Whoever holds a key can forge any
// session: keep keys out of the code and the repository.
package cookiestore

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/internal/unixms"
)

// KeySize is the size of a sealing key.
const KeySize = chacha20poly1305.KeySize

const (
	version   = 1
	kidSize   = 4
	headerLen = 1 + kidSize + chacha20poly1305.NonceSizeX
	// maxValue bounds what Open decodes: no browser sends a longer cookie.
	maxValue = hallpass.MaxCookieSize
)

var enc = base64.RawURLEncoding.Strict()

// errOpen is all Open says about a value it refuses: which check failed
// would only help someone forging cookies.
var errOpen = errors.New("cookiestore: the cookie is not one this server sealed")

// Sealer seals sessions into cookie values and opens them. It is safe for
// concurrent use.
type Sealer struct {
	keys []key // keys[0] seals
}

type key struct {
	id   [kidSize]byte
	aead cipherAEAD
}

// cipherAEAD is the part of cipher.AEAD used here.
type cipherAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// New returns a Sealer for a key ring: the first key seals, every key
// opens. Each key is KeySize random bytes (crypto/rand, or
// `openssl rand -base64 32` decoded); two keys must not be equal.
func New(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("cookiestore: New needs at least one key of 32 random bytes")
	}
	s := &Sealer{}
	seen := make(map[[kidSize]byte]bool)
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("cookiestore: key %d is %d bytes; want %d random bytes", i, len(k), KeySize)
		}
		aead, err := chacha20poly1305.NewX(k)
		if err != nil {
			return nil, err
		}
		// The id names the key without revealing it: a hash under a
		// label of its own.
		sum := sha256.Sum256(append([]byte("hallpass cookiestore key id\x00"), k...))
		var id [kidSize]byte
		copy(id[:], sum[:])
		if seen[id] {
			return nil, fmt.Errorf("cookiestore: key %d repeats an earlier key (or its id); use distinct keys", i)
		}
		seen[id] = true
		s.keys = append(s.keys, key{id: id, aead: aead})
	}
	return s, nil
}

var _ hallpass.Sealer = (*Sealer)(nil)

// payload is a record as sealed: short names, because every byte counts
// against the cookie limit. Times are unix milliseconds, 0 for the zero
// time.
type payload struct {
	Handle    string                     `json:"h"`
	User      string                     `json:"u,omitempty"`
	AuthTime  int64                      `json:"at,omitempty"`
	Level     string                     `json:"al,omitempty"`
	Remember  bool                       `json:"rm,omitempty"`
	ReauthAt  int64                      `json:"ra,omitempty"`
	Persist   bool                       `json:"p,omitempty"`
	Absolute  int64                      `json:"ad,omitempty"`
	LastSeen  int64                      `json:"ls,omitempty"`
	Idle      int64                      `json:"id,omitempty"`
	LastIP    string                     `json:"li,omitempty"`
	LastUA    string                     `json:"lu,omitempty"`
	Created   int64                      `json:"ca,omitempty"`
	CreatedIP string                     `json:"ci,omitempty"`
	CreatedUA string                     `json:"cu,omitempty"`
	Data      map[string]json.RawMessage `json:"d,omitempty"`
	Version   int64                      `json:"v"`
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return unixms.From(t)
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

// Seal implements hallpass.Sealer.
func (s *Sealer) Seal(name string, r *hallpass.Record) (string, error) {
	p := payload{
		Handle: r.Handle, User: r.UserID, AuthTime: ms(r.AuthTime), Level: r.AuthLevel,
		Remember: r.Remembered, ReauthAt: ms(r.ReauthAt), Persist: r.Persistent,
		Absolute: ms(r.AbsoluteDeadline), LastSeen: ms(r.LastSeen), Idle: ms(r.IdleDeadline),
		LastIP: r.LastIP, LastUA: r.LastUA, Created: ms(r.CreatedAt), CreatedIP: r.CreatedIP,
		CreatedUA: r.CreatedUA, Data: r.Data, Version: r.Version,
	}
	plain, err := json.Marshal(&p)
	if err != nil {
		return "", fmt.Errorf("cookiestore: encode the session: %w", err)
	}
	k := &s.keys[0]
	buf := make([]byte, headerLen, headerLen+len(plain)+chacha20poly1305.Overhead)
	buf[0] = version
	copy(buf[1:], k.id[:])
	nonce := buf[1+kidSize : headerLen]
	rand.Read(nonce)
	buf = k.aead.Seal(buf, nonce, plain, ad(name, buf[:1+kidSize]))
	return enc.EncodeToString(buf), nil
}

// ad binds a value to its cookie name and its header (version, key id).
func ad(name string, header []byte) []byte {
	b := make([]byte, 0, len(name)+1+len(header))
	b = append(b, name...)
	b = append(b, 0)
	return append(b, header...)
}

// Open implements hallpass.Sealer.
func (s *Sealer) Open(name, value string) (*hallpass.Record, error) {
	if len(value) > maxValue || len(value) < enc.EncodedLen(headerLen+chacha20poly1305.Overhead) {
		return nil, errOpen
	}
	// The decoder skips CR and LF, so the length of value does not bound
	// the length of raw: check it again.
	raw, err := enc.DecodeString(value)
	if err != nil || len(raw) < headerLen+chacha20poly1305.Overhead || raw[0] != version {
		return nil, errOpen
	}
	var k *key
	for i := range s.keys {
		if bytes.Equal(s.keys[i].id[:], raw[1:1+kidSize]) {
			k = &s.keys[i]
			break
		}
	}
	if k == nil {
		return nil, errOpen
	}
	plain, err := k.aead.Open(nil, raw[1+kidSize:headerLen], raw[headerLen:], ad(name, raw[:1+kidSize]))
	if err != nil {
		return nil, errOpen
	}
	var p payload
	if err := json.Unmarshal(plain, &p); err != nil || p.Handle == "" {
		// Authentic but unreadable: sealed by a newer, incompatible
		// version of this package, say.
		return nil, fmt.Errorf("cookiestore: a sealed session did not decode: %v", err)
	}
	r := &hallpass.Record{
		Handle: p.Handle,
		Meta: hallpass.Meta{
			UserID: p.User, AuthTime: fromMS(p.AuthTime), AuthLevel: p.Level,
			Remembered: p.Remember, ReauthAt: fromMS(p.ReauthAt), Persistent: p.Persist,
			AbsoluteDeadline: fromMS(p.Absolute),
		},
		Touch:     hallpass.Touch{LastSeen: fromMS(p.LastSeen), IdleDeadline: fromMS(p.Idle), LastIP: p.LastIP, LastUA: p.LastUA},
		CreatedAt: fromMS(p.Created), CreatedIP: p.CreatedIP, CreatedUA: p.CreatedUA,
		Data:    p.Data,
		Version: p.Version,
	}
	return r, nil
}
