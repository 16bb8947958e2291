package pgstore

import (
	"context"
	"fmt"
	"sync"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/internal/broadcast"
)

var _ hallpass.Broadcaster = (*Store)(nil)

// MaxBroadcast is the size of the largest message Broadcast sends: what
// hallpass.Broadcaster promises to carry, well under the 8000 bytes of a
// PostgreSQL notification.
const MaxBroadcast = broadcast.MaxMessage

// defaultSubscriberQueue bounds the messages waiting for one subscriber.
// Enough for a burst of revocations; a subscriber that falls further
// behind reloads instead (see Subscribe).
const defaultSubscriberQueue = 1024

// ErrBroadcastMessage is the error, wrapped, of a Broadcast whose message
// is not what hallpass.Broadcaster promises to carry. Nothing is sent.
var ErrBroadcastMessage = broadcast.ErrMessage

// Broadcast implements hallpass.Broadcaster: it sends msg, with NOTIFY,
// on a channel of its own derived from the table's name, to the
// subscribers of every Store on the table, this one included. It sends
// whatever Options say: DisableNotify concerns only the notifications of
// writes. msg must be JSON, valid UTF-8 without NUL, of at most
// MaxBroadcast bytes, as the interface promises, so that a message one
// store accepts every other store carries too; anything else fails with
// ErrBroadcastMessage. Like every call, it is bounded by Options.Timeout.
func (s *Store) Broadcast(ctx context.Context, msg []byte) error {
	const op = "broadcast"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	if err := broadcast.Check(msg); err != nil {
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	err := retry(octx, func() error {
		_, err := s.pool.Exec(octx, `SELECT pg_notify($1, $2)`, s.q.broadcastChannel, string(msg))
		return err
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	return nil
}

// Subscribe implements hallpass.Broadcaster; fn must not be nil. It
// returns at once; the messages come from the Store's listening
// connection, which it starts if the cache has not (taking one connection
// out of the pool for good), and which it shares with the cache
// otherwise. Whenever LISTEN takes effect and the listener's probe has
// arrived, first or after the connection was lost (see the package doc),
// every subscriber gets nil, as messages
// may have been sent meanwhile that nobody heard: a subscription made
// before that first gets nil, then every message broadcast after it.
//
// Each subscriber is called from a goroutine of its own, one call at a
// time, so a slow one delays neither the others nor the cache's
// invalidations. Messages wait for it in a queue of bounded length; when
// it overflows, the waiting messages and the new one are dropped and the
// subscriber gets nil instead. A subscriber owns the slices it is handed.
//
// stop returns at once, without waiting for a call in progress, so that
// fn may call it. No message is taken from the queue after it returns:
// only a call that was under way by then (running, or about to run) may
// still finish, and then the subscriber's goroutine ends. Close stops
// every subscription. After Close, Subscribe returns a stop that does
// nothing, and fn is never called.
func (s *Store) Subscribe(fn func(msg []byte)) (stop func()) {
	if fn == nil {
		panic("pgstore: Subscribe with a nil func")
	}
	sub := broadcast.NewSubscriber(fn, s.subQueue)
	if !s.subs.add(sub, s.startListener) {
		sub.Stop()
		return func() {}
	}
	return func() {
		s.subs.remove(sub)
		sub.Stop()
	}
}

// subscribers are a Store's subscriptions.
type subscribers struct {
	mu        sync.Mutex
	m         map[*broadcast.Subscriber]struct{}
	listening bool // the listener was started
	closed    bool // the Store was closed
}

// add registers sub, and runs start if the listener is not running yet.
// It reports false, registering nothing, if the Store was closed.
func (b *subscribers) add(sub *broadcast.Subscriber, start func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if b.m == nil {
		b.m = make(map[*broadcast.Subscriber]struct{})
	}
	b.m[sub] = struct{}{}
	if !b.listening {
		b.listening = true
		start()
	}
	return true
}

func (b *subscribers) remove(sub *broadcast.Subscriber) {
	b.mu.Lock()
	delete(b.m, sub)
	b.mu.Unlock()
}

// started notes that the listener runs, for Stores whose cache starts it.
func (b *subscribers) started() {
	b.mu.Lock()
	b.listening = true
	b.mu.Unlock()
}

// close stops every subscription, and any made later.
func (b *subscribers) close() {
	b.mu.Lock()
	subs := b.m
	b.m, b.closed = nil, true
	b.mu.Unlock()
	for sub := range subs {
		sub.Stop()
	}
}

// deliver queues msg for every subscriber, each in a slice of its own.
// It never waits for one: the listener calls it.
func (b *subscribers) deliver(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.m {
		sub.Push([]byte(msg))
	}
}

// reload queues nil for every subscriber.
func (b *subscribers) reload() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.m {
		sub.Push(nil)
	}
}
