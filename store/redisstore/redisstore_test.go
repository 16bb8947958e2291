package redisstore

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

// conformance runs the suite on one store shared by every case, as many
// instances would share one server.
func conformance(t *testing.T, opts Options, except ...string) {
	raw := testURL(t)
	opts.KeyPrefix = testPrefix(t, raw)
	s := newStore(t, raw, opts, nil)
	storetest.RunExcept(t, func(t *testing.T) hallpass.Store { return s }, except...)
}

func TestConformanceCached(t *testing.T) { conformance(t, Options{}) }

func TestConformanceUncached(t *testing.T) { conformance(t, Options{CacheTTL: -1}) }

// TestConformanceClusterPath runs the Cluster path's sequences on the
// standalone server (their single-slot scripts run anywhere). There, while
// a session rotates, ListUser may miss it and DeleteUser, which still ends
// it, may not count it: the two cases that check this are not run, and
// TestClusterDeleteUserDuringRotate checks what does hold.
func TestConformanceClusterPath(t *testing.T) {
	conformance(t, Options{Cluster: true}, "ListUserDuringRotate", "DeleteUserDuringRotate")
}

// TestConformanceRealCluster runs the suite on a real Redis Cluster whose
// nodes HALLPASS_TEST_REDIS_CLUSTER_URL names (.ci/run starts one on
// loopback).
func TestConformanceRealCluster(t *testing.T) {
	raw := storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_CLUSTER_URL")
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	s := newStore(t, raw, opts, nil)
	if !s.cluster {
		t.Fatal("a cluster client did not select the Cluster path")
	}
	storetest.RunExcept(t, func(t *testing.T) hallpass.Store { return s }, "ListUserDuringRotate", "DeleteUserDuringRotate")
	t.Run("Instances", func(t *testing.T) {
		storetest.RunInstances(t, func(t testing.TB) (hallpass.Store, hallpass.Store) {
			return newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
		}, defaultCacheTTL)
	})
	t.Run("PinnedPrefix", func(t *testing.T) {
		s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw) + "{pinned}:"}, nil)
		if s.cluster {
			t.Fatal("a hash tag in the prefix should select the standalone scripts")
		}
		storetest.Run(t, func(t *testing.T) hallpass.Store { return s })
	})
}

// TestConformancePinnedPrefix puts every key in one slot with a hash tag in
// the prefix, which selects the atomic scripts even for a Cluster.
func TestConformancePinnedPrefix(t *testing.T) {
	raw := testURL(t)
	prefix := testPrefix(t, raw) + "{pinned}:"
	s := newStore(t, raw, Options{KeyPrefix: prefix, Cluster: true}, nil)
	if s.cluster {
		t.Fatal("a hash tag in the prefix should select the standalone scripts")
	}
	storetest.Run(t, func(t *testing.T) hallpass.Store { return s })
}

// pair returns two stores with their own clients on one prefix, as two app
// instances would have.
func pair(opts Options) storetest.Pair {
	return func(t testing.TB) (hallpass.Store, hallpass.Store) {
		raw := testURL(t)
		opts := opts
		opts.KeyPrefix = testPrefix(t, raw)
		return newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
	}
}

func TestInstancesCached(t *testing.T) { storetest.RunInstances(t, pair(Options{}), defaultCacheTTL) }

func TestInstancesUncached(t *testing.T) { storetest.RunInstances(t, pair(Options{CacheTTL: -1}), 0) }

