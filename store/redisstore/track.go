package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

// writer sends this instance's data updates on connections of its own,
// so that the record a write leaves can be served by the next Load without
// asking Redis again.
//
// Its write connection w runs CLIENT TRACKING ON REDIRECT <t> NOLOOP:
// Redis tracks every key w reads and, when anyone else changes one (any
// other connection, this instance's other connections included, or
// expiry), pushes an invalidation to the connection t; when w itself
// changes it, nothing. A write removes its key from Redis's tracking
// table, so the data script reads the key once more after its last write:
// after an update the key is tracked again, and this instance hears of the
// next write by anyone else. The update itself stays silent, and so its
// result, computed from the record this instance read before (same handle
// and one version less: the state the script changed) and the delta, is
// the current record until a push says otherwise. rueidis's own cache
// cannot do this: every write, this instance's included, drops its entry,
// and refilling it is the round trip this saves.
//
// A push drops the key's own entry; a push for all keys (a flush, or t
// closing, which rueidis reports the same way) and any loss of either
// connection drop them all, by moving the epoch on: t's loss at once, w's
// when a write on it fails or, at the latest, at t's next check that w is
// connected (writerCheck). An entry also expires CacheTTL after its write.
// A connection that stalls is declared dead by rueidis's ping
// (ConnWriteTimeout after a ping gets no answer), as for the shared
// connections whose cache Load uses.
type writer struct {
	client rueidis.Client
	memo   *memo
	prefix string // of session keys: KeyPrefix + "s:"
	ttl    time.Duration

	epoch atomic.Uint64
	// gens count, per memo slot, the events after which a write in flight
	// must not install its result: a push for a key of the slot, or
	// another write of this instance to one.
	gens [memoSlots]atomic.Uint32

	cur     atomic.Pointer[wconn]
	dialing atomic.Bool
	retryAt atomic.Int64 // mono() before which no new connection is tried

	mu     sync.Mutex // orders closing against a dial that completes
	closed bool
}

// wconn is one pair of connections: w sends the updates, and Redis sends
// the invalidations for what w tracks to t (CLIENT TRACKING REDIRECT). So
// w has no hook to serve, and rueidis can run a lone caller's command on
// it in the caller's goroutine instead of handing it to its reader and
// writer goroutines, which a connection with hooks must have; on a busy
// machine those hand-offs cost tens of microseconds per write.
type wconn struct {
	w, t   rueidis.DedicatedClient
	wid    string                       // w's CLIENT ID
	tid    int64                        // t's
	errs   atomic.Pointer[<-chan error] // closed when t closes
	dead   atomic.Bool
	stop   chan struct{}
	closed sync.Once
}

func (c *wconn) close() {
	c.closed.Do(func() {
		c.dead.Store(true)
		close(c.stop)
		c.w.Close()
		c.t.Close()
	})
}

const (
	// writerRetry is how long the writer waits after a failed attempt to
	// set up its connections before the next one; meanwhile updates take
	// the shared connections, as without the writer.
	writerRetry = time.Second
	// writerCheck is how often t checks that w is still connected: if w
	// alone were closed (CLIENT KILL, say), Redis would forget what w
	// tracks and send nothing, so t asks for w by id. A failure of both
	// (the usual case: one server, one network) t notices at once, and a
	// stall by its ping.
	writerCheck = 100 * time.Millisecond
	// writerCheckTimeout bounds one check; a check that fails or times out
	// retires the pair.
	writerCheckTimeout = time.Second
)

// monoStart anchors mono.
var monoStart = time.Now()

// mono is a monotonic clock in nanoseconds: a wall clock set back must not
// make an own entry outlive CacheTTL.
func mono() int64 { return int64(time.Since(monoStart)) }

func newWriter(client rueidis.Client, m *memo, prefix string, ttl time.Duration) *writer {
	return &writer{client: client, memo: m, prefix: prefix + "s:", ttl: ttl}
}

// conn returns the writer's connections if they are up, else starts
// setting them up in the background and returns nil.
func (w *writer) conn() *wconn {
	if c := w.cur.Load(); c != nil {
		if !c.lost() {
			return c
		}
		w.drop(c)
	}
	if mono() >= w.retryAt.Load() && w.dialing.CompareAndSwap(false, true) {
		go w.dial()
	}
	return nil
}

