// Package memstore is a hallpass.Store that keeps sessions in the memory
// of one process. Sessions do not survive a restart and are not shared
// between processes; use it for a single instance, for development and in
// tests.
package memstore

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hallpass/hallpass"
)

// Options configure a Store. The zero value of each field picks a default.
type Options struct {
	// Shards is how many independently locked partitions hold the
	// records, rounded up to a power of two, at most 65536. Default 64.
	Shards int
	// SweepInterval is how often expired records are removed from memory.
	// They are invisible from their deadline on either way. Default one
	// minute.
	SweepInterval time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

const (
	defaultShards        = 64
	maxShards            = 1 << 16
	defaultSweepInterval = time.Minute
	cacheLine            = 64
)

// optimisticTries bounds how often ListUser and DeleteUser retry against
// concurrent changes to a user's sessions before they lock every shard
// instead. A variable so that tests can force the fallback.
var optimisticTries = 4

// Store is an in-memory hallpass.Store. Create it with New and stop it
// with Close.
//
// Records live in shards chosen by key, each behind its own lock, so
// requests for different sessions rarely contend. A separate index maps
// each signed-in user to the keys of their sessions, for ListUser and
// DeleteUser; guests are not indexed.
//
// Locking: a method locks the record shards it needs, in ascending shard
// order, and then, while still holding them, the index shards it needs,
// also in ascending order. Nothing takes a record shard while holding an
// index shard, so there is no deadlock, and because the index changes
// only under the record locks, anyone holding a record's shard lock sees
// the record and its index entries agree.
type Store struct {
	shards []recordShard
	users  []userShard
	mask   uint64 // len(shards)-1 == len(users)-1
	seed   maphash.Seed
	now    func() time.Time

	interval  time.Duration
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

type recordMap struct {
	mu sync.RWMutex
	m  map[hallpass.Key]*hallpass.Record
}

// recordShard is padded to a cache line so that locking one shard does not
// slow down cores working on its neighbours.
type recordShard struct {
	recordMap
	_ [cacheLine - unsafe.Sizeof(recordMap{})%cacheLine]byte
}

type userMap struct {
	mu sync.RWMutex
	m  map[string]*userKeys
}

type userShard struct {
	userMap
	_ [cacheLine - unsafe.Sizeof(userMap{})%cacheLine]byte
}

// userKeys is the set of a user's keys. gen changes with every change to
// the set, and a set that empties is dropped and later replaced by a new
// one, so a reader can tell whether the set changed by comparing the
// pointer and gen it saw before with those it sees after.
type userKeys struct {
	keys map[hallpass.Key]struct{}
	gen  uint64
}

// New returns a Store and starts its sweeper. nil opts means defaults.
// Call Close to stop the sweeper when the store is no longer needed.
func New(opts *Options) *Store {
	var o Options
	if opts != nil {
		o = *opts
	}
	n := defaultShards
	if o.Shards > 0 {
		n = 1 << bits.Len(uint(min(o.Shards, maxShards)-1))
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Store{
		shards:   make([]recordShard, n),
		users:    make([]userShard, n),
		mask:     uint64(n - 1),
		seed:     maphash.MakeSeed(),
		now:      o.Now,
		interval: o.SweepInterval,
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[hallpass.Key]*hallpass.Record)
		s.users[i].m = make(map[string]*userKeys)
	}
	go s.sweepLoop()
	return s
}

var _ hallpass.Store = (*Store)(nil)

// shardIndex picks a shard from the key's own bits: keys are SHA-256
// outputs, already uniform, so hashing them again would buy nothing.
func (s *Store) shardIndex(k hallpass.Key) uint64 {
	return binary.LittleEndian.Uint64(k[:8]) & s.mask
}

func (s *Store) userIndex(userID string) uint64 {
	return maphash.String(s.seed, userID) & s.mask
}

// Create implements hallpass.Store.
func (s *Store) Create(ctx context.Context, r *hallpass.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	if r.Expired(now) {
		// Storing it would only make work for the sweeper, but a live
		// record at the key must still be reported.
		sh := &s.shards[s.shardIndex(r.Key)]
		sh.mu.RLock()
		old := sh.m[r.Key]
		taken := old != nil && !old.Expired(now)
		sh.mu.RUnlock()
		if taken {
			return hallpass.ErrExists
		}
		return nil
	}
	c := r.Clone() // before locking: allocation need not block the shard
	c.Version = 1
	sh := &s.shards[s.shardIndex(c.Key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	oldUser := ""
	if old := sh.m[c.Key]; old != nil {
		if !old.Expired(now) {
			return hallpass.ErrExists
		}
		oldUser = old.UserID
	}
	sh.m[c.Key] = c
	s.reindex(oldUser, c.Key, c.UserID, c.Key)
	return nil
}

// Load implements hallpass.Store.
func (s *Store) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.now()
	sh := &s.shards[s.shardIndex(key)]
	sh.mu.RLock()
	r := sh.m[key]
	if r == nil {
		sh.mu.RUnlock()
		return nil, hallpass.ErrNotFound
	}
	sh.mu.RUnlock()
	// Stored records are never changed in place (Update and Rotate
	// replace them), so handing out the shared pointer is safe and makes
	// Load free of allocations.
	if r.Expired(now) {
		// Not swept yet: say whose session it was, so the engine can report
		// the expiry rather than an unknown token.
		return nil, &hallpass.ExpiredError{Record: r}
	}
	return r, nil
}

// Update implements hallpass.Store.
func (s *Store) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	sh := &s.shards[s.shardIndex(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.m[key]
	if r == nil || r.Expired(now) {
		return hallpass.ErrNotFound
	}
	// Copy on write: readers may hold r. Apply copies d's entries into
	// the copy's own map, so the store keeps none of the caller's maps.
	c := r.Clone()
	d.Apply(c)
	c.Version++
	sh.m[key] = c
	if c.UserID != r.UserID {
		s.reindex(r.UserID, key, c.UserID, key)
	}
	return nil
}

// Rotate implements hallpass.Store.
func (s *Store) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	if lim := d.Limit; lim != nil && lim.Max > 0 {
		evicted, err := s.rotateLimited(from, to, d, now)
		if err == nil && lim.Evicted != nil {
			for _, h := range evicted {
				lim.Evicted(h)
			}
		}
		return err
	}
	fi, ti := s.shardIndex(from), s.shardIndex(to)
	fs, ts := &s.shards[fi], &s.shards[ti]
	switch {
	case fi == ti:
		fs.mu.Lock()
		defer fs.mu.Unlock()
	case fi < ti:
		fs.mu.Lock()
		defer fs.mu.Unlock()
		ts.mu.Lock()
		defer ts.mu.Unlock()
	default:
		ts.mu.Lock()
		defer ts.mu.Unlock()
		fs.mu.Lock()
		defer fs.mu.Unlock()
	}
	r, err := s.rotatable(fs, ts, from, to, now)
	if err != nil {
		return err
	}
	s.move(fs, ts, r, to, d)
	return nil
}

// rotateLimited is Rotate with a limit. It locks every shard: the user's
// other sessions may be anywhere, and none of them may appear, move or
// end between the count and the move. Logins are rare enough to pay
// for that. It returns the handles of the sessions it ended.
func (s *Store) rotateLimited(from, to hallpass.Key, d hallpass.Delta, now time.Time) ([]string, error) {
	s.lockAll(false)
	defer s.unlockAll(false)
	fs, ts := &s.shards[s.shardIndex(from)], &s.shards[s.shardIndex(to)]
	r, err := s.rotatable(fs, ts, from, to, now)
	if err != nil {
		return nil, err
	}
	user := r.UserID
	if d.Meta != nil {
		user = d.Meta.UserID
	}
	var evicted []string
	if user != "" {
		keys, _, _ := s.userKeys(user, nil)
		var others []*hallpass.Record
		for _, k := range keys {
			if o := s.shards[s.shardIndex(k)].m[k]; k != from && k != to && o != nil && !o.Expired(now) {
				others = append(others, o)
			}
		}
		excess := len(others) - d.Limit.Max + 1
		if excess > 0 && d.Limit.RefuseNew {
			return nil, hallpass.ErrTooManySessions
		}
		if excess > 0 {
			slices.SortFunc(others, func(a, b *hallpass.Record) int {
				if c := a.AuthTime.Compare(b.AuthTime); c != 0 {
					return c
				}
				return strings.Compare(a.Handle, b.Handle)
			})
			for _, o := range others[:excess] {
				delete(s.shards[s.shardIndex(o.Key)].m, o.Key)
				s.reindex(user, o.Key, "", o.Key)
				evicted = append(evicted, o.Handle)
			}
		}
	}
	s.move(fs, ts, r, to, d)
	return evicted, nil
}

// rotatable returns the live record at from if it may move to to, with
// the locks of both shards held. A dead occupant of to is removed.
func (s *Store) rotatable(fs, ts *recordShard, from, to hallpass.Key, now time.Time) (*hallpass.Record, error) {
	r := fs.m[from]
	if r == nil || r.Expired(now) {
		return nil, hallpass.ErrNotFound
	}
	if old := ts.m[to]; old != nil {
		if !old.Expired(now) { // includes from == to
			return nil, hallpass.ErrExists
		}
		// Unindex the dead occupant first: it may have the same user as
		// r, whose entry for to is added by move.
		delete(ts.m, to)
		s.reindex(old.UserID, to, "", to)
	}
	return r, nil
}

// move moves r to to, applying d, with the locks of both shards held.
func (s *Store) move(fs, ts *recordShard, r *hallpass.Record, to hallpass.Key, d hallpass.Delta) {
	c := r.Clone() // copy on write: readers may hold r
	delete(fs.m, r.Key)
	d.Apply(c)
	c.Key = to
	c.Version++
	ts.m[to] = c
	s.reindex(r.UserID, r.Key, c.UserID, to)
}

// Delete implements hallpass.Store.
func (s *Store) Delete(ctx context.Context, keys ...hallpass.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		sh := &s.shards[s.shardIndex(k)]
		sh.mu.Lock()
		if r := sh.m[k]; r != nil {
			delete(sh.m, k)
			s.reindex(r.UserID, k, "", k)
		}
		sh.mu.Unlock()
	}
	return nil
}

// ListUser implements hallpass.Store. It returns no records for the empty
// user ID: guests are not indexed.
//
// It reads the user's keys from the index and then each record under its
// own shard lock. A Rotate in between could move a record to a key it has
// not read, so it repeats the reading until the user's keys stayed the
// same throughout, and after a few tries locks every shard instead.
func (s *Store) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if userID == "" {
		return nil, nil
	}
	now := s.now()
	var keys []hallpass.Key
	for range optimisticTries {
		var set *userKeys
		var gen uint64
		keys, set, gen = s.userKeys(userID, keys[:0])
		if set == nil {
			return nil, nil
		}
		out := make([]*hallpass.Record, 0, len(keys))
		for _, k := range keys {
			sh := &s.shards[s.shardIndex(k)]
			sh.mu.RLock()
			if r := sh.m[k]; r != nil && r.UserID == userID && !r.Expired(now) {
				out = append(out, r)
			}
			sh.mu.RUnlock()
		}
		if s.userUnchanged(userID, set, gen) {
			return out, nil
		}
	}
	s.lockAll(true)
	defer s.unlockAll(true)
	keys, _, _ = s.userKeys(userID, keys[:0])
	out := make([]*hallpass.Record, 0, len(keys))
	for _, k := range keys {
		if r := s.shards[s.shardIndex(k)].m[k]; r != nil && !r.Expired(now) {
			out = append(out, r)
		}
	}
	return out, nil
}

// DeleteUser implements hallpass.Store. For the empty user ID it removes
// nothing: guests are not indexed. Expired records it removes are not
// counted.
//
// Like ListUser it reads the index and then the records, so it repeats
// until the index shows nothing left to remove, which makes it miss no
// session that a concurrent Rotate moves to a new key.
func (s *Store) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if userID == "" {
		return 0, nil
	}
	now := s.now()
	removed := 0
	var keys []hallpass.Key
	for range optimisticTries {
		keys, _, _ = s.userKeys(userID, keys[:0])
		keys = dropKept(keys, keep)
		if len(keys) == 0 {
			return removed, nil
		}
		for _, k := range keys {
			sh := &s.shards[s.shardIndex(k)]
			sh.mu.Lock()
			if r := sh.m[k]; r != nil && r.UserID == userID {
				delete(sh.m, k)
				s.reindex(userID, k, "", k)
				if !r.Expired(now) {
					removed++
				}
			}
			sh.mu.Unlock()
		}
	}
	s.lockAll(false)
	defer s.unlockAll(false)
	keys, _, _ = s.userKeys(userID, keys[:0])
	for _, k := range dropKept(keys, keep) {
		sh := &s.shards[s.shardIndex(k)]
		if r := sh.m[k]; r != nil {
			delete(sh.m, k)
			s.reindex(userID, k, "", k)
			if !r.Expired(now) {
				removed++
			}
		}
	}
	return removed, nil
}

