package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Every test that needs PostgreSQL reads its URL from this variable, and
// is skipped without it.
const urlVar = "HALLPASS_TEST_POSTGRES_URL"

func testURL(t testing.TB) string { return storetest.ServiceURL(t, urlVar) }

// newTable returns a table name no other test, package or run uses, and
// drops the table when the test ends (after the stores on it are closed,
// as cleanups run last-in first-out).
func newTable(t testing.TB, url string) string {
	var b [6]byte
	rand.Read(b[:])
	name := "hallpass_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() { dropTable(t, url, name) })
	return name
}

func dropTable(t testing.TB, url, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("drop table: %v", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Errorf("drop table: %v", err)
	}
}

// admin returns a plain connection for looking at the table behind the
// store's back.
func admin(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var quiet = slog.New(slog.DiscardHandler)

// open returns a Store on a pool of its own, closed when the test ends.
// With a cache, it waits for the listener, so that tests start from a
// cache in use.
func open(t testing.TB, url string, o Options) *Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet
	}
	s, err := Open(t.Context(), url, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.cache != nil {
		waitLive(t, s, true)
	}
	return s
}

// waitLive waits until s's cache is in use (live) or not.
func waitLive(t testing.TB, s *Store, live bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for s.cache.live.Load() != live {
		if time.Now().After(deadline) {
			t.Fatalf("cache live = %v after 15 s, want %v", !live, live)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestStore(t *testing.T) {
	url := testURL(t)
	for _, c := range []struct {
		name     string
		ttl      time.Duration
		noNotify bool
	}{{"NoCache", -1, false}, {"Cache", 0, false}, {"NoNotify", 0, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := open(t, url, Options{Table: newTable(t, url), CacheTTL: c.ttl, DisableNotify: c.noNotify})
			storetest.Run(t, func(*testing.T) hallpass.Store { return s })
		})
	}
}

// pair returns two stores on separate pools and one table, as two app
// instances have.
func pair(url string, ttl time.Duration) storetest.Pair {
	return func(t testing.TB) (hallpass.Store, hallpass.Store) {
		table := newTable(t, url)
		return open(t, url, Options{Table: table, CacheTTL: ttl}), open(t, url, Options{Table: table, CacheTTL: ttl})
	}
}

// TestInstances runs the cross-instance checks without a cache, where
// changes are visible at once, and with one whose TTL (a minute) is far
// beyond the test's limit, so that only notifications can pass it; 5 ms
// is the target for a notification on loopback.
func TestInstances(t *testing.T) {
	url := testURL(t)
	t.Run("NoCache", func(t *testing.T) { storetest.RunInstances(t, pair(url, -1), 0) })
	t.Run("Cache", func(t *testing.T) { storetest.RunInstances(t, pair(url, time.Minute), 5*time.Millisecond) })
}

// TestNew checks New on an application's pool: Close must leave the pool
// open, and a second Store finds the schema in place.
func TestNew(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for range 2 {
		s, err := New(t.Context(), pool, &Options{Table: table, CacheTTL: time.Minute, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		waitLive(t, s, true)
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h"}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := pool.Ping(t.Context()); err != nil {
			t.Fatalf("pool unusable after Store.Close: %v", err)
		}
	}
	if _, err := New(t.Context(), pool, &Options{Table: strings.Repeat("x", maxTableLen+1)}); err == nil {
		t.Error("New accepted a table name PostgreSQL would truncate")
	}
	if _, err := New(t.Context(), pool, &Options{Table: table, CacheTTL: time.Second, DisableNotify: true}); err == nil {
		t.Error("New accepted a cache without notifications")
	}
}

// TestDisableNotify checks that a store told not to notify does not.
func TestDisableNotify(t *testing.T) {
	url := testURL(t)
	s := open(t, url, Options{Table: newTable(t, url), DisableNotify: true})
	listener := admin(t, url)
	if _, err := listener.Exec(t.Context(), s.q.listen); err != nil {
		t.Fatal(err)
	}
	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Meta: hallpass.Meta{UserID: "u-" + hallpass.NewHandle()}}
	to := hallpass.KeyOf(hallpass.NewToken())
	for _, err := range []error{
		s.Create(t.Context(), r),
		s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"a": json.RawMessage(`1`)}}),
		s.Rotate(t.Context(), r.Key, to, hallpass.Delta{}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteUser(t.Context(), r.UserID); err != nil || n != 1 {
		t.Fatalf("DeleteUser = %d, %v", n, err)
	}
	if err := s.Delete(t.Context(), to); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if n, err := listener.WaitForNotification(ctx); err == nil {
		t.Errorf("notified %q", n.Payload)
	}
}

// TestOddTableName runs a store, cache and sweeper included, on a table
// whose name needs quoting.
func TestOddTableName(t *testing.T) {
	url := testURL(t)
	table := `Odd "name"; --` + newTable(t, url)[len("hallpass_test_"):]
	t.Cleanup(func() { dropTable(t, url, table) })
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Meta: hallpass.Meta{UserID: "u-" + hallpass.NewHandle()}}
	if err := a.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteUser(t.Context(), r.UserID); err != nil {
		t.Fatal(err)
	}
	waitEvicted(t, b, r.Key)
	if _, err := b.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// waitEvicted waits until s's cache no longer holds k.
func waitEvicted(t testing.TB, s *Store, k hallpass.Key) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, r := s.cache.get(k, time.Now()); r == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a deleted record is still cached 2 s later")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAppClock checks that expiry follows Options.Now, not the database's
// clock: a store whose clock says a session's deadline has passed hides
// it, reports it expired, refuses to update it, and sweeps it.
func TestAppClock(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	start := time.Now().Truncate(time.Millisecond)
	clock := storetest.NewClock(start)
	s := open(t, url, Options{Table: table, Now: clock.Now, CacheTTL: time.Minute})
	r := &hallpass.Record{
		Key:    hallpass.KeyOf(hallpass.NewToken()),
		Handle: "h",
		Meta:   hallpass.Meta{UserID: "u-" + hallpass.NewHandle(), AbsoluteDeadline: start.Add(24 * time.Hour)},
		Touch:  hallpass.Touch{LastSeen: start, IdleDeadline: start.Add(time.Hour)},
	}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil { // and cache it
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	_, err := s.Load(t.Context(), r.Key)
	var expired *hallpass.ExpiredError
	if !errors.As(err, &expired) || expired.Record == nil || expired.Record.Handle != "h" {
		t.Fatalf("Load after the idle deadline: %v, want an *ExpiredError with the record", err)
	}
	if !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("ExpiredError does not match ErrNotFound")
	}
	later := clock.Now()
	err = s.Update(t.Context(), r.Key, hallpass.Delta{Touch: &hallpass.Touch{LastSeen: later, IdleDeadline: later.Add(time.Hour)}})
	if !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Update of an expired record: %v, want ErrNotFound", err)
	}
	if rs, err := s.ListUser(t.Context(), r.UserID); err != nil || len(rs) != 0 {
		t.Errorf("ListUser = %d records, %v; want none", len(rs), err)
	}
	if n, err := s.Sweep(t.Context()); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1, nil", n, err)
	}
	if _, err := s.Load(t.Context(), r.Key); !errors.Is(err, hallpass.ErrNotFound) || errors.As(err, &expired) {
		t.Errorf("Load after the sweep: %v, want plain ErrNotFound", err)
	}
}

