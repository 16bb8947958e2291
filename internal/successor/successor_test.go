package successor

import "testing"

func TestSealOpen(t *testing.T) {
	const label = "test successor"
	ad := []byte("ad")
	sealed := Seal(label, "old", "next", ad)
	if got, ok := Open(label, "old", sealed, ad); !ok || got != "next" {
		t.Fatalf("Open = %q, %v", got, ok)
	}
	for name, open := range map[string]func() (string, bool){
		"another old":   func() (string, bool) { return Open(label, "other", sealed, ad) },
		"another label": func() (string, bool) { return Open("other", "old", sealed, ad) },
		"another ad":    func() (string, bool) { return Open(label, "old", sealed, []byte("other")) },
		"short":         func() (string, bool) { return Open(label, "old", sealed[:5], ad) },
		"empty":         func() (string, bool) { return Open(label, "old", nil, ad) },
	} {
		if got, ok := open(); ok {
			t.Errorf("%s: opened to %q", name, got)
		}
	}
	for i := range sealed {
		for bit := range 8 {
			c := append([]byte(nil), sealed...)
			c[i] ^= 1 << bit
			if _, ok := Open(label, "old", c, ad); ok {
				t.Fatalf("opened with byte %d bit %d flipped", i, bit)
			}
		}
	}
	if string(Seal(label, "old", "next", ad)) == string(sealed) {
		t.Error("two seals of the same successor are equal: the nonce repeats")
	}
}
