package pgstore

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
)

var _ hallpass.Broadcaster = (*Store)(nil)

// MaxBroadcast is the size of the largest message Broadcast sends: what
// hallpass.Broadcaster promises to carry, well under the 8000 bytes of a
// PostgreSQL notification.
const MaxBroadcast = 1024

// defaultSubscriberQueue bounds the messages waiting for one subscriber.
// Enough for a burst of revocations; a subscriber that falls further
// behind reloads instead (see Subscribe).
const defaultSubscriberQueue = 1024

// ErrBroadcastMessage is the error, wrapped, of a Broadcast whose message
// no instance could be sure to receive as sent. Nothing is sent.
var ErrBroadcastMessage = fmt.Errorf("a broadcast message must be 1 to %d bytes of UTF-8 text without NUL", MaxBroadcast)

// Broadcast implements hallpass.Broadcaster: it sends msg, with NOTIFY,
// on a channel of its own derived from the table's name, to the
// subscribers of every Store on the table, this one included. It sends
// whatever Options say: DisableNotify concerns only the notifications of
// writes. msg must be UTF-8 text without NUL of at most MaxBroadcast
// bytes, as the interface promises; anything else, and an empty message,
// which a subscriber could not tell from a nil, fail with
// ErrBroadcastMessage. Like every call, it is bounded by Options.Timeout.
func (s *Store) Broadcast(ctx context.Context, msg []byte) error {
	const op = "broadcast"
	if err := ctx.Err(); err != nil {
		return fail(ctx, op, err)
	}
	switch {
	case len(msg) == 0 || len(msg) > MaxBroadcast:
		return fmt.Errorf("pgstore: %s: %w; got %d bytes", op, ErrBroadcastMessage, len(msg))
	case bytes.IndexByte(msg, 0) >= 0:
		return fmt.Errorf("pgstore: %s: %w; got a NUL", op, ErrBroadcastMessage)
	case !utf8.Valid(msg):
		return fmt.Errorf("pgstore: %s: %w; got invalid UTF-8", op, ErrBroadcastMessage)
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
// otherwise. Whenever LISTEN takes effect, first or after the connection
// was lost (see the package doc), every subscriber gets nil, as messages
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
	sub := newSubscriber(fn, s.subQueue)
	if !s.subs.add(sub, s.startListener) {
		return func() {}
	}
	go sub.run()
	return func() {
		s.subs.remove(sub)
		sub.stop()
	}
}

// subscribers are a Store's subscriptions.
type subscribers struct {
	mu        sync.Mutex
	m         map[*subscriber]struct{}
	listening bool // the listener was started
	closed    bool // the Store was closed
}

// add registers sub, and runs start if the listener is not running yet.
// It reports false, registering nothing, if the Store was closed.
func (b *subscribers) add(sub *subscriber, start func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	if b.m == nil {
		b.m = make(map[*subscriber]struct{})
	}
	b.m[sub] = struct{}{}
	if !b.listening {
		b.listening = true
		start()
	}
	return true
}

func (b *subscribers) remove(sub *subscriber) {
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
		sub.stop()
	}
}

// deliver queues msg for every subscriber, each in a slice of its own.
// It never waits for one: the listener calls it.
func (b *subscribers) deliver(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.m {
		sub.push([]byte(msg))
	}
}

// reload queues nil for every subscriber.
func (b *subscribers) reload() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.m {
		sub.push(nil)
	}
}

// subscriber is one subscription: its queue, and the goroutine that
// empties it into fn.
type subscriber struct {
	fn    func([]byte)
	limit int

	mu      sync.Mutex
	cond    sync.Cond // signalled on a push and on stop
	queue   [][]byte  // a nil entry asks fn to reload
	stopped bool

	done chan struct{} // closed when run returns
}

func newSubscriber(fn func([]byte), limit int) *subscriber {
	sub := &subscriber{fn: fn, limit: limit, done: make(chan struct{})}
	sub.cond.L = &sub.mu
	return sub
}

// push queues msg. A nil, asked for or made by an overflow, replaces
// whatever waits: the reload it asks for comes after those messages were
// sent, and covers them.
func (sub *subscriber) push(msg []byte) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.stopped {
		return
	}
	if msg == nil || len(sub.queue) >= sub.limit {
		clear(sub.queue)
		sub.queue = append(sub.queue[:0], nil)
	} else {
		sub.queue = append(sub.queue, msg)
	}
	sub.cond.Signal()
}

func (sub *subscriber) stop() {
	sub.mu.Lock()
	sub.stopped = true
	sub.queue = nil
	sub.cond.Signal()
	sub.mu.Unlock()
}

// next waits for the next message, and reports false once stopped.
func (sub *subscriber) next() ([]byte, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for len(sub.queue) == 0 && !sub.stopped {
		sub.cond.Wait()
	}
	if sub.stopped {
		return nil, false
	}
	msg := sub.queue[0]
	sub.queue[0] = nil
	sub.queue = sub.queue[1:]
	if len(sub.queue) == 0 {
		sub.queue = nil // let the backing array go
	}
	return msg, true
}

func (sub *subscriber) run() {
	defer close(sub.done)
	for {
		msg, ok := sub.next()
		if !ok {
			return
		}
		sub.fn(msg)
	}
}
