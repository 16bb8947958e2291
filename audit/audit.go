// Package audit keeps a log of security events in a hallpass.Store, where
// an admin page can query it by user and kind.
//
//	trail, err := audit.New(st, nil) // st: the app's session store, any of the four
//	...
//	defer trail.Close()
//	m, err := hallpass.New(hallpass.Config{Store: st, Events: hallpass.Sinks{hallpass.SlogSink{}, trail}})
//	...
//	events, err := trail.Latest(ctx, 50)        // the admin page
//	mine, err := trail.ForUser(ctx, "alice", 20) // "recent activity on your account"
//
// # What is kept
//
// By default the events that matter to a security review (DefaultKinds):
// sign-ins, refused sign-ins, sign-outs, revocations, expiries and
// everything suspicious; not the routine created, extended, renewed and
// rotated. An Event holds the session's public handle and never its
// token, so neither does the log.
//
// # Storage
//
// The log uses nothing but the Store contract, so it works on every store.
// Each event is one hallpass.Record, with the event as JSON in its data,
// under the reserved user id GlobalUser, and, if it names a user, a
// second record under UserPrefix + the user id, so that both the whole
// log and one user's part of it are a single ListUser. Login refuses user
// ids starting with "hallpass.", so no session can sign in as either. The
// records' deadlines are the retention (default 30 days): the store
// expires them like sessions.
//
// # Cost
//
// ListUser returns a list whole, in no order, so a query reads every
// record of its list, however few events it asks for (it decodes only
// those it returns: records sort by handle, which spells the event's
// time). The lists are therefore bounded: beyond Options.MaxEvents
// (MaxUserEvents for a user's list) the oldest records are deleted,
// checked every tenth of the bound in writes. A query of a full log of
// DefaultMaxEvents takes about 4 ms on memstore and 60 ms on sqlitestore
// (BenchmarkLatest, 2-core VM), nearly all of it the store's ListUser;
// a user's list, a tenth of that. Query it for an admin page, not on
// every request, and lower MaxEvents if that is too slow: an address
// flooding the app with bad cookies fills the whole log with suspicious
// events, while each user's list keeps that user's history.
//
// # Writing
//
// Emit runs on the request path, so it never waits for the store: it
// puts the event in a bounded queue (Options.QueueSize) that one
// goroutine writes out, each write bounded by Options.WriteTimeout. When
// the queue is full (the store is slow or down) events are dropped,
// counted by Dropped and reported to the Logger, rather than slowing
// every request down to the store's pace. Events therefore show up in
// queries a moment after they happen; Flush waits for them. Close writes
// what is queued and stops.
package audit

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
)

// The reserved user ids the log's records are kept under.
const (
	// GlobalUser holds every event.
	GlobalUser = "hallpass.audit"
	// UserPrefix followed by a user id holds that user's events.
	UserPrefix = "hallpass.audit:"
)

// Defaults for the zero values of Options.
const (
	DefaultRetention     = 30 * 24 * time.Hour
	DefaultMaxEvents     = 5000
	DefaultMaxUserEvents = 500
	DefaultQueueSize     = 1024
	DefaultWriteTimeout  = 5 * time.Second
)

// DefaultKinds are the kinds of event the log keeps unless Options.Kinds
// says otherwise.
var DefaultKinds = []hallpass.EventKind{
	hallpass.EventAuthenticated,
	hallpass.EventLoginRefused,
	hallpass.EventLoggedOut,
	hallpass.EventRevoked,
	hallpass.EventExpiredIdle,
	hallpass.EventExpiredAbsolute,
	hallpass.EventSuspicious,
}

// maxField bounds each string the log stores. User-Agent and
// X-Forwarded-For come from the client: without a bound, each request
// could make the log keep kilobytes.
const maxField = 512

