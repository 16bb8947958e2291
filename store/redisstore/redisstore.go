// Package redisstore is a hallpass.Store in Redis, on
// github.com/redis/rueidis, for many app instances sharing one Redis
// server or Redis Cluster.
//
// # Key layout
//
// With the default KeyPrefix "hallpass:", a session is one hash, and each
// signed-in user has a sorted set and, at times, a lease:
//
//	hallpass:s:{<hex 0-8>}<hex 8-64>  hash: the session, named by its key
//	hallpass:{u:<user id>}            sorted set: the user's session keys
//	                                  (hex), scored by absolute deadline
//	hallpass:{u:<user id>}:lk         string: the user's index lease
//
// and the stores sharing a prefix talk on one pub/sub channel (see
// Broadcasts), "hallpass:broadcast".
//
// A session hash has one field per data key, "d:<key>" holding the JSON
// value as given, and metadata fields starting with "m:" (m:v version,
// m:h handle, m:u user, m:ad absolute deadline, m:id idle deadline, m:ls
// last seen, and so on; see codec.go). As the prefixes differ, no data key
// can collide with metadata. Times are unix milliseconds. An empty string,
// false or zero time is not stored. The hash expires at its record's
// expiry (the earlier deadline) by PEXPIREAT, kept exact by every write.
//
// Hash tags put a user's index and lease in one Cluster slot. A session's
// tag is the first 8 hex digits of its key, so its slot follows from the
// key alone, which is all a Load knows, and is spread by 32 bits of
// SHA-256; the tag also spares the client hashing 70-odd bytes for the
// slot on every command, a third of a cached Load's cost without it. A
// KeyPrefix may itself contain a hash tag ("app{s}:"); then
// every key is in that one slot and the store uses the standalone scripts
// even on a Cluster, at the price of putting all sessions on one shard.
//
// Guests (empty user id) are not indexed. An index member is a hint, not
// the truth: the record's own m:u field is, and readers check it. Members
// whose record expired are trimmed by score once their absolute deadline
// has passed, and members whose record is gone (logout, idle expiry) are
// dropped by the next ListUser or DeleteUser of that user.
//
// # Scripts and atomicity
//
// Every write is one Lua script (EVALSHA, falling back to EVAL) that
// checks, changes and re-expires a record in one step, so a write is
// whole or absent, never half done, and an Update, Rotate or touch of a
// record that is missing or expired (at the store's clock, Options.Now)
// fails with hallpass.ErrNotFound instead of recreating it. Update applies
// a hallpass.Delta field by field (Clear deletes the "d:" fields; Touch
// moves LastSeen and IdleDeadline forward only, and replaces the activity
// outright along with a Meta), so concurrent requests that change
// different keys both win, and it costs one round trip. Scripts declare
// every key they touch.
//
// A standalone server runs multi-key scripts, so there every method is
// atomic: Rotate renames the hash and moves its index entry in one
// script; ListUser and DeleteUser read the index, then run one script over
// the index and every session it named. If a Rotate or Create added a
// session in between, the script returns the new list instead and takes
// the user's lease (a key in the index's slot, expiring after a second)
// that makes writers adding to that index wait; the second attempt then
// cannot miss. A Rotate with a hallpass.Limit does the same with the new
// user's index: its one script counts, refuses or evicts, and moves (see
// Session limits). Rotate and an Update with a Meta must declare the user
// index of the record's current user; they take it from the record this
// instance last read (the Manager always loads before it writes) and, on a
// wrong guess, the script reports the user and the call repeats.
//
// In a Cluster (a rueidis cluster client, or Options.Cluster for sharding
// proxies), the session and its user's index live in different slots, and
// no script may span slots, so some operations become ordered sequences
// of single-slot scripts:
//
//	operation          standalone    Cluster
//	Load               atomic        atomic
//	Delete             atomic        atomic per key
//	Update             atomic        atomic; with a Meta that changes the
//	                                 user, index steps around it
//	Create             atomic        index first, then the hash, then a
//	                                 check that the index still has it
//	Rotate             atomic        index the new key, take (read and
//	                                 delete) the old hash, create the new
//	                                 one, check the index, unindex the old
//	Rotate with Limit  atomic        under the user's lease: count, take,
//	                                 commit to the index, evict, create;
//	                                 see Session limits
//	ListUser           atomic        best effort: may miss a session in
//	                                 the middle of a Rotate
//	DeleteUser         atomic        lease, delete each, unindex: never
//	                                 misses a session, see below, but
//	                                 may not count one caught mid-Rotate
//
// Why the Cluster sequences are safe: Rotate deletes the old record
// before it creates the new one, so a failure in between loses the session
// (the user signs in again) and never leaves two valid tokens; and of
// concurrent Rotates exactly one takes the old record. A session is
// indexed before its hash exists, so an index never lacks a live session.
// DeleteUser first takes the user's lease, after which no session can be
// added to the index; a session whose Create or Rotate was already under
// way is in the index, so DeleteUser deletes it, or, if its hash did not
// exist yet, removes it from the index, and the writer's final check finds
// it unindexed and deletes what it wrote. "Sign out everywhere" therefore
// cannot be escaped by rotating. The exception is an Update with a Meta
// that changes the user id concurrently with a DeleteUser of the old user
// (the Manager never does this: a new identity always rotates).
//
// # Session limits
//
// A Rotate whose Delta carries a hallpass.Limit with Max > 0 counts the
// live records of the user the record has afterwards, other than its two
// keys, and refuses (hallpass.ErrTooManySessions, nothing changed) or
// deletes the oldest (earliest AuthTime, none being earliest; ties by the
// lower handle, in byte order) so that at most Max remain, the rotated
// one included. Without a Limit, a Rotate is as it was; with one it costs
// one round trip more on a standalone server (reading the index first) and
// several more in a Cluster. Evicted sessions are deleted like any
// Delete: Redis's invalidations drop them from every instance's
// client-side cache and own writes, and this instance forgets them at
// once; Limit.Evicted is called with their handles after the Rotate
// succeeded, never for one that failed.
//
// On a standalone server (and with a prefix that pins one slot) the count,
// the evictions and the move are one script, declaring the index, the
// lease and every session the index named when read just before; if the
// index names one more by then, the script takes the lease and the call
// repeats, as ListUser does. Members whose record is gone, expired or
// another user's are dropped from the index on the way.
//
// In a Cluster no script can reach the sessions and the index at once, so
// the user's index is the only place where limited Rotates meet, and the
// lease orders them. A limited Rotate (1) peeks at both keys as a plain
// one does; (2) takes the lease with a token of its own, by a script that
// refuses while another token holds it, and reads the index; (3) reads
// the records the index names, and counts those live and the user's; (4)
// if RefuseNew and over the limit, releases the lease and fails, having
// changed nothing; (5) takes the old record; (6) commits to the index, by
// a script that does so only while the lease is still its token's: the new
// key in, the evicted keys out, the lease renewed for another second; (7)
// deletes the evicted records, (8) creates the new one, and (9) checks that
// the new key is still indexed, unindexes the old one and releases the
// lease, in one script. If the lease was lost before (6) (it expired, or a
// DeleteUser took it), nothing is committed and the count is repeated; if
// the repeat refuses, the old record taken in (5) is put back as it was.
//
// Why two logins at once cannot both slip past the limit: each holds the
// lease from its count (2, 3) to its last step (9); a limited Rotate takes
// the lease only when it is free or already its own; and every write that
// adds a session to an index (Create, Rotate, an Update that changes the
// user) waits while it is held. So the second login's count comes after
// the first has committed and created its session, and sees it. Only a
// DeleteUser takes the lease from a holder: before (6) that makes the
// holder count again; after (6) the DeleteUser unindexes the new key, and
// (9) then deletes the new session as any Cluster write racing a
// DeleteUser does. The lease
// lasts a second from (2) and again from (6); a login slower than that
// between those steps is noticed in (6) and counts again, and one slower
// than that after (6) could overlap the next, which is the bound of the
// guarantee. What the count cannot see is a session whose hash does not
// exist yet although its key is indexed: an unlimited Create, Rotate or
// Update of the user that indexed its key before the lease was taken and
// writes its hash after the count (a Renew of one of the user's sessions,
// say, within the few milliseconds of its move); such a race may leave
// the user one session over the limit. The Manager adds sessions to a
// user only by limited Rotates when it has a limit, so among logins the
// limit holds. Readers in between may observe the old session gone
// before the new one exists (from (5) to (8), as in any Cluster Rotate),
// the new key indexed without a record (skipped), and the evicted
// sessions unindexed but still loadable until (7) deletes them; never
// more than Max live sessions of the user from logins alone. A failure
// after (6) loses the rotated session, as a Cluster Rotate's failure does,
// and the evicted ones stay ended.
//
// # Broadcasts
//
// A Store is a hallpass.Broadcaster, so hallpass.Revocations pushes each
// revocation to every instance at once. Broadcast checks the message
// (UTF-8 JSON text without NUL, at most 1 KiB) and PUBLISHes it on the
// channel KeyPrefix + "broadcast", so stores with other prefixes on the
// same server hear nothing. With a rueidis cluster client it uses sharded
// pub/sub instead (SPUBLISH, SSUBSCRIBE; Redis 7): the channel lives on
// the shard that owns its slot, where rueidis sends both the publisher and
// the subscription, so a message takes no extra hop. A plain PUBLISH would
// work cluster-wide too, but goes from the node it reached to every other
// over the cluster bus, which on a loopback test Cluster showed tails of
// tens of milliseconds where the direct path stayed under one. The price is that the
// server ends a sharded subscription when the slot moves to another shard;
// the store takes that like a lost connection (below).
//
// The first Subscribe opens one dedicated connection (a rueidis
// Dedicate with pub/sub hooks) and SUBSCRIBEs in the background;
// Subscribe returns at once. Each subscriber has its own goroutine and a
// queue of 256 messages: the connection's reader only queues, so a slow
// subscriber holds up no one, and one that falls further behind loses the
// newer messages and is called with nil (reload) instead. Whenever the
// subscription takes effect, first or after the connection was lost
// (closed, reset, or declared dead by rueidis's ping after a stall) or
// ended by the server (the store retries every 20 ms to 1 s), every
// subscriber registered by then
// is called with nil: messages sent before may have been missed. A stop
// unregisters its subscriber, and the call in progress, if any, is the
// last; when the last subscriber stops, the subscription and its
// connection end, and the next Subscribe starts them again. Close ends
// them all.
//
// # Client-side caching
//
// Load reads with rueidis's server-assisted client-side caching
// (DoCache, CLIENT TRACKING): a record read recently is served from this
// process without a round trip, and any write to it anywhere (an Update,
// a logout or revocation on another instance) makes Redis push an
// invalidation that drops the cached copy, typically well within a
// millisecond. Options.CacheTTL bounds how long a copy may be served if an
// invalidation is lost, and so is the staleness bound; a negative CacheTTL
// turns caching off, and every Load is exactly one round trip. The cache's
// memory is rueidis's: up to ClientOption.CacheSizeEachConn per connection
// (128 MiB by default), evicted least recently used first.
//
// rueidis keeps the cache per connection and drops it when the connection
// breaks (a reset, a refused reconnect, or a stalled connection declared
// dead by its ping and write timeout), before it reconnects: a revocation
// made while this instance was cut off can never be served from cache
// afterwards. During a stall, before the connection is declared dead,
// cached records are still served, for at most the connection's write
// timeout (ConnWriteTimeout; Open sets 2 s unless the URL says otherwise)
// plus its ping interval (Dialer.KeepAlive, 1 s by default). Caching needs
// RESP3 (Redis 6 or newer); with a client made with DisableCache, set a
// negative CacheTTL too, or every Load pays for cache bookkeeping it cannot
// use.
//
// Decoding a cached reply into a Record on every hit would cost more than
// the hit itself, so the store memoizes the record decoded from each cached
// reply and, while rueidis keeps returning that same reply, returns the
// same read-only *hallpass.Record. A write from this instance also leaves
// a version floor (see floors in memo.go), so a Load right after this
// instance's own write never returns the record as it was before.
//
// # Own writes
//
// Any write drops the cached copy, this instance's own writes included,
// so with rueidis's cache alone the Load of every write request after the
// first would be a round trip. Instead, on a standalone server with
// caching on, the store sends its data updates (an Update without a Meta:
// what nearly every write request does) on a connection of its own, taken
// from the client with Dedicate, that tracks what it writes with CLIENT
// TRACKING NOLOOP and has the invalidations sent (REDIRECT) to a second
// such connection: Redis then reports every change to a record this
// instance updated, by anyone else (another instance, a revocation, a
// client that is not a Store, expiry), but not its own updates. The record
// an update leaves, computed from the record this instance read just
// before (same handle and one version less, so the same state) and the
// delta, is kept as this instance's current copy, and the next Load
// returns it without a round trip: a write request costs one round trip,
// the update. An invalidation drops the copy, typically well within a
// millisecond, as for rueidis's cache; so do a flush, CacheTTL after the
// write, and the loss of either connection: all copies go, at once when
// the invalidations' connection goes, within 100 ms if the update
// connection alone is closed (the other checks for it), and after a stall
// by rueidis's ping as above; while none is up, updates take the shared
// connections as without this. Without RESP3 (CLIENT INFO does not say
// resp=3) the store does not do this. A Store made with New must be closed
// before its client, to release the two connections.
//
// # Metrics
//
// A Store is a metrics.CacheStatser (package
// github.com/hallpass/hallpass/metrics): CacheStats counts the Loads
// answered without a round trip, by rueidis's cache or this instance's own
// write, and those that went to Redis, with one atomic add per Load. With
// caching off both stay 0.
//
// It is not a metrics.Counter, so it has no hallpass_sessions_active
// gauge: nothing in Redis holds the number of sessions under a prefix.
// Sessions are spread over slots and shards, user indexes cover signed-in
// users only and are trimmed lazily, and Redis expires hashes without
// telling anyone, so an exact count would take a SCAN of the whole
// keyspace on every node at every scrape, and a counter kept up to date
// would add work to every write and could not see expiries. For a size, use
// the server's own INFO keyspace (keys per database, every prefix and
// the indexes included, as redis_exporter reports it), or the rates of
// hallpass_events_total (created against ended; silent expiries in
// Redis are not events, so this is an estimate).
//
// # Errors
//
// Errors are wrapped as "redisstore: <operation>: ..." and never contain a
// key or session data. A cancelled context gives an error that matches
// context.Canceled; a call cancelled after its script was sent may still
// have taken effect, but whole, like any write whose reply was lost.
//
// # Expiry
//
// Redis deletes a record at its deadline, so Load normally reports an
// expired session as hallpass.ErrNotFound, and the Manager reports an
// unknown token rather than an idle or absolute expiry. Only when the
// store's clock is ahead of Redis's, and the hash is still there, does
// Load return a *hallpass.ExpiredError.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