func dropKept(keys, keep []hallpass.Key) []hallpass.Key {
	if len(keep) == 0 {
		return keys
	}
	out := keys[:0]
	for _, k := range keys {
		kept := false
		for _, kk := range keep {
			if k == kk {
				kept = true
				break
			}
		}
		if !kept {
			out = append(out, k)
		}
	}
	return out
}

// Len returns the number of live records. It visits every record, so it
// is meant for tests and occasional metrics, not for request paths.
func (s *Store) Len() int {
	now := s.now()
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for _, r := range sh.m {
			if !r.Expired(now) {
				n++
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// Count is Len for package metrics (its Counter interface): the live
// records, the library's own (revocation list, audit log) included.
func (s *Store) Count(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.Len(), nil
}

// Close stops the sweeper and waits for it to finish. The store keeps
// working afterwards, but expired records are no longer freed. Close may
// be called any number of times.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.stopped
	return nil
}

func (s *Store) sweepLoop() {
	defer close(s.stopped)
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.sweep()
		}
	}
}

// sweep frees expired records. It finds them under a read lock, so that
// requests for a shard wait only while the few it found are removed.
func (s *Store) sweep() {
	now := s.now()
	var expired []hallpass.Key
	for i := range s.shards {
		sh := &s.shards[i]
		expired = expired[:0]
		sh.mu.RLock()
		for k, r := range sh.m {
			if r.Expired(now) {
				expired = append(expired, k)
			}
		}
		sh.mu.RUnlock()
		if len(expired) == 0 {
			continue
		}
		sh.mu.Lock()
		for _, k := range expired {
			// Recheck: the key may have been given a new record meanwhile.
			if r := sh.m[k]; r != nil && r.Expired(now) {
				delete(sh.m, k)
				s.reindex(r.UserID, k, "", k)
			}
		}
		sh.mu.Unlock()
	}
}

