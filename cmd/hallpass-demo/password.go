package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// argon2Params are the Argon2id cost parameters of a password hash.
type argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// defaultArgon2 is the second recommendation of OWASP's password storage
// cheat sheet (m=19 MiB, t=2, p=1): RFC 9106's first choice wants 2 GiB
// per hash, which a small server cannot give every concurrent login.
var defaultArgon2 = argon2Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Limits on what a stored hash may ask for. A hash comes from our own
// database, but a tampered row must not make one login allocate gigabytes
// or spin for minutes.
const (
	maxArgonMemory  = 256 * 1024 // KiB
	maxArgonTime    = 16
	minArgonSaltLen = 8
	minArgonKeyLen  = 16
	maxArgonKeyLen  = 64
)

// ErrBadHash reports a stored password hash that is not an Argon2id PHC
// string this program can verify.
var ErrBadHash = errors.New("password hash is not a valid argon2id PHC string")

var b64 = base64.RawStdEncoding.Strict()

// hashPassword returns password hashed with Argon2id under a fresh random
// salt, as a PHC string: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func hashPassword(password string, p argon2Params) string {
	salt := make([]byte, p.SaltLen)
	rand.Read(salt) // never fails; crashes the program if the kernel has no entropy
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// verifyPassword reports whether password matches encoded, a PHC string
// from hashPassword. It takes the cost parameters from encoded, so hashes
// made under older parameters keep working. A malformed encoded gives an
// error wrapping ErrBadHash.
func verifyPassword(password, encoded string) (bool, error) {
	p, salt, want, err := parsePHC(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// parsePHC splits an Argon2id PHC string into its parameters, salt and key.
func parsePHC(encoded string) (p argon2Params, salt, key []byte, err error) {
	bad := func(why string) (argon2Params, []byte, []byte, error) {
		return argon2Params{}, nil, nil, fmt.Errorf("%w: %s", ErrBadHash, why)
	}
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[0] != "" {
		return bad("want 5 $-separated fields")
	}
	if f[1] != "argon2id" {
		return bad("algorithm is not argon2id")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported version")
	}
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return bad("want parameters m, t and p")
	}
	var vals [3]uint64
	for i, name := range [...]string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(params[i], name+"=")
		if !ok {
			return bad("want parameters m, t and p in that order")
		}
		// ParseUint accepts leading zeros; PHC gives each value one
		// spelling, so the round trip refuses them.
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || v != strconv.FormatUint(n, 10) {
			return bad("parameter " + name + " is not a decimal number")
		}
		vals[i] = n
	}
	p.Memory, p.Time = uint32(vals[0]), uint32(vals[1])
	switch {
	case vals[2] < 1 || vals[2] > 255:
		return bad("p out of range")
	case p.Time < 1 || p.Time > maxArgonTime:
		return bad("t out of range")
	case uint64(p.Memory) < 8*vals[2] || p.Memory > maxArgonMemory:
		return bad("m out of range")
	}
	p.Threads = uint8(vals[2])
	if salt, err = b64.DecodeString(f[4]); err != nil || len(salt) < minArgonSaltLen {
		return bad("salt is not base64 of at least 8 bytes")
	}
	if key, err = b64.DecodeString(f[5]); err != nil || len(key) < minArgonKeyLen || len(key) > maxArgonKeyLen {
		return bad("hash is not base64 of 16 to 64 bytes")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}

// hasher runs Argon2id for the handlers. Each hash takes Memory KiB for
// its whole run, so it lets only a few run at once: a burst of logins then
// queues instead of exhausting memory.
type hasher struct {
	params argon2Params
	slots  chan struct{}
	// dummy is verified against when the user does not exist, so that an
	// unknown username costs the same work as a wrong password and
	// response times do not reveal which usernames exist.
	dummy string
}

func newHasher(p argon2Params) *hasher {
	return &hasher{
		params: p,
		slots:  make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		dummy:  hashPassword("not the password of any account", p),
	}
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hasher) release() { <-h.slots }

// Hash hashes password with the hasher's parameters.
func (h *hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return hashPassword(password, h.params), nil
}

// Verify reports whether password matches encoded. An empty encoded
// stands for a user that does not exist: Verify then does the same work
// against a dummy hash and reports false.
func (h *hasher) Verify(ctx context.Context, password, encoded string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	if encoded == "" {
		_, err := verifyPassword(password, h.dummy)
		return false, err
	}
	return verifyPassword(password, encoded)
}