// Options configure New. The zero value, and a nil *Options, give the
// defaults.
type Options struct {
	// Kinds are the kinds of event to keep. Default DefaultKinds.
	Kinds []hallpass.EventKind
	// Retention is how long an event is kept. Default DefaultRetention.
	Retention time.Duration
	// MaxEvents bounds the events kept in the whole log, and
	// MaxUserEvents those kept for one user, beyond which the oldest are
	// deleted. The bounds may be exceeded by a tenth between checks, and
	// by more when several instances write one store. Defaults
	// DefaultMaxEvents and DefaultMaxUserEvents.
	MaxEvents     int
	MaxUserEvents int
	// QueueSize is how many events may wait to be written; more are
	// dropped. Default DefaultQueueSize.
	QueueSize int
	// WriteTimeout bounds each write to the store, and how long Close
	// goes on writing what is queued. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger receives write failures and drops. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time, which the retention counts from.
	// Default time.Now.
	Now func() time.Time
}

// Query selects events from the log.
type Query struct {
	// User, if set, selects that user's events only.
	User string
	// Kind, if set, selects events of that kind only.
	Kind hallpass.EventKind
	// Limit, if positive, caps how many events are returned: the newest.
	Limit int
}

// Log is an audit log in a Store. It is a hallpass.Sink. It is safe for
// concurrent use.
type Log struct {
	store     hallpass.Store
	keep      map[hallpass.EventKind]bool
	retention time.Duration
	maxAll    int
	maxUser   int
	timeout   time.Duration
	logger    *slog.Logger
	now       func() time.Time

	mu      sync.RWMutex // guards closed and the closing of queue
	closed  bool
	queue   chan hallpass.Event
	flushes chan chan struct{}
	stopped chan struct{} // closed when the writer has finished

	// base is the parent of every write's context; Close cancels it once
	// WriteTimeout has passed, so that a stuck store cannot hold Close.
	base  context.Context
	abort context.CancelFunc

	dropped atomic.Uint64

	// The writer's own state.
	seq      uint64
	pending  map[string]int // writes per list since it was last pruned
	reported uint64         // Dropped when last logged
	lastWarn time.Time
	lastErr  error // since the last report
}

