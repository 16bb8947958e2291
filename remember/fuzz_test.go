package remember

import "testing"

// FuzzParse checks that parseToken never panics and accepts exactly one
// spelling of each token: whatever it accepts, String gives back as is.
// Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add(newToken().String())
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseToken(s)
		if err != nil {
			// One fixed error: it cannot quote the cookie.
			if err != errMalformed {
				t.Fatalf("error %v, want errMalformed", err)
			}
			return
		}
		if got := tok.String(); got != s {
			t.Fatalf("parseToken(%q) = %q: not canonical", s, got)
		}
		if len(tok.selector) != selectorLen {
			t.Fatalf("selector %q has %d characters", tok.selector, len(tok.selector))
		}
	})
}

func TestParseRoundTrip(t *testing.T) {
	for range 1000 {
		tok := newToken()
		got, err := parseToken(tok.String())
		if err != nil || got != tok {
			t.Fatalf("parseToken(%q) = %+v, %v", tok.String(), got, err)
		}
	}
}
