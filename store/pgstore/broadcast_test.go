package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/broadcast"
	"github.com/hallpass/hallpass/store/storetest"
)

// broadcastLimit is how long RunBroadcaster lets a broadcast take to
// reach the other instance. On loopback it takes a fraction of a
// millisecond (RunBroadcaster logs it); the rest is room for a loaded
// 2-core machine under -race, where 50 ms proved too little.
const broadcastLimit = time.Second

// broadcastPair returns two Stores on one table, as two app instances
// have, as Broadcasters.
func broadcastPair(url string, o Options) storetest.BroadcastPair {
	return func(t testing.TB) (hallpass.Broadcaster, hallpass.Broadcaster) {
		o := o
		o.Table = newTable(t, url)
		return open(t, url, o), open(t, url, o)
	}
}

// TestBroadcaster runs the Broadcaster checks on stores whose cache
// started the listener, on stores where Subscribe starts it, and on
// stores whose writes do not notify: Broadcast and Subscribe work the
// same in all three.
func TestBroadcaster(t *testing.T) {
	url := testURL(t)
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"Cache", Options{CacheTTL: time.Minute}},
		{"NoCache", Options{CacheTTL: -1}},
		{"NoNotify", Options{DisableNotify: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			storetest.RunBroadcaster(t, broadcastPair(url, c.o), broadcastLimit)
		})
	}
}

// recorder is a subscriber that keeps what it gets, nil included.
type recorder struct {
	mu     sync.Mutex
	msgs   [][]byte
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) receive(msg []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, msg)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// take returns what r got and forgets it.
func (r *recorder) take() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

// waitFor waits until what r holds satisfies ok, and returns it.
func (r *recorder) waitFor(t *testing.T, what string, within time.Duration, ok func([][]byte) bool) [][]byte {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		m := slices.Clone(r.msgs)
		r.mu.Unlock()
		if ok(m) {
			return m
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("%s: not within %v; got %q", what, within, m)
		}
	}
}

// waitLimit bounds a wait for something that must arrive: generous, since
// it only matters when the test fails.
const waitLimit = 5 * time.Second

func hasNil(m [][]byte) bool { return slices.ContainsFunc(m, func(b []byte) bool { return b == nil }) }

func has(msg string) func([][]byte) bool {
	return func(m [][]byte) bool {
		return slices.ContainsFunc(m, func(b []byte) bool { return b != nil && string(b) == msg })
	}
}

// settled broadcasts from s until every recorder got the probe, then
// empties them: a subscription is live only once its listener is.
func settled(t *testing.T, s *Store, rs ...*recorder) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		probe := fmt.Sprintf(`{"probe":%d}`, i)
		if err := s.Broadcast(t.Context(), []byte(probe)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		all := true
		for _, r := range rs {
			r.mu.Lock()
			all = all && has(probe)(r.msgs)
			r.mu.Unlock()
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriptions never received a probe")
		}
	}
	for _, r := range rs {
		r.take()
	}
}

