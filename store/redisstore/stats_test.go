package redisstore

import (
	"errors"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/metrics"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

var _ metrics.CacheStatser = (*Store)(nil)

// TestNotCounter pins that a Store has no Count: counting a prefix's keys
// would need a SCAN of the whole keyspace at every scrape (see Metrics in
// the package doc).
func TestNotCounter(t *testing.T) {
	if _, ok := any((*Store)(nil)).(metrics.Counter); ok {
		t.Error("Store is a metrics.Counter")
	}
}

// statsDelta returns how CacheStats changed since (h0, m0).
func statsDelta(s *Store, h0, m0 uint64) (hits, misses uint64) {
	h, m := s.CacheStats()
	return h - h0, m - m0
}

// checkCacheStats checks on the server at raw that the first Load of a
// record is a miss, the next ones hits, and that the first Load to see
// another client's write is a miss again.
func checkCacheStats(t *testing.T, raw string) *Store {
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
	if h, m := s.CacheStats(); h != 0 || m != 0 {
		t.Fatalf("new store: CacheStats = %d hits, %d misses", h, m)
	}
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if h, m := s.CacheStats(); h != 0 || m != 0 {
		t.Fatalf("after Create: CacheStats = %d hits, %d misses, want no Loads counted", h, m)
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if h, m := s.CacheStats(); h != 0 || m != 1 {
		t.Fatalf("first Load: CacheStats = %d hits, %d misses, want 0, 1", h, m)
	}
	for range 5 {
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
	}
	if h, m := s.CacheStats(); h != 5 || m != 1 {
		t.Fatalf("five more Loads: CacheStats = %d hits, %d misses, want 5, 1", h, m)
	}

	// Another client writes. Until its invalidation arrives the cache may
	// still answer (hits, the old value); the first Load that sees the
	// new value went to Redis, and the one after is a hit again.
	if err := admin.Do(t.Context(), admin.B().Hset().Key(s.sessionKey(r.Key)).FieldValue().FieldValue("d:n", "2").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	h0, m0 := s.CacheStats()
	stale := uint64(0)
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data["n"]) == "2" {
			break
		}
		stale++
		if time.Now().After(deadline) {
			t.Fatal("the other client's write never reached the cache")
		}
		time.Sleep(time.Millisecond)
	}
	if h, m := statsDelta(s, h0, m0); h != stale || m != 1 {
		t.Errorf("Loads until the other client's write showed: %d hits, %d misses, want %d (stale), 1", h, m, stale)
	}
	h0, m0 = s.CacheStats()
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if h, m := statsDelta(s, h0, m0); h != 1 || m != 0 {
		t.Errorf("Load after that: %d hits, %d misses, want 1, 0", h, m)
	}

	// A missing record is cached like any reply.
	k := testKey()
	h0, m0 = s.CacheStats()
	for range 3 {
		if _, err := s.Load(t.Context(), k); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("Load of a missing key: %v", err)
		}
	}
	if h, m := statsDelta(s, h0, m0); h != 2 || m != 1 {
		t.Errorf("three Loads of a missing key: %d hits, %d misses, want 2, 1", h, m)
	}
	return s
}

func TestCacheStats(t *testing.T) {
	s := checkCacheStats(t, testURL(t))

	// A Load answered by this instance's own write is a hit.
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	own := writeOwn(t, s, r.Key, setN(7))
	h0, m0 := s.CacheStats()
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got != own {
		t.Fatal("Load after the own write did not return its result")
	}
	if h, m := statsDelta(s, h0, m0); h != 1 || m != 0 {
		t.Errorf("Load of an own write: %d hits, %d misses, want 1, 0", h, m)
	}
}

func TestCacheStatsRealCluster(t *testing.T) {
	checkCacheStats(t, storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_CLUSTER_URL"))
}

// TestCacheStatsUncached checks that with caching off nothing is counted.
func TestCacheStatsUncached(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw), CacheTTL: -1}, nil)
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(t.Context(), testKey()); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("Load of a missing key: %v", err)
		}
	}
	if h, m := s.CacheStats(); h != 0 || m != 0 {
		t.Errorf("CacheTTL -1: CacheStats = %d hits, %d misses, want 0, 0", h, m)
	}
}
