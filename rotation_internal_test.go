package hallpass

import (
	"encoding/hex"
	"testing"
)

func TestSealedSuccessorOpensOnlyWithItsToken(t *testing.T) {
	old, next := NewToken(), NewToken()
	sealed, err := sealSuccessor(old, next)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openSuccessor(old, sealed); err != nil || got != next {
		t.Fatalf("openSuccessor = %q, %v", got, err)
	}
	if _, err := openSuccessor(NewToken(), sealed); err == nil {
		t.Fatal("tombstone opened with another token")
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := openSuccessor(old, tampered); err == nil {
		t.Fatal("tampered tombstone opened")
	}
	for _, short := range [][]byte{nil, sealed[:5]} {
		if _, err := openSuccessor(old, short); err == nil {
			t.Fatal("short tombstone opened")
		}
	}
}

// FuzzOpenSuccessor checks that reading a tombstone never panics and
// yields nothing but a canonical token, whatever the store hands back.
func FuzzOpenSuccessor(f *testing.F) {
	old := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	sealed, _ := sealSuccessor(old, NewToken())
	f.Add(old, sealed)
	f.Add(old, []byte{})
	f.Add("", []byte("short"))
	f.Fuzz(func(t *testing.T, token string, sealed []byte) {
		got, err := openSuccessor(token, sealed)
		if err != nil {
			return
		}
		if _, perr := ParseToken(got); perr != nil {
			t.Fatalf("tombstone yielded %q, not a token", got)
		}
	})
}

// TestTombstoneFromEarlierRelease opens a tombstone sealed by the release
// before package successor took over the sealing: tombstones in stores
// must keep opening across upgrades.
func TestTombstoneFromEarlierRelease(t *testing.T) {
	old, next := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
	sealed, _ := hex.DecodeString("f452c23b188e93b7af1965eaa6251004d49f62fc356ad6f98e047dee814d731498f809c12df12cfc052fd59f62d005e81cf11d1699ce8f2908d37205d35fd021e7ef381133060e")
	if got, err := openSuccessor(old, sealed); err != nil || got != next {
		t.Fatalf("openSuccessor = %q, %v; want %q", got, err, next)
	}
}
