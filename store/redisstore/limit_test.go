package redisstore

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

var modes = []struct {
	name    string
	cluster bool
}{{"standalone", false}, {"cluster", true}}

// signInDelta gives a record to user with a limit, reporting evictions.
func signInDelta(user string, lim *hallpass.Limit) hallpass.Delta {
	now := time.Now().Truncate(time.Millisecond)
	return hallpass.Delta{
		Meta:  &hallpass.Meta{UserID: user, AuthTime: now, AuthLevel: "password", AbsoluteDeadline: now.Add(24 * time.Hour)},
		Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)},
		Limit: lim,
	}
}

func leaseExists(t *testing.T, admin rueidis.Client, prefix, user string) bool {
	t.Helper()
	n, err := admin.Do(t.Context(), admin.B().Exists().Key(prefix+"{u:"+user+"}:lk").Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestLimitEvictionInvalidates checks that a session a limit evicts on
// one instance is gone on another at once, although the other had it in
// its client-side cache and as its own write's result.
func TestLimitEvictionInvalidates(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			raw := testURL(t)
			opts := Options{KeyPrefix: testPrefix(t, raw), Cluster: m.cluster}
			a := newStore(t, raw, opts, nil)
			b := newStore(t, raw, Options{KeyPrefix: opts.KeyPrefix}, nil) // standalone: b has its writer
			u := testUser()
			cached, own := liveRecord(u), liveRecord(u)
			cached.AuthTime = cached.AuthTime.Add(-2 * time.Hour)
			own.AuthTime = own.AuthTime.Add(-time.Hour)
			for _, r := range []*hallpass.Record{cached, own} {
				if err := a.Create(t.Context(), r); err != nil {
					t.Fatal(err)
				}
			}
			for range 3 {
				if _, err := b.Load(t.Context(), cached.Key); err != nil {
					t.Fatal(err)
				}
			}
			writeOwn(t, b, own.Key, setN(5))

			guest := liveRecord("")
			if err := a.Create(t.Context(), guest); err != nil {
				t.Fatal(err)
			}
			var evicted []string
			lim := &hallpass.Limit{Max: 1, Evicted: func(h string) { evicted = append(evicted, h) }}
			if err := a.Rotate(t.Context(), guest.Key, testKey(), signInDelta(u, lim)); err != nil {
				t.Fatal(err)
			}
			slices.Sort(evicted)
			want := []string{cached.Handle, own.Handle}
			slices.Sort(want)
			if !slices.Equal(evicted, want) {
				t.Fatalf("evicted %q, want %q", evicted, want)
			}
			start := time.Now()
			for _, k := range []hallpass.Key{cached.Key, own.Key} {
				for {
					_, err := b.Load(t.Context(), k)
					if errors.Is(err, hallpass.ErrNotFound) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if time.Since(start) > ownLimit {
						t.Fatalf("instance B still loads an evicted session %v later", time.Since(start))
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
			t.Logf("evictions visible on B after %v", time.Since(start))
		})
	}
}

// TestLimitLease checks the user's lease around limited Rotates: one left
// by a writer that died only delays them, and none is left behind by a
// Rotate that succeeds or is refused.
func TestLimitLease(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			raw := testURL(t)
			opts := Options{KeyPrefix: testPrefix(t, raw), Cluster: m.cluster}
			s := newStore(t, raw, opts, nil)
			admin := newClient(t, raw, nil)
			u := testUser()
			if err := s.Create(t.Context(), liveRecord(u)); err != nil {
				t.Fatal(err)
			}
			lk := opts.KeyPrefix + "{u:" + u + "}:lk"
			if err := admin.Do(t.Context(), admin.B().Set().Key(lk).Value("dead").Px(200*time.Millisecond).Build()).Error(); err != nil {
				t.Fatal(err)
			}
			g := liveRecord("")
			if err := s.Create(t.Context(), g); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			to := testKey()
			if err := s.Rotate(t.Context(), g.Key, to, signInDelta(u, &hallpass.Limit{Max: 2})); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
				t.Errorf("limited Rotate under a 200 ms lease took %v", d)
			}
			if leaseExists(t, admin, opts.KeyPrefix, u) {
				t.Error("a limited Rotate left the lease behind")
			}
			g2 := liveRecord("")
			if err := s.Create(t.Context(), g2); err != nil {
				t.Fatal(err)
			}
			err := s.Rotate(t.Context(), g2.Key, testKey(), signInDelta(u, &hallpass.Limit{Max: 2, RefuseNew: true}))
			if !errors.Is(err, hallpass.ErrTooManySessions) {
				t.Fatalf("Rotate over the limit: %v, want ErrTooManySessions", err)
			}
			if leaseExists(t, admin, opts.KeyPrefix, u) {
				t.Error("a refused Rotate left the lease behind")
			}
			if r, err := s.Load(t.Context(), g2.Key); err != nil || r.Version != 1 || r.UserID != "" {
				t.Errorf("the refused Rotate's source: %v, %v; want the guest unchanged", r, err)
			}
		})
	}
}

// TestLimitUndeclaredMember runs the rotate script with a member list that
// misses a session added to the index since it was read: the script must
// not count blind, but take the lease and return the list, and the next
// call with that list succeeds and releases the lease.
func TestLimitUndeclaredMember(t *testing.T) {
	raw := testURL(t)
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	s := newStore(t, raw, opts, nil)
	admin := newClient(t, raw, nil)
	u := testUser()
	old := liveRecord(u)
	old.AuthTime = old.AuthTime.Add(-time.Hour)
	g := liveRecord("")
	for _, r := range []*hallpass.Record{old, g} {
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	to := testKey()
	d := signInDelta(u, nil)
	run := func(members ...string) (int64, []rueidis.RedisMessage) {
		keys := []string{s.sessionKey(g.Key), s.sessionKey(to), s.indexKey(u), s.leaseKey(u)}
		for _, m := range members {
			k, _ := parseMember(m)
			keys = append(keys, s.sessionKey(k))
		}
		args := []string{s.nowMS(), member(g.Key), member(to), "", u, "1", "", "tok", "1000", strconv.Itoa(len(members))}
		args = append(args, members...)
		args = appendDelta(args, &d)
		code, arr, err := result(rotateScript.Exec(t.Context(), s.client, keys, args))
		if err != nil {
			t.Fatal(err)
		}
		return code, arr
	}
	code, arr := run()
	if code != codeMembers {
		t.Fatalf("undeclared member: code %d, want %d", code, codeMembers)
	}
	if got, _ := arr[0].AsStrSlice(); !slices.Equal(got, []string{member(old.Key)}) {
		t.Errorf("returned members %q, want the one undeclared", got)
	}
	if v, _ := admin.Do(t.Context(), admin.B().Get().Key(s.leaseKey(u)).Build()).ToString(); v != "tok" {
		t.Errorf("lease = %q, want the caller's token", v)
	}
	code, arr = run(member(old.Key))
	if code != codeOK {
		t.Fatalf("declared members: code %d, want %d", code, codeOK)
	}
	if handles, _ := arr[2].AsStrSlice(); !slices.Equal(handles, []string{old.Handle}) {
		t.Errorf("evicted %q, want %q", handles, old.Handle)
	}
	if leaseExists(t, admin, opts.KeyPrefix, u) {
		t.Error("the script kept the lease after it succeeded")
	}
}