// Options configure a Store. The zero value of each field, and a nil
// *Options, pick the defaults.
type Options struct {
	// KeyPrefix starts every key the store uses. Default "hallpass:". It
	// may contain a hash tag ("{...}") to keep every key in one Cluster
	// slot, but no other '{'.
	KeyPrefix string
	// CacheTTL is how long Load may serve a record from the client-side
	// cache, or as this instance's own write left it, without hearing from
	// Redis: the bound on staleness should an invalidation be lost.
	// Default one minute; negative disables caching.
	CacheTTL time.Duration
	// Now returns the current time, default time.Now. A record whose
	// deadline has passed by this clock is treated as missing even if
	// Redis has not deleted it yet.
	Now func() time.Time
	// Cluster selects the Cluster-safe operations even when the client is
	// not a rueidis cluster client, for a proxy that shards by key. A
	// cluster client selects them by itself.
	Cluster bool
}

const (
	defaultPrefix   = "hallpass:"
	defaultCacheTTL = time.Minute
	// defaultTimeout is Open's dial and connection write timeout unless the
	// URL sets them (dial_timeout, write_timeout): rueidis would wait ten
	// seconds to declare a stalled connection dead, and requests would
	// hang that long before failing.
	defaultTimeout = 2 * time.Second
	// openRetries is how often a client from Open retries a read after a
	// network error.
	openRetries = 2
	// leaseTTL is how long a user's index lease lasts if its holder does
	// not release it, and so how long writers may wait for one.
	leaseTTL = time.Second
	// listTries bounds ListUser's and DeleteUser's attempts; the lease makes
	// the second succeed unless it expired in between.
	listTries = 5
)

