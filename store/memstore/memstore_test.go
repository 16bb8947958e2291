package memstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

func newTestStore(t *testing.T, opts *Options) *Store {
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hallpass.Store { return newTestStore(t, nil) })
}

// TestStoreOneShard puts every key in the same shard, which takes the
// other branch wherever Rotate and the index treat one shard specially.
func TestStoreOneShard(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hallpass.Store { return newTestStore(t, &Options{Shards: 1}) })
}

// TestStoreLockAll makes ListUser and DeleteUser take their fallback,
// which locks every shard, at once.
func TestStoreLockAll(t *testing.T) {
	defer func(n int) { optimisticTries = n }(optimisticTries)
	optimisticTries = 0
	storetest.Run(t, func(t *testing.T) hallpass.Store { return newTestStore(t, &Options{Shards: 8}) })
}

// stored counts the records in the maps, expired or not.
func (s *Store) stored() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// indexed returns the keys the index holds for a user.
func (s *Store) indexed(userID string) []hallpass.Key {
	keys, _, _ := s.userKeys(userID, nil)
	return keys
}

// checkIndex fails unless the index holds exactly the signed-in records:
// every such record under its user, nothing else, and no empty sets.
func checkIndex(t *testing.T, s *Store) {
	t.Helper()
	s.lockAll(true)
	defer s.unlockAll(true)
	inRecords := 0
	for i := range s.shards {
		for k, r := range s.shards[i].m {
			if r.Key != k {
				t.Errorf("record at %s says its key is %s", k, r.Key)
			}
			if r.UserID == "" {
				continue
			}
			inRecords++
			us := &s.users[s.userIndex(r.UserID)]
			if set := us.m[r.UserID]; set == nil {
				t.Errorf("record %s of %q not indexed", k, r.UserID)
			} else if _, ok := set.keys[k]; !ok {
				t.Errorf("record %s of %q not indexed", k, r.UserID)
			}
		}
	}
	inIndex := 0
	for i := range s.users {
		for user, set := range s.users[i].m {
			if len(set.keys) == 0 {
				t.Errorf("empty key set kept for %q", user)
			}
			if s.userIndex(user) != uint64(i) {
				t.Errorf("user %q in the wrong index shard", user)
			}
			for k := range set.keys {
				inIndex++
				r := s.shards[s.shardIndex(k)].m[k]
				if r == nil || r.UserID != user {
					t.Errorf("index lists %s under %q, but the record is %v", k, user, r)
				}
			}
		}
	}
	if inIndex != inRecords {
		t.Errorf("index holds %d keys, records of users number %d", inIndex, inRecords)
	}
}

func record(userID string, idle, abs time.Time) *hallpass.Record {
	return &hallpass.Record{
		Key:    hallpass.KeyOf(hallpass.NewToken()),
		Handle: hallpass.NewHandle(),
		Meta:   hallpass.Meta{UserID: userID, AbsoluteDeadline: abs},
		Touch:  hallpass.Touch{IdleDeadline: idle},
		Data:   map[string]json.RawMessage{"n": json.RawMessage(`1`)},
	}
}

func TestSweeperRemovesExpired(t *testing.T) {
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := newTestStore(t, &Options{SweepInterval: time.Millisecond, Now: clock.Now})
	t0 := clock.Now()
	idle := record("u", t0.Add(time.Minute), time.Time{})
	abs := record("", t0.Add(time.Hour), t0.Add(2*time.Minute))
	live := record("u", t0.Add(time.Hour), t0.Add(24*time.Hour))
	for _, r := range []*hallpass.Record{idle, abs, live} {
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	// The sweeper runs all along; before the deadlines it must keep all.
	time.Sleep(20 * time.Millisecond)
	if n := s.stored(); n != 3 {
		t.Fatalf("before the deadlines %d records stored, want 3", n)
	}

	clock.Add(3 * time.Minute)
	for deadline := time.Now().Add(5 * time.Second); s.stored() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("sweeper left %d records, want 1", s.stored())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Load(t.Context(), live.Key); err != nil {
		t.Errorf("live record: %v", err)
	}
	if keys := s.indexed("u"); len(keys) != 1 || keys[0] != live.Key {
		t.Errorf("index for u holds %v, want only %s", keys, live.Key)
	}
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d, want 1", n)
	}
	checkIndex(t, s)
}

