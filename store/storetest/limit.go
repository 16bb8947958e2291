package storetest

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// signIn returns a Delta that gives a record to userID, signed in at t.
func signIn(userID string, t time.Time, lim *hallpass.Limit) hallpass.Delta {
	r := liveRecord(userID)
	m := r.Meta
	m.AuthTime = t
	return hallpass.Delta{Meta: &m, Limit: lim}
}

// evictions collects the handles a Limit reports, safely from any goroutine.
type evictions struct {
	mu      sync.Mutex
	handles []string
}

func (e *evictions) limit(max int, refuse bool) *hallpass.Limit {
	return &hallpass.Limit{Max: max, RefuseNew: refuse, Evicted: func(h string) {
		e.mu.Lock()
		e.handles = append(e.handles, h)
		e.mu.Unlock()
	}}
}

func (e *evictions) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(slices.Values(e.handles))
}

// signedIn returns n live records of userID signed in a minute apart,
// oldest first.
func signedIn(userID string, n int) []*hallpass.Record {
	base := now().Add(-time.Hour)
	rs := make([]*hallpass.Record, n)
	for i := range rs {
		rs[i] = liveRecord(userID)
		rs[i].AuthTime = base.Add(time.Duration(i) * time.Minute).In(zoneIST)
	}
	return rs
}

// testLimitEvictsOldest signs a guest in to a user at the limit: the
// user's oldest sessions by AuthTime make room, are reported, and nothing
// else changes.
func testLimitEvictsOldest(t *testing.T, s hallpass.Store) {
	u, other := newUser(), newUser()
	// Created newest first, so a store that evicts in creation or key
	// order instead of by AuthTime shows.
	rs := signedIn(u, 4)
	for i := len(rs) - 1; i >= 0; i-- {
		create(t, s, rs[i])
	}
	bystander := liveRecord(other)
	guest := liveRecord("")
	create(t, s, bystander, guest)

	var ev evictions
	to := newKey()
	if err := s.Rotate(t.Context(), guest.Key, to, signIn(u, now(), ev.limit(3, false))); err != nil {
		t.Fatalf("Rotate with Limit{Max: 3}: %v", err)
	}
	wantGone(t, s, rs[0].Key, "oldest session")
	wantGone(t, s, rs[1].Key, "second oldest session")
	wantList(t, s, u, rs[2].Key, rs[3].Key, to)
	want := slices.Sorted(slices.Values([]string{rs[0].Handle, rs[1].Handle}))
	if got := ev.got(); !slices.Equal(got, want) {
		t.Errorf("Evicted reported %q, want %q", got, want)
	}
	if got := load(t, s, to); got.UserID != u || got.Handle != guest.Handle {
		t.Errorf("rotated record: user %q handle %q, want %q %q", got.UserID, got.Handle, u, guest.Handle)
	}
	wantList(t, s, other, bystander.Key)

	// Equal AuthTimes: the lower handle goes first.
	v := newUser()
	t0 := now().Add(-time.Hour)
	a, b := liveRecord(v), liveRecord(v)
	a.AuthTime, b.AuthTime = t0, t0
	if a.Handle > b.Handle {
		a, b = b, a
	}
	create(t, s, b, a)
	g := liveRecord("")
	create(t, s, g)
	var ev2 evictions
	to2 := newKey()
	if err := s.Rotate(t.Context(), g.Key, to2, signIn(v, now(), ev2.limit(2, false))); err != nil {
		t.Fatalf("Rotate with Limit{Max: 2}: %v", err)
	}
	wantList(t, s, v, b.Key, to2)
	if got := ev2.got(); !slices.Equal(got, []string{a.Handle}) {
		t.Errorf("equal AuthTimes: Evicted reported %q, want the lower handle %q", got, a.Handle)
	}
}

// testLimitRefuseNew checks that a refused Rotate changes nothing at all.
func testLimitRefuseNew(t *testing.T, s hallpass.Store) {
	u := newUser()
	rs := signedIn(u, 2)
	create(t, s, rs...)
	guest := liveRecord("")
	create(t, s, guest)

	var ev evictions
	to := newKey()
	err := s.Rotate(t.Context(), guest.Key, to, signIn(u, now(), ev.limit(2, true)))
	if !errors.Is(err, hallpass.ErrTooManySessions) {
		t.Fatalf("Rotate over the limit with RefuseNew: %v, want ErrTooManySessions", err)
	}
	wantGone(t, s, to, "target of the refused Rotate")
	if got := load(t, s, guest.Key); got.UserID != "" || got.Version != 1 {
		t.Errorf("source after refused Rotate: user %q version %d, want a guest at version 1", got.UserID, got.Version)
	}
	wantList(t, s, u, rs[0].Key, rs[1].Key)
	if got := ev.got(); len(got) != 0 {
		t.Errorf("a refused Rotate reported evictions %q", got)
	}

	// The same Rotate fits once the limit is higher.
	if err := s.Rotate(t.Context(), guest.Key, to, signIn(u, now(), ev.limit(3, true))); err != nil {
		t.Fatalf("Rotate under the limit: %v", err)
	}
	wantList(t, s, u, rs[0].Key, rs[1].Key, to)
}

