package pgstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/metrics"
	"github.com/hallpass/hallpass/store/storetest"
)

var (
	_ metrics.Counter      = (*Store)(nil)
	_ metrics.CacheStatser = (*Store)(nil)
)

// TestCount checks that Count counts the live rows of a fresh table by
// the store's clock: created ones, deleted ones no more, and expired
// ones no more even before they are swept.
func TestCount(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	start := time.Now().Truncate(time.Millisecond)
	clock := storetest.NewClock(start)
	s := open(t, url, Options{Table: table, Now: clock.Now, SweepInterval: -1})
	count := func(want int) {
		t.Helper()
		if n, err := s.Count(t.Context()); n != want || err != nil {
			t.Fatalf("Count = %d, %v; want %d", n, err, want)
		}
	}
	count(0)

	mk := func(user string, idle, abs time.Duration) *hallpass.Record {
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: hallpass.NewHandle(),
			Meta: hallpass.Meta{UserID: user}}
		if idle > 0 {
			r.Touch = hallpass.Touch{LastSeen: start, IdleDeadline: start.Add(idle)}
		}
		if abs > 0 {
			r.AbsoluteDeadline = start.Add(abs)
		}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	mk("", time.Hour, 0)                   // a guest
	twoHours := mk("u", 2*time.Hour, 0)    // a user
	mk("", 0, 0)                           // no deadline at all
	halfHour := mk("u", 0, 30*time.Minute) // absolute deadline
	count(4)

	if err := s.Delete(t.Context(), twoHours.Key); err != nil {
		t.Fatal(err)
	}
	count(3)
	// A Rotate moves a row: still one.
	if err := s.Rotate(t.Context(), halfHour.Key, hallpass.KeyOf(hallpass.NewToken()), hallpass.Delta{}); err != nil {
		t.Fatal(err)
	}
	count(3)

	clock.Add(45 * time.Minute)
	count(2)
	clock.Add(30 * time.Minute)
	count(1) // forever
	if n := countRows(t, admin(t, url), table); n != 3 {
		t.Fatalf("%d rows in the table, want 3 (two expired, not swept)", n)
	}
	if n, err := s.Sweep(t.Context()); n != 2 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	count(1)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Count(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Count with a cancelled context: %v, want context.Canceled", err)
	}
}

// TestCacheStats checks that with the cache on a Load served from it is
// a hit and one that reads the database a miss, whatever it finds, and
// that with the cache off both stay 0.
func TestCacheStats(t *testing.T) {
	url := testURL(t)
	start := time.Now().Truncate(time.Millisecond)
	create := func(t *testing.T, s *Store) *hallpass.Record {
		t.Helper()
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
			Touch: hallpass.Touch{LastSeen: start, IdleDeadline: start.Add(time.Hour)}}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := func(t *testing.T, s *Store, hits, misses uint64) {
		t.Helper()
		if h, m := s.CacheStats(); h != hits || m != misses {
			t.Fatalf("CacheStats = %d hits, %d misses; want %d, %d", h, m, hits, misses)
		}
	}
	load := func(t *testing.T, s *Store, ctx context.Context, k hallpass.Key) {
		t.Helper()
		if _, err := s.Load(ctx, k); err != nil && !errors.Is(err, hallpass.ErrNotFound) && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("Cache", func(t *testing.T) {
		clock := storetest.NewClock(start)
		s := open(t, url, Options{Table: newTable(t, url), Now: clock.Now, CacheTTL: time.Minute})
		want(t, s, 0, 0)
		r := create(t, s)
		want(t, s, 0, 0) // writes count nothing

		load(t, s, t.Context(), r.Key) // read, and cached
		want(t, s, 0, 1)
		for range 3 {
			load(t, s, t.Context(), r.Key)
		}
		want(t, s, 3, 1)
		load(t, s, t.Context(), hallpass.KeyOf(hallpass.NewToken())) // not found
		want(t, s, 3, 2)
		load(t, s, cancelled, r.Key) // refused before anything
		want(t, s, 3, 2)

		// An Update caches the row it made: the next Load is a hit.
		if err := s.Update(t.Context(), r.Key, hallpass.Delta{Touch: &hallpass.Touch{LastSeen: start.Add(time.Second)}}); err != nil {
			t.Fatal(err)
		}
		load(t, s, t.Context(), r.Key)
		want(t, s, 4, 2)

		// While the listener is (as far as the cache knows) down, the
		// cache is not used: every Load is a miss.
		s.cache.live.Store(false)
		load(t, s, t.Context(), r.Key)
		want(t, s, 4, 3)
		s.cache.dropAll()
		s.cache.live.Store(true)
		// Back up: the first Load misses and fills the cache, unless a
		// notification still on its way (the Update's own) spoils the
		// fill, which makes one more miss. Either way a hit follows and
		// every Load counted once.
		n := 0
		for hits, _ := s.CacheStats(); hits == 4; hits, _ = s.CacheStats() {
			if n++; n > 20 {
				t.Fatal("the cache never served the record again")
			}
			load(t, s, t.Context(), r.Key)
		}
		if hits, misses := s.CacheStats(); hits != 5 || misses != uint64(3+n-1) {
			t.Fatalf("after %d Loads: %d hits, %d misses; want 5 and %d", n, hits, misses, 3+n-1)
		}
		baseMiss := uint64(3 + n - 1)

		// A cached record that has expired is read again: a miss.
		clock.Add(2 * time.Hour)
		if _, err := s.Load(t.Context(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
			t.Fatalf("Load after expiry: %v", err)
		}
		want(t, s, 5, baseMiss+1)
		clock.Add(-2 * time.Hour)

		// Concurrent Loads each count once, and race with nothing.
		hits, misses := s.CacheStats()
		var wg sync.WaitGroup
		const goroutines, loads = 8, 50
		for range goroutines {
			wg.Go(func() {
				for range loads {
					s.Load(context.Background(), r.Key)
					s.CacheStats()
				}
			})
		}
		wg.Wait()
		h, m := s.CacheStats()
		if h < hits || m < misses || (h-hits)+(m-misses) != goroutines*loads {
			t.Errorf("CacheStats went from %d, %d to %d, %d over %d Loads", hits, misses, h, m, goroutines*loads)
		}
		if h-hits < goroutines*loads/2 {
			t.Errorf("only %d of %d Loads of a cached record were hits", h-hits, goroutines*loads)
		}
	})

	t.Run("NoCache", func(t *testing.T) {
		s := open(t, url, Options{Table: newTable(t, url), CacheTTL: -1})
		r := create(t, s)
		for range 3 {
			load(t, s, t.Context(), r.Key)
		}
		load(t, s, t.Context(), hallpass.KeyOf(hallpass.NewToken()))
		load(t, s, cancelled, r.Key)
		want(t, s, 0, 0)
	})
}
