package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
)

// The reasons an ended event carries, and the values of the ended query
// parameter the script adds to the login URL.
const (
	ReasonRevoked   = "revoked"    // revoked by the user on another device, an admin, a credential change
	ReasonExpired   = "expired"    // the idle or absolute deadline passed
	ReasonLoggedOut = "logged_out" // signed out, in another tab or another request of the same session
)

// Defaults for the zero values of Options.
const (
	DefaultMaxStreams    = 4
	DefaultCheckInterval = 30 * time.Second
	DefaultHeartbeat     = 25 * time.Second
	DefaultRetry         = 5 * time.Second
)

// Topic is the "topic" of the Hub's messages on a hallpass.Broadcaster.
const Topic = "hallpass.live"

// maxMessage is the largest message a hallpass.Broadcaster must carry.
const maxMessage = 1 << 10

// sendQueue is how many ends may wait to be broadcast; beyond it the
// details are dropped and the other instances are told to re-check
// every stream instead.
const sendQueue = 256

// Options configure a Hub. The zero value of each field picks its
// default.
type Options struct {
	// MaxStreams is how many streams one session may hold open at once.
	// A request for one more is refused with 429 Too Many Requests: an
	// EventSource does not retry a refusal, so that tab stays without a
	// stream and learns of ends from the other tabs (see the script),
	// instead of evicting an older tab that would reconnect and evict in
	// turn. The default, 4, also keeps browsers' limit of 6 HTTP/1.1
	// connections per host from being taken by streams.
	MaxStreams int
	// CheckInterval is how often each stream asks the store whether its
	// session is still live: the bound on how late an end is noticed when
	// no event about it reached this Hub. Default 30 s.
	CheckInterval time.Duration
	// Heartbeat is how often an idle stream sends a comment, so that
	// proxies do not close it and a vanished client is noticed. Default
	// 25 s.
	Heartbeat time.Duration
	// Retry is the reconnection delay sent to clients. Default 5 s.
	Retry time.Duration
	// Now returns the current time: the same clock as hallpass.Config.Now.
	// Default time.Now.
	Now func() time.Time
	// OnError receives errors the Hub cannot return to anyone: a failed
	// broadcast, a store that could not be asked. Default: ignore.
	OnError func(error)
}

// Hub knows which sessions ended and tells their open streams. It is a
// hallpass.Sink: add it to hallpass.Config.Events (with hallpass.Sinks
// to keep other sinks), then mount Handler.
//
// An event naming a session ends its streams: logged_out and expiry at
// once, revoked once the store confirms the session is gone (package
// token names a session's handle when it revokes the session's tokens
// only). An event naming only a user (RevokeAll, RevokeOthers,
// CredentialsChanged) cannot say which sessions it spared, so each
// stream of that user asks the store whether its own session is still
// live: the session that called RevokeOthers keeps its streams. Streams
// of one user that ask at the same time share a read of the user's
// sessions, one that began after they asked.
//
// Several app instances share ends through the store's
// hallpass.Broadcaster, if it has one (Redis, PostgreSQL): each end seen
// here is broadcast to the other instances' Hubs, and when the
// Broadcaster reports that messages may have been lost, every stream
// re-checks. Without one, streams on other instances notice within
// CheckInterval.
type Hub struct {
	bc   hallpass.Broadcaster
	id   string // tells this Hub's broadcasts from the others'
	opts Options

	mu       sync.Mutex
	byHandle map[string][]*stream
	byUser   map[string][]*stream
	closed   bool

	out  chan notice
	lost atomic.Bool // out overflowed: tell the others to re-check everything

	lists *lister // the streams' re-checks, shared per user

	done      chan struct{}
	wg        sync.WaitGroup // open streams and the sender
	stopSub   func()
	closeOnce sync.Once
}

