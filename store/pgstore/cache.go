package pgstore

import (
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hallpass/hallpass"
)

// cacheShards spreads the cache's locks. Keys are SHA-256 digests, so
// their first byte picks a shard evenly.
const cacheShards = 256

// recordOverhead approximates what a cached record costs besides its
// data and strings: the Record, the map, the entry.
const recordOverhead = 512

// cache is the local read cache. Records in it are shared with callers,
// who treat them as read-only, so a hit hands out the stored pointer.
//
// Each shard has a generation, bumped by every eviction. Load notes it
// before reading the database and fills the cache only if it has not
// moved: otherwise a read that started before a write committed could put
// back the very record the write's eviction removed, and keep it for a
// whole TTL. A bump spoils the fills of other keys of the shard in flight
// too; they only miss a chance to be cached.
//
// An Update fills the cache too, with the row as its statement returned
// it, so that the next request of the session costs no read. The shard's
// generation cannot guard that fill: the update's own notification,
// which may well arrive first, bumps it. A write in flight is registered
// as pending instead, and what happens to its key meanwhile is noted
// there: a removal (delete, rotation, an eviction of unknown cause, the
// cache dropped), or an update notification, with the version it made.
// The fill is kept only if nothing was removed and no notification
// announced a version newer than the write's own; a notification that
// arrives after the fill evicts it as any other entry. Versioned
// notifications of a version the cache already holds, such as a write's
// own, are ignored, without a bump. No fill replaces a newer version of
// the record than its own: a read that raced this instance's write may
// come back with the row as it was before.
type cache struct {
	ttl        time.Duration
	maxEntries int   // per shard
	maxBytes   int64 // per shard

	// live is true while the listener is known to hear notifications. It
	// is set only after the cache was emptied following a successful
	// LISTEN, and cleared before emptying it when the connection is lost.
	live atomic.Bool

	shards [cacheShards]cacheShard

	stats cacheStats // for Store.CacheStats
}

// cacheStats counts Loads for Store.CacheStats. The counters sit on cache
// lines of their own, as package redisstore's do: every Load adds to one,
// and sharing a line with the cache's read-mostly fields, or with each
// other, would make every Load on one core evict them from the others.
type cacheStats struct {
	_      [64]byte
	hits   atomic.Uint64
	_      [56]byte
	misses atomic.Uint64
	_      [56]byte
}

// hit counts a Load the cache answered.
func (c *cache) hit() { c.stats.hits.Add(1) }

// miss counts a Load that went to the database; a nil cache counts
// nothing.
func (c *cache) miss() {
	if c != nil {
		c.stats.misses.Add(1)
	}
}

type cacheShard struct {
	mu      sync.RWMutex
	gen     uint64
	bytes   int64
	m       map[hallpass.Key]cacheEntry
	pending map[hallpass.Key]*pendingWrite
}

// pendingWrite is what happened to a key while writes to it were in
// flight; see cache.
type pendingWrite struct {
	writes  int   // in flight
	removed bool  // a removal came
	newest  int64 // the newest version notified
}

type cacheEntry struct {
	r      *hallpass.Record
	expiry time.Time // from time.Now, with its monotonic reading, whatever Options.Now says
	size   int64
}

func newCache(ttl time.Duration, entries int, bytes int64) *cache {
	c := &cache{
		ttl:        ttl,
		maxEntries: max(1, entries/cacheShards),
		maxBytes:   max(1, bytes/cacheShards),
	}
	for i := range c.shards {
		c.shards[i].m = make(map[hallpass.Key]cacheEntry)
		c.shards[i].pending = make(map[hallpass.Key]*pendingWrite)
	}
	return c
}

func (c *cache) shard(k hallpass.Key) *cacheShard { return &c.shards[k[0]] }

// setLive turns the cache on or off; see live. A nil cache stays off.
func (c *cache) setLive(v bool) {
	if c != nil {
		c.live.Store(v)
	}
}

// get returns the cached record for k, if the cache is usable and the
// entry is younger than the TTL at wall, a reading of time.Now, and the
// shard's generation for a later put. A nil cache has nothing.
func (c *cache) get(k hallpass.Key, wall time.Time) (gen uint64, r *hallpass.Record) {
	if c == nil {
		return 0, nil
	}
	sh := c.shard(k)
	sh.mu.RLock()
	e, ok := sh.m[k]
	gen = sh.gen
	sh.mu.RUnlock()
	if !ok || !c.live.Load() || !wall.Before(e.expiry) {
		return gen, nil
	}
	return gen, e.r
}

