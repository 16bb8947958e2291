package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

// broadcastLimit is how long a broadcast may take to arrive on loopback,
// with slack for a slow machine.
const broadcastLimit = time.Second

// bcPair returns two stores on one prefix of the server at the URL in
// variable, as two app instances would have.
func bcPair(variable string) storetest.BroadcastPair {
	return func(t testing.TB) (hallpass.Broadcaster, hallpass.Broadcaster) {
		raw := storetest.ServiceURL(t, variable)
		opts := Options{KeyPrefix: testPrefix(t, raw)}
		return newStore(t, raw, opts, nil), newStore(t, raw, opts, nil)
	}
}

func TestBroadcaster(t *testing.T) { storetest.RunBroadcaster(t, bcPair(urlVar), broadcastLimit) }

// TestBroadcasterCluster runs the same on a real Cluster: PUBLISH reaches
// subscribers on every node.
func TestBroadcasterCluster(t *testing.T) {
	storetest.RunBroadcaster(t, bcPair("HALLPASS_TEST_REDIS_CLUSTER_URL"), broadcastLimit)
}

// collector records what a subscriber receives; nil is recorded as
// reloadMark.
type collector struct {
	mu      sync.Mutex
	got     []string
	signal  chan struct{}
	block   chan struct{} // if not nil, the first call waits for it
	inCall  bool
	overlap bool
}

const reloadMark = "<nil>"

func newCollector() *collector { return &collector{signal: make(chan struct{}, 1)} }

