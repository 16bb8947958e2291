package hallpass

import "testing"

func TestSealedSuccessorOpensOnlyWithItsToken(t *testing.T) {
	old, next := NewToken(), NewToken()
	sealed := sealSuccessor(old, next)
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
	sealed := sealSuccessor(old, NewToken())
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
