package live

import (
	"context"
	"sync"

	"github.com/hallpass/hallpass"
)

// lister shares the reads of one user's session list among the streams
// that re-check at the same time, as all of a user's streams do after a
// user-wide event or a lost broadcast. A stream must not take a list read
// before it asked, which may predate the very change it is checking for,
// so a stream that finds a read in progress waits for the next one, which
// starts when that one ends and serves everyone who asked meanwhile: at
// most one read in progress and one waiting per user, each fresh for all
// who get it.
type lister struct {
	base context.Context // ends the reads when the Hub closes

	mu      sync.Mutex
	running map[listKey]*listing
	waiting map[listKey]*listing
}

func newLister(base context.Context) *lister {
	return &lister{base: base, running: make(map[listKey]*listing), waiting: make(map[listKey]*listing)}
}

type listKey struct {
	m    *hallpass.Manager
	user string
}

// listing is one read of a user's sessions; done is closed when sessions
// and err are set.
type listing struct {
	done     chan struct{}
	sessions []hallpass.SessionInfo
	err      error
}

// list returns user's sessions, read by m after this call began. ctx
// bounds only the wait: the read itself is bounded by checkTimeout, as it
// may serve other streams.
func (l *lister) list(ctx context.Context, m *hallpass.Manager, user string) ([]hallpass.SessionInfo, error) {
	k := listKey{m, user}
	l.mu.Lock()
	var r *listing
	if l.running[k] == nil {
		r = &listing{done: make(chan struct{})}
		l.running[k] = r
		go l.read(k, r)
	} else if r = l.waiting[k]; r == nil {
		r = &listing{done: make(chan struct{})}
		l.waiting[k] = r
	}
	l.mu.Unlock()
	select {
	case <-r.done:
		return r.sessions, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.base.Done():
		return nil, l.base.Err()
	}
}

// read runs r, then the listing that waited for it, if any.
func (l *lister) read(k listKey, r *listing) {
	for r != nil {
		ctx, cancel := context.WithTimeout(l.base, checkTimeout)
		r.sessions, r.err = k.m.UserSessions(ctx, k.user)
		cancel()
		close(r.done)
		l.mu.Lock()
		r = l.waiting[k]
		delete(l.waiting, k)
		if r == nil {
			delete(l.running, k)
		} else {
			l.running[k] = r
		}
		l.mu.Unlock()
	}
}