// rowVersion returns the version of the row at k, and whether there is
// one, whatever its expiry.
func rowVersion(t testing.TB, conn *pgx.Conn, table string, k hallpass.Key) (int64, bool) {
	t.Helper()
	var v int64
	err := conn.QueryRow(t.Context(), "SELECT version FROM "+pgx.Identifier{table}.Sanitize()+" WHERE key = $1", k[:]).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// TestNoResurrection checks what the database holds after Updates and
// Rotates of deleted and expired sessions: no row comes back, and an
// expired row is not touched.
func TestNoResurrection(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	s := open(t, url, Options{Table: table, SweepInterval: -1})
	conn := admin(t, url)
	now := time.Now()
	revive := hallpass.Delta{
		Set:   map[string]json.RawMessage{"x": json.RawMessage(`1`)},
		Meta:  &hallpass.Meta{UserID: "u", AbsoluteDeadline: now.Add(time.Hour)},
		Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)},
	}

	deleted := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Touch: hallpass.Touch{IdleDeadline: now.Add(time.Hour)}}
	if err := s.Create(t.Context(), deleted); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), deleted.Key); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(t.Context(), deleted.Key, revive); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Update after Delete: %v, want ErrNotFound", err)
	}
	to := hallpass.KeyOf(hallpass.NewToken())
	if err := s.Rotate(t.Context(), deleted.Key, to, revive); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Rotate after Delete: %v, want ErrNotFound", err)
	}
	for _, k := range []hallpass.Key{deleted.Key, to} {
		if _, ok := rowVersion(t, conn, table, k); ok {
			t.Errorf("a row exists after writes to a deleted session")
		}
	}

	expired := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Touch: hallpass.Touch{IdleDeadline: now.Add(-time.Second)}}
	if err := s.Create(t.Context(), expired); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(t.Context(), expired.Key, revive); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Update of an expired session: %v, want ErrNotFound", err)
	}
	if v, ok := rowVersion(t, conn, table, expired.Key); !ok || v != 1 {
		t.Errorf("expired row: version %d, present %v; want it untouched at version 1", v, ok)
	}
}