// TestBroadcastRefused checks that Broadcast refuses what the interface
// does not promise to carry, sends nothing then, and carries the largest
// message it allows.
func TestBroadcastRefused(t *testing.T) {
	url := testURL(t)
	s := open(t, url, Options{Table: newTable(t, url)})
	listener := admin(t, url)
	if _, err := listener.Exec(t.Context(), s.q.listenBroadcast); err != nil {
		t.Fatal(err)
	}
	for name, msg := range map[string][]byte{
		"empty":        {},
		"nil":          nil,
		"too long":     []byte(`"` + strings.Repeat("x", MaxBroadcast-1) + `"`),
		"NUL":          []byte("\"a\x00b\""),
		"invalid UTF8": []byte("\"\xff\""),
		"not JSON":     []byte("hello"),
	} {
		if err := s.Broadcast(t.Context(), msg); !errors.Is(err, ErrBroadcastMessage) {
			t.Errorf("Broadcast of a %s message: %v, want ErrBroadcastMessage", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if n, err := listener.WaitForNotification(ctx); err == nil {
		t.Errorf("a refused broadcast was sent: %q", n.Payload)
	}

	largest := `"` + strings.Repeat("ü", (MaxBroadcast-2)/2) + `"`
	if err := s.Broadcast(t.Context(), []byte(largest)); err != nil {
		t.Fatalf("Broadcast of %d bytes: %v", len(largest), err)
	}
	n, err := listener.WaitForNotification(t.Context())
	if err != nil || n.Payload != largest || n.Channel != s.q.broadcastChannel {
		t.Errorf("received %v on %q, want the %d bytes sent on %q", err, n.Channel, len(largest), s.q.broadcastChannel)
	}

	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if err := s.Broadcast(ctx, []byte(`1`)); !errors.Is(err, context.Canceled) {
		t.Errorf("Broadcast with a cancelled context: %v", err)
	}
}

// TestBroadcastChannels checks that stores on two tables of one database
// do not hear each other's broadcasts, and that a table whose name is as
// long as allowed, and needs quoting, gets a channel PostgreSQL keeps
// whole.
func TestBroadcastChannels(t *testing.T) {
	url := testURL(t)
	long := `Odd "Name"; ` + strings.Repeat("x", maxTableLen-len(`Odd "Name"; `))
	t.Cleanup(func() { dropTable(t, url, long) })
	a := open(t, url, Options{Table: newTable(t, url)})
	b := open(t, url, Options{Table: long})
	if ca, cb := a.q.broadcastChannel, b.q.broadcastChannel; ca == cb || len(ca) > 63 || len(cb) > 63 {
		t.Fatalf("channels %q and %q: want two different ones of at most 63 bytes", ca, cb)
	}
	ra, rb := newRecorder(), newRecorder()
	defer a.Subscribe(ra.receive)()
	defer b.Subscribe(rb.receive)()
	settled(t, a, ra)
	settled(t, b, rb)
	if err := a.Broadcast(t.Context(), []byte(`"to a"`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Broadcast(t.Context(), []byte(`"to b"`)); err != nil {
		t.Fatal(err)
	}
	ra.waitFor(t, "a's broadcast on a", waitLimit, has(`"to a"`))
	rb.waitFor(t, "b's broadcast on b", waitLimit, has(`"to b"`))
	time.Sleep(50 * time.Millisecond)
	if m := ra.take(); has(`"to b"`)(m) {
		t.Errorf("a subscriber of one table got the other's broadcast: %q", m)
	}
	if m := rb.take(); has(`"to a"`)(m) {
		t.Errorf("a subscriber of one table got the other's broadcast: %q", m)
	}
}

// TestSubscribeSlow checks that a subscriber that does not return holds
// up neither the cache's invalidations nor other subscribers, and that
// when its queue overflows it loses the waiting messages for one nil,
// then gets the messages that come after.
func TestSubscribeSlow(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table})
	a.subQueue = 4

	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	slow, fast := newRecorder(), newRecorder()
	defer a.Subscribe(func(msg []byte) {
		<-release
		slow.receive(msg)
	})()
	defer a.Subscribe(fast.receive)()
	settled(t, b, fast)

	// The slow subscriber is stuck in its first call (a probe); 4 more
	// fill its queue, and the rest overflow it.
	for i := range 10 {
		if err := b.Broadcast(t.Context(), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	fast.waitFor(t, "every broadcast, to the other subscriber", waitLimit, has(`{"n":9}`))
	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h", Meta: hallpass.Meta{UserID: "u-" + hallpass.NewHandle()}}
	if err := a.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	waitEvicted(t, a, r.Key)

	unblock()
	if err := b.Broadcast(t.Context(), []byte(`"after"`)); err != nil {
		t.Fatal(err)
	}
	got := slow.waitFor(t, "the slow subscriber's messages", waitLimit, has(`"after"`))
	// Its first call, stuck, had a probe. The queue overflowed, so some
	// of the ten were lost and a nil said so; the last message is the one
	// sent after.
	lost := 10
	for _, m := range got {
		if m != nil && strings.HasPrefix(string(m), `{"n":`) {
			lost--
		}
	}
	if !hasNil(got) || lost == 0 || string(got[len(got)-1]) != `"after"` {
		t.Errorf("the slow subscriber got %q: want a nil for the overflow, fewer than the ten sent, and the message sent after last", got)
	}
}

// TestSubscribeStop checks that stop ends a subscriber's goroutine, may
// be called from the subscriber itself, and that Close ends every
// subscription and makes Subscribe a no-op.
func TestSubscribeStop(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	a := open(t, url, Options{Table: table})
	b := open(t, url, Options{Table: table})

	// A subscriber that stops itself on its first message.
	var (
		stop  func()
		calls int
		mu    sync.Mutex
	)
	stopped, ready := make(chan struct{}), make(chan struct{})
	mu.Lock()
	stop = a.Subscribe(func([]byte) {
		<-ready
		mu.Lock()
		calls++
		if calls == 1 {
			stop()
			close(stopped)
		}
		mu.Unlock()
	})
	mu.Unlock()
	sub := a.onlySubscriber(t)
	close(ready)
	keep := newRecorder()
	defer a.Subscribe(keep.receive)()
	settled(t, b, keep)
	<-stopped
	waitDone(t, sub)
	if err := b.Broadcast(t.Context(), []byte(`"more"`)); err != nil {
		t.Fatal(err)
	}
	keep.waitFor(t, "the message after", waitLimit, has(`"more"`))
	mu.Lock()
	if calls != 1 {
		t.Errorf("a subscriber that stopped itself was called %d times", calls)
	}
	mu.Unlock()

	sub = a.onlySubscriber(t)
	a.Close()
	waitDone(t, sub)
	a.Subscribe(func([]byte) { t.Error("a subscriber made after Close was called") })()
	a.subs.mu.Lock()
	defer a.subs.mu.Unlock()
	if len(a.subs.m) != 0 {
		t.Error("Subscribe after Close registered a subscriber")
	}
}

// onlySubscriber returns s's only subscriber.
func (s *Store) onlySubscriber(t *testing.T) *broadcast.Subscriber {
	t.Helper()
	s.subs.mu.Lock()
	defer s.subs.mu.Unlock()
	if len(s.subs.m) != 1 {
		t.Fatalf("%d subscribers, want 1", len(s.subs.m))
	}
	for sub := range s.subs.m {
		return sub
	}
	return nil
}

// waitDone waits for sub's goroutine to end.
func waitDone(t *testing.T, sub *broadcast.Subscriber) {
	t.Helper()
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the subscriber's goroutine did not end")
	}
}

// TestRevocationsPush checks that two Revocations over two Stores learn
// of each other's revocations by broadcast: they reload only every hour,
// so what one knows within milliseconds of the other's RevokeUser came by
// push.
func TestRevocationsPush(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	// With a cache, the listener is up before Subscribe: no reload at
	// the start, whose nil would make the list load from the store.
	a := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	b := open(t, url, Options{Table: table, CacheTTL: time.Minute})
	ra, err := hallpass.NewRevocations(t.Context(), a, &hallpass.RevocationOptions{PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	rb, err := hallpass.NewRevocations(t.Context(), b, &hallpass.RevocationOptions{PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()

	const n = 20
	var ds []time.Duration
	for i := range n {
		from, to := ra, rb
		if i%2 == 1 {
			from, to = rb, ra
		}
		user := "u-" + hallpass.NewHandle()
		issued := time.Now().Add(-time.Second)
		start := time.Now()
		if err := from.RevokeUser(t.Context(), user); err != nil {
			t.Fatal(err)
		}
		for !to.Revoked(user, "", issued) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("revocation %d not known to the other instance after 5 s", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	t.Logf("RevokeUser on one instance, known on the other: median %v, worst %v (%d runs, store write included)", ds[n/2], ds[n-1], n)
	if ds[n/2] > 100*time.Millisecond {
		t.Errorf("median %v: a push takes milliseconds", ds[n/2])
	}
}
