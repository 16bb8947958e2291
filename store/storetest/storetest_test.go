package storetest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// refStore is the simplest store that can pass the suite: one mutex, one
// map, scans for users. Each fault makes it break one rule, so that
// TestFaultsAreCaught can show the suite notices.
type refStore struct {
	mu     sync.Mutex
	m      map[hallpass.Key]*hallpass.Record
	users  map[hallpass.Key]string // user at Create, for the staleIndex fault
	faults []string
}

func newRefStore(faults ...string) *refStore {
	return &refStore{m: map[hallpass.Key]*hallpass.Record{}, users: map[hallpass.Key]string{}, faults: faults}
}

func (s *refStore) has(fault string) bool { return slices.Contains(s.faults, fault) }

func (s *refStore) ctxErr(ctx context.Context) error {
	if s.has("ignoreCtx") {
		return nil
	}
	return ctx.Err()
}

func (s *refStore) live(r *hallpass.Record) bool {
	now := time.Now()
	switch {
	case s.has("noExpiry"):
		return true
	case s.has("ignoreAbsolute"):
		return r.IdleDeadline.IsZero() || now.Before(r.IdleDeadline)
	case s.has("wrapFarTimes"):
		// As a store that keeps unix milliseconds in an int64 unchecked.
		wrap := func(t time.Time) time.Time {
			if t.IsZero() {
				return t
			}
			return time.UnixMilli(t.UnixMilli())
		}
		c := *r
		c.IdleDeadline, c.AbsoluteDeadline = wrap(r.IdleDeadline), wrap(r.AbsoluteDeadline)
		return !c.Expired(now)
	}
	return !r.Expired(now)
}

func (s *refStore) Create(ctx context.Context, r *hallpass.Record) error {
	if err := s.ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[r.Key]; old != nil && (s.live(old) || s.has("expiredTaken")) && !s.has("createOverwrites") {
		return hallpass.ErrExists
	}
	c := r.Clone()
	if s.has("keepInputMap") {
		c.Data = r.Data
	}
	if !s.has("createKeepsVersion") {
		c.Version = 1
	}
	if s.has("secondPrecision") {
		c.AuthTime = c.AuthTime.Truncate(time.Second)
		c.CreatedAt = c.CreatedAt.Truncate(time.Second)
	}
	s.mangle(c)
	s.m[c.Key] = c
	s.users[c.Key] = c.UserID
	return nil
}

// mangle applies the faults that lose data on the way in.
func (s *refStore) mangle(r *hallpass.Record) {
	for k, v := range r.Data {
		switch {
		case s.has("dropNull") && string(v) == "null",
			s.has("dropEmptyKey") && k == "":
			delete(r.Data, k)
		case s.has("truncateLarge") && len(v) > 64<<10:
			r.Data[k] = v[:64<<10]
		}
	}
}

