package live

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hallpass/hallpass"
)

// lister shares the reads of one user's session list among the streams
// that re-check at the same time, as all of a user's streams do after a
// user-wide event or a lost broadcast. A stream must not take a list read
// begun before it asked, which may predate the very change it is checking
// for, so a stream that finds a read in progress waits for the next one,
// which starts when that one ends and serves everyone who asked
// meanwhile: at most one read in progress and one waiting per user, each
// fresh for all who get it.
type lister struct {
	base    context.Context // ends the reads at close
	stop    context.CancelFunc
	onError func(error)
	wg      sync.WaitGroup // the reads' goroutines, for close

	mu      sync.Mutex
	running map[listKey]*listing
	waiting map[listKey]*listing
}

func newLister(onError func(error)) *lister {
	base, stop := context.WithCancel(context.Background())
	return &lister{base: base, stop: stop, onError: onError,
		running: make(map[listKey]*listing), waiting: make(map[listKey]*listing)}
}

// close ends the reads, starts no more, and waits for their goroutines.
func (l *lister) close() {
	l.stop()
	l.wg.Wait()
}

// listKey names whose sessions are read, and by which Manager: the
// answer depends on its store and clock.
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
// bounds only the wait: the read itself, which may serve other streams,
// is bounded by checkTimeout and by the Hub's Close.
func (l *lister) list(ctx context.Context, m *hallpass.Manager, user string) ([]hallpass.SessionInfo, error) {
	k := listKey{m, user}
	l.mu.Lock()
	if err := l.base.Err(); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	var r *listing
	if l.running[k] == nil {
		r = &listing{done: make(chan struct{})}
		l.running[k] = r
		l.wg.Add(1)
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

// read runs r, then the listing that waited for it, if any. A failed
// read is reported once, however many streams it served; a store that
// panics fails the read instead of the process, as it would have failed
// only its request had the stream read for itself.
func (l *lister) read(k listKey, r *listing) {
	defer l.wg.Done()
	for r != nil {
		if err := l.base.Err(); err != nil {
			r.err = err // the Hub closed: no more reads
		} else {
			r.sessions, r.err = l.readOne(k)
		}
		switch {
		case r.err == nil, errors.Is(r.err, hallpass.ErrNoServerState):
		case l.base.Err() != nil: // the Hub closed; nobody waits
		default:
			l.onError(r.err)
		}
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

func (l *lister) readOne(k listKey) (sessions []hallpass.SessionInfo, err error) {
	defer func() {
		if v := recover(); v != nil {
			sessions, err = nil, fmt.Errorf("live: listing the sessions of a user panicked: %v", v)
		}
	}()
	ctx, cancel := context.WithTimeout(l.base, checkTimeout)
	defer cancel()
	return k.m.UserSessions(ctx, k.user)
}
