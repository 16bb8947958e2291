package cookiestore

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

func newKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

func mustNew(t testing.TB, keys ...[]byte) *Sealer {
	t.Helper()
	s, err := New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fullRecord has every field set to a distinct value.
func fullRecord() *hallpass.Record {
	t0 := time.UnixMilli(1_790_000_000_123)
	return &hallpass.Record{
		Handle: "h-1",
		Meta: hallpass.Meta{
			UserID: "alice", AuthTime: t0.Add(1), AuthLevel: "multi_factor", Remembered: true,
			ReauthAt: t0.Add(2), Persistent: true, AbsoluteDeadline: t0.Add(3 * time.Hour),
		},
		Touch:     hallpass.Touch{LastSeen: t0.Add(4), IdleDeadline: t0.Add(time.Hour), LastIP: "192.0.2.7", LastUA: "Firefox/140"},
		CreatedAt: t0, CreatedIP: "192.0.2.6", CreatedUA: "Firefox/139",
		Data:    map[string]json.RawMessage{"cart": json.RawMessage(`["book","pen"]`), "": json.RawMessage(`null`)},
		Version: 7,
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	s := mustNew(t, newKey())
	for _, want := range []*hallpass.Record{fullRecord(), {Handle: "guest"}} {
		v, err := s.Seal("__Host-hallpass", want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Open("__Host-hallpass", v)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(want)) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
		if strings.Contains(v, "alice") || bytes.Contains([]byte(v), []byte("book")) {
			t.Error("the cookie shows its content")
		}
	}
	// Two seals of one record differ (fresh nonce).
	a, _ := s.Seal("c", fullRecord())
	b, _ := s.Seal("c", fullRecord())
	if a == b {
		t.Error("sealing twice gave the same value")
	}
}

// normalize makes times comparable with DeepEqual and maps comparable
// whether empty or nil.
func normalize(r *hallpass.Record) hallpass.Record {
	c := *r
	for _, p := range []*time.Time{&c.AuthTime, &c.ReauthAt, &c.AbsoluteDeadline, &c.LastSeen, &c.IdleDeadline, &c.CreatedAt} {
		if !p.IsZero() {
			*p = time.UnixMilli(p.UnixMilli())
		}
	}
	if len(c.Data) == 0 {
		c.Data = nil
	}
	return c
}

func TestOpenRefusesAlteredValues(t *testing.T) {
	s := mustNew(t, newKey())
	v, err := s.Seal("name", fullRecord())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := enc.DecodeString(v)
	for i := range raw {
		for _, bit := range []byte{1, 0x80} {
			b := bytes.Clone(raw)
			b[i] ^= bit
			if _, err := s.Open("name", enc.EncodeToString(b)); err == nil {
				t.Fatalf("byte %d flipped (%#x): opened", i, bit)
			}
		}
	}
	cases := map[string]string{
		"other cookie name": "",
		"truncated":         v[:len(v)-1],
		"extended":          v + "A",
		"padded":            v + "==",
		"std base64":        strings.NewReplacer("-", "+", "_", "/").Replace(v),
		"empty":             "",
		"huge":              strings.Repeat("A", 10000),
	}
	for what, value := range cases {
		name := "name"
		if what == "other cookie name" {
			name, value = "other", v
		}
		if value == v && what != "other cookie name" {
			continue // the replacement changed nothing; no case
		}
		if _, err := s.Open(name, value); err == nil {
			t.Errorf("%s: opened", what)
		}
	}
	if _, err := mustNew(t, newKey()).Open("name", v); err == nil {
		t.Error("a value sealed with another key opened")
	}
}

func TestKeyRotation(t *testing.T) {
	k1, k2 := newKey(), newKey()
	old := mustNew(t, k1)
	v1, _ := old.Seal("c", fullRecord())

	ring := mustNew(t, k2, k1)
	if _, err := ring.Open("c", v1); err != nil {
		t.Fatalf("the ring does not open a value of its second key: %v", err)
	}
	v2, _ := ring.Seal("c", fullRecord())
	if _, err := old.Open("c", v2); err == nil {
		t.Error("the ring sealed with its second key, not its first")
	}
	if _, err := mustNew(t, k2).Open("c", v1); err == nil {
		t.Error("a value of a retired key still opens")
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	k := newKey()
	for what, keys := range map[string][][]byte{
		"none":      nil,
		"short":     {k[:16]},
		"long":      {append(bytes.Clone(k), 0)},
		"duplicate": {k, bytes.Clone(k)},
	} {
		if _, err := New(keys...); err == nil {
			t.Errorf("%s: New succeeded", what)
		}
	}
}

func FuzzOpen(f *testing.F) {
	key := bytes.Repeat([]byte{7}, KeySize)
	s := mustNew(f, key)
	v, _ := s.Seal("c", fullRecord())
	f.Add(v)
	f.Add("")
	f.Add("AQ")
	f.Add(v[:len(v)/2])
	f.Fuzz(func(t *testing.T, value string) {
		r, err := s.Open("c", value)
		if err != nil {
			return
		}
		// Whatever opens must seal again and open to the same record.
		again, err := s.Seal("c", r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := s.Open("c", again)
		if err != nil || !reflect.DeepEqual(normalize(r), normalize(r2)) {
			t.Fatalf("reseal changed the record: %v", err)
		}
	})
}

// BenchmarkSealOpen seals and opens a typical session of about 300 bytes
// of data.
func BenchmarkSealOpen(b *testing.B) {
	s := mustNew(b, newKey())
	r := fullRecord()
	r.Data = map[string]json.RawMessage{
		"cart":  json.RawMessage(`[{"sku":"BK-1042","qty":1,"price":1999},{"sku":"PN-0007","qty":3,"price":250}]`),
		"prefs": json.RawMessage(`{"theme":"dark","lang":"en-GB","currency":"EUR","tz":"Europe/Berlin"}`),
		"csrf":  json.RawMessage(`"3q2-7wEjRWeJq83vASNFZ4mrze8BI0VniavN7wEjRWc"`),
		"n":     json.RawMessage(`42`),
	}
	b.Run("Seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Seal("__Host-hallpass", r); err != nil {
				b.Fatal(err)
			}
		}
	})
	v, _ := s.Seal("__Host-hallpass", r)
	b.Run("Open", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(v)))
		for b.Loop() {
			if _, err := s.Open("__Host-hallpass", v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestOpenNewlinePadding: the decoder skips CR and LF, so a value long
// enough as text can decode to a few bytes; Open must refuse it, not
// panic.
func TestOpenNewlinePadding(t *testing.T) {
	s := mustNew(t, newKey())
	v, _ := s.Seal("c", fullRecord())
	raw, _ := enc.DecodeString(v)
	short := enc.EncodeToString(raw[:1+kidSize]) // version and key id only
	value := strings.Repeat("\n", 80) + short
	if _, err := s.Open("c", value); err == nil {
		t.Fatal("a newline-padded 5-byte value opened")
	}
}

// TestFarDeadlines: a deadline further away than milliseconds count comes
// back far away, not wrapped into the past.
func TestFarDeadlines(t *testing.T) {
	s := mustNew(t, newKey())
	far := time.Unix(1<<62, 0)
	in := &hallpass.Record{Handle: "h", Meta: hallpass.Meta{AbsoluteDeadline: far}, Touch: hallpass.Touch{IdleDeadline: far}}
	v, err := s.Seal("c", in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Open("c", v)
	if err != nil {
		t.Fatal(err)
	}
	if soon := time.Now().AddDate(1000, 0, 0); out.AbsoluteDeadline.Before(soon) || out.IdleDeadline.Before(soon) {
		t.Fatalf("far deadlines came back as %v and %v", out.AbsoluteDeadline, out.IdleDeadline)
	}
}
