package successor

import "testing"

func TestSealOpen(t *testing.T) {
	const label = "test successor"
	ad := []byte("ad")
	sealed, err := Seal(label, "old", "next", ad)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(label, "old", sealed, ad); err != nil || got != "next" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	for name, open := range map[string]func() (string, error){
		"another old":   func() (string, error) { return Open(label, "other", sealed, ad) },
		"another label": func() (string, error) { return Open("other", "old", sealed, ad) },
		"another ad":    func() (string, error) { return Open(label, "old", sealed, []byte("other")) },
		"short":         func() (string, error) { return Open(label, "old", sealed[:5], ad) },
		"empty":         func() (string, error) { return Open(label, "old", nil, ad) },
	} {
		if got, err := open(); err == nil {
			t.Errorf("%s: opened to %q", name, got)
		}
	}
	for i := range sealed {
		for bit := range 8 {
			c := append([]byte(nil), sealed...)
			c[i] ^= 1 << bit
			if _, err := Open(label, "old", c, ad); err == nil {
				t.Fatalf("opened with byte %d bit %d flipped", i, bit)
			}
		}
	}
	if again, _ := Seal(label, "old", "next", ad); string(again) == string(sealed) {
		t.Error("two seals of the same successor are equal: the nonce repeats")
	}
}