// NewHub returns a Hub. bc is the store if it implements
// hallpass.Broadcaster, or nil for a single instance:
//
//	bc, _ := store.(hallpass.Broadcaster)
//	hub := live.NewHub(bc, nil)
//
// Close it when done.
func NewHub(bc hallpass.Broadcaster, opts *Options) *Hub {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Retry <= 0 {
		o.Retry = DefaultRetry
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	h := &Hub{
		bc:       bc,
		id:       hallpass.NewHandle(),
		opts:     o,
		byHandle: make(map[string][]*stream),
		byUser:   make(map[string][]*stream),
		done:     make(chan struct{}),
	}
	h.lists = newLister(o.OnError)
	if bc != nil {
		h.out = make(chan notice, sendQueue)
		h.wg.Add(1)
		go h.send()
		h.stopSub = bc.Subscribe(h.receive)
	}
	return h
}

// Close ends every stream (without an ended event: the session did not
// end, so browsers reconnect, to another instance say), stops the
// subscription and waits for the streams' handlers to return. Later
// streams are refused with 503.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		if h.stopSub != nil {
			h.stopSub()
		}
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.done)
		h.lists.stop() // streams waiting for a read return at once
		h.wg.Wait()
		h.lists.close()
	})
	return nil
}

// notice is an end as delivered to streams and broadcast to other Hubs.
type notice struct {
	Topic  string `json:"topic"`
	From   string `json:"from,omitempty"`
	Handle string `json:"handle,omitempty"`
	User   string `json:"user,omitempty"`
	// Reason is one of the Reason constants, or signedIn.
	Reason string `json:"reason,omitempty"`
	// All asks every stream to re-check.
	All bool `json:"all,omitempty"`
}

// signedIn says that Handle's session now belongs to User: a stream
// opened for another user of the same browser session is over.
const signedIn = "signed_in"

// Emit implements hallpass.Sink. It never blocks on the network.
func (h *Hub) Emit(_ context.Context, e hallpass.Event) {
	n := notice{Handle: e.Handle, User: e.UserID}
	switch e.Kind {
	case hallpass.EventRevoked:
		n.Reason = ReasonRevoked
	case hallpass.EventLoggedOut:
		n.Reason = ReasonLoggedOut
	case hallpass.EventExpiredIdle, hallpass.EventExpiredAbsolute:
		n.Reason = ReasonExpired
	case hallpass.EventAuthenticated:
		if n.Handle == "" || n.User == "" {
			return
		}
		n.Reason = signedIn
	default:
		return
	}
	if n.Handle == "" && n.User == "" {
		return
	}
	h.deliver(n)
	// Expiry needs no broadcast: the deadline passes on every instance,
	// and each stream checks its session when it does.
	if h.bc != nil && n.Reason != ReasonExpired {
		select {
		case h.out <- n:
		default:
			h.lost.Store(true)
		}
	}
}

// deliver tells this Hub's streams about n.
func (h *Hub) deliver(n notice) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case n.All:
		for _, ss := range h.byHandle {
			for _, s := range ss {
				s.signal("", true)
			}
		}
	case n.Handle == "":
		// A user-wide end may have spared some sessions (RevokeOthers,
		// CredentialsChanged keeping this one): only the store knows which.
		for _, s := range h.byUser[n.User] {
			s.signal("", true)
		}
	case n.Reason == signedIn:
		for _, s := range h.byHandle[n.Handle] {
			if s.user != n.User {
				s.signal(ReasonLoggedOut, false)
			}
		}
	case n.Reason == ReasonRevoked:
		// Not only the Manager names a session's handle in a revoked
		// event: package token does too, for the token family of a
		// session that lives on. The store decides; the event only when
		// the store cannot.
		for _, s := range h.byHandle[n.Handle] {
			s.suspect(n.Reason)
		}
	default:
		for _, s := range h.byHandle[n.Handle] {
			s.signal(n.Reason, false)
		}
	}
}

// send broadcasts queued ends, one at a time, off the request path.
func (h *Hub) send() {
	defer h.wg.Done()
	for {
		select {
		case <-h.done:
			return
		case n := <-h.out:
			h.broadcast(n)
			if h.lost.Swap(false) {
				h.broadcast(notice{All: true})
			}
		}
	}
}

