package pgstore

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// TestCachePendingWrite checks, without a database, when the cache keeps
// the row an Update returned: in every order the write's end and the
// notifications can arrive in.
func TestCachePendingWrite(t *testing.T) {
	k := hallpass.KeyOf("t")
	h := hex.EncodeToString(k[:])
	rec := func(v int64) *hallpass.Record { return &hallpass.Record{Key: k, Version: v} }
	note := func(v int64) string { return h + ":" + strconv.FormatInt(v, 10) }
	for _, c := range []struct {
		name   string
		during func(c *cache) // between beginWrite and endWrite
		keep   bool
	}{
		{"undisturbed", func(*cache) {}, true},
		{"own notification first", func(c *cache) { c.evictPayload(note(5)) }, true},
		{"older update notified", func(c *cache) { c.evictPayload(note(4)) }, true},
		{"newer update notified", func(c *cache) { c.evictPayload(note(6)) }, false},
		{"own then newer", func(c *cache) { c.evictPayload(note(5)); c.evictPayload(note(6)) }, false},
		{"deleted", func(c *cache) { c.evictPayload(h) }, false},
		{"deleted with others", func(c *cache) { c.evictPayload(note(5) + "," + h) }, false},
		{"evicted here", func(c *cache) { c.evict(k) }, false},
		{"cache dropped", func(c *cache) { c.dropAll() }, false},
		{"bad version", func(c *cache) { c.evictPayload(h + ":x") }, false},
		{"listener down", func(c *cache) { c.live.Store(false) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ca := newCache(time.Minute, 1000, 1<<20)
			ca.live.Store(true)
			ca.beginWrite(k)
			c.during(ca)
			ca.endWrite(k, rec(5), 0)
			_, got := ca.get(k, time.Now())
			if ca.live.Load() && (got != nil) != c.keep {
				t.Fatalf("cached after the write: %v, want %v", got != nil, c.keep)
			}
			if len(ca.shard(k).pending) != 0 {
				t.Fatal("the write is still registered")
			}
		})
	}

	ca := newCache(time.Minute, 1000, 1<<20)
	ca.live.Store(true)
	ca.beginWrite(k)
	ca.endWrite(k, rec(5), 0)
	gen, _ := ca.get(k, time.Now())
	ca.put(k, rec(4), gen, 0) // a read that started before the write
	if _, got := ca.get(k, time.Now()); got == nil || got.Version != 5 {
		t.Fatalf("an older read replaced the write's row: %v", got)
	}
	ca.evictPayload(note(5)) // the write's own notification, after it ended
	if _, got := ca.get(k, time.Now()); got == nil {
		t.Fatal("the write's own notification evicted its row")
	}
	ca.evictPayload(note(6))
	if _, got := ca.get(k, time.Now()); got != nil {
		t.Fatal("a newer update did not evict")
	}
	ca.beginWrite(k)
	ca.endWrite(k, nil, 0) // a write that changed nothing
	if _, got := ca.get(k, time.Now()); got != nil || len(ca.shard(k).pending) != 0 {
		t.Fatal("a write that changed nothing left something behind")
	}
}

// TestCacheOwnWrite checks that with the cache on an Update leaves the
// row it made in this instance's cache, so the next Load costs no round
// trip, and that such a row never outlives a change made by another
// instance: each ending, and another instance's update, evicts it within
// the same bound as a record read from the database.
func TestCacheOwnWrite(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	ctx := t.Context()
	now := time.Now()

	newSession := func(user string) *hallpass.Record {
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
			Meta:  hallpass.Meta{UserID: user, AbsoluteDeadline: now.Add(time.Hour)},
			Touch: hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)}}
		if err := a.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	set := func(n int) hallpass.Delta {
		return hallpass.Delta{Set: map[string]json.RawMessage{"n": json.RawMessage(strconv.Itoa(n))}}
	}
	var last int64
	write := func(r *hallpass.Record, n int) {
		t.Helper()
		if err := a.Update(ctx, r.Key, set(n)); err != nil {
			t.Fatal(err)
		}
		// The write's own notification must not evict what it cached.
		time.Sleep(20 * time.Millisecond)
		_, got := a.cache.get(r.Key, time.Now())
		if got == nil {
			t.Fatal("the updated row is not cached")
		}
		if string(got.Data["n"]) != strconv.Itoa(n) {
			t.Fatalf("cached n=%s, want %d", got.Data["n"], n)
		}
		if got.Version <= last {
			t.Fatalf("cached version %d, not after %d", got.Version, last)
		}
		last = got.Version
	}
	gone := func(r *hallpass.Record, what string) {
		t.Helper()
		waitEvicted(t, a, r.Key)
		if _, err := a.Load(ctx, r.Key); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("Load on a after %s on b: %v, want ErrNotFound", what, err)
		}
	}

	r := newSession("")
	write(r, 1)
	write(r, 2)
	if last != 3 {
		t.Fatalf("version %d after two updates, want 3", last)
	}
	if err := b.Update(ctx, r.Key, set(10)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := a.Load(ctx, r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data["n"]) == "10" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an update on b is not seen on a 2 s later")
		}
		time.Sleep(time.Millisecond)
	}

	write(r, 11)
	if err := b.Delete(ctx, r.Key); err != nil {
		t.Fatal(err)
	}
	gone(r, "Delete")

	r, last = newSession(""), 0
	write(r, 1)
	if err := b.Rotate(ctx, r.Key, hallpass.KeyOf(hallpass.NewToken()), hallpass.Delta{}); err != nil {
		t.Fatal(err)
	}
	gone(r, "Rotate")

	user := "u-" + hallpass.NewHandle()
	r, last = newSession(user), 0
	write(r, 1)
	if n, err := b.DeleteUser(ctx, user); err != nil || n != 1 {
		t.Fatalf("DeleteUser = %d, %v", n, err)
	}
	gone(r, "DeleteUser")
}

// TestCacheOwnWriteRace revokes sessions on one instance while another
// keeps writing to them, so that revocations land before, during and
// after the writes' fills: none may leave a write's row cached.
func TestCacheOwnWriteRace(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	ctx := t.Context()
	for i := range 30 {
		now := time.Now()
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
			Touch: hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)}}
		if err := a.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for n := range 20 { // bounded: a few ends after the delete
					err := a.Update(ctx, r.Key, hallpass.Delta{Set: map[string]json.RawMessage{
						"w" + strconv.Itoa(w): json.RawMessage(strconv.Itoa(n))}})
					if errors.Is(err, hallpass.ErrNotFound) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(i%6) * time.Millisecond)
		if err := b.Delete(ctx, r.Key); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		waitEvicted(t, a, r.Key)
		if _, err := a.Load(ctx, r.Key); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("round %d: Load on a after Delete on b: %v, want ErrNotFound", i, err)
		}
	}
}