func (s *refStore) Load(ctx context.Context, key hallpass.Key) (*hallpass.Record, error) {
	if err := s.ctxErr(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.m[key]
	if r == nil || !s.live(r) {
		return nil, hallpass.ErrNotFound
	}
	if s.has("sharedRecord") {
		return r, nil
	}
	return r.Clone(), nil
}

func (s *refStore) apply(r *hallpass.Record, d hallpass.Delta) {
	if s.has("noClear") {
		d.Clear = false
	}
	if s.has("metaMerge") && d.Meta != nil {
		m := *d.Meta
		if m.ReauthAt.IsZero() {
			m.ReauthAt = r.ReauthAt
		}
		m.Persistent = m.Persistent || r.Persistent
		d.Meta = &m
	}
	if s.has("touchBackwards") && d.Touch != nil {
		r.Touch = *d.Touch
		d.Touch = nil
	}
	remove := d.Remove
	if s.has("setBeforeRemove") {
		d.Remove = nil
	}
	d.Apply(r)
	if s.has("setBeforeRemove") {
		for _, k := range remove {
			delete(r.Data, k)
		}
	}
	if !s.has("noVersionBump") {
		r.Version++
	}
	s.mangle(r)
}

func (s *refStore) Update(ctx context.Context, key hallpass.Key, d hallpass.Delta) error {
	if err := s.ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.m[key]
	switch {
	case r == nil && s.has("updateCreates"):
		r = &hallpass.Record{Key: key}
		s.m[key] = r
	case r == nil, !s.live(r) && !s.has("updateResurrects"):
		return hallpass.ErrNotFound
	}
	if s.has("racyUpdate") {
		// Read, modify, write back without holding the lock throughout.
		c := r.Clone()
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
		s.apply(c, d)
		s.m[key] = c
		return nil
	}
	s.apply(r, d)
	return nil
}

func (s *refStore) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	if err := s.ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.has("targetFirst") {
		if t := s.m[to]; t != nil && s.live(t) {
			return hallpass.ErrExists
		}
	}
	r := s.m[from]
	if r == nil || !s.live(r) {
		return hallpass.ErrNotFound
	}
	if from == to && s.has("rotateSelf") {
		s.apply(r, d)
		return nil
	}
	if t := s.m[to]; t != nil && s.live(t) && !s.has("rotateOverwrites") {
		return hallpass.ErrExists
	}
	if err := s.limit(from, to, r, d); err != nil {
		return err
	}
	if s.has("rotateKeepsOld") {
		r = r.Clone()
	} else {
		delete(s.m, from)
	}
	if s.has("rotateNoDelta") {
		r.Version++
	} else {
		s.apply(r, d)
	}
	r.Key = to
	user := s.users[from]
	if s.has("nonAtomicRotate") {
		s.mu.Unlock()
		time.Sleep(200 * time.Microsecond)
		s.mu.Lock()
	}
	s.m[to] = r
	s.users[to] = user
	return nil
}

// limit enforces d.Limit for a Rotate of r, with s.mu held.
func (s *refStore) limit(from, to hallpass.Key, r *hallpass.Record, d hallpass.Delta) error {
	lim := d.Limit
	if lim == nil || lim.Max <= 0 || s.has("limitIgnored") {
		return nil
	}
	user := r.UserID
	if d.Meta != nil {
		user = d.Meta.UserID
	}
	if user == "" {
		return nil
	}
	var others []*hallpass.Record
	for k, o := range s.m {
		if o.UserID == user && s.live(o) && (k != from || s.has("limitCountsSelf")) && k != to {
			others = append(others, o)
		}
	}
	if s.has("racyLimit") {
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
		s.mu.Lock()
	}
	excess := len(others) - lim.Max + 1
	if excess <= 0 {
		return nil
	}
	if lim.RefuseNew {
		return hallpass.ErrTooManySessions
	}
	slices.SortFunc(others, func(a, b *hallpass.Record) int {
		if c := a.AuthTime.Compare(b.AuthTime); c != 0 {
			return c
		}
		return strings.Compare(a.Handle, b.Handle)
	})
	if s.has("limitEvictsNewest") {
		slices.Reverse(others)
	}
	for _, o := range others[:excess] {
		delete(s.m, o.Key)
		if lim.Evicted != nil && !s.has("limitUnreported") {
			lim.Evicted(o.Handle)
		}
	}
	return nil
}

func (s *refStore) Delete(ctx context.Context, keys ...hallpass.Key) error {
	if err := s.ctxErr(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		delete(s.m, k)
	}
	return nil
}

func (s *refStore) userOf(r *hallpass.Record) string {
	if s.has("staleIndex") {
		return s.users[r.Key]
	}
	return r.UserID
}