func (h *Hub) broadcast(n notice) {
	msg := n.wire(h.id)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.bc.Broadcast(ctx, msg); err != nil {
		h.opts.OnError(fmt.Errorf("live: broadcast an end; other instances notice within %v: %w", h.opts.CheckInterval, err))
	}
}

// wire encodes n for the Broadcaster: UTF-8 JSON of at most 1 KiB.
func (n notice) wire(from string) []byte {
	n.Topic, n.From = Topic, from
	if !utf8.ValidString(n.User) {
		// JSON would turn it into another user id.
		n.User = ""
	}
	if msg, err := json.Marshal(n); err == nil && len(msg) <= maxMessage {
		if n.User != "" || n.Handle != "" && n.Reason != signedIn {
			return msg
		}
	}
	if n.Handle != "" && n.Reason != signedIn {
		// The handle alone says whose streams end.
		if msg, err := json.Marshal(notice{Topic: Topic, From: from, Handle: n.Handle, Reason: n.Reason}); err == nil && len(msg) <= maxMessage {
			return msg
		}
	}
	// Nothing smaller says who: everyone re-checks.
	msg, _ := json.Marshal(notice{Topic: Topic, From: from, All: true})
	return msg
}

// receive handles a broadcast message, or nil: messages may have been
// lost, so every stream re-checks.
func (h *Hub) receive(msg []byte) {
	if msg == nil {
		h.deliver(notice{All: true})
		return
	}
	var n notice
	if json.Unmarshal(msg, &n) != nil || n.Topic != Topic {
		return // another user of the channel
	}
	if n.From == h.id {
		return // delivered when emitted
	}
	switch {
	case n.All:
		n = notice{All: true}
	case n.Handle == "" && n.User == "",
		n.Handle != "" && n.Reason != ReasonRevoked && n.Reason != ReasonLoggedOut && n.Reason != ReasonExpired && n.Reason != signedIn,
		n.Reason == signedIn && (n.Handle == "" || n.User == ""):
		h.opts.OnError(fmt.Errorf("live: ignored a malformed broadcast of %d bytes", len(msg)))
		return
	}
	h.deliver(n)
}

// stream is one open events response.
type stream struct {
	handle, user string
	abs          time.Time // the absolute deadline, which never moves
	wake         chan struct{}

	mu      sync.Mutex
	reason  string // set once: the session ended
	hint    string // the session ended, unless the store says otherwise
	recheck bool
}

func (s *stream) signal(reason string, recheck bool) {
	s.mu.Lock()
	if s.reason == "" {
		s.reason = reason
	}
	s.recheck = s.recheck || recheck
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // already woken; it reads both fields
	}
}

// suspect asks for a re-check that ends the stream with reason if the
// store cannot answer.
func (s *stream) suspect(reason string) {
	s.mu.Lock()
	if s.hint == "" {
		s.hint = reason
	}
	s.mu.Unlock()
	s.signal("", true)
}

func (s *stream) take() (reason, hint string, recheck bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reason, hint, recheck = s.reason, s.hint, s.recheck
	s.hint, s.recheck = "", false
	return reason, hint, recheck
}

var (
	errClosed  = errors.New("live: hub closed")
	errTooMany = errors.New("live: too many streams for this session")
)

func (h *Hub) add(s *stream) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errClosed
	}
	if len(h.byHandle[s.handle]) >= h.opts.MaxStreams {
		return errTooMany
	}
	h.byHandle[s.handle] = append(h.byHandle[s.handle], s)
	h.byUser[s.user] = append(h.byUser[s.user], s)
	h.wg.Add(1)
	return nil
}

func (h *Hub) remove(s *stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	drop(h.byHandle, s.handle, s)
	drop(h.byUser, s.user, s)
	h.wg.Done()
}

func drop(m map[string][]*stream, k string, s *stream) {
	ss := m[k]
	for i, x := range ss {
		if x == s {
			ss = append(ss[:i], ss[i+1:]...)
			break
		}
	}
	if len(ss) == 0 {
		delete(m, k)
	} else {
		m[k] = ss
	}
}
