package redisstore

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/redis/rueidis"
)

const (
	// memoSlots is the size of the decoded-record memo. It is direct
	// mapped: a key has one slot, chosen by the key's own bits (they are
	// SHA-256 output), and a newer entry simply replaces an older one.
	memoSlots = 1 << 12
	// memoMaxData is the largest amount of data a memoized record may hold.
	// An entry keeps its reply alive after rueidis has evicted it, so this
	// bounds the memo's memory (memoSlots × memoMaxData = 64 MiB at worst).
	// Larger records are decoded on every read; the decode aliases their
	// values, so it costs per key, not per byte.
	memoMaxData = 16 << 10
)

// memoEntry is what the store remembers about one key: the record decoded
// from a reply rueidis had cached, the record as this instance's own write
// left it, the last record read (the base an own write's result is
// computed from), or only the user a record had, which guesses the user
// index a Rotate or Update must declare.
type memoEntry struct {
	key  hallpass.Key
	msg  rueidis.RedisMessage // the cached reply rec came from; zero if none
	rec  *hallpass.Record
	user string
	// own marks rec as the result of this instance's write, served while
	// the writer's connections that wrote it are up (epoch) and for at
	// most CacheTTL (until, in mono's nanoseconds).
	own   bool
	epoch uint64
	until int64
}

// memo maps a cached reply to the record decoded from it, so that a cache
// hit costs a comparison instead of a decode. A reply's identity is the
// RedisMessage value itself: rueidis returns the same value (same backing
// arrays) for every hit on one cache entry and a new one after any
// refetch, and the entry keeps the old reply reachable, so its address
// cannot be reused for a new reply while the comparison might match it.
// An entry without a reply never matches one: a reply is never zero.
type memo struct {
	slots [memoSlots]atomic.Pointer[memoEntry]
}

func (m *memo) slot(k hallpass.Key) *atomic.Pointer[memoEntry] {
	return &m.slots[slotOf(k)]
}

func slotOf(k hallpass.Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) % memoSlots }

// record returns the record decoded from msg, if remembered.
func (m *memo) record(k hallpass.Key, msg *rueidis.RedisMessage) *hallpass.Record {
	if e := m.slot(k).Load(); e != nil && e.key == k && e.rec != nil && e.msg == *msg {
		return e.rec
	}
	return nil
}

func (m *memo) remember(k hallpass.Key, msg *rueidis.RedisMessage, rec *hallpass.Record) {
	m.slot(k).Store(&memoEntry{key: k, msg: *msg, rec: rec, user: rec.UserID})
}

// seen remembers rec, read from Redis but not from a cached reply, as the
// base for computing what this instance's next write of k leaves.
func (m *memo) seen(k hallpass.Key, rec *hallpass.Record) {
	m.slot(k).Store(&memoEntry{key: k, rec: rec, user: rec.UserID})
}

// base returns the last record this instance read or wrote at k, current
// or not.
func (m *memo) base(k hallpass.Key) *hallpass.Record {
	if e := m.slot(k).Load(); e != nil && e.key == k {
		return e.rec
	}
	return nil
}

// hint remembers the user of the record at k, unless the slot says so
// already.
func (m *memo) hint(k hallpass.Key, user string) {
	s := m.slot(k)
	if e := s.Load(); e != nil && e.key == k && e.user == user {
		return
	}
	s.Store(&memoEntry{key: k, user: user})
}

// reset remembers only the user of a record just created at k: whatever
// was remembered about k before belongs to another record.
func (m *memo) reset(k hallpass.Key, user string) {
	m.slot(k).Store(&memoEntry{key: k, user: user})
}

// user returns the last user seen for k.
func (m *memo) user(k hallpass.Key) (string, bool) {
	if e := m.slot(k).Load(); e != nil && e.key == k {
		return e.user, true
	}
	return "", false
}

// forget drops everything remembered about k. A record created anew at k
// must not be mistaken for an older one at the same version.
func (m *memo) forget(k hallpass.Key) {
	s := m.slot(k)
	if e := s.Load(); e != nil && e.key == k {
		s.CompareAndSwap(e, nil)
	}
}

// floors give an instance read-your-writes over the client-side cache.
//
// Redis invalidates a cached key by a push message on the connection that
// read it, which may not be the one a write went out on; and even on the
// same connection Redis 7 sends the push after the write's reply. So for a
// moment after a write returns, the cache may still answer with the record
// as it was before. A floor records what a read must show after this
// instance's write: at least the version the write produced, or no record
// at all after a delete. A cached answer below the floor is ignored in
// favour of a direct read. A floor is dropped when the cache shows it met
// or, at the latest, a CacheTTL after the write, when every entry read
// before the write has expired.
type floors struct {
	n      atomic.Int64 // entries, so that reads skip the locks when none
	ttl    time.Duration
	shards [64]floorShard
}

type floorShard struct {
	mu      sync.Mutex
	m       map[hallpass.Key]floor
	sweepAt time.Time
}

type floor struct {
	min   int64 // lowest acceptable version; 0: the record must be absent
	until time.Time
}

func newFloors(ttl time.Duration) *floors {
	f := &floors{ttl: ttl + time.Second}
	for i := range f.shards {
		f.shards[i].m = make(map[hallpass.Key]floor)
	}
	return f
}

func (f *floors) shard(k hallpass.Key) *floorShard {
	return &f.shards[binary.LittleEndian.Uint64(k[8:16])%uint64(len(f.shards))]
}

// set records that reads of k must now show version min or later, or no
// record when min is 0.
func (f *floors) set(k hallpass.Key, min int64) {
	now := time.Now()
	sh := f.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.m[k]; ok {
		// Of two writes that produced versions, the later version is
		// the floor whichever call returned last.
		if min > 0 && old.min > min {
			min = old.min
		}
	} else {
		f.n.Add(1)
	}
	sh.m[k] = floor{min: min, until: now.Add(f.ttl)}
	if now.After(sh.sweepAt) {
		for k, e := range sh.m {
			if now.After(e.until) {
				delete(sh.m, k)
				f.n.Add(-1)
			}
		}
		sh.sweepAt = now.Add(f.ttl)
	}
}

// met reports whether a cached read that found rec (nil: no record) is
// recent enough. Once the cache has caught up the floor is dropped.
func (f *floors) met(k hallpass.Key, rec *hallpass.Record) bool {
	if f.n.Load() == 0 {
		return true
	}
	sh := f.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e, ok := sh.m[k]
	if !ok {
		return true
	}
	ok = e.min == 0 && rec == nil || e.min > 0 && rec != nil && rec.Version >= e.min
	if ok || time.Now().After(e.until) {
		delete(sh.m, k)
		f.n.Add(-1)
		return true
	}
	return false
}