func TestOpen(t *testing.T) {
	raw := testURL(t)
	prefix := testPrefix(t, raw)
	s, err := Open(raw, &Options{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Close closed the client Open made.
	if _, err := s.Load(t.Context(), testKey()); !errors.Is(err, rueidis.ErrClosing) {
		t.Errorf("Load after Close: %v, want rueidis.ErrClosing", err)
	}

	if _, err := Open("http://example.com", nil); err == nil {
		t.Error("Open of an http URL succeeded")
	}
	if _, err := Open(raw, &Options{KeyPrefix: "bad{"}); err == nil {
		t.Error("Open with a prefix that opens no hash tag succeeded")
	}
}

func TestPrefixTag(t *testing.T) {
	for _, c := range []struct {
		prefix string
		pinned bool
		ok     bool
	}{
		{"hallpass:", false, true},
		{"a}b:", false, true},
		{"app{s}:", true, true},
		{"{x}", true, true},
		{"app{", false, false},
		{"app{}:", false, false},
	} {
		pinned, err := prefixTag(c.prefix)
		if pinned != c.pinned || (err == nil) != c.ok {
			t.Errorf("prefixTag(%q) = %v, %v; want %v, ok %v", c.prefix, pinned, err, c.pinned, c.ok)
		}
	}
}

// TestKeyLayout checks the documented layout: the hash, its fields, the
// user index and its score.
func TestKeyLayout(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	s := newStore(t, raw, opts, nil)
	admin := newClient(t, raw, nil)
	u := testUser()
	r := liveRecord(u)
	r.Data = map[string]json.RawMessage{"cart": json.RawMessage(`[1,2]`), "m:v": json.RawMessage(`"not the version"`)}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	hx := r.Key.String()
	k := opts.KeyPrefix + "s:{" + hx[:8] + "}" + hx[8:]
	if k != s.sessionKey(r.Key) {
		t.Fatalf("session key %q, want %q", s.sessionKey(r.Key), k)
	}
	fields, err := admin.Do(t.Context(), admin.B().Hgetall().Key(k).Build()).AsStrMap()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"m:h": r.Handle, "m:u": u, "m:v": "1", "m:al": "password",
		"m:ad": msString(r.AbsoluteDeadline), "m:id": msString(r.IdleDeadline),
		"d:cart": `[1,2]`, "d:m:v": `"not the version"`,
	}
	for f, v := range want {
		if fields[f] != v {
			t.Errorf("field %q = %q, want %q", f, fields[f], v)
		}
	}
	for f := range fields {
		if !strings.HasPrefix(f, "m:") && !strings.HasPrefix(f, "d:") {
			t.Errorf("field %q has neither prefix", f)
		}
	}
	idx := opts.KeyPrefix + "{u:" + u + "}"
	scores, err := admin.Do(t.Context(), admin.B().Zrange().Key(idx).Min("0").Max("-1").Withscores().Build()).AsZScores()
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 1 || scores[0].Member != r.Key.String() || int64(scores[0].Score) != r.AbsoluteDeadline.UnixMilli() {
		t.Errorf("index %s = %+v, want %s scored %d", idx, scores, r.Key, r.AbsoluteDeadline.UnixMilli())
	}
}

// pexpiretime returns the key's expiry in unix ms: -1 for none, -2 for no
// key.
func pexpiretime(t *testing.T, c rueidis.Client, k string) int64 {
	t.Helper()
	n, err := c.Do(t.Context(), c.B().Arbitrary("PEXPIRETIME").Keys(k).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestExpiryTTL checks that Redis expires each record exactly at its
// expiry, after every kind of write.
func TestExpiryTTL(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "standalone", true: "cluster"}[cluster], func(t *testing.T) {
			raw := testURL(t)
			opts := Options{KeyPrefix: testPrefix(t, raw), Cluster: cluster}
			s := newStore(t, raw, opts, nil)
			admin := newClient(t, raw, nil)
			key := s.sessionKey
			check := func(what string, r *hallpass.Record) {
				t.Helper()
				if got, want := pexpiretime(t, admin, key(r.Key)), r.ExpiresAt().UnixMilli(); got != want {
					t.Errorf("%s: PEXPIRETIME = %d, want %d", what, got, want)
				}
			}
			r := liveRecord(testUser())
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			check("after Create (idle first)", r)

			later := time.Now().Add(time.Minute).Truncate(time.Millisecond)
			d := hallpass.Delta{Touch: &hallpass.Touch{LastSeen: later, IdleDeadline: later.Add(time.Hour)}}
			if err := s.Update(t.Context(), r.Key, d); err != nil {
				t.Fatal(err)
			}
			d.Apply(r)
			check("after a touch", r)

			m := r.Meta
			m.AbsoluteDeadline = later.Add(10 * time.Minute) // now earlier than idle
			d = hallpass.Delta{Meta: &m}
			if err := s.Update(t.Context(), r.Key, d); err != nil {
				t.Fatal(err)
			}
			d.Apply(r)
			check("after a Meta (absolute first)", r)

			to := testKey()
			if err := s.Rotate(t.Context(), r.Key, to, hallpass.Delta{}); err != nil {
				t.Fatal(err)
			}
			r.Key = to
			check("after Rotate", r)

			// No deadline at all: no TTL.
			m.AbsoluteDeadline = time.Time{}
			d = hallpass.Delta{Meta: &m, Touch: &hallpass.Touch{LastSeen: later}}
			if err := s.Update(t.Context(), r.Key, d); err != nil {
				t.Fatal(err)
			}
			if got := pexpiretime(t, admin, key(r.Key)); got != -1 {
				t.Errorf("without deadlines: PEXPIRETIME = %d, want -1", got)
			}
			if err := s.Delete(t.Context(), r.Key); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNoResurrection checks, in Redis itself, that writes to a deleted
// session leave no key behind.
func TestNoResurrection(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "standalone", true: "cluster"}[cluster], func(t *testing.T) {
			raw := testURL(t)
			opts := Options{KeyPrefix: testPrefix(t, raw), Cluster: cluster}
			s := newStore(t, raw, opts, nil)
			admin := newClient(t, raw, nil)
			u := testUser()
			r := liveRecord(u)
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(t.Context(), r.Key); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			for name, d := range map[string]hallpass.Delta{
				"zero":  {},
				"set":   {Set: map[string]json.RawMessage{"x": json.RawMessage(`1`)}},
				"touch": {Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)}},
				"meta":  {Meta: &hallpass.Meta{UserID: u, AbsoluteDeadline: now.Add(time.Hour)}, Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)}},
			} {
				if err := s.Update(t.Context(), r.Key, d); !errors.Is(err, hallpass.ErrNotFound) {
					t.Errorf("Update (%s) after Delete: %v, want ErrNotFound", name, err)
				}
				to := testKey()
				if err := s.Rotate(t.Context(), r.Key, to, d); !errors.Is(err, hallpass.ErrNotFound) {
					t.Errorf("Rotate (%s) after Delete: %v, want ErrNotFound", name, err)
				}
				for _, k := range []hallpass.Key{r.Key, to} {
					n, err := admin.Do(t.Context(), admin.B().Exists().Key(s.sessionKey(k)).Build()).AsInt64()
					if err != nil || n != 0 {
						t.Errorf("after Update (%s): EXISTS = %d, %v; want 0", name, n, err)
					}
				}
			}
		})
	}
}

