package pgstore

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
)

// insertRows adds n sessions behind the store's back, all with the idle
// deadline idle (unix ms) and the user user (NULL if empty), named by
// seed so that calls do not collide.
func insertRows(t testing.TB, conn *pgx.Conn, table, seed string, n int, idle int64, user string) {
	t.Helper()
	_, err := conn.Exec(t.Context(), `INSERT INTO `+pgx.Identifier{table}.Sanitize()+`
		(key, handle, user_id, idle_deadline, version)
		SELECT sha256(convert_to($1 || i::text, 'UTF8')), 'h' || i::text, nullif($4, ''), $3::bigint, 1
		FROM generate_series(1, $2::int) i`, seed+hallpass.NewHandle(), n, idle, user)
	if err != nil {
		t.Fatal(err)
	}
}

func countRows(t testing.TB, conn *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// setSweepHook sets sweepChunkHook for the test.
func setSweepHook(t *testing.T, f func()) {
	sweepChunkHook = f
	t.Cleanup(func() { sweepChunkHook = nil })
}

// TestSweepChunks checks that Sweep deletes every expired row and nothing
// else, one chunk per statement.
func TestSweepChunks(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	s := open(t, url, Options{Table: table, SweepInterval: -1, SweepChunk: 100})
	conn := admin(t, url)
	now := time.Now().UnixMilli()
	insertRows(t, conn, table, "expired", 2500, now-1000, "")
	insertRows(t, conn, table, "live", 300, now+3600_000, "")
	insertRows(t, conn, table, "forever", 10, 0, "") // no deadline
	if _, err := conn.Exec(t.Context(), `UPDATE `+pgx.Identifier{table}.Sanitize()+` SET idle_deadline = NULL WHERE idle_deadline = 0`); err != nil {
		t.Fatal(err)
	}

	chunks := 0
	setSweepHook(t, func() { chunks++ })
	n, err := s.Sweep(t.Context())
	if err != nil || n != 2500 {
		t.Fatalf("Sweep = %d, %v; want 2500, nil", n, err)
	}
	if chunks != 25 {
		t.Errorf("Sweep ran %d full chunks of 100, want 25", chunks)
	}
	if got := countRows(t, conn, table); got != 310 {
		t.Errorf("%d rows left, want the 310 live ones", got)
	}
	if n, err := s.Sweep(t.Context()); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0, nil", n, err)
	}
}

// TestSweepOneAtATime checks that two stores, as two instances, never
// sweep at once, and that another session holding the lock, as another
// process, keeps both out.
func TestSweepOneAtATime(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table, SweepInterval: -1, SweepChunk: 50})
	b := open(t, url, Options{Table: table, SweepInterval: -1, SweepChunk: 50})
	conn := admin(t, url)
	insertRows(t, conn, table, "expired", 500, time.Now().UnixMilli()-1000, "")

	// Hold a in its first chunk while b tries.
	var (
		once    sync.Once
		inSweep = make(chan struct{})
		resume  = make(chan struct{})
	)
	setSweepHook(t, func() {
		once.Do(func() {
			close(inSweep)
			<-resume
		})
	})
	var (
		na   int
		errA error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		na, errA = a.Sweep(t.Context())
	}()
	<-inSweep
	nb, errB := b.Sweep(t.Context())
	close(resume)
	<-done
	if !errors.Is(errB, ErrSweepLocked) || nb != 0 {
		t.Errorf("Sweep on b while a sweeps = %d, %v; want 0, ErrSweepLocked", nb, errB)
	}
	if errA != nil || na != 500 {
		t.Errorf("Sweep on a = %d, %v; want 500, nil", na, errA)
	}

	// The lock is free again, but another session can hold it.
	insertRows(t, conn, table, "more", 10, time.Now().UnixMilli()-1000, "")
	if _, err := conn.Exec(t.Context(), `SELECT pg_advisory_lock(hashtextextended($1, 0))`, a.q.sweepLock); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{a, b} {
		if n, err := st.Sweep(t.Context()); !errors.Is(err, ErrSweepLocked) || n != 0 {
			t.Errorf("Sweep while another session holds the lock = %d, %v; want 0, ErrSweepLocked", n, err)
		}
	}
	if _, err := conn.Exec(t.Context(), a.q.unlockSweep, a.q.sweepLock); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Sweep(t.Context()); err != nil || n != 10 {
		t.Errorf("Sweep after the lock was released = %d, %v; want 10, nil", n, err)
	}
}

// TestSweeper checks that the background sweeper runs by itself.
func TestSweeper(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	open(t, url, Options{Table: table, SweepInterval: 20 * time.Millisecond})
	conn := admin(t, url)
	now := time.Now().UnixMilli()
	insertRows(t, conn, table, "expired", 100, now-1000, "")
	insertRows(t, conn, table, "live", 5, now+3600_000, "")
	deadline := time.Now().Add(5 * time.Second)
	for countRows(t, conn, table) != 5 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not delete the expired rows within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
