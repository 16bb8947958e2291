// Package broadcast holds what the stores' hallpass.Broadcaster
// implementations share: the rule for a message, and a subscriber's
// queue.
package broadcast

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"unicode/utf8"
)

// MaxMessage is the size of the largest message hallpass.Broadcaster
// carries.
const MaxMessage = 1 << 10

// ErrMessage is the error, wrapped, of a Broadcast whose message
// hallpass.Broadcaster does not promise to carry.
var ErrMessage = fmt.Errorf("a broadcast message must be JSON of at most %d bytes, valid UTF-8 without NUL", MaxMessage)

// Check returns an error wrapping ErrMessage unless msg is what
// hallpass.Broadcaster promises to carry, so that a message one store
// accepts every other store carries too. An empty message is not JSON,
// and a subscriber could not tell it from a nil.
func Check(msg []byte) error {
	switch {
	case len(msg) > MaxMessage:
		return fmt.Errorf("%w; got %d bytes", ErrMessage, len(msg))
	case bytes.IndexByte(msg, 0) >= 0:
		return fmt.Errorf("%w; got a NUL", ErrMessage)
	case !utf8.Valid(msg):
		return fmt.Errorf("%w; got invalid UTF-8", ErrMessage)
	case !json.Valid(msg):
		return fmt.Errorf("%w; got something else than JSON", ErrMessage)
	}
	return nil
}

// Subscriber is one subscription: a bounded queue, and a goroutine that
// empties it into fn, one call at a time, so that a slow fn delays
// neither the connection that receives messages nor other subscribers.
type Subscriber struct {
	fn    func([]byte)
	limit int

	mu      sync.Mutex
	cond    sync.Cond // signalled on a push and on stop
	queue   [][]byte  // a nil entry asks fn to reload
	stopped bool

	done chan struct{} // closed when the goroutine returns
}

// NewSubscriber starts a subscriber that calls fn with what is pushed,
// with at most limit messages waiting.
func NewSubscriber(fn func([]byte), limit int) *Subscriber {
	s := &Subscriber{fn: fn, limit: limit, done: make(chan struct{})}
	s.cond.L = &s.mu
	go s.run()
	return s
}

// Push queues msg without waiting for fn. A nil asks fn to reload: it
// replaces whatever waits, since the reload comes after those messages
// were sent and covers them; so does an overflow. fn owns what it is
// handed, so a caller that keeps msg passes a copy.
func (s *Subscriber) Push(msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if msg == nil || len(s.queue) >= s.limit {
		clear(s.queue)
		s.queue = append(s.queue[:0], nil)
	} else {
		s.queue = append(s.queue, msg)
	}
	s.cond.Signal()
}

// Stop returns at once, without waiting for a call of fn in progress, so
// that fn may call it. No message is taken from the queue after it
// returns: only a call already under way may still finish.
func (s *Subscriber) Stop() {
	s.mu.Lock()
	s.stopped = true
	s.queue = nil
	s.cond.Signal()
	s.mu.Unlock()
}

// Done is closed when the subscriber's goroutine has returned, after
// Stop and the call in progress.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// next waits for the next message, and reports false once stopped.
func (s *Subscriber) next() ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 && !s.stopped {
		s.cond.Wait()
	}
	if s.stopped {
		return nil, false
	}
	msg := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = nil // let the backing array go
	}
	return msg, true
}

func (s *Subscriber) run() {
	defer close(s.done)
	for {
		msg, ok := s.next()
		if !ok {
			return
		}
		s.fn(msg)
	}
}