// New returns a Log that keeps its events in store, and starts its
// writer. Close stops it.
func New(store hallpass.Store, opts *Options) (*Log, error) {
	if store == nil {
		return nil, errors.New("audit: New needs a Store")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Retention < 0 || o.MaxEvents < 0 || o.MaxUserEvents < 0 || o.QueueSize < 0 || o.WriteTimeout < 0 {
		return nil, errors.New("audit: negative Options")
	}
	kinds := o.Kinds
	if kinds == nil {
		kinds = DefaultKinds
	}
	l := &Log{
		store:     store,
		keep:      make(map[hallpass.EventKind]bool, len(kinds)),
		retention: cmp.Or(o.Retention, DefaultRetention),
		maxAll:    cmp.Or(o.MaxEvents, DefaultMaxEvents),
		maxUser:   cmp.Or(o.MaxUserEvents, DefaultMaxUserEvents),
		timeout:   cmp.Or(o.WriteTimeout, DefaultWriteTimeout),
		logger:    cmp.Or(o.Logger, slog.Default()),
		now:       o.Now,
		queue:     make(chan hallpass.Event, cmp.Or(o.QueueSize, DefaultQueueSize)),
		flushes:   make(chan chan struct{}),
		stopped:   make(chan struct{}),
		pending:   make(map[string]int),
	}
	if l.now == nil {
		l.now = time.Now
	}
	for _, k := range kinds {
		l.keep[k] = true
	}
	l.base, l.abort = context.WithCancel(context.Background())
	go l.run()
	return l, nil
}

// Emit queues e to be stored, if its kind is kept. It never blocks: when
// the queue is full, e is dropped and counted. ctx is not used, as the
// event is written after the request that emitted it may have ended.
func (l *Log) Emit(_ context.Context, e hallpass.Event) {
	if !l.keep[e.Kind] {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped.Add(1)
		return
	}
	select {
	case l.queue <- e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped returns how many events the log was given to keep and did not
// store: the queue was full, the store failed, or the log was closed.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Flush waits until the events emitted before it are written (or have
// failed to be), or ctx ends.
func (l *Log) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case l.flushes <- done:
	case <-l.stopped:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes the events still queued, taking at most about
// WriteTimeout, and stops the writer. Events emitted afterwards are
// dropped. It does not close the store. Close may be called more than
// once.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
		t := time.AfterFunc(l.timeout, l.abort)
		defer t.Stop()
	}
	l.mu.Unlock()
	<-l.stopped
	l.abort()
	return nil
}

func (l *Log) run() {
	defer close(l.stopped)
	for {
		select {
		case e, ok := <-l.queue:
			if !ok {
				l.report(true)
				return
			}
			l.write(e)
		case done := <-l.flushes:
			// Only what was queued when Flush came: under steady load the
			// queue never empties.
			for n := len(l.queue); n > 0; n-- {
				e, ok := <-l.queue
				if !ok {
					break
				}
				l.write(e)
			}
			close(done)
		}
	}
}

// stored is an event as the log keeps it.
type stored struct {
	Kind         hallpass.EventKind `json:"kind"`
	Reason       string             `json:"reason,omitempty"`
	Handle       string             `json:"handle,omitempty"`
	User         string             `json:"user,omitempty"`
	Time         time.Time          `json:"time"`
	IP           string             `json:"ip,omitempty"`
	UserAgent    string             `json:"ua,omitempty"`
	ForwardedFor string             `json:"xff,omitempty"`
}

// dataKey is the record's only data key.
const dataKey = "event"

func (l *Log) write(e hallpass.Event) {
	l.seq++
	data, err := json.Marshal(stored{
		Kind: hallpass.EventKind(clip(string(e.Kind))), Reason: clip(e.Reason), Handle: clip(e.Handle),
		User: e.UserID, Time: e.Time, IP: clip(e.IP), UserAgent: clip(e.UserAgent),
		ForwardedFor: clip(e.ForwardedFor),
	})
	if err != nil { // not for strings and a time, but do not store half of one
		l.fail(err)
		l.report(false)
		return
	}
	lists := []string{GlobalUser}
	if e.UserID != "" {
		lists = append(lists, UserPrefix+e.UserID)
	}
	now := l.now()
	until := now.Add(l.retention)
	created := e.Time
	if created.IsZero() {
		created = now
	}
	// The handle sorts as the event does, newest last, so that queries
	// and pruning order records without decoding them; the random tail
	// keeps it unique.
	at := max(created.UnixNano(), 0)
	handle := fmt.Sprintf("%016x%016x.%s", at, l.seq, hallpass.NewHandle())
	for _, list := range lists {
		rec := &hallpass.Record{
			Handle:    handle,
			Meta:      hallpass.Meta{UserID: list, AbsoluteDeadline: until},
			Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: until},
			CreatedAt: created,
			Data:      map[string]json.RawMessage{dataKey: data},
		}
		// A random key: no token hashes to it that anyone knows, so no
		// cookie can load an audit record as a session.
		rand.Read(rec.Key[:])
		ctx, cancel := context.WithTimeout(l.base, l.timeout)
		err := l.store.Create(ctx, rec)
		cancel()
		if err != nil {
			l.fail(fmt.Errorf("store a %s event: %w", e.Kind, err))
			l.report(false)
			return
		}
	}
	for _, list := range lists {
		l.counted(list)
	}
	l.report(false)
}

func (l *Log) fail(err error) {
	l.dropped.Add(1)
	l.lastErr = err
}

// report logs the events dropped since the last report, with the last
// error, at most every ten seconds unless final: a store that is down
// would otherwise make a log line per event.
func (l *Log) report(final bool) {
	d := l.dropped.Load()
	if d == l.reported || (!final && time.Since(l.lastWarn) < 10*time.Second) {
		return
	}
	args := []any{"dropped", d - l.reported, "total", d}
	if l.lastErr != nil {
		args = append(args, "last_error", l.lastErr)
	}
	l.logger.Warn("hallpass audit log: events not stored", args...)
	l.reported, l.lastWarn, l.lastErr = d, time.Now(), nil
}