// userKeys appends the user's keys to buf and returns them with the set
// and its generation, for userUnchanged.
func (s *Store) userKeys(userID string, buf []hallpass.Key) ([]hallpass.Key, *userKeys, uint64) {
	us := &s.users[s.userIndex(userID)]
	us.mu.RLock()
	defer us.mu.RUnlock()
	set := us.m[userID]
	if set == nil {
		return buf, nil, 0
	}
	for k := range set.keys {
		buf = append(buf, k)
	}
	return buf, set, set.gen
}

func (s *Store) userUnchanged(userID string, set *userKeys, gen uint64) bool {
	us := &s.users[s.userIndex(userID)]
	us.mu.RLock()
	defer us.mu.RUnlock()
	return us.m[userID] == set && set.gen == gen
}

// reindex replaces the index entry (oldUser, oldKey) with (newUser,
// newKey); an empty user means no entry. When both users' sets change,
// they change together, so no reader sees the record under neither user
// or under both. The caller holds the shard locks of both keys.
func (s *Store) reindex(oldUser string, oldKey hallpass.Key, newUser string, newKey hallpass.Key) {
	if oldUser == newUser && oldKey == newKey {
		return
	}
	var oi, ni uint64
	var ou, nu *userShard
	if oldUser != "" {
		oi = s.userIndex(oldUser)
		ou = &s.users[oi]
	}
	if newUser != "" {
		ni = s.userIndex(newUser)
		nu = &s.users[ni]
	}
	switch {
	case ou == nil && nu == nil:
		return
	case ou == nil || nu == nil || ou == nu:
		one := ou
		if one == nil {
			one = nu
		}
		one.mu.Lock()
		defer one.mu.Unlock()
	case oi < ni:
		ou.mu.Lock()
		defer ou.mu.Unlock()
		nu.mu.Lock()
		defer nu.mu.Unlock()
	default:
		nu.mu.Lock()
		defer nu.mu.Unlock()
		ou.mu.Lock()
		defer ou.mu.Unlock()
	}
	if ou != nil {
		if set := ou.m[oldUser]; set != nil {
			delete(set.keys, oldKey)
			set.gen++
			if len(set.keys) == 0 && oldUser != newUser {
				delete(ou.m, oldUser)
			}
		}
	}
	if nu != nil {
		set := nu.m[newUser]
		if set == nil {
			set = &userKeys{keys: make(map[hallpass.Key]struct{}, 1)}
			nu.m[newUser] = set
		}
		set.keys[newKey] = struct{}{}
		set.gen++
	}
}

// lockAll locks every record shard in order, for the rare fallback that
// must see all of them at one instant.
func (s *Store) lockAll(read bool) {
	for i := range s.shards {
		if read {
			s.shards[i].mu.RLock()
		} else {
			s.shards[i].mu.Lock()
		}
	}
}

func (s *Store) unlockAll(read bool) {
	for i := range s.shards {
		if read {
			s.shards[i].mu.RUnlock()
		} else {
			s.shards[i].mu.Unlock()
		}
	}
}