// TestNUL checks that data jsonb cannot hold is refused with ErrNUL,
// before anything is written, and that errors do not quote the data.
func TestNUL(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	s := open(t, url, Options{Table: table})
	conn := admin(t, url)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	newRec := func(data map[string]json.RawMessage) *hallpass.Record {
		return &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Data: data}
	}
	wantNUL := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, ErrNUL) {
			t.Errorf("%s: %v, want ErrNUL", what, err)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error quotes the data: %v", what, err)
		}
	}

	bad := newRec(map[string]json.RawMessage{"k": raw(`"secret\u0000"`)})
	wantNUL(s.Create(t.Context(), bad), "Create with NUL in a value")
	if _, ok := rowVersion(t, conn, table, bad.Key); ok {
		t.Error("Create with NUL wrote a row")
	}
	wantNUL(s.Create(t.Context(), newRec(map[string]json.RawMessage{"k\x00": raw(`1`)})), "Create with NUL in a key")

	r := newRec(map[string]json.RawMessage{"k": raw(`"\\u0000 is only text here"`)})
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatalf("Create with an escaped backslash before u0000: %v", err)
	}
	for name, set := range map[string]map[string]json.RawMessage{
		"string":        {"a": raw(`"secret\u0000"`)},
		"nested":        {"a": raw(`{"x": ["secret", "\u0000"]}`)},
		"nested key":    {"a": raw(`{"secret\u0000": 1}`)},
		"with good key": {"good": raw(`1`), "a": raw(`["\\\u0000secret"]`)},
		"key":           {"secret\x00": raw(`1`)},
	} {
		wantNUL(s.Update(t.Context(), r.Key, hallpass.Delta{Set: set}), "Update with NUL, "+name)
		wantNUL(s.Rotate(t.Context(), r.Key, hallpass.KeyOf(hallpass.NewToken()), hallpass.Delta{Set: set}), "Rotate with NUL, "+name)
	}
	// A key jsonb cannot hold cannot be stored, so removing it is a no-op.
	if err := s.Update(t.Context(), r.Key, hallpass.Delta{Remove: []string{"a\x00"}}); err != nil {
		t.Errorf("Update removing a key with NUL: %v", err)
	}
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || len(got.Data) != 1 || !strings.Contains(string(got.Data["k"]), `\\u0000`) {
		t.Errorf("after refused writes: version %d, data %s; want version 2 and the original data", got.Version, got.Data["k"])
	}

	// Data PostgreSQL refuses for other reasons gives an error of ours,
	// since PostgreSQL's messages may quote the value.
	err = s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"a": raw(`"\ud800secret"`)}})
	if !errors.Is(err, errInvalidData) || strings.Contains(err.Error(), "secret") {
		t.Errorf("Update with a lone surrogate: %v, want errInvalidData without the data", err)
	}
	err = s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"a": raw("\"secret\xff\"")}})
	if !errors.Is(err, errInvalidData) {
		t.Errorf("Update with invalid UTF-8: %v, want errInvalidData", err)
	}
}

// TestInvalidUTF8Keys checks that a key with invalid UTF-8 is stored and
// removed under the name encoding/json gives it.
func TestInvalidUTF8Keys(t *testing.T) {
	url := testURL(t)
	s := open(t, url, Options{Table: newTable(t, url)})
	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
		Data: map[string]json.RawMessage{"a\xffb": json.RawMessage(`1`), "c": json.RawMessage(`2`)}}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Data["a\uFFFDb"]; !ok {
		t.Fatalf("data keys %v, want a\\uFFFDb", got.Data)
	}
	if err := s.Update(t.Context(), r.Key, hallpass.Delta{Remove: []string{"a\xffb"}}); err != nil {
		t.Fatal(err)
	}
	if got, err = s.Load(t.Context(), r.Key); err != nil || len(got.Data) != 1 {
		t.Fatalf("after removing the key: %v, %v", got.Data, err)
	}
}
