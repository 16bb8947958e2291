package main

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestPasswordRoundTrip(t *testing.T) {
	t.Parallel()
	enc := hashPassword("correct horse battery staple", defaultArgon2)
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not start with the PHC prefix of the default parameters", enc)
	}
	ok, err := verifyPassword("correct horse battery staple", enc)
	if err != nil || !ok {
		t.Fatalf("verify(right password) = %v, %v; want true, nil", ok, err)
	}
	ok, err = verifyPassword("correct horse battery stapler", enc)
	if err != nil || ok {
		t.Fatalf("verify(wrong password) = %v, %v; want false, nil", ok, err)
	}
	if enc2 := hashPassword("correct horse battery staple", defaultArgon2); enc2 == enc {
		t.Fatal("two hashes of one password are equal; the salt is not random")
	}
}

func TestPasswordPHCParses(t *testing.T) {
	t.Parallel()
	enc := hashPassword("pw", defaultArgon2)
	p, salt, key, err := parsePHC(enc)
	if err != nil {
		t.Fatal(err)
	}
	if p != defaultArgon2 {
		t.Errorf("params = %+v; want %+v", p, defaultArgon2)
	}
	if len(salt) != 16 || len(key) != 32 {
		t.Errorf("salt %d bytes, key %d bytes; want 16 and 32", len(salt), len(key))
	}
}

// TestPasswordKnownAnswer checks a hash made by the reference C
// implementation, so that the PHC encoding interoperates with other tools
// and not just with itself.
func TestPasswordKnownAnswer(t *testing.T) {
	t.Parallel()
	// echo -n password | argon2 somesalt -id -t 2 -m 16 -p 4 -l 32 -e
	const enc = "$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo"
	ok, err := verifyPassword("password", enc)
	if err != nil || !ok {
		t.Fatalf("verify(reference hash) = %v, %v; want true, nil", ok, err)
	}
}

func TestPasswordTampered(t *testing.T) {
	t.Parallel()
	enc := hashPassword("pw", defaultArgon2)
	f := strings.Split(enc, "$") // "", argon2id, v=19, params, salt, hash
	join := func(g []string) string { return strings.Join(g, "$") }
	with := func(i int, v string) string {
		g := append([]string(nil), f...)
		g[i] = v
		return join(g)
	}
	for name, bad := range map[string]string{
		"empty":            "",
		"not phc":          "hunter2",
		"too few fields":   join(f[:5]),
		"too many fields":  enc + "$x",
		"argon2i":          with(1, "argon2i"),
		"bcrypt":           "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"version 16":       with(2, "v=16"),
		"params reordered": with(3, "t=2,m=19456,p=1"),
		"params missing":   with(3, "m=19456,t=2"),
		"param not number": with(3, "m=19456,t=two,p=1"),
		"param leading 0":  with(3, "m=019456,t=2,p=1"),
		"param negative":   with(3, "m=19456,t=-2,p=1"),
		"t zero":           with(3, "m=19456,t=0,p=1"),
		"p zero":           with(3, "m=19456,t=2,p=0"),
		"p too big":        with(3, "m=19456,t=2,p=256"),
		"m huge":           with(3, "m=4294967295,t=2,p=1"),
		"t huge":           with(3, "m=19456,t=1000000,p=1"),
		"m below 8p":       with(3, "m=7,t=2,p=1"),
		"salt not base64":  with(4, "!!!!"),
		"salt padded":      with(4, f[4]+"=="),
		"salt short":       with(4, "c2FsdA"),
		"hash not base64":  with(5, "*"+f[5][1:]),
		"hash short":       with(5, f[5][:8]),
		"hash empty":       with(5, ""),
	} {
		t.Run(name, func(t *testing.T) {
			ok, err := verifyPassword("pw", bad)
			if ok || !errors.Is(err, ErrBadHash) {
				t.Fatalf("verify(%q) = %v, %v; want false, ErrBadHash", bad, ok, err)
			}
		})
	}

	// A well-formed hash with one flipped key byte parses and fails.
	// Swap the first character for another base64 letter: XOR could
	// produce a character outside the alphabet, which fails to parse
	// rather than to verify.
	k := []byte(f[5])
	if k[0] == 'A' {
		k[0] = 'B'
	} else {
		k[0] = 'A'
	}
	ok, err := verifyPassword("pw", with(5, string(k)))
	if ok || err != nil {
		t.Fatalf("verify(flipped key) = %v, %v; want false, nil", ok, err)
	}
}

func TestHasherUnknownUser(t *testing.T) {
	t.Parallel()
	h := newHasher(defaultArgon2)
	for _, pw := range []string{"", "pw", "not the password of any account"} {
		if ok, err := h.Verify(context.Background(), pw, ""); ok || err != nil {
			t.Errorf("Verify(%q, no user) = %v, %v; want false, nil", pw, ok, err)
		}
	}
}

func TestHasherCanceled(t *testing.T) {
	t.Parallel()
	h := newHasher(defaultArgon2)
	for range cap(h.slots) {
		h.slots <- struct{}{} // every slot busy
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with every slot busy and ctx canceled: err = %v; want context.Canceled", err)
	}
}
