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
	entered chan struct{}
	release chan struct{}
}

func newSlowLists(b *bus) *slowLists {
	return &slowLists{bus: b, entered: make(chan struct{}), release: make(chan struct{})}
}

func (s *slowLists) ListUser(ctx context.Context, user string) ([]*hallpass.Record, error) {
	s.calls.Add(1)
	time.Sleep(time.Duration(s.delay.Load()))
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
	if n := store.calls.Load(); n == 0 || n > 3 {
		t.Errorf("%d streams re-checking at once read the list %d times, want 1 to 3", len(streams), n)
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