// Store is a hallpass.Store in Redis. It is safe for concurrent use.
type Store struct {
	client   rueidis.Client
	owned    bool
	prefix   string
	cacheTTL time.Duration // 0 when caching is off
	now      func() time.Time
	cluster  bool
	memo     *memo
	noMemo   bool // benchmarks measure the decode the memo saves
	floors   *floors
	writer   *writer // nil unless caching on a standalone server
	hub      *hub    // Broadcast and Subscribe

	closeOnce sync.Once

	stats cacheStats // CacheStats
}

var _ hallpass.Store = (*Store)(nil)

// New returns a Store that uses client. With caching on a standalone
// server it takes two connections of the client's for its writes (see Own
// writes in the package doc), and one more while anything is subscribed
// (see Broadcasts); Close gives them back. Close does not close
// the client, and must come before the client's Close.
func New(client rueidis.Client, opts *Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: new: nil client")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultPrefix
	}
	pinned, err := prefixTag(o.KeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("redisstore: new: %w", err)
	}
	switch {
	case o.CacheTTL == 0:
		o.CacheTTL = defaultCacheTTL
	case o.CacheTTL < 0:
		o.CacheTTL = 0
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{
		client:   client,
		prefix:   o.KeyPrefix,
		cacheTTL: o.CacheTTL,
		now:      o.Now,
		cluster:  (o.Cluster || client.Mode() == rueidis.ClientModeCluster) && !pinned,
		memo:     new(memo),
		hub:      newHub(client, o.KeyPrefix),
	}
	if s.cacheTTL > 0 {
		s.floors = newFloors(s.cacheTTL)
		// A Cluster would need a tracking connection per node.
		if client.Mode() == rueidis.ClientModeStandalone && !s.cluster && !o.Cluster {
			s.writer = newWriter(client, s.memo, s.prefix, s.cacheTTL)
		}
	}
	return s, nil
}

