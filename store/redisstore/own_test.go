package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

// ownLimit bounds how long a write elsewhere may take to reach an instance
// that holds its own write's result: the invalidation is a push on
// loopback, so this is slack for a slow machine, far below CacheTTL.
const ownLimit = 250 * time.Millisecond

// writeOwn loads key and updates it with d, as a write request does, until
// the store holds the result as its own current record; it waits for the
// writer's connection, which is set up in the background. It returns that
// record.
func writeOwn(t *testing.T, s *Store, key hallpass.Key, d func() hallpass.Delta) *hallpass.Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := s.Load(t.Context(), key); err != nil {
			t.Fatalf("Load before the write: %v", err)
		}
		if err := s.Update(t.Context(), key, d()); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if rec := s.writer.own(key); rec != nil {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatal("the store never held its own write's result")
		}
		time.Sleep(time.Millisecond)
	}
}

func setN(n int) func() hallpass.Delta {
	return func() hallpass.Delta {
		return hallpass.Delta{Set: map[string]json.RawMessage{"n": json.RawMessage(strconv.Itoa(n))}}
	}
}

// TestOwnWriteNoRoundTrip checks that the Load after this instance's own
// write needs no server: with the connection stalled, it answers at once
// with the record as written.
func TestOwnWriteNoRoundTrip(t *testing.T) {
	raw := testURL(t)
	p := storetest.NewProxy(t, serverAddr(t, raw))
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, viaProxy(p))
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	own := writeOwn(t, s, r.Key, setN(7))
	p.Stall()
	defer p.Restore()
	start := time.Now()
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatalf("Load after the own write, server stalled: %v", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("Load after the own write took %v", d)
	}
	if got != own || string(got.Data["n"]) != "7" || got.Handle != r.Handle {
		t.Errorf("Load after the own write: %+v, want the written record (n=7)", got)
	}
}

// TestOwnWriteSeesOthers checks that a record an instance holds as its own
// write's result gives way, within ownLimit, to any later change made
// elsewhere: another instance's update, delete, rotation, sign-out of the
// user, change of identity, and a write to the hash by a client that is
// not a Store at all.
func TestOwnWriteSeesOthers(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	a, b := newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
	admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
	gone := func(_, _ *hallpass.Record, err error) bool { return errors.Is(err, hallpass.ErrNotFound) }
	cases := []struct {
		name   string
		change func(t *testing.T, r *hallpass.Record)
		seen   func(r, rec *hallpass.Record, err error) bool
	}{
		{"Update", func(t *testing.T, r *hallpass.Record) {
			if err := b.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"n": json.RawMessage(`"b"`)}}); err != nil {
				t.Fatal(err)
			}
		}, func(_, rec *hallpass.Record, err error) bool { return err == nil && string(rec.Data["n"]) == `"b"` }},
		{"Delete", func(t *testing.T, r *hallpass.Record) {
			if err := b.Delete(t.Context(), r.Key); err != nil {
				t.Fatal(err)
			}
		}, gone},
		{"DeleteUser", func(t *testing.T, r *hallpass.Record) {
			if n, err := b.DeleteUser(t.Context(), r.UserID); err != nil || n != 1 {
				t.Fatalf("DeleteUser = %d, %v", n, err)
			}
		}, gone},
		{"Rotate", func(t *testing.T, r *hallpass.Record) {
			if err := b.Rotate(t.Context(), r.Key, testKey(), hallpass.Delta{}); err != nil {
				t.Fatal(err)
			}
		}, gone},
		{"Meta", func(t *testing.T, r *hallpass.Record) {
			m := r.Meta
			m.UserID = testUser()
			if err := b.Update(t.Context(), r.Key, hallpass.Delta{Meta: &m}); err != nil {
				t.Fatal(err)
			}
		}, func(r, rec *hallpass.Record, err error) bool { return err == nil && rec.UserID != r.UserID }},
		{"RawWrite", func(t *testing.T, r *hallpass.Record) {
			if err := admin.Do(t.Context(), admin.B().Hset().Key(a.sessionKey(r.Key)).FieldValue().FieldValue("d:n", `"raw"`).Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}, func(_, rec *hallpass.Record, err error) bool { return err == nil && string(rec.Data["n"]) == `"raw"` }},
		{"RawDelete", func(t *testing.T, r *hallpass.Record) {
			if err := admin.Do(t.Context(), admin.B().Del().Key(a.sessionKey(r.Key)).Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}, gone},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ds []time.Duration
			for i := range 20 {
				r := liveRecord(testUser())
				if err := a.Create(t.Context(), r); err != nil {
					t.Fatal(err)
				}
				writeOwn(t, a, r.Key, setN(i))
				c.change(t, r)
				start := time.Now()
				for {
					if rec, err := a.Load(t.Context(), r.Key); c.seen(r, rec, err) {
						break
					}
					if time.Since(start) > ownLimit {
						rec, err := a.Load(t.Context(), r.Key)
						t.Fatalf("after the change elsewhere, this instance still loads %+v, %v after %v", rec, err, ownLimit)
					}
				}
				ds = append(ds, time.Since(start))
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			t.Logf("%s elsewhere visible after an own write: median %v, worst %v (20 runs)", c.name, ds[len(ds)/2], ds[len(ds)-1])
		})
	}
}

