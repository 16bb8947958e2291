package storetest

import (
	"bytes"
	"context"
	"sync"
)

// Bus is an in-process hallpass.Broadcaster for the tests of what uses
// one (revocation lists, live pages): what a store shared by several
// processes does over the network, here between the subscribers of one
// process. Embed it next to a store to make the store a Broadcaster. It
// can lose messages, and then tell its subscribers so with nil, as a
// reconnecting client does. The zero value is ready.
//
// Deliveries happen one at a time, before Broadcast returns; a subscriber
// must not broadcast from its callback. Unlike a store, Bus carries any
// bytes, so that a test can put on the channel what another publisher
// could (garbage included); what the stores accept is JSON of at most
// 1 KiB, and code that broadcasts should be tested against one of them
// too.
type Bus struct {
	deliver sync.Mutex // one delivery at a time
	mu      sync.Mutex
	subs    map[int]func([]byte)
	next    int
	lose    bool
	sent    [][]byte
}

// Broadcast implements hallpass.Broadcaster.
func (b *Bus) Broadcast(_ context.Context, msg []byte) error {
	b.deliver.Lock()
	defer b.deliver.Unlock()
	b.mu.Lock()
	b.sent = append(b.sent, bytes.Clone(msg))
	var subs []func([]byte)
	if !b.lose {
		for _, fn := range b.subs {
			subs = append(subs, fn)
		}
	}
	b.mu.Unlock()
	for _, fn := range subs {
		fn(bytes.Clone(msg))
	}
	return nil
}

// Subscribe implements hallpass.Broadcaster.
func (b *Bus) Subscribe(fn func([]byte)) (stop func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = make(map[int]func([]byte))
	}
	id := b.next
	b.next++
	b.subs[id] = fn
	return func() {
		b.mu.Lock()
		delete(b.subs, id)
		b.mu.Unlock()
	}
}

// Lose makes the bus drop messages (true) or carry them again (false).
func (b *Bus) Lose(lose bool) {
	b.mu.Lock()
	b.lose = lose
	b.mu.Unlock()
}

// Reconnect carries messages again and tells every subscriber that some
// may have been lost, with nil.
func (b *Bus) Reconnect() {
	b.deliver.Lock()
	defer b.deliver.Unlock()
	b.mu.Lock()
	b.lose = false
	var subs []func([]byte)
	for _, fn := range b.subs {
		subs = append(subs, fn)
	}
	b.mu.Unlock()
	for _, fn := range subs {
		fn(nil)
	}
}

// Sent returns every message broadcast so far, lost ones included.
func (b *Bus) Sent() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.sent...)
}

// Subscribers returns how many subscriptions are open.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
