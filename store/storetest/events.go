package storetest

import (
	"context"
	"slices"
	"sync"

	"github.com/hallpass/hallpass"
)

// Events is a hallpass.Sink that keeps every event it is given, for
// tests that check what was reported. It is safe for concurrent use; the
// zero value is ready.
type Events struct {
	mu   sync.Mutex
	list []hallpass.Event
}

// Emit implements hallpass.Sink.
func (e *Events) Emit(_ context.Context, ev hallpass.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

// All returns the events so far, oldest first.
func (e *Events) All() []hallpass.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// Find returns the events of kind with reason; an empty reason matches
// any.
func (e *Events) Find(kind hallpass.EventKind, reason string) []hallpass.Event {
	var out []hallpass.Event
	for _, ev := range e.All() {
		if ev.Kind == kind && (reason == "" || ev.Reason == reason) {
			out = append(out, ev)
		}
	}
	return out
}

// Count is len(Find(kind, reason)).
func (e *Events) Count(kind hallpass.EventKind, reason string) int { return len(e.Find(kind, reason)) }

// Reset forgets the events so far.
func (e *Events) Reset() {
	e.mu.Lock()
	e.list = nil
	e.mu.Unlock()
}