// TestExpiredInvisibleBeforeSweep checks that expiry does not wait for
// the sweeper, and that sweep unindexes what it frees.
func TestExpiredInvisibleBeforeSweep(t *testing.T) {
	clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := newTestStore(t, &Options{SweepInterval: time.Hour, Now: clock.Now})
	r := record("u", clock.Now().Add(time.Minute), time.Time{})
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	clock.Add(time.Minute)
	if _, err := s.Load(t.Context(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Load at the deadline: %v, want ErrNotFound", err)
	}
	if n := s.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
	if n := s.stored(); n != 1 {
		t.Fatalf("%d records stored before the sweep, want 1", n)
	}
	s.sweep()
	if n := s.stored(); n != 0 {
		t.Errorf("%d records stored after the sweep, want 0", n)
	}
	if keys := s.indexed("u"); len(keys) != 0 {
		t.Errorf("index still holds %v", keys)
	}
	checkIndex(t, s)
}

func TestClose(t *testing.T) {
	s := New(nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-s.stopped:
	default:
		t.Fatal("sweeper still running after Close")
	}
	// Close stops the sweeper only; the store still answers.
	r := record("u", time.Time{}, time.Time{})
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
}

func TestCloseConcurrent(t *testing.T) {
	s := New(&Options{SweepInterval: time.Millisecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	select {
	case <-s.stopped:
	default:
		t.Fatal("sweeper still running after Close")
	}
}

func TestOptionsShards(t *testing.T) {
	for _, c := range []struct{ in, want int }{
		{0, 64}, {-1, 64}, {1, 1}, {2, 2}, {3, 4}, {64, 64}, {100, 128}, {1 << 30, 1 << 16},
	} {
		s := New(&Options{Shards: c.in})
		if len(s.shards) != c.want || len(s.users) != c.want || s.mask != uint64(c.want-1) {
			t.Errorf("Shards %d: %d record shards, %d user shards, mask %#x; want %d", c.in, len(s.shards), len(s.users), s.mask, c.want)
		}
		s.Close()
	}
}

// TestIndexConsistency runs random operations from many goroutines on a
// few keys and users, so that they collide, and then checks the index
// against the records.
func TestIndexConsistency(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprint(shards, "shards"), func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
			s := newTestStore(t, &Options{Shards: shards, SweepInterval: time.Millisecond, Now: clock.Now})
			users := []string{"", "a", "b", "c"}
			var keys [32]hallpass.Key
			for i := range keys {
				keys[i] = hallpass.KeyOf(fmt.Sprint(i))
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					ctx := t.Context()
					key := func() hallpass.Key { return keys[rng.IntN(len(keys))] }
					user := func() string { return users[rng.IntN(len(users))] }
					check := func(err error) {
						if err != nil && !errors.Is(err, hallpass.ErrNotFound) && !errors.Is(err, hallpass.ErrExists) {
							t.Error(err)
						}
					}
					for range 3000 {
						t0 := clock.Now()
						switch rng.IntN(8) {
						case 0, 1:
							// Some records are born close to expiry, so
							// the sweeper and the clock take part too.
							r := record(user(), t0.Add(time.Duration(rng.IntN(3))*time.Second), time.Time{})
							r.Key = key()
							check(s.Create(ctx, r))
						case 2:
							m := hallpass.Meta{UserID: user()}
							check(s.Update(ctx, key(), hallpass.Delta{Meta: &m}))
						case 3, 4:
							m := hallpass.Meta{UserID: user()}
							check(s.Rotate(ctx, key(), key(), hallpass.Delta{Meta: &m}))
						case 5:
							check(s.Delete(ctx, key()))
						case 6:
							_, err := s.DeleteUser(ctx, user(), key())
							check(err)
						case 7:
							if rs, err := s.ListUser(ctx, users[1]); err != nil {
								t.Error(err)
							} else {
								for _, r := range rs {
									if r.UserID != users[1] {
										t.Errorf("ListUser(%q) returned a record of %q", users[1], r.UserID)
									}
								}
							}
							clock.Add(time.Second / 4)
						}
					}
				})
			}
			wg.Wait()
			checkIndex(t, s)
		})
	}
}

// sink keeps results on the heap, as a caller's would be.
var sink *hallpass.Record

// TestLoadAllocs holds Load to the one Clone it must make.
func TestLoadAllocs(t *testing.T) {
	s := newTestStore(t, nil)
	r := record("u", time.Time{}, time.Time{})
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	clone := testing.AllocsPerRun(100, func() { sink = r.Clone() })
	load := testing.AllocsPerRun(100, func() {
		var err error
		if sink, err = s.Load(ctx, r.Key); err != nil {
			t.Fatal(err)
		}
	})
	if load > clone {
		t.Errorf("Load makes %v allocations, a Clone %v", load, clone)
	}
	missing := hallpass.KeyOf("missing")
	if n := testing.AllocsPerRun(100, func() { s.Load(ctx, missing) }); n != 0 {
		t.Errorf("Load of a missing key makes %v allocations, want 0", n)
	}
}

// benchStore returns a store holding n sessions with typical data.
func benchStore(b *testing.B, n int) (*Store, []hallpass.Key) {
	s := New(nil)
	b.Cleanup(func() { s.Close() })
	keys := make([]hallpass.Key, n)
	t0 := time.Now()
	for i := range keys {
		r := record(fmt.Sprint("user", i%100), t0.Add(time.Hour), t0.Add(24*time.Hour))
		r.Data["csrf"] = json.RawMessage(`"0123456789abcdef0123456789abcdef"`)
		r.Data["cart"] = json.RawMessage(`{"items":[1,2,3]}`)
		if err := s.Create(b.Context(), r); err != nil {
			b.Fatal(err)
		}
		keys[i] = r.Key
	}
	return s, keys
}

func BenchmarkLoad(b *testing.B) {
	s, keys := benchStore(b, 10000)
	ctx := b.Context()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Load(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkLoadParallel(b *testing.B) {
	s, keys := benchStore(b, 10000)
	ctx := b.Context()
	var seed atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 0))
		for pb.Next() {
			if _, err := s.Load(ctx, keys[rng.IntN(len(keys))]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUpdate measures the per-request touch, with one data change.
func BenchmarkUpdate(b *testing.B) {
	s, keys := benchStore(b, 10000)
	ctx := b.Context()
	set := map[string]json.RawMessage{"flash": json.RawMessage(`"saved"`)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := time.Now()
		d := hallpass.Delta{Set: set, Touch: &hallpass.Touch{LastSeen: t, IdleDeadline: t.Add(time.Hour)}}
		if err := s.Update(ctx, keys[i%len(keys)], d); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func TestCount(t *testing.T) {
	s := newTestStore(t, nil)
	for _, u := range []string{"alice", "bob", ""} {
		r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: hallpass.NewHandle(), Meta: hallpass.Meta{UserID: u, AbsoluteDeadline: time.Now().Add(time.Hour)}}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Count(t.Context()); n != 3 || err != nil {
		t.Errorf("Count = %d, %v; want 3", n, err)
	}
}