// counted notes a write to list and prunes it every tenth of its bound.
func (l *Log) counted(list string) {
	limit := l.maxUser
	if list == GlobalUser {
		limit = l.maxAll
	}
	l.pending[list]++
	if l.pending[list] < max(limit/10, 1) {
		return
	}
	delete(l.pending, list)
	if len(l.pending) > 10000 {
		// Many users with a few events each: forget their counts rather
		// than grow. A user's list still reaches its bound by retention,
		// and a user with many events is counted again at once.
		clear(l.pending)
	}
	if l.base.Err() != nil {
		return // closing, out of time: pruning can wait for the next run
	}
	ctx, cancel := context.WithTimeout(l.base, l.timeout)
	defer cancel()
	if err := l.prune(ctx, list, limit); err != nil {
		l.logger.Warn("hallpass audit log: delete the oldest events", "error", err)
	}
}

// prune deletes the oldest records of list beyond limit.
func (l *Log) prune(ctx context.Context, list string, limit int) error {
	recs, err := l.store.ListUser(ctx, list)
	if err != nil || len(recs) <= limit {
		return err
	}
	slices.SortFunc(recs, byHandle)
	old := recs[:len(recs)-limit]
	keys := make([]hallpass.Key, 0, min(len(old), 500))
	for len(old) > 0 {
		keys = keys[:0]
		for _, r := range old[:min(len(old), 500)] {
			keys = append(keys, r.Key)
		}
		old = old[len(keys):]
		if err := l.store.Delete(ctx, keys...); err != nil {
			return err
		}
	}
	return nil
}

// byHandle orders records oldest first: see write.
func byHandle(a, b *hallpass.Record) int { return strings.Compare(a.Handle, b.Handle) }

// clip bounds s to maxField bytes, dropping a character cut in half.
func clip(s string) string {
	if len(s) <= maxField {
		return s
	}
	s = s[:maxField]
	for range utf8.UTFMax - 1 {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// Latest returns the newest n events of the whole log, newest first; all
// of them if n <= 0.
func (l *Log) Latest(ctx context.Context, n int) ([]hallpass.Event, error) {
	return l.Query(ctx, Query{Limit: n})
}

// ForUser returns the newest n events of userID, newest first; all of
// them if n <= 0.
func (l *Log) ForUser(ctx context.Context, userID string, n int) ([]hallpass.Event, error) {
	if userID == "" {
		return nil, errors.New("audit: ForUser needs a user id")
	}
	return l.Query(ctx, Query{User: userID, Limit: n})
}

// Query returns the events q selects, newest first. Events emitted in
// the last moments may not be stored yet (see Flush).
func (l *Log) Query(ctx context.Context, q Query) ([]hallpass.Event, error) {
	list := GlobalUser
	if q.User != "" {
		list = UserPrefix + q.User
	}
	recs, err := l.store.ListUser(ctx, list)
	if err != nil {
		return nil, fmt.Errorf("audit: query: %w", err)
	}
	// Newest first by handle, so that only the events returned, and
	// those the filter skips on the way, are decoded.
	slices.SortFunc(recs, byHandle)
	slices.Reverse(recs)
	var evs []stored
	for _, r := range recs {
		if q.Limit > 0 && len(evs) == q.Limit {
			break
		}
		var s stored
		if json.Unmarshal(r.Data[dataKey], &s) != nil || s.Kind == "" {
			continue // not an event: ignore rather than fail the page
		}
		if (q.Kind != "" && s.Kind != q.Kind) || (q.User != "" && s.User != q.User) {
			continue
		}
		evs = append(evs, s)
	}
	out := make([]hallpass.Event, len(evs))
	for i, s := range evs {
		out[i] = hallpass.Event{
			Kind: s.Kind, Reason: s.Reason, Handle: s.Handle, UserID: s.User, Time: s.Time,
			IP: s.IP, UserAgent: s.UserAgent, ForwardedFor: s.ForwardedFor,
		}
	}
	return out, nil
}