func (s *refStore) ListUser(ctx context.Context, userID string) ([]*hallpass.Record, error) {
	if err := s.ctxErr(ctx); err != nil {
		return nil, err
	}
	if userID == "" && !s.has("listGuests") {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*hallpass.Record
	for _, r := range s.m {
		if s.userOf(r) == userID && (s.live(r) || s.has("listExpired")) {
			out = append(out, r.Clone())
		}
	}
	return out, nil
}

func (s *refStore) DeleteUser(ctx context.Context, userID string, keep ...hallpass.Key) (int, error) {
	if err := s.ctxErr(ctx); err != nil {
		return 0, err
	}
	if userID == "" && !s.has("deleteGuests") {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, r := range s.m {
		if s.userOf(r) != userID || (slices.Contains(keep, k) && !s.has("ignoreKeep")) {
			continue
		}
		if s.live(r) || s.has("countExpired") {
			n++
		}
		delete(s.m, k)
	}
	return n, nil
}

// TestReference runs the suite against refStore without faults, a second
// implementation besides memstore, so that the suite does not merely
// describe memstore.
func TestReference(t *testing.T) {
	storetest.Run(t, func(*testing.T) hallpass.Store { return newRefStore() })
}

const faultEnv = "HALLPASS_STORETEST_FAULT"

// TestFaultChild runs the suite against a faulty refStore when
// TestFaultsAreCaught starts it in a child process.
func TestFaultChild(t *testing.T) {
	fault := os.Getenv(faultEnv)
	if fault == "" {
		return // only meaningful as TestFaultsAreCaught's child process
	}
	storetest.Run(t, func(*testing.T) hallpass.Store { return newRefStore(fault) })
}

// TestFaultsAreCaught checks that each fault fails the cases meant to
// catch it. The suite runs in a child process because a failing subtest
// fails its parent.
func TestFaultsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process per fault")
	}
	for fault, cases := range map[string][]string{
		"ignoreCtx":          {"ContextCanceled"},
		"noExpiry":           {"ExpireIdle", "ExpireAbsolute", "CreateExpired", "UpdateExpires", "ListUser", "DeleteUser"},
		"ignoreAbsolute":     {"ExpireAbsolute", "CreateExpired", "UpdateExpires", "DeleteUser"},
		"createOverwrites":   {"CreateExisting", "CreateConcurrent"},
		"expiredTaken":       {"ExpireIdle", "CreateExpired"},
		"createKeepsVersion": {"RoundTrip"},
		"secondPrecision":    {"RoundTrip"},
		"dropNull":           {"RoundTrip", "Update"},
		"dropEmptyKey":       {"OddDataKeys"},
		"truncateLarge":      {"LargeValue"},
		"keepInputMap":       {"Isolation"},
		"sharedRecord":       {"Isolation"},
		"updateCreates":      {"UpdateMissing"},
		"updateResurrects":   {"ExpireIdle"},
		"noVersionBump":      {"Update", "UpdateConcurrent", "TouchConcurrent", "Rotate"},
		"racyUpdate":         {"UpdateConcurrent"},
		// TouchConcurrent catches this too, but only when the scheduler
		// runs the latest touch before some earlier one; UpdateTouch
		// catches it every time.
		"touchBackwards":    {"UpdateTouch"},
		"noClear":           {"Update"},
		"setBeforeRemove":   {"Update"},
		"metaMerge":         {"Update"},
		"rotateKeepsOld":    {"Rotate", "RotateChangesUser", "RotateConcurrent"},
		"rotateOverwrites":  {"RotateOntoExisting"},
		"rotateNoDelta":     {"Rotate", "RotateChangesUser"},
		"rotateSelf":        {"RotateOntoExisting"},
		"targetFirst":       {"RotateMissing"},
		"nonAtomicRotate":   {"ListUserDuringRotate", "DeleteUserDuringRotate"},
		"staleIndex":        {"UpdateMetaMovesUser", "RotateChangesUser"},
		"listGuests":        {"ListUser"},
		"listExpired":       {"ExpireIdle", "ExpireAbsolute", "CreateExpired", "UpdateExpires", "ListUser"},
		"ignoreKeep":        {"DeleteUser"},
		"countExpired":      {"ExpireIdle", "CreateExpired", "DeleteUser"},
		"deleteGuests":      {"DeleteUser"},
		"limitIgnored":      {"LimitEvictsOldest", "LimitRefuseNew", "LimitCountsOthers", "LimitConcurrent"},
		"limitCountsSelf":   {"LimitCountsOthers"},
		"limitEvictsNewest": {"LimitEvictsOldest"},
		"limitUnreported":   {"LimitEvictsOldest", "LimitConcurrent"},
		"racyLimit":         {"LimitConcurrent"},
		"wrapFarTimes":      {"FarDeadlines"},
	} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0],
				"-test.run=^TestFaultChild$/^("+strings.Join(cases, "|")+")$", "-test.count=1")
			cmd.Env = append(os.Environ(), faultEnv+"="+fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with fault %s:\n%s", fault, out)
			}
			if _, ok := err.(*exec.ExitError); !ok {
				t.Fatal(err)
			}
			for _, c := range cases {
				if !bytes.Contains(out, []byte("--- FAIL: TestFaultChild/"+c+" ")) {
					t.Errorf("case %s did not catch fault %s", c, fault)
				}
			}
			if t.Failed() {
				t.Logf("child output:\n%s", out)
			}
		})
	}
}