func indexMembers(t *testing.T, c rueidis.Client, prefix, user string) []string {
	t.Helper()
	m, err := c.Do(t.Context(), c.B().Zrange().Key(prefix+"{u:"+user+"}").Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// TestIndexTrimmed checks that the user index drops members whose record
// is gone, expired or someone else's, and that a record past its absolute
// deadline is trimmed by score without being read.
func TestIndexTrimmed(t *testing.T) {
	raw := testURL(t)
	clock := storetest.NewClock(time.Now().Truncate(time.Millisecond))
	opts := Options{KeyPrefix: testPrefix(t, raw), Now: clock.Now}
	a := newStore(t, raw, opts, nil)
	b := newStore(t, raw, opts, nil) // knows no users, so its Deletes leave entries behind
	admin := newClient(t, raw, nil)
	u := testUser()
	now := clock.Now()
	live, deleted, idle, abs := liveRecord(u), liveRecord(u), liveRecord(u), liveRecord(u)
	idle.IdleDeadline = now.Add(time.Minute)
	abs.AbsoluteDeadline = now.Add(2 * time.Minute)
	for _, r := range []*hallpass.Record{live, deleted, idle, abs} {
		if err := a.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(t.Context(), deleted.Key); err != nil {
		t.Fatal(err)
	}
	all := []string{live.Key.String(), deleted.Key.String(), idle.Key.String(), abs.Key.String()}
	slices.Sort(all)
	if got := indexMembers(t, admin, opts.KeyPrefix, u); !slices.Equal(got, all) {
		t.Fatalf("index before = %v, want all four %v", got, all)
	}

	clock.Add(3 * time.Minute) // idle and abs have expired by the store's clock
	recs, err := a.ListUser(t.Context(), u)
	if err != nil || len(recs) != 1 || recs[0].Key != live.Key {
		t.Fatalf("ListUser = %d records, %v; want only the live one", len(recs), err)
	}
	if got := indexMembers(t, admin, opts.KeyPrefix, u); !slices.Equal(got, []string{live.Key.String()}) {
		t.Errorf("index after ListUser = %v, want only %s", got, live.Key)
	}

	// A record that has left the user and one whose key another user's
	// record took are dropped too.
	moved, taken := liveRecord(u), liveRecord(u)
	for _, r := range []*hallpass.Record{moved, taken} {
		if err := a.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	m := moved.Meta
	m.UserID = testUser()
	if err := b.Update(t.Context(), moved.Key, hallpass.Delta{Meta: &m}); err != nil { // b guesses the user wrong first
		t.Fatal(err)
	}
	if err := b.Delete(t.Context(), taken.Key); err != nil {
		t.Fatal(err)
	}
	other := liveRecord(testUser())
	other.Key = taken.Key
	if err := b.Create(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	if got := indexMembers(t, admin, opts.KeyPrefix, u); !slices.Contains(got, taken.Key.String()) {
		t.Fatalf("suite bug: the deleted key is not a stale member: %v", got)
	}
	if n, err := a.DeleteUser(t.Context(), u, live.Key); err != nil || n != 0 {
		t.Errorf("DeleteUser keeping the live one = %d, %v; want 0", n, err)
	}
	if got := indexMembers(t, admin, opts.KeyPrefix, u); !slices.Equal(got, []string{live.Key.String()}) {
		t.Errorf("index after DeleteUser = %v, want only %s", got, live.Key)
	}
	for _, k := range []hallpass.Key{moved.Key, taken.Key, live.Key} {
		if _, err := a.Load(t.Context(), k); err != nil {
			t.Errorf("DeleteUser removed a record it should have kept: %v", err)
		}
	}
}

// TestOddDataKeys checks in Redis that data keys that look like metadata
// or contain separators stay data, and that Clear leaves the metadata.
func TestOddDataKeys(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	s := newStore(t, raw, opts, nil)
	admin := newClient(t, raw, nil)
	odd := []string{"m:v", "m:u", "m:", "d:", "d:d:x", "", ":", "{u:x}", "s:" + strings.Repeat("0", 64), "\x00nul", "line\nbreak", "🎉"}
	r := liveRecord(testUser())
	r.Data = map[string]json.RawMessage{}
	for i, k := range odd {
		r.Data[k] = json.RawMessage(`{"i":` + string(rune('0'+i%10)) + `}`)
	}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	d := hallpass.Delta{Set: map[string]json.RawMessage{"m:ad": json.RawMessage(`0`)}, Remove: []string{"m:u"}}
	if err := s.Update(t.Context(), r.Key, d); err != nil {
		t.Fatal(err)
	}
	d.Apply(r)
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 2 || got.UserID != r.UserID || !got.AbsoluteDeadline.Equal(r.AbsoluteDeadline) {
		t.Errorf("data keys changed metadata: version %d, user %q, absolute %v", got.Version, got.UserID, got.AbsoluteDeadline)
	}
	if len(got.Data) != len(r.Data) {
		t.Errorf("got %d data keys, want %d", len(got.Data), len(r.Data))
	}
	for k, v := range r.Data {
		if string(got.Data[k]) != string(v) {
			t.Errorf("Data[%q] = %s, want %s", k, got.Data[k], v)
		}
	}

	// Clear removes exactly the data fields.
	if err := s.Update(t.Context(), r.Key, hallpass.Delta{Clear: true}); err != nil {
		t.Fatal(err)
	}
	fields, err := admin.Do(t.Context(), admin.B().Hkeys().Key(s.sessionKey(r.Key)).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		if !strings.HasPrefix(f, "m:") {
			t.Errorf("field %q left after Clear", f)
		}
	}
	if !slices.Contains(fields, "m:v") || !slices.Contains(fields, "m:u") || !slices.Contains(fields, "m:h") {
		t.Errorf("Clear removed metadata: fields %v", fields)
	}
	got, err = s.Load(t.Context(), r.Key)
	if err != nil || len(got.Data) != 0 || got.Version != 3 || got.Handle != r.Handle {
		t.Errorf("after Clear: %v, %d data keys, version %d", err, len(got.Data), got.Version)
	}
}

// TestCacheServesWithoutRoundTrip checks that a cached Load needs no
// server: with the connection stalled, it still answers, and it answers
// with the very record decoded before (the memo).
func TestCacheServesWithoutRoundTrip(t *testing.T) {
	raw := testURL(t)
	p := storetest.NewProxy(t, serverAddr(t, raw))
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, viaProxy(p))
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	var first *hallpass.Record
	for range 3 {
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		first = got
	}
	p.Stall()
	defer p.Restore()
	start := time.Now()
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatalf("cached Load with the server stalled: %v", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("cached Load took %v", d)
	}
	if got != first {
		t.Error("cached Load decoded the reply again instead of reusing the record")
	}
}

// TestCacheDroppedOnCut checks that rueidis drops the cache with a broken
// connection: a record changed in Redis while this instance was cut off
// is read afresh after the connection comes back, although CacheTTL is a
// minute and no invalidation could reach the instance.
func TestCacheDroppedOnCut(t *testing.T) {
	raw := testURL(t)
	p := storetest.NewProxy(t, serverAddr(t, raw))
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, viaProxy(p))
	admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
	}
	p.Cut()
	if err := admin.Do(t.Context(), admin.B().Hset().Key(s.sessionKey(r.Key)).FieldValue().FieldValue("d:n", "2").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	// The client notices the cut when it reads the closed socket; a
	// Load may be answered from the cache until then, never after.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Load still served from the cache 2 s after the cut")
		}
		time.Sleep(time.Millisecond)
	}
	p.Restore()
	got, err := s.Load(t.Context(), r.Key)
	if err != nil {
		t.Fatalf("Load after Restore: %v", err)
	}
	if string(got.Data["n"]) != "2" {
		t.Errorf("after Restore Load returned n=%s from the old cache, want 2 from Redis", got.Data["n"])
	}
}

// TestReadYourWrites checks that a Load right after this instance's own
// write never sees the record from before it, although the cache hears of
// the write only by an invalidation that may arrive later.
func TestReadYourWrites(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	r := liveRecord(testUser())
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := s.Load(t.Context(), r.Key); err != nil { // cache it
			t.Fatal(err)
		}
		v := json.RawMessage(`"` + string(rune('a'+i%26)) + `"`)
		if err := s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"x": v}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != int64(i+2) || string(got.Data["x"]) != string(v) {
			t.Fatalf("Load right after Update %d: version %d, x %s", i, got.Version, got.Data["x"])
		}
	}
	to := testKey()
	if err := s.Rotate(t.Context(), r.Key, to, hallpass.Delta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), r.Key); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Load of the old key right after Rotate: %v", err)
	}
	if _, err := s.Load(t.Context(), to); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), to); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), to); !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("Load right after Delete: %v", err)
	}
}