// lost reports whether c was retired or t has closed. (A closed w shows
// when a write on it fails, or at t's next check.)
func (c *wconn) lost() bool {
	if c.dead.Load() {
		return true
	}
	if ch := c.errs.Load(); ch != nil {
		select {
		case <-*ch:
			c.dead.Store(true)
			return true
		default:
		}
	}
	return false
}

// drop retires c: every own entry goes with it.
func (w *writer) drop(c *wconn) {
	c.dead.Store(true)
	w.epoch.Add(1)
	if w.cur.CompareAndSwap(c, nil) {
		w.retryAt.Store(mono() + int64(writerRetry/10))
	}
	c.close()
}

func (w *writer) dial() {
	defer w.dialing.Store(false)
	w.retryAt.Store(mono() + int64(writerRetry))
	t, _ := w.client.Dedicate() // Close releases them
	wc, _ := w.client.Dedicate()
	c := &wconn{w: wc, t: t, stop: make(chan struct{})}
	ch := t.SetOnInvalidations(func(keys []rueidis.RedisMessage) { w.invalidated(c, keys) })
	c.errs.Store(&ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	fail := func(err error) {
		if _, ok := rueidis.IsRedisErr(err); ok {
			// The server cannot track: updates keep to the shared
			// connections.
			w.retryAt.Store(math.MaxInt64)
		}
		c.close()
	}
	res := t.DoMulti(ctx, t.B().ClientInfo().Build(), t.B().ClientId().Build(), t.B().ClientTracking().Off().Build())
	for _, r := range res {
		if err := r.Error(); err != nil {
			fail(err)
			return
		}
	}
	// Over RESP2, Redis accepts CLIENT TRACKING but cannot push an
	// invalidation to t: own copies would never be dropped. CLIENT INFO
	// names the protocol from Redis 7 on; without it, stay on the shared
	// connections.
	if info, _ := res[0].ToString(); !strings.Contains(" "+info, " resp=3") {
		fail(errors.New("no RESP3"))
		w.retryAt.Store(math.MaxInt64)
		return
	}
	c.tid, _ = res[1].AsInt64()
	res = wc.DoMulti(ctx, wc.B().ClientId().Build(), wc.B().ClientTracking().Off().Build(),
		wc.B().ClientTracking().On().Redirect(c.tid).Noloop().Build())
	for _, r := range res {
		if err := r.Error(); err != nil {
			fail(err)
			return
		}
	}
	wid, _ := res[0].AsInt64()
	c.wid = strconv.FormatInt(wid, 10)
	// watch runs this check every writerCheck: a server that refuses it
	// (CLIENT LIST is an @admin command an ACL may deny) cannot have the
	// connection watched, so updates keep to the shared connections.
	if err := c.check(ctx); err != nil {
		fail(err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || c.lost() {
		c.close()
		return
	}
	w.epoch.Add(1) // nothing from an earlier connection survives
	w.cur.Store(c)
	go w.watch(c)
}

// watch checks every writerCheck that w is connected, and retires c if it
// is not, or if the check fails.
func (w *writer) watch(c *wconn) {
	tick := time.NewTicker(writerCheck)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), writerCheckTimeout)
		err := c.check(ctx)
		cancel()
		if err != nil {
			w.drop(c)
			if _, ok := rueidis.IsRedisErr(err); ok {
				// The server refuses the check (say, an ACL change took
				// CLIENT away): redialling would fail the same way.
				w.retryAt.Store(math.MaxInt64)
			}
			return
		}
	}
}

// errNotListed is check's error when the server does not list c's write
// connection: it is gone.
var errNotListed = errors.New("write connection not listed")

// check asks the server, on c's t, whether c's write connection is still
// connected.
func (c *wconn) check(ctx context.Context) error {
	list, err := c.t.Do(ctx, c.t.B().Arbitrary("CLIENT", "LIST", "ID", c.wid).Build()).ToString()
	if err != nil {
		return err
	}
	// RESP3 gives CLIENT LIST as verbatim text, "txt:" first.
	if !strings.HasPrefix(strings.TrimPrefix(list, "txt:"), "id="+c.wid+" ") {
		return errNotListed
	}
	return nil
}

