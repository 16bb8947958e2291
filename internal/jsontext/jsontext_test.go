package jsontext

import "testing"

func TestHasEscapedNUL(t *testing.T) {
	for in, want := range map[string]bool{
		`"a\u0000b"`:      true,
		`"\u0000"`:        true,
		`"\\u0000"`:       false, // a backslash, then the text u0000
		`"\\\u0000"`:      true,
		`"u0000"`:         false,
		`{"k":"\u0000"}`:  true,
		`{"\u0000":1}`:    true,
		`"\u00001"`:       true,
		`"\u000"`:         false,
		`""`:              false,
		`\`:               false,
		`"\u0001"`:        false,
		`"\"\u0000"`:      true,
		`["x","\\","\\"]`: false,
		`"\`:              false,
	} {
		if got := HasEscapedNUL([]byte(in)); got != want {
			t.Errorf("HasEscapedNUL(%s) = %v, want %v", in, got, want)
		}
	}
}

func FuzzHasEscapedNUL(f *testing.F) {
	f.Add([]byte(`"\\\\u0000"`))
	f.Fuzz(func(t *testing.T, b []byte) { HasEscapedNUL(b) })
}
