package live_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/live"
)

// slowLists is a store and broadcaster whose ListUser counts its calls and
// can be made slow, or held: when armed, the next call reads the list,
// says so on entered, and returns what it read once release is closed.
type slowLists struct {
	*bus
	calls   atomic.Int32
	delay   atomic.Int64 // ns each call waits before reading
	armed   atomic.Bool
	panics  atomic.Pointer[string] // ListUser panics with it when set
	entered chan struct{}
	release chan struct{}
}

func newSlowLists(b *bus) *slowLists {
	return &slowLists{bus: b, entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *slowLists) ListUser(ctx context.Context, user string) ([]*hallpass.Record, error) {
	s.calls.Add(1)
	if p := s.panics.Load(); p != nil {
		panic(*p)
	}
	select {
	case <-time.After(time.Duration(s.delay.Load())):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	recs, err := s.bus.ListUser(ctx, user)
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return recs, err
}

// TestRechecksShareReads: when every stream of a user re-checks at once,
// as after a lost broadcast, the streams share their reads of the user's
// sessions instead of each making its own.
func TestRechecksShareReads(t *testing.T) {
	clock := newClock()
	store := newSlowLists(newBus(t, clock))
	a := newApp(t, store, store, clock, fast, hallpass.Config{})
	var streams []*stream
	for range 4 {
		c := a.login("alice")
		streams = append(streams, a.open(c), a.open(c))
	}
	store.delay.Store(int64(100 * time.Millisecond))
	store.calls.Store(0)
	store.Reconnect() // messages may have been lost: every stream re-checks
	for _, s := range streams {
		s.live(300 * time.Millisecond)
	}
	// The first stream to ask starts a read; the others ask while it is
	// in progress, and share the next.
	if n := store.calls.Load(); n < 2 || n > 3 {
		t.Errorf("%d streams re-checking at once read the list %d times, want 2 or 3", len(streams), n)
	}
}

// TestRecheckReadsAfterAsking: a stream that re-checks while another
// stream's read is in progress does not take that read's answer, which
// may predate the change it is checking for, but one that starts after it
// asked.
func TestRecheckReadsAfterAsking(t *testing.T) {
	clock := newClock()
	store := newSlowLists(newBus(t, clock))
	a := newApp(t, store, store, clock, fast, hallpass.Config{})
	phone, laptop := a.login("alice"), a.login("alice")
	onPhone := a.open(phone)

	// The laptop's stream starts with a check, whose read is held after
	// it has seen the phone's session.
	store.armed.Store(true)
	opened := make(chan *stream, 1)
	go func() { opened <- a.open(laptop) }()
	<-store.entered

	// The phone's session ends without an event, and then its stream is
	// told to re-check, as when a broadcast was lost.
	if err := store.Delete(t.Context(), hallpass.KeyOf(phone)); err != nil {
		t.Fatal(err)
	}
	store.Reconnect()
	time.Sleep(50 * time.Millisecond)
	close(store.release)

	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop := <-opened
	if onLaptop.code != http.StatusOK {
		t.Fatalf("laptop stream: %d", onLaptop.code)
	}
	onLaptop.live(100 * time.Millisecond)
}

// TestRecheckFailures: a read that fails is reported once to OnError,
// however many streams it served, and a store that panics fails the read,
// not the process; the streams stay open, to try again later. A Hub that
// closes while a read is in progress reports nothing.
func TestRecheckFailures(t *testing.T) {
	clock := newClock()
	store := newSlowLists(newBus(t, clock))
	var errs atomic.Int32
	opts := fast
	opts.OnError = func(error) { errs.Add(1) }
	a := newApp(t, store, store, clock, opts, hallpass.Config{})
	c := a.login("alice")
	streams := []*stream{a.open(c), a.open(c), a.open(c)}

	msg := "the store broke"
	store.panics.Store(&msg)
	store.delay.Store(int64(50 * time.Millisecond))
	store.calls.Store(0)
	store.Reconnect()
	for _, s := range streams {
		s.live(200 * time.Millisecond)
	}
	if n, calls := errs.Load(), store.calls.Load(); n == 0 || n != calls {
		t.Errorf("%d failed reads reported %d times, want once each", calls, n)
	}

	store.panics.Store(nil)
	store.delay.Store(int64(time.Second))
	errs.Store(0)
	store.Reconnect()
	time.Sleep(100 * time.Millisecond) // a read in progress
	closed := time.Now()
	a.hub.Close()
	if d := time.Since(closed); d > 500*time.Millisecond {
		t.Errorf("Close took %v", d)
	}
	if n := errs.Load(); n != 0 {
		t.Errorf("Close made %d errors reported", n)
	}
}