// refBus is an in-process Broadcaster shared by two ends, as a server is
// by two instances. Its faults each break one rule of RunBroadcaster.
type refBus struct {
	mu     sync.Mutex
	subs   map[int]*refSub
	next   int
	faults []string
}

type refSub struct {
	end int
	mu  sync.Mutex
	fn  func([]byte)
}

type refEnd struct {
	bus *refBus
	id  int
}

func (b *refBus) has(f string) bool { return slices.Contains(b.faults, f) }

func (e refEnd) Broadcast(ctx context.Context, msg []byte) error {
	b := e.bus
	b.mu.Lock()
	var subs []*refSub
	for _, s := range b.subs {
		if s.end == e.id && b.has("notSelf") {
			continue
		}
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		if !b.has("concurrentCalls") {
			s.mu.Lock()
		}
		s.fn(bytes.Clone(msg))
		if !b.has("concurrentCalls") {
			s.mu.Unlock()
		}
	}
	return nil
}

func (e refEnd) Subscribe(fn func([]byte)) func() {
	b := e.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = make(map[int]*refSub)
	}
	id := b.next
	b.next++
	b.subs[id] = &refSub{end: e.id, fn: fn}
	return func() {
		if b.has("ignoreStop") {
			return
		}
		b.mu.Lock()
		delete(b.subs, id)
		b.mu.Unlock()
	}
}

func refPair(faults ...string) storetest.BroadcastPair {
	return func(testing.TB) (hallpass.Broadcaster, hallpass.Broadcaster) {
		bus := &refBus{faults: faults}
		return refEnd{bus, 0}, refEnd{bus, 1}
	}
}

func TestBroadcasterReference(t *testing.T) {
	storetest.RunBroadcaster(t, refPair(), time.Second)
}

const busFaultEnv = "HALLPASS_STORETEST_BUS_FAULT"

func TestBroadcasterFaultChild(t *testing.T) {
	if f := os.Getenv(busFaultEnv); f != "" {
		storetest.RunBroadcaster(t, refPair(f), 200*time.Millisecond)
	}
}

func TestBroadcasterFaultsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process per fault")
	}
	for fault, sub := range map[string]string{
		"notSelf":         "Delivery",
		"ignoreStop":      "Stop",
		"concurrentCalls": "Many",
	} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBroadcasterFaultChild$/^"+sub+"$", "-test.count=1")
			cmd.Env = append(os.Environ(), busFaultEnv+"="+fault)
			out, err := cmd.CombinedOutput()
			if err == nil || !bytes.Contains(out, []byte("--- FAIL: TestBroadcasterFaultChild/"+sub+" ")) {
				t.Errorf("RunBroadcaster/%s did not catch %s (err %v):\n%s", sub, fault, err, out)
			}
		})
	}
}