// put caches r under k unless the shard's generation moved since gen was
// read or the cache is not usable.
func (c *cache) put(k hallpass.Key, r *hallpass.Record, gen uint64, dataSize int) {
	if c == nil {
		return
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.gen != gen || !c.live.Load() {
		return
	}
	c.insertLocked(sh, k, r, dataSize)
}

// beginWrite registers a write to k, which endWrite must end. It must
// come before the write is sent.
func (c *cache) beginWrite(k hallpass.Key) {
	if c == nil {
		return
	}
	sh := c.shard(k)
	sh.mu.Lock()
	p := sh.pending[k]
	if p == nil {
		p = &pendingWrite{}
		sh.pending[k] = p
	}
	p.writes++
	sh.mu.Unlock()
}

// endWrite ends a write to k that beginWrite registered, caching r, the
// row as the write left it (nil if it changed nothing or failed), unless
// something happened to k meanwhile that r does not include.
func (c *cache) endWrite(k hallpass.Key, r *hallpass.Record, dataSize int) {
	if c == nil {
		return
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.pending[k]
	if p.writes--; p.writes == 0 {
		delete(sh.pending, k)
	}
	if r == nil || p.removed || p.newest > r.Version || !c.live.Load() {
		return
	}
	c.insertLocked(sh, k, r, dataSize)
}

// insertLocked caches r under k, unless a newer version of it is there
// already. When the shard is full it evicts entries at random, which map
// iteration order provides.
func (c *cache) insertLocked(sh *cacheShard, k hallpass.Key, r *hallpass.Record, dataSize int) {
	size := int64(recordOverhead + dataSize + len(r.Handle) + len(r.UserID) + len(r.AuthLevel) +
		len(r.LastIP) + len(r.LastUA) + len(r.CreatedIP) + len(r.CreatedUA) + 32*len(r.Data))
	if size > c.maxBytes {
		return
	}
	if old, ok := sh.m[k]; ok {
		// A fill that read an older row than the one cached, as a read
		// that raced this instance's own write may, must not replace it.
		if old.r.Version > r.Version {
			return
		}
		sh.bytes -= old.size
		delete(sh.m, k)
	}
	for victim, e := range sh.m {
		if len(sh.m) < c.maxEntries && sh.bytes+size <= c.maxBytes {
			break
		}
		sh.bytes -= e.size
		delete(sh.m, victim)
	}
	sh.m[k] = cacheEntry{r: r, expiry: time.Now().Add(c.ttl), size: size}
	sh.bytes += size
}

// evict removes k, and spoils fills of the shard in flight.
func (c *cache) evict(k hallpass.Key) {
	if c == nil {
		return
	}
	sh := c.shard(k)
	sh.mu.Lock()
	c.evictLocked(sh, k)
	if p := sh.pending[k]; p != nil {
		p.removed = true
	}
	sh.mu.Unlock()
}

func (c *cache) evictLocked(sh *cacheShard, k hallpass.Key) {
	if e, ok := sh.m[k]; ok {
		sh.bytes -= e.size
		delete(sh.m, k)
	}
	sh.gen++
}

// updated handles the notification that an update made version v of k.
func (c *cache) updated(k hallpass.Key, v int64) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[k]; ok && e.r.Version >= v {
		return // this instance's own write, or already replaced
	}
	c.evictLocked(sh, k)
	if p := sh.pending[k]; p != nil {
		p.newest = max(p.newest, v)
	}
}

// evictPayload evicts the keys a notification names: hex keys separated
// by commas, each of which may carry the version an update made,
// "<hex>:<version>". Anything else, "*" for one, empties the whole cache,
// so that an operator can flush every instance's cache after editing the
// table by hand:
//
//	SELECT pg_notify('hallpass_sessions_changes', '*');
func (c *cache) evictPayload(p string) {
	if c == nil {
		return
	}
	var k hallpass.Key
	for h := range strings.SplitSeq(p, ",") {
		h, ver, versioned := strings.Cut(h, ":")
		if len(h) != 2*len(k) {
			c.dropAll()
			return
		}
		if _, err := hex.Decode(k[:], []byte(h)); err != nil {
			c.dropAll()
			return
		}
		if !versioned {
			c.evict(k)
			continue
		}
		v, err := strconv.ParseInt(ver, 10, 64)
		if err != nil {
			c.dropAll()
			return
		}
		c.updated(k, v)
	}
}

// dropAll empties the cache and spoils every fill in flight.
func (c *cache) dropAll() {
	if c == nil {
		return
	}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.bytes = 0
		sh.gen++
		for _, p := range sh.pending {
			p.removed = true
		}
		sh.mu.Unlock()
	}
}

// len returns the number of cached records, for tests.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}