// TestWritesWithoutHint rotates and re-identifies records this instance
// never read, so it must learn their users from the scripts.
func TestWritesWithoutHint(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	a, b := newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
	u1, u2 := testUser(), testUser()
	r := liveRecord(u1)
	if err := a.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	to := testKey()
	if err := b.Rotate(t.Context(), r.Key, to, hallpass.Delta{}); err != nil {
		t.Fatal(err)
	}
	m := r.Meta
	m.UserID = u2
	if err := a.Update(t.Context(), to, hallpass.Delta{Meta: &m}); err != nil { // a's guess is for the old key
		t.Fatal(err)
	}
	for _, c := range []struct {
		user string
		want int
	}{{u1, 0}, {u2, 1}} {
		recs, err := b.ListUser(t.Context(), c.user)
		if err != nil || len(recs) != c.want {
			t.Errorf("ListUser = %d records, %v; want %d", len(recs), err, c.want)
		}
	}
}

// TestStaleLease checks that a lease left by a ListUser or DeleteUser that
// died only delays writers until it expires.
func TestStaleLease(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "standalone", true: "cluster"}[cluster], func(t *testing.T) {
			raw := testURL(t)
			opts := Options{KeyPrefix: testPrefix(t, raw), Cluster: cluster}
			s := newStore(t, raw, opts, nil)
			admin := newClient(t, raw, nil)
			u := testUser()
			lk := opts.KeyPrefix + "{u:" + u + "}:lk"
			if err := admin.Do(t.Context(), admin.B().Set().Key(lk).Value("dead").Px(200*time.Millisecond).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := liveRecord(u)
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
				t.Errorf("Create under a 200 ms lease took %v", d)
			}
			if recs, err := s.ListUser(t.Context(), u); err != nil || len(recs) != 1 {
				t.Errorf("ListUser = %d records, %v; want 1", len(recs), err)
			}
		})
	}
}
