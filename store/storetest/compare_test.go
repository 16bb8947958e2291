package storetest

import (
	"testing"
	"time"
)

// TestJSONEqual pins down "semantically equal JSON": what a jsonb column
// may change and what it may not.
func TestJSONEqual(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{`{"a":1,"b":[true,null]}`, `{ "b" : [ true , null ], "a" : 1 }`, true},
		{`100`, `1e2`, true},
		{`1.0`, `1`, true},
		{`-0.00125`, `-1.25e-3`, true},
		{`12345678901234567890123`, `12345678901234567890123.0`, true},
		{`"\u00e9\n"`, `"é\n"`, true},
		{`{}`, `{}`, true},
		{`12345678901234567890123`, `12345678901234567890124`, false}, // equal as float64
		{`1`, `"1"`, false},
		{`null`, `false`, false},
		{`""`, `null`, false},
		{`[1,2]`, `[2,1]`, false},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`{"a":null}`, `{}`, false},
		{`{}`, `[]`, false},
		{`1`, `1 2`, false},
		{`{"a":1}`, `{"a":1`, false},
	} {
		if got := jsonEqual([]byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("jsonEqual(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := jsonEqual([]byte(c.b), []byte(c.a)); got != c.want {
			t.Errorf("jsonEqual(%s, %s) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func TestSameTime(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	for _, c := range []struct {
		a, b time.Time
		want bool
	}{
		{base, base.In(zoneEast), true},
		{base, base.Add(999 * time.Microsecond), true}, // beyond the promised precision
		{base, base.Add(time.Millisecond), false},
		{base, base.Truncate(time.Second), false},
		{time.Time{}, time.Time{}, true},
		{time.Time{}, time.Unix(0, 0), false},
		{time.Time{}, base, false},
	} {
		if got := sameTime(c.a, c.b); got != c.want {
			t.Errorf("sameTime(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := sameTime(c.b, c.a); got != c.want {
			t.Errorf("sameTime(%v, %v) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}