// Open connects to the Redis server or Cluster at url (redis://,
// rediss://, unix://; see rueidis.ParseURL) and returns a Store that owns
// the client: Close closes it. Unless the URL sets dial_timeout or
// write_timeout, both are 2 s, and reads are retried twice after network
// errors, so a dead or stalled server fails requests within a few seconds
// instead of hanging them (rueidis's defaults would wait ten seconds for a
// stalled connection, and retry reads for as long as the request's context
// allows, forever without a deadline).
func Open(url string, opts *Options) (*Store, error) {
	co, err := clientOption(url, opts)
	if err != nil {
		return nil, fmt.Errorf("redisstore: open: %w", err)
	}
	client, err := rueidis.NewClient(co)
	if err != nil {
		return nil, fmt.Errorf("redisstore: open: %w", err)
	}
	s, err := New(client, opts)
	if err != nil {
		client.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// clientOption returns the client options Open uses for url.
func clientOption(url string, opts *Options) (rueidis.ClientOption, error) {
	co, err := rueidis.ParseURL(url)
	if err != nil {
		return co, err
	}
	if co.Dialer.Timeout == 0 {
		co.Dialer.Timeout = defaultTimeout
	}
	if co.ConnWriteTimeout == 0 {
		co.ConnWriteTimeout = defaultTimeout
	}
	// rueidis retries reads after network errors until the context ends,
	// which without a request deadline is never: a session store should
	// fail closed instead, after a couple of quick tries.
	co.RetryDelay = func(attempts int, _ rueidis.Completed, _ error) time.Duration {
		if attempts > openRetries {
			return -1
		}
		return time.Duration(attempts) * time.Millisecond
	}
	if opts != nil && opts.CacheTTL < 0 {
		co.DisableCache = true // no tracking on the server either
	}
	return co, nil
}

// Close releases the connections the store writes and subscribes on,
// ends every subscription, and closes the client if Open created it. It
// may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.hub.close()
		if s.writer != nil {
			s.writer.close()
		}
		if s.owned {
			s.client.Close()
		}
	})
	return nil
}