func (c *collector) receive(msg []byte) {
	c.mu.Lock()
	if c.inCall {
		c.overlap = true
	}
	c.inCall = true
	block := c.block
	c.block = nil
	c.mu.Unlock()
	if block != nil {
		<-block
	}
	c.mu.Lock()
	c.inCall = false
	if msg == nil {
		c.got = append(c.got, reloadMark)
	} else {
		c.got = append(c.got, string(msg))
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (c *collector) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) reset() {
	c.mu.Lock()
	c.got = nil
	c.mu.Unlock()
}

// waitFor waits until the collector has received want, and fails after
// limit.
func (c *collector) waitFor(t *testing.T, what, want string, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for !slices.Contains(c.snapshot(), want) {
		select {
		case <-c.signal:
		case <-deadline:
			t.Fatalf("%s: %q not received within %v; got %q", what, want, limit, c.snapshot())
		}
	}
}

// live broadcasts probes from s until every collector got one, so that
// the subscriptions are known to be in place, then empties them.
func live(t *testing.T, s *Store, cs ...*collector) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		probe := fmt.Sprintf(`{"probe":%d}`, i)
		if err := s.Broadcast(t.Context(), []byte(probe)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		ok := true
		for _, c := range cs {
			if !slices.Contains(c.snapshot(), probe) {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriptions never received a probe")
		}
	}
	for _, c := range cs {
		c.reset()
	}
}

func TestBroadcastRejects(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	for name, msg := range map[string][]byte{
		"empty":    nil,
		"not JSON": []byte(`{"k":`),
		"NUL":      []byte("\"a\x00b\""),
		"bad UTF8": []byte("\"\xff\""),
		"too long": []byte(`"` + strings.Repeat("x", 1023) + `"`),
	} {
		err := s.Broadcast(t.Context(), msg)
		if !errors.Is(err, ErrBroadcastMessage) || !strings.HasPrefix(err.Error(), "redisstore: broadcast: ") {
			t.Errorf("%s: Broadcast = %v, want a redisstore: broadcast error wrapping ErrBroadcastMessage", name, err)
		}
	}
	if err := s.Broadcast(t.Context(), []byte(`"`+strings.Repeat("x", 1022)+`"`)); err != nil {
		t.Errorf("1 KiB message: %v", err)
	}
}

// TestBroadcastPrefixes checks that stores with different prefixes on one
// server do not hear each other.
func TestBroadcastPrefixes(t *testing.T) {
	raw := testURL(t)
	a := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	b := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	ca, cb := newCollector(), newCollector()
	defer a.Subscribe(ca.receive)()
	defer b.Subscribe(cb.receive)()
	live(t, a, ca)
	live(t, b, cb)
	if err := a.Broadcast(t.Context(), []byte(`"for a"`)); err != nil {
		t.Fatal(err)
	}
	ca.waitFor(t, "same prefix", `"for a"`, broadcastLimit)
	time.Sleep(50 * time.Millisecond)
	if got := cb.snapshot(); len(got) != 0 {
		t.Errorf("a store with another prefix received %q", got)
	}
}

// TestBroadcastOverflow blocks a subscriber while more messages arrive
// than its queue holds: it then gets nil (reload) instead of the dropped
// ones, later messages as usual, and never two calls at once; another
// subscriber of the same store misses nothing meanwhile.
func TestBroadcastOverflow(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	slow, fast := newCollector(), newCollector()
	defer s.Subscribe(slow.receive)()
	defer s.Subscribe(fast.receive)()
	live(t, s, slow, fast)
	unblock := make(chan struct{})
	slow.mu.Lock()
	slow.block = unblock
	slow.mu.Unlock()
	n := subscriberQueue + 20
	for i := range n {
		if err := s.Broadcast(t.Context(), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	fast.waitFor(t, "the other subscriber", fmt.Sprintf(`{"n":%d}`, n-1), broadcastLimit)
	if got := fast.snapshot(); len(got) != n || slices.Contains(got, reloadMark) {
		t.Errorf("the other subscriber got %d messages (reload: %v), want all %d", len(got), slices.Contains(got, reloadMark), n)
	}
	close(unblock)
	slow.waitFor(t, "the blocked subscriber", reloadMark, broadcastLimit)
	if err := s.Broadcast(t.Context(), []byte(`"after"`)); err != nil {
		t.Fatal(err)
	}
	slow.waitFor(t, "the blocked subscriber after its reload", `"after"`, broadcastLimit)
	slow.mu.Lock()
	defer slow.mu.Unlock()
	if slow.overlap {
		t.Error("the subscriber was called again before its previous call returned")
	}
}

// numsub returns how many connections subscribe to the store's channel.
func numsub(t *testing.T, admin rueidis.Client, s *Store) int64 {
	t.Helper()
	m, err := admin.Do(t.Context(), admin.B().PubsubNumsub().Channel(s.hub.channel).Build()).AsIntMap()
	if err != nil {
		t.Fatal(err)
	}
	return m[s.hub.channel]
}

// TestBroadcastUnsubscribe checks that the subscription, one connection
// for all subscribers of a store, ends when the last subscriber stops or
// the store is closed, and starts again with the next Subscribe.
func TestBroadcastUnsubscribe(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	admin := newClient(t, raw, nil)
	waitNumsub := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for numsub(t, admin, s) != want {
			if time.Now().After(deadline) {
				t.Fatalf("PUBSUB NUMSUB = %d, want %d", numsub(t, admin, s), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	c1, c2 := newCollector(), newCollector()
	stop1, stop2 := s.Subscribe(c1.receive), s.Subscribe(c2.receive)
	live(t, s, c1, c2)
	waitNumsub(1)
	stop1()
	stop1() // twice is harmless
	waitNumsub(1)
	stop2()
	waitNumsub(0)

	c3 := newCollector()
	s.Subscribe(c3.receive)
	live(t, s, c3)
	waitNumsub(1)
	s.Close()
	waitNumsub(0)
	stop4 := s.Subscribe(newCollector().receive) // after Close: nothing, and no hang
	stop4()
}

// TestFaultBroadcast cuts, then stalls, the subscription's connection:
// once it is back, every subscriber gets nil (messages were lost
// meanwhile) and broadcasts arrive again.
func TestFaultBroadcast(t *testing.T) {
	raw := testURL(t)
	p := storetest.NewProxy(t, serverAddr(t, raw))
	opts := Options{KeyPrefix: testPrefix(t, raw)}
	s := newStore(t, raw, opts, viaProxy(p))
	sender := newStore(t, raw, opts, nil)
	c1, c2 := newCollector(), newCollector()
	defer s.Subscribe(c1.receive)()
	defer s.Subscribe(c2.receive)()
	live(t, sender, c1, c2)
	for _, fault := range []struct {
		name  string
		start func()
		hold  time.Duration
	}{
		{"Cut", p.Cut, 100 * time.Millisecond},
		// Long enough for the ping to declare the connection dead.
		{"Stall", p.Stall, faultConnTimeout + faultPing + 300*time.Millisecond},
	} {
		t.Run(fault.name, func(t *testing.T) {
			c1.reset()
			c2.reset()
			fault.start()
			time.Sleep(fault.hold / 2)
			if err := sender.Broadcast(t.Context(), []byte(`"during"`)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(fault.hold / 2)
			restored := time.Now()
			p.Restore()
			for _, c := range []*collector{c1, c2} {
				c.waitFor(t, "after the "+fault.name, reloadMark, 5*time.Second)
			}
			t.Logf("%s: subscribers told to reload %v after Restore", fault.name, time.Since(restored).Round(time.Millisecond))
			if err := sender.Broadcast(t.Context(), []byte(`"after"`)); err != nil {
				t.Fatal(err)
			}
			for _, c := range []*collector{c1, c2} {
				c.waitFor(t, "a broadcast after the "+fault.name, `"after"`, broadcastLimit)
				if got := c.snapshot(); slices.Index(got, reloadMark) > slices.Index(got, `"after"`) {
					t.Errorf("reload after the next message: %q", got)
				}
			}
		})
	}
}

// TestRevocationsPush checks that two hallpass.Revocations over two
// stores see each other's RevokeUser within milliseconds, with polling an
// hour apart: only the broadcast can explain it.
func TestRevocationsPush(t *testing.T) {
	for _, variable := range []string{urlVar, "HALLPASS_TEST_REDIS_CLUSTER_URL"} {
		t.Run(variable, func(t *testing.T) {
			raw := storetest.ServiceURL(t, variable)
			opts := Options{KeyPrefix: testPrefix(t, raw)}
			ro := &hallpass.RevocationOptions{PollInterval: time.Hour}
			var (
				rs     [2]*hallpass.Revocations
				stores [2]*Store
				cs     [2]*collector
			)
			for i := range rs {
				stores[i] = newStore(t, raw, opts, nil)
				r, err := hallpass.NewRevocations(t.Context(), stores[i], ro)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				rs[i] = r
				cs[i] = newCollector()
				t.Cleanup(stores[i].Subscribe(cs[i].receive))
			}
			// A store's subscribers share one subscription: once the
			// probes arrive, the Revocations' subscriptions are live too.
			live(t, stores[0], cs[0], cs[1])
			revokedOn := func(r *hallpass.Revocations, user string, issued, start time.Time, limit time.Duration) time.Duration {
				t.Helper()
				for !r.Revoked(user, "", issued) {
					if d := time.Since(start); d > limit {
						t.Fatalf("revocation not seen on the other instance after %v", d)
					}
					runtime.Gosched()
				}
				return time.Since(start)
			}
			for i := range rs { // warm up
				u := testUser()
				issued := time.Now().Add(-time.Minute)
				if err := rs[i].RevokeUser(t.Context(), u); err != nil {
					t.Fatal(err)
				}
				revokedOn(rs[1-i], u, issued, time.Now(), 5*time.Second)
			}
			// Measured from the call, which stores the entry before it
			// broadcasts it, and from its return: the other instance may
			// have the message before the sender has PUBLISH's reply.
			var calls, returns []time.Duration
			for i := range 20 {
				from, to := rs[i%2], rs[1-i%2]
				u := testUser()
				issued := time.Now().Add(-time.Minute)
				start := time.Now()
				if err := from.RevokeUser(t.Context(), u); err != nil {
					t.Fatal(err)
				}
				returned := time.Now()
				total := revokedOn(to, u, issued, start, broadcastLimit)
				calls, returns = append(calls, total), append(returns, max(0, total-returned.Sub(start)))
			}
			slices.Sort(calls)
			slices.Sort(returns)
			t.Logf("RevokeUser on one instance seen on the other: from the call median %v, worst %v; from its return median %v, worst %v (20 runs)",
				calls[10], calls[19], returns[10], returns[19])
		})
	}
}

// TestBroadcastCancelled checks the context rule for Broadcast.
func TestBroadcastCancelled(t *testing.T) {
	raw := testURL(t)
	s := newStore(t, raw, Options{KeyPrefix: testPrefix(t, raw)}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Broadcast(ctx, []byte(`1`)); !errors.Is(err, context.Canceled) {
		t.Errorf("Broadcast with a cancelled context: %v", err)
	}
}
