package sqlitestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// TestConformance runs the Store contract's suite, a fresh file per case.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hallpass.Store {
		s, err := Open(filepath.Join(t.TempDir(), "s.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		return s
	})
}

func openTest(t testing.TB, opts *Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// openClock opens a store on a fake clock with the sweeper off, so tests
// decide when rows disappear.
func openClock(t testing.TB) (*Store, *storetest.Clock) {
	c := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	return openTest(t, &Options{Now: c.Now, SweepInterval: -1}), c
}

func key(s string) hallpass.Key { return sha256.Sum256([]byte(s)) }

// record returns a live guest record at key(name) with an idle deadline
// an hour after now.
func record(name string, now time.Time) *hallpass.Record {
	return &hallpass.Record{
		Key:    key(name),
		Handle: "h-" + name,
		Meta:   hallpass.Meta{AbsoluteDeadline: now.Add(24 * time.Hour)},
		Touch: hallpass.Touch{
			LastSeen:     now,
			IdleDeadline: now.Add(time.Hour),
			LastIP:       "192.0.2.1",
			LastUA:       "test",
		},
		CreatedAt: now,
	}
}

func mustCreate(t testing.TB, s *Store, r *hallpass.Record) {
	t.Helper()
	if err := s.Create(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

func mustLoad(t testing.TB, s *Store, k hallpass.Key) *hallpass.Record {
	t.Helper()
	r, err := s.Load(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustUpdate(t testing.TB, s *Store, k hallpass.Key, d hallpass.Delta) {
	t.Helper()
	if err := s.Update(context.Background(), k, d); err != nil {
		t.Fatal(err)
	}
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// countRows counts the table's rows, expired or not.
func countRows(t testing.TB, s *Store) int {
	t.Helper()
	var n int
	if err := s.w.QueryRow("SELECT count(*) FROM " + s.q.table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// sameJSON reports whether a and b are semantically equal JSON.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if err := da.Decode(&x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := db.Decode(&y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func sameData(t testing.TB, got, want map[string]json.RawMessage) bool {
	t.Helper()
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || !sameJSON(t, g, w) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	s, c := openClock(t)
	now := c.Now().Add(123456789 * time.Nanosecond) // sub-ms part is dropped
	in := &hallpass.Record{
		Key:    key("a"),
		Handle: "handle-a",
		Meta: hallpass.Meta{
			UserID:           "user-1",
			AuthTime:         now.Add(-time.Minute),
			AuthLevel:        "mfa",
			Remembered:       true,
			ReauthAt:         now.Add(-time.Second),
			Persistent:       true,
			AbsoluteDeadline: now.Add(30 * 24 * time.Hour),
		},
		Touch: hallpass.Touch{
			LastSeen:     now,
			IdleDeadline: now.Add(time.Hour),
			LastIP:       "2001:db8::1",
			LastUA:       "Mozilla/5.0 ☃",
		},
		CreatedAt: now.Add(-time.Hour),
		CreatedIP: "192.0.2.7",
		CreatedUA: "curl",
		Data: map[string]json.RawMessage{
			"cart":  raw(`{"items": [1, 2, {"x": null}], "total": 12345678901234567890}`),
			"n":     raw(`1.50`),
			"s":     raw(`"<b>&amp;</b> \u00e9 ☃"`),
			"null":  raw(`null`),
			"empty": raw(`{}`),
		},
		Version: 99, // the store sets it
	}
	mustCreate(t, s, in)
	got := mustLoad(t, s, in.Key)

	want := in.Clone()
	want.Version = 1
	for _, p := range []*time.Time{&want.AuthTime, &want.ReauthAt, &want.AbsoluteDeadline,
		&want.LastSeen, &want.IdleDeadline, &want.CreatedAt} {
		*p = p.Truncate(time.Millisecond)
	}
	if !sameData(t, got.Data, want.Data) {
		t.Errorf("data: got %s, want %s", got.Data, want.Data)
	}
	got.Data, want.Data = nil, nil
	// Compare times with Equal: locations differ.
	gv, wv := reflect.ValueOf(*got), reflect.ValueOf(*want)
	for _, name := range []string{"AuthTime", "ReauthAt", "AbsoluteDeadline", "LastSeen", "IdleDeadline", "CreatedAt"} {
		g, w := gv.FieldByName(name).Interface().(time.Time), wv.FieldByName(name).Interface().(time.Time)
		if !g.Equal(w) {
			t.Errorf("%s: got %v, want %v", name, g, w)
		}
	}
	for _, p := range []*hallpass.Record{got, want} {
		p.AuthTime, p.ReauthAt, p.AbsoluteDeadline = time.Time{}, time.Time{}, time.Time{}
		p.LastSeen, p.IdleDeadline, p.CreatedAt = time.Time{}, time.Time{}, time.Time{}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestGuestAndZeroTimes(t *testing.T) {
	s, _ := openClock(t)
	in := &hallpass.Record{Key: key("g"), Handle: "g"} // no deadline: never expires
	mustCreate(t, s, in)
	got := mustLoad(t, s, in.Key)
	want := in.Clone()
	want.Version = 1
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	var userID sql.NullString
	var exp int64
	if err := s.w.QueryRow("SELECT user_id, expires_at FROM "+s.q.table).Scan(&userID, &exp); err != nil {
		t.Fatal(err)
	}
	if userID.Valid || exp != never {
		t.Errorf("user_id %v, expires_at %d; want NULL, %d", userID, exp, int64(never))
	}
}

func TestCreate(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	r := record("a", c.Now())
	mustCreate(t, s, r)
	dup := record("a", c.Now())
	dup.Handle = "other"
	if err := s.Create(ctx, dup); !errors.Is(err, hallpass.ErrExists) {
		t.Fatalf("Create over a live record: %v, want ErrExists", err)
	}
	if got := mustLoad(t, s, r.Key); got.Handle != r.Handle {
		t.Fatalf("the failed Create changed the record: handle %q", got.Handle)
	}

	// An expired record is absent: its key can be taken again.
	c.Add(2 * time.Hour)
	fresh := record("a", c.Now())
	fresh.Handle = "fresh"
	fresh.Data = map[string]json.RawMessage{"k": raw(`1`)}
	mustCreate(t, s, fresh)
	got := mustLoad(t, s, r.Key)
	if got.Handle != "fresh" || got.Version != 1 || !sameData(t, got.Data, fresh.Data) {
		t.Fatalf("re-created record: %+v", got)
	}

	bad := record("bad", c.Now())
	bad.Data = map[string]json.RawMessage{"secret-key": raw(`{secret-value`)}
	err := s.Create(ctx, bad)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("Create with invalid JSON: %v", err)
	}
}

func TestExpiry(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	now := c.Now()
	idle := record("idle", now) // idle deadline +1h, absolute +24h
	abs := record("abs", now)
	abs.AbsoluteDeadline = now.Add(30 * time.Minute)
	onlyAbs := record("onlyabs", now)
	onlyAbs.IdleDeadline = time.Time{}
	onlyAbs.AbsoluteDeadline = now.Add(10 * time.Minute)
	for _, r := range []*hallpass.Record{idle, abs, onlyAbs} {
		mustCreate(t, s, r)
	}
	check := func(live ...string) {
		t.Helper()
		for _, name := range []string{"idle", "abs", "onlyabs"} {
			want := false
			for _, l := range live {
				want = want || l == name
			}
			_, err := s.Load(ctx, key(name))
			if want && err != nil || !want && !errors.Is(err, hallpass.ErrNotFound) {
				t.Errorf("at %v: Load(%s) = %v, want live %v", c.Now().Sub(now), name, err, want)
			}
			// Until the sweeper runs, Load says why the record is gone.
			var expired *hallpass.ExpiredError
			if !want && (!errors.As(err, &expired) || expired.Record.Key != key(name) || expired.Record.Handle != "h-"+name) {
				t.Errorf("Load(%s) = %v, want an ExpiredError with the record", name, err)
			}
		}
	}
	check("idle", "abs", "onlyabs")
	c.Add(10*time.Minute - time.Millisecond)
	check("idle", "abs", "onlyabs")
	c.Add(time.Millisecond) // exactly at the deadline: expired
	check("idle", "abs")
	c.Add(20 * time.Minute)
	check("idle")
	c.Add(30 * time.Minute)
	check()
}

func TestUpdateData(t *testing.T) {
	s, c := openClock(t)
	r := record("a", c.Now())
	r.Data = map[string]json.RawMessage{
		"cart": raw(`{"a": 1, "b": {"c": 2}}`),
		"keep": raw(`[1, null, {"z": null}]`),
		"big":  raw(`12345678901234567890`),
		"gone": raw(`true`),
	}
	mustCreate(t, s, r)

	// Setting an object replaces the old one; json_patch would merge it.
	mustUpdate(t, s, r.Key, hallpass.Delta{
		Set:    map[string]json.RawMessage{"cart": raw(`{"b": {"d": null}}`), "new": raw(`null`)},
		Remove: []string{"gone", "missing"},
	})
	got := mustLoad(t, s, r.Key)
	want := map[string]json.RawMessage{
		"cart": raw(`{"b": {"d": null}}`),
		"keep": raw(`[1, null, {"z": null}]`),
		"big":  raw(`12345678901234567890`),
		"new":  raw(`null`),
	}
	if !sameData(t, got.Data, want) {
		t.Fatalf("data %s, want %s", got.Data, want)
	}
	if string(got.Data["big"]) != "12345678901234567890" {
		t.Errorf("big number stored as %s", got.Data["big"])
	}
	if got.Version != 2 {
		t.Errorf("version %d, want 2", got.Version)
	}

	// Remove and Set of one key: Set wins. Clear goes first.
	mustUpdate(t, s, r.Key, hallpass.Delta{
		Clear:  true,
		Remove: []string{"x"},
		Set:    map[string]json.RawMessage{"x": raw(`"y"`)},
	})
	got = mustLoad(t, s, r.Key)
	if !sameData(t, got.Data, map[string]json.RawMessage{"x": raw(`"y"`)}) || got.Version != 3 {
		t.Fatalf("after clear: %s v%d", got.Data, got.Version)
	}

	// A zero Delta still counts as an update.
	mustUpdate(t, s, r.Key, hallpass.Delta{})
	if got := mustLoad(t, s, r.Key); got.Version != 4 {
		t.Fatalf("version %d, want 4", got.Version)
	}

	mustUpdate(t, s, r.Key, hallpass.Delta{Remove: []string{"x"}})
	if got := mustLoad(t, s, r.Key); got.Data != nil {
		t.Fatalf("data %s, want none", got.Data)
	}

	err := s.Update(context.Background(), r.Key, hallpass.Delta{
		Set: map[string]json.RawMessage{"secret-key": raw(`secret-value`)},
	})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("invalid JSON: %v", err)
	}
}

// oddKeys are data keys that are awkward in a JSON path or in SQL.
var oddKeys = []string{
	"", " ", "a", "A", ".", "a.b", "$", "$.a", "[", "]", "a[0]", "[0]", "*", "#",
	`"`, `""`, `a"b`, `"a`, `a"`, `\`, `\\`, `a\b`, `\"`, `\u0041`, `\x41`, `\n`,
	"'", "a'b", "'; DROP TABLE hallpass_sessions; --", "\t", "\n", "\x01", "\x7f",
	"é", "日本語", "\U0001F600", "\u2028", "<script>", "&amp;", "{", "}", ":", ",",
	"\x00", "a\x00", "\x00a", "a\x00b", "\xff", "a\xffb",
}

func TestOddKeys(t *testing.T) {
	for _, prefill := range []bool{false, true} {
		t.Run(fmt.Sprintf("prefill=%v", prefill), func(t *testing.T) {
			s, c := openClock(t)
			r := record("a", c.Now())
			want := map[string]json.RawMessage{}
			if prefill { // keys already stored by Create
				r.Data = map[string]json.RawMessage{}
				for i, k := range oddKeys {
					r.Data[k] = raw(fmt.Sprint(i))
					want[canonKey(k)] = raw(fmt.Sprint(i))
				}
			}
			mustCreate(t, s, r)
			// One key per Update, so that NUL keys do not send the others
			// down the fallback with them.
			for i, k := range oddKeys {
				kj, _ := json.Marshal(k)
				v := raw(fmt.Sprintf(`{"i": %d, "k": %s}`, i, kj))
				mustUpdate(t, s, r.Key, hallpass.Delta{Set: map[string]json.RawMessage{k: v}})
				want[canonKey(k)] = v
				if got := mustLoad(t, s, r.Key); !sameData(t, got.Data, want) {
					t.Fatalf("after setting %q:\n got %q\nwant %q", k, got.Data, want)
				}
			}
			for i, k := range oddKeys {
				if i%2 == 0 {
					mustUpdate(t, s, r.Key, hallpass.Delta{Remove: []string{k}})
					delete(want, canonKey(k))
					if got := mustLoad(t, s, r.Key); !sameData(t, got.Data, want) {
						t.Fatalf("after removing %q:\n got %q\nwant %q", k, got.Data, want)
					}
				}
			}
		})
	}
}

// canonKey returns k as it reads back from JSON: invalid UTF-8 becomes
// U+FFFD.
func canonKey(k string) string {
	b, _ := json.Marshal(k)
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

// TestJSONPathModel applies random Deltas with keys built from awkward
// pieces to the store and, with Delta.Apply, to a Go model, and compares.
func TestJSONPathModel(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	pieces := []string{"a", "A", `"`, `\`, ".", "[", "]", "$", "*", "é", "日", "\n", "\t",
		"\x01", "<", "&", "'", " ", "u", "0", "\u2028", "\xff", "{", ":", `\u0041`, `\u0000`,
		"\U0001F600", "\x00"}
	rnd := rand.New(rand.NewPCG(1, 2))
	randKey := func() string {
		var b strings.Builder
		for n := rnd.IntN(4); n > 0; n-- {
			b.WriteString(pieces[rnd.IntN(len(pieces))])
		}
		return canonKey(b.String())
	}
	iters := 300
	if testing.Short() {
		iters = 50
	}
	for rec := range 3 {
		r := record(fmt.Sprint("model", rec), c.Now())
		model := hallpass.Record{}
		mustCreate(t, s, r)
		for i := range iters {
			var d hallpass.Delta
			d.Clear = rnd.IntN(30) == 0
			for n := rnd.IntN(3); n > 0; n-- {
				d.Remove = append(d.Remove, randKey())
			}
			if rnd.IntN(3) > 0 {
				d.Set = map[string]json.RawMessage{}
				for n := rnd.IntN(4); n > 0; n-- {
					d.Set[randKey()] = raw(fmt.Sprintf(`{"i":%d,"n":null,"big":12345678901234567890}`, i))
				}
			}
			// Keys the model holds are removed often, so removal is tested
			// on keys that exist.
			for k := range model.Data {
				if rnd.IntN(4) == 0 {
					d.Remove = append(d.Remove, k)
				}
			}
			if err := s.Update(ctx, r.Key, d); err != nil {
				t.Fatal(err)
			}
			d.Apply(&model)
			got := mustLoad(t, s, r.Key)
			if !sameData(t, got.Data, model.Data) {
				t.Fatalf("record %d step %d: delta %+v\n got %q\nwant %q", rec, i, d, got.Data, model.Data)
			}
		}
	}
}

func TestLargeDelta(t *testing.T) {
	s, c := openClock(t)
	r := record("a", c.Now())
	mustCreate(t, s, r)
	set := map[string]json.RawMessage{}
	for i := range maxSQLKeys + 1 { // the fallback
		set[fmt.Sprint("k", i)] = raw(fmt.Sprint(i))
	}
	mustUpdate(t, s, r.Key, hallpass.Delta{Set: set})
	// The SQL path, with more keys than one json_set or json_remove call
	// takes.
	set2 := map[string]json.RawMessage{}
	var remove []string
	for i := range 3 * pathsPerCall {
		set2[fmt.Sprint("n", i)] = raw(`"x"`)
		remove = append(remove, fmt.Sprint("k", i))
	}
	mustUpdate(t, s, r.Key, hallpass.Delta{Set: set2, Remove: remove})
	got := mustLoad(t, s, r.Key)
	if len(got.Data) != maxSQLKeys+1 {
		t.Fatalf("%d keys, want %d", len(got.Data), maxSQLKeys+1)
	}
	last := 3*pathsPerCall - 1
	if _, ok := got.Data[fmt.Sprint("k", last)]; ok {
		t.Fatalf("k%d not removed", last)
	}
	if string(got.Data[fmt.Sprint("k", last+1)]) != fmt.Sprint(last+1) || string(got.Data[fmt.Sprint("n", last)]) != `"x"` {
		t.Fatalf("data after the large update: %v", got.Data)
	}
}

func TestTouch(t *testing.T) {
	s, c := openClock(t)
	now := c.Now()
	r := record("a", now)
	mustCreate(t, s, r)
	check := func(seen, idle time.Time, ip, ua string) {
		t.Helper()
		got := mustLoad(t, s, r.Key)
		if !got.LastSeen.Equal(seen) || !got.IdleDeadline.Equal(idle) || got.LastIP != ip || got.LastUA != ua {
			t.Fatalf("got seen %v idle %v ip %q ua %q; want %v %v %q %q",
				got.LastSeen, got.IdleDeadline, got.LastIP, got.LastUA, seen, idle, ip, ua)
		}
	}
	touch := func(seen, idle time.Time, ip, ua string) {
		t.Helper()
		mustUpdate(t, s, r.Key, hallpass.Delta{Touch: &hallpass.Touch{LastSeen: seen, IdleDeadline: idle, LastIP: ip, LastUA: ua}})
	}
	touch(now.Add(time.Minute), now.Add(2*time.Hour), "ip2", "ua2")
	check(now.Add(time.Minute), now.Add(2*time.Hour), "ip2", "ua2")
	// An older touch moves nothing back and changes no address.
	touch(now.Add(time.Second), now.Add(30*time.Minute), "old", "old")
	check(now.Add(time.Minute), now.Add(2*time.Hour), "ip2", "ua2")
	// A newer touch with empty strings keeps the old ones.
	touch(now.Add(2*time.Minute), time.Time{}, "", "ua3")
	check(now.Add(2*time.Minute), now.Add(2*time.Hour), "ip2", "ua3")
	// A zero LastSeen moves only the deadline.
	touch(time.Time{}, now.Add(3*time.Hour), "x", "x")
	check(now.Add(2*time.Minute), now.Add(3*time.Hour), "ip2", "ua3")

	// The idle deadline moves expiry, up to the absolute deadline.
	c.Add(2*time.Hour + time.Minute)
	mustLoad(t, s, r.Key)
	touch(c.Now(), c.Now().Add(48*time.Hour), "", "")
	c.Add(23 * time.Hour) // past the absolute deadline of 24h
	if _, err := s.Load(context.Background(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Fatalf("past the absolute deadline: %v", err)
	}
}

func TestTouchOnGuestWithoutTimes(t *testing.T) {
	s, c := openClock(t)
	r := &hallpass.Record{Key: key("g"), Handle: "g"}
	mustCreate(t, s, r)
	now := c.Now()
	mustUpdate(t, s, r.Key, hallpass.Delta{Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour), LastIP: "ip", LastUA: "ua"}})
	got := mustLoad(t, s, r.Key)
	if !got.LastSeen.Equal(now) || !got.IdleDeadline.Equal(now.Add(time.Hour)) || got.LastIP != "ip" || got.LastUA != "ua" {
		t.Fatalf("%+v", got.Touch)
	}
	c.Add(time.Hour)
	if _, err := s.Load(context.Background(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Fatalf("the new idle deadline did not expire the record: %v", err)
	}
}

func TestMetaRecomputesExpiry(t *testing.T) {
	s, c := openClock(t)
	now := c.Now()
	r := record("a", now)
	mustCreate(t, s, r)
	meta := hallpass.Meta{UserID: "u", AuthLevel: "password", AbsoluteDeadline: now.Add(time.Minute)}
	mustUpdate(t, s, r.Key, hallpass.Delta{Meta: &meta})
	got := mustLoad(t, s, r.Key)
	if got.UserID != "u" || got.AuthLevel != "password" || !got.AbsoluteDeadline.Equal(meta.AbsoluteDeadline) {
		t.Fatalf("%+v", got.Meta)
	}
	if list, err := s.ListUser(context.Background(), "u"); err != nil || len(list) != 1 {
		t.Fatalf("ListUser: %d, %v", len(list), err)
	}
	c.Add(time.Minute)
	if _, err := s.Load(context.Background(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Fatalf("the new absolute deadline did not expire the record: %v", err)
	}
	// Back to a guest: out of the user's list.
	c.Add(-time.Minute)
	mustUpdate(t, s, r.Key, hallpass.Delta{Meta: &hallpass.Meta{}})
	if list, err := s.ListUser(context.Background(), "u"); err != nil || len(list) != 0 {
		t.Fatalf("ListUser after logout: %d, %v", len(list), err)
	}
}

// TestMetaReplacesTouch checks that a Touch given with a Meta replaces the
// activity outright, even moving it back, as a new identity starts new
// timeouts.
func TestMetaReplacesTouch(t *testing.T) {
	s, c := openClock(t)
	now := c.Now()
	r := record("a", now)
	r.LastSeen = now.Add(time.Minute)
	r.IdleDeadline = now.Add(10 * time.Hour)
	mustCreate(t, s, r)
	touch := hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)}
	for _, nul := range []bool{false, true} { // the SQL path, then the fallback
		d := hallpass.Delta{Meta: &hallpass.Meta{UserID: "u"}, Touch: &touch}
		if nul {
			d.Set = map[string]json.RawMessage{"\x00": raw(`1`)}
		}
		mustUpdate(t, s, r.Key, d)
		got := mustLoad(t, s, r.Key)
		if !got.LastSeen.Equal(touch.LastSeen) || !got.IdleDeadline.Equal(touch.IdleDeadline) || got.LastIP != touch.LastIP || got.LastUA != touch.LastUA {
			t.Fatalf("nul %v: Touch not replaced: %+v", nul, got.Touch)
		}
		touch = hallpass.Touch{LastSeen: now.Add(-time.Minute), IdleDeadline: now.Add(30 * time.Minute), LastIP: "ip", LastUA: "ua"}
	}
	got := mustLoad(t, s, r.Key)
	c.Add(time.Hour)
	_, err := s.Load(context.Background(), r.Key)
	var expired *hallpass.ExpiredError
	if !errors.As(err, &expired) || expired.Record == nil || expired.Record.Key != r.Key || !expired.Record.IdleDeadline.Equal(got.IdleDeadline) {
		t.Fatalf("Load after the replaced idle deadline: %v", err)
	}
}

func TestNoResurrection(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	now := c.Now()
	set := map[string]json.RawMessage{"k": raw(`1`)}
	nulSet := map[string]json.RawMessage{"\x00": raw(`1`)} // the fallback path
	far := &hallpass.Touch{LastSeen: now.Add(time.Hour), IdleDeadline: now.Add(100 * time.Hour)}
	deltas := []hallpass.Delta{{}, {Set: set}, {Set: nulSet}, {Touch: far}, {Meta: &hallpass.Meta{}}}

	deleted := record("deleted", now)
	mustCreate(t, s, deleted)
	if err := s.Delete(ctx, deleted.Key); err != nil {
		t.Fatal(err)
	}
	expired := record("expired", now)
	expired.IdleDeadline = now.Add(time.Minute)
	mustCreate(t, s, expired)
	c.Add(time.Minute)

	for _, k := range []hallpass.Key{deleted.Key, expired.Key, key("never")} {
		for _, d := range deltas {
			if err := s.Update(ctx, k, d); !errors.Is(err, hallpass.ErrNotFound) {
				t.Errorf("Update(%+v) = %v, want ErrNotFound", d, err)
			}
			if err := s.Rotate(ctx, k, key("new"), d); !errors.Is(err, hallpass.ErrNotFound) {
				t.Errorf("Rotate(%+v) = %v, want ErrNotFound", d, err)
			}
		}
		if _, err := s.Load(ctx, k); !errors.Is(err, hallpass.ErrNotFound) {
			t.Errorf("Load = %v", err)
		}
	}
	if _, err := s.Load(ctx, key("new")); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Rotate created the target: %v", err)
	}
	// Moving the clock back shows the expired row was not extended.
	c.Add(-time.Minute)
	if got := mustLoad(t, s, expired.Key); got.Version != 1 || !got.IdleDeadline.Equal(now.Add(time.Minute)) {
		t.Errorf("expired row was changed: %+v", got)
	}
}

func TestRotate(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	now := c.Now()
	r := record("a", now)
	r.UserID = "u"
	r.Data = map[string]json.RawMessage{"k": raw(`{"v": 1}`), "old": raw(`0`)}
	mustCreate(t, s, r)
	mustUpdate(t, s, r.Key, hallpass.Delta{})

	meta := r.Meta
	meta.AuthLevel = "mfa"
	d := hallpass.Delta{
		Set:    map[string]json.RawMessage{"n": raw(`2`)},
		Remove: []string{"old"},
		Meta:   &meta,
		Touch:  &hallpass.Touch{LastSeen: now.Add(time.Second), LastIP: "ip9"},
	}
	if err := s.Rotate(ctx, r.Key, key("b"), d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Fatalf("old key after Rotate: %v", err)
	}
	got := mustLoad(t, s, key("b"))
	if got.Key != key("b") || got.Handle != r.Handle || got.Version != 3 || got.AuthLevel != "mfa" ||
		got.LastIP != "ip9" || !got.CreatedAt.Equal(r.CreatedAt) {
		t.Fatalf("rotated: %+v", got)
	}
	if !sameData(t, got.Data, map[string]json.RawMessage{"k": raw(`{"v": 1}`), "n": raw(`2`)}) {
		t.Fatalf("rotated data: %s", got.Data)
	}

	// The target is taken: nothing changes.
	other := record("c", now)
	mustCreate(t, s, other)
	if err := s.Rotate(ctx, key("b"), key("c"), hallpass.Delta{Set: map[string]json.RawMessage{"x": raw(`1`)}}); !errors.Is(err, hallpass.ErrExists) {
		t.Fatalf("Rotate onto a live key: %v, want ErrExists", err)
	}
	if got := mustLoad(t, s, key("b")); got.Version != 3 || got.Data["x"] != nil {
		t.Fatalf("failed Rotate changed the source: %+v", got)
	}
	if got := mustLoad(t, s, key("c")); got.Handle != other.Handle || got.Version != 1 {
		t.Fatalf("failed Rotate changed the target: %+v", got)
	}
	if err := s.Rotate(ctx, key("b"), key("b"), hallpass.Delta{}); !errors.Is(err, hallpass.ErrExists) {
		t.Fatalf("Rotate onto itself: %v, want ErrExists", err)
	}

	// An expired record at the target does not count as taken.
	stale := record("stale", now)
	stale.IdleDeadline = now.Add(time.Minute)
	mustCreate(t, s, stale)
	c.Add(time.Minute)
	if err := s.Rotate(ctx, key("b"), key("stale"), hallpass.Delta{Set: map[string]json.RawMessage{"\x00nul": raw(`1`)}}); err != nil {
		t.Fatalf("Rotate onto an expired key: %v", err)
	}
	got = mustLoad(t, s, key("stale"))
	if got.Handle != r.Handle || got.Version != 4 || string(got.Data["\x00nul"]) != "1" {
		t.Fatalf("rotated onto expired: %+v", got)
	}
	if list, err := s.ListUser(ctx, "u"); err != nil || len(list) != 1 || list[0].Key != key("stale") {
		t.Fatalf("ListUser after Rotate: %v, %v", list, err)
	}
}

func TestListAndDeleteUser(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	now := c.Now()
	for i := range 5 {
		r := record(fmt.Sprint("u1-", i), now)
		r.UserID = "u1"
		if i == 4 {
			r.IdleDeadline = now.Add(time.Minute) // will expire
		}
		mustCreate(t, s, r)
	}
	r := record("u2", now)
	r.UserID = "u2"
	mustCreate(t, s, r)
	mustCreate(t, s, record("guest", now))
	c.Add(time.Minute)

	list, err := s.ListUser(ctx, "u1")
	if err != nil || len(list) != 4 {
		t.Fatalf("ListUser(u1) = %d records, %v", len(list), err)
	}
	for _, r := range list {
		if r.UserID != "u1" {
			t.Fatalf("ListUser(u1) returned %+v", r)
		}
	}
	if list, err := s.ListUser(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("ListUser(\"\") = %d records, %v", len(list), err)
	}
	if n, err := s.DeleteUser(ctx, ""); err != nil || n != 0 {
		t.Fatalf("DeleteUser(\"\") = %d, %v", n, err)
	}
	n, err := s.DeleteUser(ctx, "u1", key("u1-0"), key("u2"), key("nobody"))
	if err != nil || n != 3 {
		t.Fatalf("DeleteUser = %d, %v; want 3", n, err)
	}
	list, _ = s.ListUser(ctx, "u1")
	if len(list) != 1 || list[0].Key != key("u1-0") {
		t.Fatalf("after DeleteUser: %v", list)
	}
	mustLoad(t, s, key("u2"))
	mustLoad(t, s, key("guest"))
	if n, err := s.DeleteUser(ctx, "u1"); err != nil || n != 1 {
		t.Fatalf("DeleteUser without keep = %d, %v", n, err)
	}
}

// TestQueryPlans checks that lookups use the indexes instead of scanning.
func TestQueryPlans(t *testing.T) {
	s, _ := openClock(t)
	k := key("x")
	for _, tc := range []struct {
		name, query string
		args        []any
		want        string
	}{
		{"load", s.q.load, []any{k[:]}, "USING INDEX sqlite_autoindex_hallpass_sessions_1 (key=?)"},
		{"list user", s.q.listUser, []any{"u", 0}, "USING INDEX hallpass_sessions_user_id (user_id=?)"},
		{"delete user", s.q.deleteUser, []any{"u", 0, keyList(nil)}, "USING INDEX hallpass_sessions_user_id (user_id=?)"},
		{"limit peers", s.q.peers, []any{"u", k[:], 0}, "USING INDEX hallpass_sessions_user_id (user_id=?)"},
		{"delete keys", s.q.deleteKeys, []any{keyList([]hallpass.Key{k})}, "INDEX sqlite_autoindex_hallpass_sessions_1 (key=?)"},
		{"sweep", s.q.sweep, []any{0, 10}, "USING INDEX hallpass_sessions_expires_at (expires_at<?)"},
	} {
		rows, err := s.w.Query("EXPLAIN QUERY PLAN "+tc.query, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if all := strings.Join(plan, "; "); !strings.Contains(all, tc.want) || strings.Contains(all, "SCAN hallpass_sessions") {
			t.Errorf("%s: plan %q, want %q and no scan", tc.name, all, tc.want)
		}
	}
}

func TestDelete(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	var keys []hallpass.Key
	for i := range 10 {
		r := record(fmt.Sprint(i), c.Now())
		mustCreate(t, s, r)
		keys = append(keys, r.Key)
	}
	if err := s.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, keys[0], keys[0], key("missing")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, keys[1:5]...); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, s); n != 5 {
		t.Fatalf("%d rows left, want 5", n)
	}
}

// TestConcurrentUpdates has 100 goroutines set distinct keys of one
// session at once: none may be lost or fail with SQLITE_BUSY. Half of
// them take the transaction fallback, with a NUL in the key.
func TestConcurrentUpdates(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	r := record("a", c.Now())
	mustCreate(t, s, r)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			k := fmt.Sprint("k", i)
			if i%2 == 1 {
				k += "\x00"
			}
			errs <- s.Update(ctx, r.Key, hallpass.Delta{
				Set:   map[string]json.RawMessage{k: raw(fmt.Sprint(i))},
				Touch: &hallpass.Touch{LastSeen: c.Now().Add(time.Duration(i) * time.Millisecond)},
			})
			_, err := s.Load(ctx, r.Key)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	got := mustLoad(t, s, r.Key)
	if len(got.Data) != n || got.Version != n+1 {
		t.Fatalf("%d keys, version %d; want %d, %d", len(got.Data), got.Version, n, n+1)
	}
	if want := c.Now().Add((n - 1) * time.Millisecond); !got.LastSeen.Equal(want) {
		t.Fatalf("LastSeen %v, want %v", got.LastSeen, want)
	}
}

// TestTwoStoresOneFile has two Stores, as two processes would, write one
// file at once: their writers contend for SQLite's lock, which the busy
// timeout and BEGIN IMMEDIATE must turn into waiting, not SQLITE_BUSY.
func TestTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	var stores []*Store
	for range 2 {
		s, err := Open(path, &Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	ctx := context.Background()
	r := record("a", time.Now())
	mustCreate(t, stores[0], r)
	const n = 60
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := fmt.Sprint("k", i)
			if i%3 == 0 {
				k += "\x00" // the transaction path
			}
			err := stores[i%2].Update(ctx, r.Key, hallpass.Delta{Set: map[string]json.RawMessage{k: raw(`1`)}})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := mustLoad(t, stores[1], r.Key); len(got.Data) != n || got.Version != n+1 {
		t.Fatalf("%d keys, version %d; want %d, %d", len(got.Data), got.Version, n, n+1)
	}
}

// TestConcurrentRotate has goroutines race to rotate one session: exactly
// one wins and the record survives once.
func TestConcurrentRotate(t *testing.T) {
	s, c := openClock(t)
	ctx := context.Background()
	r := record("a", c.Now())
	mustCreate(t, s, r)
	const n = 20
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i] = s.Rotate(ctx, r.Key, key(fmt.Sprint("to", i)), hallpass.Delta{})
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, hallpass.ErrNotFound):
			t.Error(err)
		}
	}
	if wins != 1 || countRows(t, s) != 1 {
		t.Fatalf("%d rotations won, %d rows", wins, countRows(t, s))
	}
}

func TestCancelledContext(t *testing.T) {
	s, c := openClock(t)
	r := record("a", c.Now())
	r.UserID = "u"
	mustCreate(t, s, r)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := hallpass.Delta{Set: map[string]json.RawMessage{"k": raw(`1`)}}
	nul := hallpass.Delta{Set: map[string]json.RawMessage{"\x00": raw(`1`)}}
	_, loadErr := s.Load(ctx, r.Key)
	_, listErr := s.ListUser(ctx, "u")
	_, delUserErr := s.DeleteUser(ctx, "u")
	_, sweepErr := s.Sweep(ctx)
	for name, err := range map[string]error{
		"Create":       s.Create(ctx, record("b", c.Now())),
		"Load":         loadErr,
		"Update":       s.Update(ctx, r.Key, d),
		"Update (nul)": s.Update(ctx, r.Key, nul),
		"Rotate":       s.Rotate(ctx, r.Key, key("c"), d),
		"Delete":       s.Delete(ctx, r.Key),
		"ListUser":     listErr,
		"DeleteUser":   delUserErr,
		"Sweep":        sweepErr,
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		} else if !strings.HasPrefix(err.Error(), "sqlitestore: ") {
			t.Errorf("%s: %q lacks the package prefix", name, err)
		}
	}
	got := mustLoad(t, s, r.Key)
	if got.Version != 1 || got.Data != nil || countRows(t, s) != 1 {
		t.Fatalf("a cancelled call changed something: %+v, %d rows", got, countRows(t, s))
	}
	// The store still works: no connection was left in a transaction.
	mustUpdate(t, s, r.Key, nul)
	mustUpdate(t, s, r.Key, d)
}

func TestSweep(t *testing.T) {
	c := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openTest(t, &Options{Now: c.Now, SweepInterval: -1, SweepChunk: 100})
	ctx := context.Background()
	now := c.Now()
	const expired, live = 250, 10 // three sweep statements
	for i := range expired + live {
		r := record(fmt.Sprint(i), now)
		if i < expired {
			r.IdleDeadline = now.Add(time.Duration(1+i%50) * time.Second)
		}
		mustCreate(t, s, r)
	}
	mustCreate(t, s, &hallpass.Record{Key: key("forever"), Handle: "forever"})
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep before expiry = %d, %v", n, err)
	}
	c.Add(time.Minute)
	n, err := s.Sweep(ctx)
	if err != nil || n != expired {
		t.Fatalf("Sweep = %d, %v; want %d", n, err, expired)
	}
	if got := countRows(t, s); got != live+1 {
		t.Fatalf("%d rows left, want %d", got, live+1)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	c := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := openTest(t, &Options{Now: c.Now, SweepInterval: 5 * time.Millisecond, SweepChunk: 7})
	now := c.Now()
	for i := range 50 {
		r := record(fmt.Sprint(i), now)
		if i%2 == 0 {
			r.IdleDeadline = now.Add(time.Second)
		}
		mustCreate(t, s, r)
	}
	c.Add(time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, s) != 25 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows after 10s, want 25", countRows(t, s))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseStopsSweeper(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), &Options{SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-s.done:
	default:
		t.Fatal("sweeper still running")
	}
}

// TestNew shares the application's database: a users table next to the
// sessions, a custom table name, and a pool the Store did not configure.
func TestNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT)`); err != nil {
		t.Fatal(err)
	}
	s, err := New(db, &Options{Table: "sessions", SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := record("a", time.Now())
	mustCreate(t, s, r)

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := s.Update(ctx, r.Key, hallpass.Delta{Set: map[string]json.RawMessage{fmt.Sprint(i): raw(`1`)}}); err != nil {
				t.Error(err)
			}
			if _, err := db.Exec(`INSERT INTO users VALUES (?, 'x')`, fmt.Sprint(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := mustLoad(t, s, r.Key); len(got.Data) != 50 {
		t.Fatalf("%d keys, want 50", len(got.Data))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("Close closed the caller's database: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sessions`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sessions table: %d rows, %v", n, err)
	}

	if _, err := New(db, &Options{Table: "x; DROP TABLE users"}); err == nil {
		t.Fatal("New accepted a table name that is not an identifier")
	}
}

func TestOpenPaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, name := range []string{"a?b#c%d.db", "spaces in name.db", "ü.db", "relative.db", "./sub/../rel2.db"} {
		if strings.Contains(name, "sub") {
			os.Mkdir(filepath.Join(dir, "sub"), 0o700)
		}
		path := name
		if !strings.HasPrefix(name, "rel") && !strings.HasPrefix(name, "./") {
			path = filepath.Join(dir, name)
		}
		s, err := Open(path, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mustCreate(t, s, record("a", time.Now()))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustLoad(t, s, key("a"))
		s.Close()
		// Session data is for the owner's eyes only.
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", name, fi.Mode(), err)
		}
	}
	s, err := Open(":memory:", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCreate(t, s, record("a", time.Now()))
	mustLoad(t, s, key("a"))
}

func BenchmarkLoad(b *testing.B) {
	s := openTest(b, nil)
	r := record("a", time.Now())
	r.UserID = "user"
	r.Data = map[string]json.RawMessage{
		"cart":  raw(`{"items":[{"sku":"A-1","n":2},{"sku":"B-7","n":1}],"total":4200}`),
		"flash": raw(`"Saved."`),
		"csrf":  raw(`"5f2c1e0a9b7d4c3e"`),
	}
	mustCreate(b, s, r)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, r.Key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdate(b *testing.B) {
	s := openTest(b, nil)
	now := time.Now()
	r := record("a", now)
	r.Data = map[string]json.RawMessage{"cart": raw(`{"items":[],"total":0}`)}
	mustCreate(b, s, r)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		t := now.Add(time.Duration(i) * time.Millisecond)
		err := s.Update(ctx, r.Key, hallpass.Delta{
			Set:   map[string]json.RawMessage{"cart": raw(`{"items":[{"sku":"A-1","n":2}],"total":4200}`)},
			Touch: &hallpass.Touch{LastSeen: t, IdleDeadline: t.Add(time.Hour)},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func TestCount(t *testing.T) {
	s := openTest(t, nil)
	var keys []hallpass.Key
	for _, u := range []string{"alice", "bob", ""} {
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: hallpass.NewHandle(), Meta: hallpass.Meta{UserID: u, AbsoluteDeadline: time.Now().Add(time.Hour)}}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.Key)
	}
	if err := s.Delete(t.Context(), keys[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Count(t.Context()); n != 2 || err != nil {
		t.Errorf("Count = %d, %v; want 2", n, err)
	}
}