// TestOwnWriteConcurrentWriters has two instances write one session in
// turn and at once: after each write, the other instance's next Loads see
// it within ownLimit, and when all writes are done both instances load
// exactly what Redis holds.
func TestOwnWriteConcurrentWriters(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	a, b := newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
	r := liveRecord(testUser())
	if err := a.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	writeOwn(t, a, r.Key, setN(0))
	writeOwn(t, b, r.Key, setN(0))
	waitFor := func(s *Store, what string, ok func(*hallpass.Record) bool) {
		t.Helper()
		start := time.Now()
		for {
			rec, err := s.Load(t.Context(), r.Key)
			if err != nil {
				t.Fatal(err)
			}
			if ok(rec) {
				return
			}
			if time.Since(start) > ownLimit {
				t.Fatalf("%s: still %v (version %d) after %v", what, rec.Data, rec.Version, ownLimit)
			}
		}
	}
	set := func(s *Store, k string, i int) {
		t.Helper()
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{k: json.RawMessage(strconv.Itoa(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 100; i++ {
		set(a, "a", i)
		waitFor(b, fmt.Sprintf("b after a's write %d", i), func(rec *hallpass.Record) bool { return string(rec.Data["a"]) == strconv.Itoa(i) })
		set(b, "b", i)
		waitFor(a, fmt.Sprintf("a after b's write %d", i), func(rec *hallpass.Record) bool { return string(rec.Data["b"]) == strconv.Itoa(i) })
	}

	const writers, writes = 3, 50
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		for w := range writers {
			k := fmt.Sprintf("%p-%d", s, w)
			wg.Go(func() {
				for i := 1; i <= writes; i++ {
					if _, err := s.Load(context.Background(), r.Key); err != nil {
						t.Error(err)
						return
					}
					if err := s.Update(context.Background(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{k: json.RawMessage(strconv.Itoa(i))}}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	want, _, err := decodeMap(r.Key, hgetall(t, a, r.Key))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{a, b} {
		waitFor(s, "after the concurrent writes", func(rec *hallpass.Record) bool { return rec.Version == want.Version })
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Data, want.Data) {
			t.Errorf("after the concurrent writes an instance loads %s, Redis holds %s", got.Data, want.Data)
		}
	}
}

func hgetall(t *testing.T, s *Store, key hallpass.Key) map[string]string {
	t.Helper()
	m, err := s.client.Do(t.Context(), s.client.B().Hgetall().Key(s.sessionKey(key)).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestOwnWriteLostConnection cuts, then stalls, the instance's connections
// after an own write, changes the record behind its back, and checks that
// the own write's result is dropped with the connection: Loads fail once
// the loss is noticed, and after Restore they see the change.
func TestOwnWriteLostConnection(t *testing.T) {
	for _, fault := range []string{"cut", "stall"} {
		t.Run(fault, func(t *testing.T) {
			raw := testURL(t)
			p := storetest.NewProxy(t, serverAddr(t, raw))
			s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, viaProxy(p))
			admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
			r := liveRecord(testUser())
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			writeOwn(t, s, r.Key, setN(1))
			if fault == "cut" {
				p.Cut()
			} else {
				p.Stall()
			}
			if err := admin.Do(t.Context(), admin.B().Hset().Key(s.sessionKey(r.Key)).FieldValue().FieldValue("d:n", "2").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			// Noticed at once after a cut; after a stall when the ping
			// gets no answer within the write timeout.
			limit := faultPing + faultConnTimeout + 500*time.Millisecond
			start := time.Now()
			for {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
				_, err := s.Load(ctx, r.Key)
				cancel()
				if err != nil {
					break
				}
				if time.Since(start) > limit {
					t.Fatalf("own write's result still served %v after the %s", limit, fault)
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("own write's result dropped %v after the %s", time.Since(start).Round(time.Millisecond), fault)
			p.Restore()
			deadline := time.Now().Add(5 * time.Second)
			for {
				got, err := s.Load(t.Context(), r.Key)
				if err == nil {
					if string(got.Data["n"]) != "2" {
						t.Fatalf("after Restore Load returned n=%s, want 2 from Redis", got.Data["n"])
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Load after Restore: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The writer comes back by itself.
			writeOwn(t, s, r.Key, setN(3))
		})
	}
}

// TestOwnWriteRecordMatchesRedis checks that the record the store computes
// for its own write is exactly what decoding the hash afterwards gives,
// for every kind of delta dataScript takes: times in whole milliseconds,
// activity moved forward only, removals before sets, Clear.
func TestOwnWriteRecordMatchesRedis(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	base := time.Now().Add(time.Hour)
	odd := func(d time.Duration) time.Time { return base.Add(d + 123456*time.Nanosecond) }
	raw2 := func(s string) json.RawMessage { return json.RawMessage(s) }
	deltas := []struct {
		name string
		d    hallpass.Delta
	}{
		{"set", hallpass.Delta{Set: map[string]json.RawMessage{"n": raw2(`1`), "s": raw2(`"ü\"x"`)}}},
		{"replace", hallpass.Delta{Set: map[string]json.RawMessage{"n": raw2(`{"a":[1,2]}`)}}},
		{"remove", hallpass.Delta{Remove: []string{"s", "missing"}}},
		{"remove then set", hallpass.Delta{Remove: []string{"n"}, Set: map[string]json.RawMessage{"n": raw2(`3`), "m": raw2(`4`)}}},
		{"nothing", hallpass.Delta{}},
		{"touch newer", hallpass.Delta{Touch: &hallpass.Touch{LastSeen: odd(time.Minute), IdleDeadline: odd(2 * time.Hour), LastIP: "198.51.100.7", LastUA: "ua/2"}}},
		{"touch older", hallpass.Delta{Touch: &hallpass.Touch{LastSeen: odd(-time.Hour), IdleDeadline: odd(-time.Minute), LastIP: "198.51.100.8", LastUA: "ua/3"}}},
		{"touch same ms", hallpass.Delta{Touch: &hallpass.Touch{LastSeen: odd(time.Minute).Add(100 * time.Microsecond), LastIP: "198.51.100.9"}}},
		{"touch no ip", hallpass.Delta{Touch: &hallpass.Touch{LastSeen: odd(2 * time.Minute), IdleDeadline: odd(3 * time.Hour)}, Set: map[string]json.RawMessage{"t": raw2(`true`)}}},
		{"touch idle only", hallpass.Delta{Touch: &hallpass.Touch{IdleDeadline: odd(4 * time.Hour)}}},
		{"clear", hallpass.Delta{Clear: true}},
		{"clear and set", hallpass.Delta{Clear: true, Set: map[string]json.RawMessage{"after": raw2(`null`)}}},
		{"clear, remove and set", hallpass.Delta{Clear: true, Remove: []string{"after"}, Set: map[string]json.RawMessage{"x": raw2(`[]`), "y": raw2(`""`)}}},
	}
	for _, user := range []string{testUser(), ""} {
		r := liveRecord(user)
		if user == "" {
			r.Meta = hallpass.Meta{}
			r.LastIP, r.LastUA = "", ""
		}
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		for _, c := range deltas {
			own := writeOwn(t, s, r.Key, func() hallpass.Delta { return c.d })
			want, _, err := decodeMap(r.Key, hgetall(t, s, r.Key))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(own, want) {
				t.Errorf("user %q, %s: own write's record\n%+v\nRedis holds\n%+v", user, c.name, own, want)
			}
		}
	}
}

// TestOwnWriteNeedsRESP3 checks that over RESP2, where Redis cannot push
// invalidations on the connection that tracks, the store never serves its
// own writes' results, and reads see other writers at once.
func TestOwnWriteNeedsRESP3(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	a := newStore(t, raw, opts, func(o *rueidis.ClientOption) { o.AlwaysRESP2, o.DisableCache = true, true })
	b := newStore(t, raw, opts, nil)
	r := liveRecord(testUser())
	if err := a.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := a.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
		if err := a.Update(t.Context(), r.Key, setN(i)()); err != nil {
			t.Fatal(err)
		}
		if a.writer.own(r.Key) != nil {
			t.Fatal("over RESP2 the store kept its own write's result")
		}
		if err := b.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"b": json.RawMessage(strconv.Itoa(i))}}); err != nil {
			t.Fatal(err)
		}
		got, err := a.Load(t.Context(), r.Key)
		if err != nil || string(got.Data["b"]) != strconv.Itoa(i) {
			t.Fatalf("over RESP2, Load after another instance's write: %v, %v", got, err)
		}
		time.Sleep(5 * time.Millisecond) // let the writer's setup run
	}
}

// TestOwnWriteConnectionKilled closes one of the writer's two connections
// at the server, as CLIENT KILL or a timeout would, and changes the record
// behind the instance's back: whichever went, the instance drops its own
// write's result, at once when the invalidation connection goes and
// within writerCheck when the write connection (whose tracking Redis then
// forgets) goes; and the writer comes back.
func TestOwnWriteConnectionKilled(t *testing.T) {
	for _, which := range []string{"write", "invalidation"} {
		t.Run(which, func(t *testing.T) {
			raw := testURL(t)
			s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
			admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
			r := liveRecord(testUser())
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				writeOwn(t, s, r.Key, setN(i))
				c := s.writer.cur.Load()
				id := c.wid
				if which == "invalidation" {
					id = strconv.FormatInt(c.tid, 10)
				}
				if err := admin.Do(t.Context(), admin.B().Arbitrary("CLIENT", "KILL", "ID", id).Build()).Error(); err != nil {
					t.Fatal(err)
				}
				v := json.RawMessage(`"killed-` + strconv.Itoa(i) + `"`)
				if err := admin.Do(t.Context(), admin.B().Hset().Key(s.sessionKey(r.Key)).FieldValue().FieldValue("d:n", string(v)).Build()).Error(); err != nil {
					t.Fatal(err)
				}
				limit := writerCheck + ownLimit
				start := time.Now()
				for {
					got, err := s.Load(t.Context(), r.Key)
					if err == nil && string(got.Data["n"]) == string(v) {
						break
					}
					if time.Since(start) > limit {
						t.Fatalf("%s connection killed: still loads %s, %v after %v", which, got.Data["n"], err, limit)
					}
					time.Sleep(time.Millisecond)
				}
				t.Logf("%s connection killed: change seen after %v", which, time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

// TestOwnWriteSteady checks the steady state of one instance writing a
// session over and over, for several of the writer's connection checks:
// every Load after its write is served from the write's result, and the
// writer's connections are never replaced.
func TestOwnWriteSteady(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	writeOwn(t, s, r.Key, setN(0))
	c, epoch := s.writer.cur.Load(), s.writer.epoch.Load()
	misses, n := 0, 0
	for start := time.Now(); time.Since(start) < 4*writerCheck; n++ {
		if s.writer.own(r.Key) == nil {
			misses++
		}
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(t.Context(), r.Key, setN(n)()); err != nil {
			t.Fatal(err)
		}
	}
	if misses > 0 {
		t.Errorf("%d of %d Loads after an own write were not served from it", misses, n)
	}
	if s.writer.cur.Load() != c || s.writer.epoch.Load() != epoch {
		t.Error("the writer's connections were replaced while all was well")
	}
}

// TestOwnWriteCacheTTL checks that an own write's result is served for at
// most CacheTTL, the bound should its invalidation be lost.
func TestOwnWriteCacheTTL(t *testing.T) {
	raw := testURL(t)
	const ttl = 50 * time.Millisecond
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw), CacheTTL: ttl}, nil)
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	writeOwn(t, s, r.Key, setN(1))
	time.Sleep(ttl + 10*time.Millisecond)
	if s.writer.own(r.Key) != nil {
		t.Errorf("own write's result still current %v after it, CacheTTL %v", ttl+10*time.Millisecond, ttl)
	}
}
