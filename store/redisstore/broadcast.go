package redisstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/broadcast"
	"github.com/redis/rueidis"
)

var _ hallpass.Broadcaster = (*Store)(nil)

const (
	// subscriberQueue is how many messages may wait for one subscriber
	// before newer ones are dropped and it is told to reload instead.
	subscriberQueue = 256
	// subscribeTimeout bounds one attempt to subscribe; resubscribeMin and
	// resubscribeMax bound the pause between attempts, doubling while the
	// server stays unreachable.
	subscribeTimeout = 2 * time.Second
	resubscribeMin   = 20 * time.Millisecond
	resubscribeMax   = time.Second
)

// channelName is the pub/sub channel of the stores sharing prefix.
// Channels are not keys: they have no slot, and a hash tag in the prefix
// means nothing here.
func channelName(prefix string) string { return prefix + "broadcast" }

// Broadcast implements hallpass.Broadcaster: it publishes msg to every
// Store with the same KeyPrefix on the server or Cluster, this one
// included (PUBLISH; SPUBLISH with a rueidis cluster client). msg must be
// JSON, valid UTF-8 without NUL, of at most 1 KiB; anything else fails
// with an error wrapping ErrBroadcastMessage, and nothing is sent.
func (s *Store) Broadcast(ctx context.Context, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return fail(ctx, "broadcast", err)
	}
	if err := broadcast.Check(msg); err != nil {
		return fmt.Errorf("redisstore: broadcast: %w", err)
	}
	cmd := s.client.B().Publish().Channel(s.hub.channel).Message(string(msg)).Build()
	if s.hub.sharded {
		cmd = s.client.B().Spublish().Channel(s.hub.channel).Message(string(msg)).Build()
	}
	if err := s.client.Do(ctx, cmd).Error(); err != nil {
		return fail(ctx, "broadcast", err)
	}
	return nil
}

// ErrBroadcastMessage is the error, wrapped, of a Broadcast whose message
// is not what hallpass.Broadcaster promises to carry; it is package
// pgstore's ErrBroadcastMessage too.
var ErrBroadcastMessage = broadcast.ErrMessage

// Subscribe implements hallpass.Broadcaster. fn is called one call at a
// time, on a goroutine of its own, with each message, and with nil when
// messages may have been lost: when the subscription is (re)established
// after fn was registered, and when fn fell more than subscriberQueue
// messages behind. A call in progress may finish after stop returns; none
// starts afterwards.
func (s *Store) Subscribe(fn func(msg []byte)) (stop func()) {
	if fn == nil {
		panic("redisstore: Subscribe with a nil func")
	}
	sub := broadcast.NewSubscriber(fn, subscriberQueue)
	s.hub.add(sub)
	var once sync.Once
	return func() { once.Do(func() { s.hub.remove(sub) }) }
}

// hub keeps one subscription per Store, on a connection of its own, while
// it has subscribers, and fans each message out to them.
type hub struct {
	client  rueidis.Client
	channel string
	sharded bool // SPUBLISH and SSUBSCRIBE: a rueidis cluster client

	mu      sync.Mutex
	subs    map[*broadcast.Subscriber]struct{}
	running bool // a loop is subscribing or subscribed
	closed  bool
	wake    chan struct{} // the subscribers changed, or Close
	loops   sync.WaitGroup
	ctx     context.Context // ends with Close, so that it need not wait for a dead server
	cancel  context.CancelFunc
}

func newHub(client rueidis.Client, prefix string) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	return &hub{client: client, channel: channelName(prefix), sharded: client.Mode() == rueidis.ClientModeCluster,
		subs: make(map[*broadcast.Subscriber]struct{}), wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

func (h *hub) add(sub *broadcast.Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		sub.Stop()
		return
	}
	h.subs[sub] = struct{}{}
	if !h.running {
		h.running = true
		h.loops.Add(1)
		go h.loop()
	}
}

func (h *hub) remove(sub *broadcast.Subscriber) {
	sub.Stop()
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
	h.poke()
}

func (h *hub) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// close ends the subscription and every subscriber, and waits until the
// connection is released.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for sub := range h.subs {
		sub.Stop()
	}
	clear(h.subs)
	h.mu.Unlock()
	h.cancel()
	h.poke()
	h.loops.Wait()
}

// idle reports, and records, that the loop should end: no subscriber is
// left, or the store is closing. The next Subscribe starts a new loop.
func (h *hub) idle() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.subs) == 0 {
		h.running = false
		return true
	}
	return false
}

// established tells every subscriber to reload: messages sent before the
// subscription took effect, or while the last one was down, are lost.
func (h *hub) established() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		sub.Push(nil)
	}
}

// dispatch runs on the connection's reader goroutine, so it only queues.
func (h *hub) dispatch(m rueidis.PubSubMessage) {
	if m.Channel != h.channel {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		// A copy each: a subscriber may keep or change what it gets.
		sub.Push([]byte(m.Message))
	}
}

// loop subscribes on a dedicated connection and, whenever that connection
// is lost (closed, reset, or declared dead by rueidis's ping after a
// stall) or the server ends the subscription, on a new one, until no
// subscriber is left.
func (h *hub) loop() {
	defer h.loops.Done()
	pause := resubscribeMin
	for !h.idle() {
		c, release := h.client.Dedicate()
		// The server ends a sharded subscription when the channel's slot
		// moves: as good as a lost connection.
		ended := make(chan struct{}, 1)
		lost := c.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage: h.dispatch,
			OnSubscription: func(s rueidis.PubSubSubscription) {
				if (s.Kind == "unsubscribe" || s.Kind == "sunsubscribe") && s.Channel == h.channel {
					select {
					case ended <- struct{}{}:
					default:
					}
				}
			},
		})
		cmd := c.B().Subscribe().Channel(h.channel).Build()
		if h.sharded {
			cmd = c.B().Ssubscribe().Channel(h.channel).Build()
		}
		ctx, cancel := context.WithTimeout(h.ctx, subscribeTimeout)
		err := c.Do(ctx, cmd).Error()
		cancel()
		if err == nil {
			h.established()
			pause = resubscribeMin
			if h.await(lost, ended) {
				release()
				return
			}
		}
		release()
		// Wait before the next attempt, but not past the last stop.
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-h.wake:
			t.Stop()
		}
		pause = min(2*pause, resubscribeMax)
	}
}

// await waits until the connection is lost, and reports true if instead
// the loop should end.
func (h *hub) await(lost <-chan error, ended <-chan struct{}) bool {
	for {
		select {
		case <-lost:
			return false
		case <-ended:
			return false
		case <-h.wake:
			if h.idle() {
				return true
			}
		}
	}
}
