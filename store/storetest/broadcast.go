package storetest

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// inbox collects what a subscriber receives.
type inbox struct {
	mu      sync.Mutex
	msgs    [][]byte
	inCall  bool
	overlap bool
	settled bool // probes from settle are ignored from now on
	slow    bool // linger in each call, so that overlapping calls show
	signal  chan struct{}
}

func newInbox() *inbox { return &inbox{signal: make(chan struct{}, 1)} }

func (in *inbox) receive(msg []byte) {
	in.mu.Lock()
	if in.inCall {
		in.overlap = true
	}
	in.inCall = true
	slow := in.slow
	in.mu.Unlock()
	if slow {
		time.Sleep(50 * time.Microsecond)
	}
	in.mu.Lock()
	in.inCall = false
	if msg != nil && !(in.settled && string(msg) == probe) {
		in.msgs = append(in.msgs, bytes.Clone(msg))
	}
	in.mu.Unlock()
	select {
	case in.signal <- struct{}{}:
	default:
	}
}

// wait waits until the inbox holds n messages or the deadline passes, and
// returns what it holds.
func (in *inbox) wait(n int, within time.Duration) [][]byte {
	deadline := time.After(within)
	for {
		in.mu.Lock()
		got := len(in.msgs)
		in.mu.Unlock()
		if got >= n {
			break
		}
		select {
		case <-in.signal:
		case <-deadline:
			in.mu.Lock()
			defer in.mu.Unlock()
			return slicesClone(in.msgs)
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return slicesClone(in.msgs)
}

func slicesClone(m [][]byte) [][]byte { return append([][]byte(nil), m...) }

// BroadcastPair returns two Broadcasters that share one server, as two app
// instances would.
type BroadcastPair func(t testing.TB) (a, b hallpass.Broadcaster)

// RunBroadcaster checks a hallpass.Broadcaster: a message broadcast on one
// instance reaches every subscriber on both, intact and one call at a time,
// within limit; a stopped subscription gets nothing more. It logs the
// median and worst delivery time to the other instance. Losing messages
// over a reconnect, and the nil that must follow, are the store's own
// fault tests to show.
func RunBroadcaster(t *testing.T, pair BroadcastPair, limit time.Duration) {
	t.Helper()
	t.Run("Delivery", func(t *testing.T) {
		a, b := pair(t)
		ina, inb, inb2 := newInbox(), newInbox(), newInbox()
		defer a.Subscribe(ina.receive)()
		defer b.Subscribe(inb.receive)()
		defer b.Subscribe(inb2.receive)()
		settle(t, a, []*inbox{ina, inb, inb2}, limit)

		// JSON text, as Revocations sends, with characters that need care
		// in every wire format, and the largest allowed size.
		prefix := `{"k":"u","s":"ünïcode 'quoted' \"double\" \\ `
		msg := []byte(prefix + strings.Repeat("x", 1024-len(prefix)-2) + `"}`)
		if err := a.Broadcast(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
		for name, in := range map[string]*inbox{"the sender's subscriber": ina, "the other instance's": inb, "its second subscriber": inb2} {
			got := in.wait(1, limit)
			if len(got) != 1 || !bytes.Equal(got[0], msg) {
				t.Errorf("%s got %d messages, want exactly the one sent (%d bytes)", name, len(got), len(msg))
			}
		}
	})
	t.Run("Many", func(t *testing.T) {
		a, b := pair(t)
		inb := newInbox()
		inb.slow = true
		defer b.Subscribe(inb.receive)()
		settle(t, a, []*inbox{inb}, limit)
		const n = 100
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if err := a.Broadcast(t.Context(), []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got := inb.wait(n, limit+time.Second)
		if len(got) != n {
			t.Fatalf("%d of %d concurrent broadcasts arrived", len(got), n)
		}
		seen := make(map[string]bool)
		for _, m := range got {
			seen[string(m)] = true
		}
		if len(seen) != n {
			t.Errorf("%d distinct messages of %d", len(seen), n)
		}
		inb.mu.Lock()
		defer inb.mu.Unlock()
		if inb.overlap {
			t.Error("the subscriber was called again before its previous call returned")
		}
	})
	t.Run("Stop", func(t *testing.T) {
		a, b := pair(t)
		kept, stopped := newInbox(), newInbox()
		defer b.Subscribe(kept.receive)()
		stop := b.Subscribe(stopped.receive)
		settle(t, a, []*inbox{kept, stopped}, limit)
		stop()
		if err := a.Broadcast(t.Context(), []byte(`"after stop"`)); err != nil {
			t.Fatal(err)
		}
		kept.wait(1, limit)
		time.Sleep(20 * time.Millisecond)
		if got := stopped.wait(1, 0); len(got) != 0 {
			t.Errorf("a stopped subscription received %q", got)
		}
	})
	t.Run("Latency", func(t *testing.T) {
		a, b := pair(t)
		inb := newInbox()
		defer b.Subscribe(inb.receive)()
		settle(t, a, []*inbox{inb}, limit)
		var ds []time.Duration
		for i := range 20 {
			start := time.Now()
			if err := a.Broadcast(t.Context(), []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
				t.Fatal(err)
			}
			if got := inb.wait(i+1, limit); len(got) != i+1 {
				t.Fatalf("broadcast %d not delivered within %v", i, limit)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		t.Logf("broadcast on A delivered on B: median %v, worst %v (20 runs)", ds[len(ds)/2], ds[len(ds)-1])
	})
}

// settle waits until a subscription made just now is live: Subscribe may
// return before the server has registered it. It broadcasts probes until
// each inbox got one, then empties the inboxes.
func settle(t *testing.T, from hallpass.Broadcaster, ins []*inbox, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit + 5*time.Second)
	for {
		if err := from.Broadcast(context.WithoutCancel(t.Context()), []byte(probe)); err != nil {
			t.Fatal(err)
		}
		ready := true
		for _, in := range ins {
			if len(in.wait(1, 50*time.Millisecond)) == 0 {
				ready = false
			}
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("subscriptions never received a probe")
		}
	}
	for _, in := range ins {
		in.mu.Lock()
		in.msgs, in.overlap, in.settled = nil, false, true
		in.mu.Unlock()
	}
}

const probe = `"storetest probe"`
