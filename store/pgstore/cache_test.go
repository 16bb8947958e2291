package pgstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
)

// TestCacheGeneration checks, without a database, the rule that keeps a
// read that raced a write out of the cache.
func TestCacheGeneration(t *testing.T) {
	c := newCache(time.Minute, 1000, 1<<20)
	k := hallpass.KeyOf("t")
	r := &hallpass.Record{Key: k}

	gen, _ := c.get(k, time.Now())
	c.put(k, r, gen, 0)
	if _, got := c.get(k, time.Now()); got != nil {
		t.Fatal("filled while the listener was down")
	}

	c.dropAll()
	c.live.Store(true)
	gen, _ = c.get(k, time.Now())
	c.evict(k) // a write committed while the row was being read
	c.put(k, r, gen, 0)
	if _, got := c.get(k, time.Now()); got != nil {
		t.Fatal("a fill that raced an eviction was kept")
	}

	gen, _ = c.get(k, time.Now())
	c.put(k, r, gen, 0)
	if _, got := c.get(k, time.Now()); got != r {
		t.Fatal("an undisturbed fill was not kept")
	}
	c.evictPayload(hex.EncodeToString(k[:]) + "," + strings.Repeat("ab", 32))
	if _, got := c.get(k, time.Now()); got != nil {
		t.Fatal("a notified key is still cached")
	}

	gen, _ = c.get(k, time.Now())
	c.put(k, r, gen, 0)
	c.evictPayload("*")
	if _, got := c.get(k, time.Now()); got != nil || c.len() != 0 {
		t.Fatal(`"*" did not empty the cache`)
	}

	gen, _ = c.get(k, time.Now())
	c.put(k, r, gen, 0)
	c.live.Store(false)
	if _, got := c.get(k, time.Now()); got != nil {
		t.Fatal("served from a cache whose listener is down")
	}
}

// TestCacheBounds checks that the entry and byte bounds hold.
func TestCacheBounds(t *testing.T) {
	c := newCache(time.Minute, 2*cacheShards, 1<<30)
	c.live.Store(true)
	for i := range 5000 {
		k := hallpass.KeyOf(string(rune(i)) + "x")
		gen, _ := c.get(k, time.Now())
		c.put(k, &hallpass.Record{Key: k}, gen, 0)
	}
	if n := c.len(); n > 2*cacheShards {
		t.Errorf("%d entries cached, bound %d", n, 2*cacheShards)
	}

	c = newCache(time.Minute, 1<<20, cacheShards*(4*recordOverhead))
	c.live.Store(true)
	for i := range 5000 {
		k := hallpass.KeyOf(string(rune(i)) + "y")
		gen, _ := c.get(k, time.Now())
		c.put(k, &hallpass.Record{Key: k}, gen, recordOverhead/2)
	}
	var total int64
	for i := range c.shards {
		if b := c.shards[i].bytes; b > c.maxBytes {
			t.Errorf("shard %d holds %d bytes, bound %d", i, b, c.maxBytes)
		}
		total += c.shards[i].bytes
	}
	if total == 0 {
		t.Error("nothing cached")
	}
	k := hallpass.KeyOf("huge")
	gen, _ := c.get(k, time.Now())
	c.put(k, &hallpass.Record{Key: k}, gen, int(c.maxBytes))
	if _, r := c.get(k, time.Now()); r != nil {
		t.Error("cached a record larger than a shard's budget")
	}
}

// TestCacheHit checks that a hit neither allocates nor reaches the
// database, and that entries expire after the TTL even without a
// notification: a change made behind the store's back, which sends none,
// shows once the TTL has passed.
func TestCacheHit(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	const ttl = 300 * time.Millisecond
	s := open(t, url, Options{Table: table, CacheTTL: ttl})
	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
		Data: map[string]json.RawMessage{"n": json.RawMessage(`1`)}}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	first, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if allocs := testing.AllocsPerRun(100, func() {
		if got, err := s.Load(ctx, r.Key); err != nil || got != first {
			t.Fatalf("Load = %p, %v; want the cached record %p", got, err, first)
		}
	}); allocs != 0 {
		t.Errorf("a cache hit allocates %v times", allocs)
	}

	conn := admin(t, url)
	changed := time.Now()
	if _, err := conn.Exec(t.Context(), `UPDATE `+pgx.Identifier{table}.Sanitize()+` SET data = '{"n": 2}', version = 2 WHERE key = $1`, r.Key[:]); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version == 2 {
			if d := time.Since(changed); d < ttl/2 {
				t.Errorf("the change showed after %v, before the TTL: was it cached?", d)
			}
			break
		}
		if time.Since(changed) > ttl+time.Second {
			t.Fatalf("a cached record was served %v after it changed, TTL %v", time.Since(changed), ttl)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNotifyBatching deletes 500 sessions of a user on one instance and
// checks that another evicts every one of them from its cache at once,
// and that no notification payload breaks PostgreSQL's 8000-byte limit.
func TestNotifyBatching(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table, CacheTTL: time.Minute})

	listener := admin(t, url)
	if _, err := listener.Exec(t.Context(), a.q.listen); err != nil {
		t.Fatal(err)
	}

	const n = 500
	user := "u-" + hallpass.NewHandle()
	keys := make([]hallpass.Key, n)
	for i := range keys {
		keys[i] = hallpass.KeyOf(hallpass.NewToken())
		r := &hallpass.Record{Key: keys[i], Handle: "h", Meta: hallpass.Meta{UserID: user}}
		if err := b.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Load(t.Context(), keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	cached := 0
	for _, k := range keys {
		if _, r := a.cache.get(k, time.Now()); r != nil {
			cached++
		}
	}
	if cached < n*9/10 {
		t.Fatalf("only %d of %d records cached on a", cached, n)
	}

	if got, err := b.DeleteUser(t.Context(), user); err != nil || got != n {
		t.Fatalf("DeleteUser = %d, %v; want %d", got, err, n)
	}
	for _, k := range keys {
		waitEvicted(t, a, k)
		if _, err := a.Load(t.Context(), k); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("Load on a after DeleteUser on b: %v", err)
		}
	}

	seen := map[string]bool{}
	for payloads := 0; len(seen) < n; payloads++ {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		note, err := listener.WaitForNotification(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %d payloads naming %d keys: %v", payloads, len(seen), err)
		}
		if len(note.Payload) >= 8000 {
			t.Errorf("payload of %d bytes", len(note.Payload))
		}
		for h := range strings.SplitSeq(note.Payload, ",") {
			seen[h] = true
		}
	}
	for _, k := range keys {
		if !seen[k.String()] {
			t.Fatalf("key %s was not notified", k)
		}
	}
}
