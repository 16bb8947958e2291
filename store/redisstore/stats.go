package redisstore

import "sync/atomic"

// cacheStats counts Loads for CacheStats. The counters sit on cache lines
// of their own: every Load adds to one, and sharing a line with the
// Store's read-mostly fields (client, prefix, cacheTTL), or with each
// other, would make every Load on one core evict them from the others.
type cacheStats struct {
	_      [64]byte
	hits   atomic.Uint64
	_      [56]byte
	misses atomic.Uint64
	_      [56]byte
}

// CacheStats returns how many Loads were answered without a round trip
// (hits: from rueidis's client-side cache, or this instance's own write;
// see Client-side caching and Own writes in the package doc) and how many
// went to Redis (misses) since the store was made. A Load served from the
// cache whose record was older than this instance's own write, and so
// read again from Redis, is a miss; so is a Load that failed after
// asking Redis. Loads refused before asking anyone (a context already
// ended) are neither. With caching off (a negative Options.CacheTTL) there
// is no cache to hit or miss, and both stay 0.
//
// It implements metrics.CacheStatser: two atomic loads, cheap enough for
// every scrape. The two are read one after the other, not as one
// snapshot, so a scrape during Loads may pair counts a Load apart.
func (s *Store) CacheStats() (hits, misses uint64) {
	return s.stats.hits.Load(), s.stats.misses.Load()
}
