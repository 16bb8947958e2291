package pgstore

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
)

// session returns a live record of userID signed in at authTime.
func session(userID string, authTime time.Time) *hallpass.Record {
	now := time.Now()
	return &hallpass.Record{
		Key:    hallpass.KeyOf(hallpass.NewToken()),
		Handle: hallpass.NewHandle(),
		Meta:   hallpass.Meta{UserID: userID, AuthTime: authTime, AbsoluteDeadline: now.Add(time.Hour)},
		Touch:  hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)},
	}
}

// login returns the Delta of a login as userID, with lim.
func login(userID string, lim *hallpass.Limit) hallpass.Delta {
	now := time.Now()
	return hallpass.Delta{
		Meta:  &hallpass.Meta{UserID: userID, AuthTime: now, AbsoluteDeadline: now.Add(time.Hour)},
		Limit: lim,
	}
}

// TestLimitRacesRotations signs in to a user with a limit while the
// user's other sessions keep rotating, unlimited: a session that moves to
// a new key while the login counts must be counted, and ended, under its
// new key, or the user keeps one session too many.
func TestLimitRacesRotations(t *testing.T) {
	url := testURL(t)
	s := open(t, url, Options{Table: newTable(t, url), CacheTTL: time.Minute})
	const max, logins = 2, 20
	u := "u-" + hallpass.NewHandle()

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		rotated atomic.Int64
	)
	// spin rotates the session at k until a login ends it.
	spin := func(k hallpass.Key) {
		wg.Go(func() {
			for !stop.Load() {
				next := hallpass.KeyOf(hallpass.NewToken())
				err := s.Rotate(t.Context(), k, next, hallpass.Delta{})
				if errors.Is(err, hallpass.ErrNotFound) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				k = next
				rotated.Add(1)
			}
		})
	}
	// Before the test ends, and its context with it.
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	base := time.Now().Add(-time.Hour)
	for i := range 4 {
		r := session(u, base.Add(time.Duration(i)*time.Minute))
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		spin(r.Key)
	}
	var evicted []string
	for range logins {
		// Let the rotations run before each login.
		for n := rotated.Load(); rotated.Load() < n+10 && !t.Failed(); {
			time.Sleep(100 * time.Microsecond)
		}
		g := session("", time.Time{})
		if err := s.Create(t.Context(), g); err != nil {
			t.Fatal(err)
		}
		to := hallpass.KeyOf(hallpass.NewToken())
		lim := &hallpass.Limit{Max: max, Evicted: func(h string) { evicted = append(evicted, h) }}
		if err := s.Rotate(t.Context(), g.Key, to, login(u, lim)); err != nil {
			t.Fatal(err)
		}
		spin(to)
		live, err := s.ListUser(t.Context(), u)
		if err != nil {
			t.Fatal(err)
		}
		if len(live) > max {
			t.Fatalf("after a login with Limit{Max: %d}, the user has %d sessions", max, len(live))
		}
		for _, r := range live {
			if slices.Contains(evicted, r.Handle) {
				t.Errorf("session %s reported evicted is live", r.Handle)
			}
		}
	}
	distinct := len(slices.Compact(slices.Sorted(slices.Values(evicted))))
	if want := 4 + logins - max; len(evicted) != want || distinct != want {
		t.Errorf("%d evictions reported, %d distinct; want %d", len(evicted), distinct, want)
	}
	t.Logf("%d rotations ran alongside %d logins", rotated.Load(), logins)
}

// TestLimitDeadlock makes a limited Rotate part of a deadlock, which
// PostgreSQL breaks by failing it: it must run again and succeed. Two
// logins that each end a session the other is moving can deadlock so;
// here another transaction plays the second login, holding the row of
// the user's other session and then asking for the one being moved.
func TestLimitDeadlock(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	s := open(t, url, Options{Table: table})
	conn := admin(t, url)
	u, v := "u-"+hallpass.NewHandle(), "v-"+hallpass.NewHandle()
	su, sv := session(u, time.Now()), session(v, time.Now())
	for _, r := range []*hallpass.Record{su, sv} {
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	deadlocks := func() int64 {
		var n int64
		if err := conn.QueryRow(t.Context(), `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()

	other, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	tx, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	lockRow := `SELECT 1 FROM ` + pgx.Identifier{table}.Sanitize() + ` WHERE key = $1 FOR UPDATE`
	if _, err := tx.Exec(t.Context(), lockRow, sv.Key[:]); err != nil {
		t.Fatal(err)
	}

	// su moves to v, and waits for sv's row, v's other session.
	to := hallpass.KeyOf(hallpass.NewToken())
	done := make(chan error, 1)
	go func() { done <- s.Rotate(t.Context(), su.Key, to, login(v, &hallpass.Limit{Max: 2})) }()
	// Then the other transaction asks for su's row: a deadlock, which
	// the Rotate, having waited longer, is the first to find.
	time.Sleep(300 * time.Millisecond)
	if _, err := tx.Exec(t.Context(), lockRow, su.Key[:]); err != nil {
		t.Fatalf("the other transaction was chosen to break the deadlock: %v", err)
	}
	tx.Rollback(t.Context())
	if err := <-done; err != nil {
		t.Fatalf("Rotate after a deadlock: %v", err)
	}
	// The statistics are sent now and then, not at once.
	deadline := time.Now().Add(5 * time.Second)
	for deadlocks() == before {
		if time.Now().After(deadline) {
			t.Fatal("PostgreSQL counted no deadlock: the test proves nothing")
		}
		conn.Exec(t.Context(), `SELECT pg_stat_clear_snapshot()`)
		time.Sleep(50 * time.Millisecond)
	}
	live, err := s.ListUser(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 2 {
		t.Errorf("v has %d sessions after the Rotate, want 2", len(live))
	}
}

// TestLimitUserChanges gives the session a Rotate without Meta moves to
// another user between the read that tells the Rotate whose limit
// applies and its transaction: the limit must be the new user's.
func TestLimitUserChanges(t *testing.T) {
	url := testURL(t)
	s := open(t, url, Options{Table: newTable(t, url)})
	u, w := "u-"+hallpass.NewHandle(), "w-"+hallpass.NewHandle()
	r, other := session(u, time.Now()), session(w, time.Now())
	for _, r := range []*hallpass.Record{r, other} {
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	rotateUserHook = func() {
		once.Do(func() {
			d := login(w, nil)
			if err := s.Update(t.Context(), r.Key, d); err != nil {
				t.Error(err)
			}
		})
	}
	defer func() { rotateUserHook = nil }()
	// u has no other session, w has one: only w's limit refuses.
	err := s.Rotate(t.Context(), r.Key, hallpass.KeyOf(hallpass.NewToken()), hallpass.Delta{Limit: &hallpass.Limit{Max: 1, RefuseNew: true}})
	if !errors.Is(err, hallpass.ErrTooManySessions) {
		t.Errorf("Rotate of a session given to a user at the limit: %v, want ErrTooManySessions", err)
	}
}