// invalidated handles a push on c's t: keys changed by someone else, or
// nil for all keys (a flush, or t closing).
func (w *writer) invalidated(c *wconn, keys []rueidis.RedisMessage) {
	if keys == nil {
		// conn finds c lost, if it is, and closes it.
		w.epoch.Add(1)
		return
	}
	for i := range keys {
		name, err := keys[i].ToString()
		if err != nil {
			w.epoch.Add(1) // unreadable: assume the worst
			continue
		}
		if k, ok := w.parse(name); ok {
			w.invalidate(k)
		}
	}
}

// invalidate makes k's own entry, and the result of any write of k in
// flight, void. It drops the record remembered for k whatever its kind:
// after a change elsewhere it is no base for the next write (a record
// created again at k could even repeat its handle and version). The user
// stays, as a guess.
func (w *writer) invalidate(k hallpass.Key) {
	i := slotOf(k)
	w.gens[i].Add(1)
	s := &w.memo.slots[i]
	if e := s.Load(); e != nil && e.key == k && e.rec != nil {
		s.CompareAndSwap(e, &memoEntry{key: k, user: e.user})
	}
}

// parse returns the session key a hash name stands for.
func (w *writer) parse(name string) (hallpass.Key, bool) {
	var k hallpass.Key
	rest, ok := strings.CutPrefix(name, w.prefix)
	if !ok || len(rest) != 2*len(k)+2 || rest[0] != '{' || rest[9] != '}' {
		return k, false
	}
	if _, err := hex.Decode(k[:4], []byte(rest[1:9])); err != nil {
		return k, false
	}
	if _, err := hex.Decode(k[4:], []byte(rest[10:])); err != nil {
		return k, false
	}
	return k, true
}

// ticket is what a write on the writer's connection notes before it is
// sent, to tell afterwards whether its result may be installed.
type ticket struct {
	gen   uint32
	epoch uint64
}

func (w *writer) ticket(k hallpass.Key) ticket {
	return ticket{gen: w.gens[slotOf(k)].Load(), epoch: w.epoch.Load()}
}

// done ends a write of k sent with t: it installs rec (nil: none, as when
// the result could not be computed) as k's current record, unless a push
// or another write came between; and either way voids any other write of
// k in flight, whose result would be older.
func (w *writer) done(k hallpass.Key, t ticket, rec *hallpass.Record) {
	i := slotOf(k)
	s := &w.memo.slots[i]
	if rec != nil {
		e := &memoEntry{key: k, rec: rec, user: rec.UserID, own: true, epoch: t.epoch,
			until: mono() + int64(w.ttl)}
		s.Store(e)
		if w.gens[i].Load() != t.gen || w.epoch.Load() != t.epoch {
			s.CompareAndSwap(e, nil)
		}
		w.gens[i].Add(1)
		return
	}
	w.gens[i].Add(1) // first, so that a write installing now sees it
	if e := s.Load(); e != nil && e.key == k && e.own {
		s.CompareAndSwap(e, nil)
	}
}

// own returns the record this instance's last write of k left, while it
// is known to be current.
func (w *writer) own(k hallpass.Key) *hallpass.Record {
	e := w.memo.slot(k).Load()
	if e == nil || e.key != k || !e.own || e.epoch != w.epoch.Load() || mono() >= e.until {
		return nil
	}
	return e.rec
}

// exec runs the data script on c. After a network error c is retired:
// w's tracking may be gone with it.
func (w *writer) exec(ctx context.Context, c *wconn, keys, args []string) rueidis.RedisResult {
	res := dataScript.execOn(ctx, c.w, keys, args)
	if err := res.NonRedisError(); err != nil && ctx.Err() == nil {
		w.drop(c)
	}
	return res
}

func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	if c := w.cur.Swap(nil); c != nil {
		w.epoch.Add(1)
		c.close()
	}
}