// prefixTag reports whether prefix pins every key to one slot with a hash
// tag. A '{' that opens no tag, or an empty one, would make Redis hash
// some keys whole, splitting a user's index from its lease, so it is
// refused.
func prefixTag(prefix string) (bool, error) {
	i := strings.IndexByte(prefix, '{')
	if i < 0 {
		return false, nil
	}
	if j := strings.IndexByte(prefix[i+1:], '}'); j > 0 {
		return true, nil
	}
	return false, errors.New("KeyPrefix has a '{' that opens no hash tag")
}

// sessionKey returns the name of the hash holding the session at k.
func (s *Store) sessionKey(k hallpass.Key) string {
	var h [2*len(k) + 2]byte
	h[0], h[9] = '{', '}'
	hex.Encode(h[1:9], k[:4])
	hex.Encode(h[10:], k[4:])
	return s.prefix + "s:" + string(h[:])
}

func (s *Store) indexKey(user string) string { return s.prefix + "{u:" + user + "}" }

func (s *Store) leaseKey(user string) string { return s.prefix + "{u:" + user + "}:lk" }

func (s *Store) nowMS() string { return msString(s.now()) }

// fail wraps err with the operation. If ctx ended, the error says so too,
// whatever the client reported.
func fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("redisstore: %s: %w: %w", op, cerr, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

var errBusy = errors.New("the user's session index stayed locked")

// wait sleeps before retrying a write refused by a lease, and gives up
// once the lease must have expired twice over.
func wait(ctx context.Context, start time.Time, try int) error {
	if time.Since(start) > 2*leaseTTL {
		return errBusy
	}
	t := time.NewTimer(min(50*time.Microsecond<<min(try, 7), 5*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Load implements hallpass.Store.
func (s *Store) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fail(ctx, "load", err)
	}
	rec, err := s.load(ctx, key)
	if err != nil {
		return nil, fail(ctx, "load", err)
	}
	if rec == nil {
		return nil, hallpass.ErrNotFound
	}
	if rec.Expired(s.now()) {
		return nil, &hallpass.ExpiredError{Record: rec}
	}
	return rec, nil
}

func (s *Store) load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	if s.writer != nil {
		if rec := s.writer.own(key); rec != nil && s.floors.met(key, rec) {
			s.stats.hits.Add(1)
			return rec, nil
		}
	}
	k := s.sessionKey(key)
	if s.cacheTTL == 0 {
		return s.loadDirect(ctx, key, k) // not counted: no cache
	}
	res := s.client.DoCache(ctx, s.client.B().Hgetall().Key(k).Cache(), s.cacheTTL)
	msg, err := res.ToMessage()
	if err != nil {
		s.stats.misses.Add(1)
		return nil, err
	}
	rec := s.memo.record(key, &msg)
	if rec == nil {
		m, err := msg.AsStrMap()
		if err != nil {
			s.count(res.IsCacheHit())
			return nil, err
		}
		var size int
		if rec, size, err = decodeMap(key, m); err != nil {
			s.count(res.IsCacheHit())
			return nil, err
		}
		// Only a hit is worth remembering for later hits: the reply of a
		// miss is not the value they return. A miss still gives the base
		// of this instance's next write of the record (see writer), or at
		// least whose record it is.
		switch {
		case rec == nil:
		case size > memoMaxData || s.noMemo:
			s.memo.hint(key, rec.UserID)
		case res.IsCacheHit():
			s.memo.remember(key, &msg, rec)
		case s.writer != nil:
			s.memo.seen(key, rec)
		default:
			s.memo.hint(key, rec.UserID)
		}
	}
	if !s.floors.met(key, rec) {
		s.stats.misses.Add(1) // the cache was behind this instance's write
		return s.loadDirect(ctx, key, k)
	}
	s.count(res.IsCacheHit())
	return rec, nil
}

// count counts a Load with caching on for CacheStats.
func (s *Store) count(hit bool) {
	if hit {
		s.stats.hits.Add(1)
	} else {
		s.stats.misses.Add(1)
	}
}

func (s *Store) loadDirect(ctx context.Context, key hallpass.Key, k string) (*hallpass.Record, error) {
	m, err := s.client.Do(ctx, s.client.B().Hgetall().Key(k).Build()).AsStrMap()
	if err != nil {
		return nil, err
	}
	rec, size, err := decodeMap(key, m)
	switch {
	case rec == nil || err != nil:
	case s.writer != nil && size <= memoMaxData:
		s.memo.seen(key, rec)
	default:
		s.memo.hint(key, rec.UserID)
	}
	return rec, err
}

// wrote records this instance's write of key for later reads: version v,
// or 0 when the write removed the record.
func (s *Store) wrote(key hallpass.Key, v int64) {
	if s.floors != nil {
		s.floors.set(key, v)
	}
}