// testLimitCountsOthers checks what a limit counts: not the session being
// rotated, not other users' sessions, nothing at all for a zero limit, and
// the record's own user when the Delta does not name one.
func testLimitCountsOthers(t *testing.T, s hallpass.Store) {
	u := newUser()
	own := liveRecord(u)
	create(t, s, own)
	create(t, s, liveRecord(newUser()), liveRecord(newUser()))

	// Signing in again from u's only session: not a new session.
	to := newKey()
	if err := s.Rotate(t.Context(), own.Key, to, signIn(u, now(), &hallpass.Limit{Max: 1, RefuseNew: true})); err != nil {
		t.Fatalf("re-login of the user's only session with Limit{Max: 1}: %v", err)
	}
	wantList(t, s, u, to)

	// No Meta in the Delta: the record keeps its user, and the limit is
	// that user's.
	second := liveRecord(u)
	create(t, s, second)
	third := newKey()
	err := s.Rotate(t.Context(), to, third, hallpass.Delta{Limit: &hallpass.Limit{Max: 1, RefuseNew: true}})
	if !errors.Is(err, hallpass.ErrTooManySessions) {
		t.Errorf("Rotate without Meta of a user at the limit: %v, want ErrTooManySessions", err)
	}
	wantList(t, s, u, to, second.Key)

	// Max 0 is no limit; guests are never limited.
	guest := liveRecord("")
	create(t, s, guest)
	fourth := newKey()
	if err := s.Rotate(t.Context(), guest.Key, fourth, signIn(u, now(), &hallpass.Limit{RefuseNew: true})); err != nil {
		t.Fatalf("Rotate with Limit{Max: 0}: %v", err)
	}
	wantList(t, s, u, to, second.Key, fourth)
	g2 := liveRecord("")
	create(t, s, g2, liveRecord(""))
	if err := s.Rotate(t.Context(), g2.Key, newKey(), hallpass.Delta{Limit: &hallpass.Limit{Max: 1, RefuseNew: true}}); err != nil {
		t.Errorf("guest Rotate with a limit: %v, want nil", err)
	}
}

// testLimitConcurrent signs many guests in to one user at once: however
// they interleave, the user ends with at most Max sessions, and every
// session ended was reported exactly once.
func testLimitConcurrent(t *testing.T, s hallpass.Store) {
	const n = 8
	for _, refuse := range []bool{true, false} {
		u := newUser()
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			ev    evictions
			tos   [n]hallpass.Key
			errs  [n]error
			hs    [n]string
		)
		max := 2
		if refuse {
			max = 1
		}
		for i := range n {
			g := liveRecord("")
			create(t, s, g)
			tos[i], hs[i] = newKey(), g.Handle
			wg.Go(func() {
				<-start
				errs[i] = s.Rotate(t.Context(), g.Key, tos[i], signIn(u, now(), ev.limit(max, refuse)))
			})
		}
		close(start)
		wg.Wait()
		var won []hallpass.Key
		for i, err := range errs {
			switch {
			case err == nil:
				won = append(won, tos[i])
			case refuse && errors.Is(err, hallpass.ErrTooManySessions):
			default:
				t.Errorf("RefuseNew=%v: Rotate %d: %v", refuse, i, err)
			}
		}
		live := list(t, s, u)
		if len(live) > max {
			t.Errorf("RefuseNew=%v: %d concurrent logins left %d sessions, limit %d", refuse, n, len(live), max)
		}
		if refuse {
			if len(won) != 1 {
				t.Errorf("RefuseNew: %d of %d concurrent logins succeeded, want exactly 1", len(won), n)
			}
			if got := ev.got(); len(got) != 0 {
				t.Errorf("RefuseNew reported evictions %q", got)
			}
			continue
		}
		if len(won) != n || len(live) != max {
			t.Errorf("evict oldest: %d logins succeeded and %d sessions remain, want %d and %d", len(won), len(live), n, max)
		}
		got := ev.got()
		if len(got) != n-max || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("evict oldest: reported %d evictions %q, want %d distinct", len(got), got, n-max)
		}
		for _, r := range live {
			if slices.Contains(got, r.Handle) {
				t.Errorf("evict oldest: live session %s was reported evicted", r.Handle)
			}
		}
		for _, h := range got {
			if !slices.Contains(hs[:], h) {
				t.Errorf("evict oldest: reported handle %q is none of the logins'", h)
			}
		}
	}
}
