package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// testCase is one case of the suite.
type testCase struct {
	name string
	run  func(*testing.T, hallpass.Store)
}

var cases = []testCase{
	{"RoundTrip", testRoundTrip},
	{"RoundTripZero", testRoundTripZero},
	{"CreateExisting", testCreateExisting},
	{"CreateConcurrent", testCreateConcurrent},
	{"LoadMissing", testLoadMissing},
	{"Isolation", testIsolation},
	{"ExpireIdle", testExpireIdle},
	{"ExpireAbsolute", testExpireAbsolute},
	{"CreateExpired", testCreateExpired},
	{"Update", testUpdate},
	{"UpdateTouch", testUpdateTouch},
	{"UpdateMetaMovesUser", testUpdateMetaMovesUser},
	{"UpdateExpires", testUpdateExpires},
	{"UpdateConcurrent", testUpdateConcurrent},
	{"TouchConcurrent", testTouchConcurrent},
	{"UpdateMissing", testUpdateMissing},
	{"Rotate", testRotate},
	{"RotateChangesUser", testRotateChangesUser},
	{"RotateMissing", testRotateMissing},
	{"RotateOntoExisting", testRotateOntoExisting},
	{"RotateConcurrent", testRotateConcurrent},
	{"Delete", testDelete},
	{"ListUser", testListUser},
	{"DeleteUser", testDeleteUser},
	{"ListUserDuringRotate", testListUserDuringRotate},
	{"DeleteUserDuringRotate", testDeleteUserDuringRotate},
	{"LimitEvictsOldest", testLimitEvictsOldest},
	{"LimitRefuseNew", testLimitRefuseNew},
	{"LimitCountsOthers", testLimitCountsOthers},
	{"LimitConcurrent", testLimitConcurrent},
	{"FarDeadlines", testFarDeadlines},
	{"LargeValue", testLargeValue},
	{"OddDataKeys", testOddDataKeys},
	{"ContextCanceled", testContextCanceled},
}

// testRoundTrip stores a record with every field set to a distinct value,
// so swapped or dropped columns show, and times with a millisecond part in
// three zones, so second precision or zone loss shows.
func testRoundTrip(t *testing.T, s hallpass.Store) {
	checkFieldsKnown(t)
	base := time.Now().Truncate(time.Second)
	in := &hallpass.Record{
		Key:    newKey(),
		Handle: hallpass.NewHandle(),
		Meta: hallpass.Meta{
			UserID:           newUser(),
			AuthTime:         base.Add(-2*time.Hour + 101*time.Millisecond).In(zoneEast),
			AuthLevel:        "mfa",
			Remembered:       true,
			ReauthAt:         base.Add(-time.Hour + 202*time.Millisecond).In(zoneWest),
			Persistent:       true,
			AbsoluteDeadline: base.Add(30*24*time.Hour + 303*time.Millisecond).In(zoneIST),
		},
		Touch: hallpass.Touch{
			LastSeen:     base.Add(-time.Minute + 404*time.Millisecond).In(zoneWest),
			IdleDeadline: base.Add(2*time.Hour + 505*time.Millisecond).In(zoneEast),
			LastIP:       "2001:db8::1",
			LastUA:       "Mozilla/5.0 (X11; Linux x86_64) ünïcødé 🎉",
		},
		CreatedAt: base.Add(-3*time.Hour + 606*time.Millisecond).In(zoneIST),
		CreatedIP: "203.0.113.7",
		CreatedUA: "curl/8.5.0",
		Data: map[string]json.RawMessage{
			"object":      raw(`{"b": [1, 2, {"c": null}], "a": "x", "nested": {"d": {"e": true}}}`),
			"array":       raw(`[1, "two", 3.5, false, null, [], {}]`),
			"string":      raw(`"héllo \"wörld\" \\ \u2603 \n\t end"`),
			"emptyString": raw(`""`),
			"integer":     raw(`12345678901234567890123`),
			"negative":    raw(`-42`),
			"float":       raw(`-1.25e-3`),
			"true":        raw(`true`),
			"false":       raw(`false`),
			"null":        raw(`null`),
		},
		Version: 42, // stores ignore it: Create always starts at 1
	}
	want := in.Clone()
	want.Version = 1
	create(t, s, in)
	wantRecord(t, load(t, s, in.Key), want)
}

// testRoundTripZero stores a record with nothing but a key: zero times
// must stay zero and a record without deadlines never expires.
func testRoundTripZero(t *testing.T, s hallpass.Store) {
	in := &hallpass.Record{Key: newKey()}
	create(t, s, in)
	got := load(t, s, in.Key)
	wantRecord(t, got, &hallpass.Record{Key: in.Key, Version: 1})
	for name, tm := range map[string]time.Time{
		"AuthTime": got.AuthTime, "ReauthAt": got.ReauthAt, "AbsoluteDeadline": got.AbsoluteDeadline,
		"LastSeen": got.LastSeen, "IdleDeadline": got.IdleDeadline, "CreatedAt": got.CreatedAt,
	} {
		if !tm.IsZero() {
			t.Errorf("%s = %v, want the zero time", name, tm)
		}
	}
}

func testCreateExisting(t *testing.T, s hallpass.Store) {
	orig := liveRecord(newUser())
	create(t, s, orig)
	want := orig.Clone()
	want.Version = 1

	dup := liveRecord(newUser())
	dup.Key = orig.Key
	dup.Data = map[string]json.RawMessage{"intruder": raw(`true`)}
	wantErr(t, s.Create(t.Context(), dup), hallpass.ErrExists, "Create on a taken key")

	wantRecord(t, load(t, s, orig.Key), want)
	wantList(t, s, orig.UserID, orig.Key)
	wantList(t, s, dup.UserID)
}

func testCreateConcurrent(t *testing.T, s hallpass.Store) {
	const n = 16
	key := newKey()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		errs    [n]error
		handles [n]string
	)
	for i := range n {
		r := liveRecord("")
		r.Key = key
		handles[i] = r.Handle
		wg.Go(func() {
			<-start
			errs[i] = s.Create(t.Context(), r)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("Creates %d and %d of one key both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, hallpass.ErrExists):
			t.Errorf("Create %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Create succeeded")
	}
	if got := load(t, s, key); got.Handle != handles[winner] || got.Version != 1 {
		t.Errorf("stored handle %q version %d, want the winner's %q version 1", got.Handle, got.Version, handles[winner])
	}
}

func testLoadMissing(t *testing.T, s hallpass.Store) {
	wantGone(t, s, newKey(), "never created")
}

// testIsolation checks that records and deltas are copied in, so a caller
// reusing its maps cannot change the store. (Returned records are
// read-only to callers, so the other direction is not the store's job.)
func testIsolation(t *testing.T, s hallpass.Store) {
	u := newUser()
	in := liveRecord(u)
	in.Data = map[string]json.RawMessage{"a": raw(`1`), "b": raw(`2`)}
	want := in.Clone()
	want.Version = 1
	create(t, s, in)

	in.Data["a"] = raw(`"changed"`)
	in.Data["new"] = raw(`true`)
	delete(in.Data, "b")
	in.UserID = "someone else"
	wantRecord(t, load(t, s, want.Key), want)

	// A returned record is a snapshot: later writes must not show
	// through it, or callers sharing it would race with the store.
	held := load(t, s, want.Key)
	listed := list(t, s, u)
	heldWant := held.Clone()
	update(t, s, want.Key, hallpass.Delta{Set: map[string]json.RawMessage{"a": raw(`"later"`)}, Remove: []string{"b"}})
	wantRecord(t, held, heldWant)
	for _, r := range listed {
		wantRecord(t, r, heldWant)
	}
	want.Data["a"] = raw(`"later"`)
	delete(want.Data, "b")
	want.Version++

	meta := want.Meta
	meta.AuthLevel = "mfa"
	d := hallpass.Delta{Set: map[string]json.RawMessage{"c": raw(`3`)}, Meta: &meta}
	update(t, s, want.Key, d)
	d.Apply(want)
	want.Version++
	d.Set["c"] = raw(`"changed"`)
	d.Set["d"] = raw(`4`)
	meta.AuthLevel = "changed"
	meta.UserID = "someone else"
	wantRecord(t, load(t, s, want.Key), want)
	wantList(t, s, u, want.Key)
}

// expiring creates the records build returns for a deadline a moment
// ahead, then runs live, which must succeed while they are live. On a
// machine too slow to get that done before the deadline it retries with
// more room, so only a store that expires too early fails. It returns the
// deadline.
func expiring(t *testing.T, s hallpass.Store, build func(deadline time.Time) []*hallpass.Record, live func() error) time.Time {
	t.Helper()
	window := 150 * time.Millisecond
	for attempt := 0; ; attempt++ {
		deadline := time.Now().Add(window).Truncate(time.Millisecond)
		create(t, s, build(deadline)...)
		err := live()
		if time.Now().Before(deadline) {
			if err != nil {
				t.Fatalf("before the deadline: %v", err)
			}
			return deadline
		}
		if attempt == 3 {
			t.Fatalf("could not create and check a record within %v", window)
		}
		window *= 4
	}
}

// waitGone polls until k is not found, failing if that takes longer than
// expiryGrace past the deadline.
func waitGone(t *testing.T, s hallpass.Store, k hallpass.Key, deadline time.Time) {
	t.Helper()
	for {
		_, err := s.Load(t.Context(), k)
		if errors.Is(err, hallpass.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if time.Now().After(deadline.Add(expiryGrace)) {
			t.Fatalf("record still loads %v after its deadline", expiryGrace)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testExpireIdle(t *testing.T, s hallpass.Store) {
	u := newUser()
	sibling := liveRecord(u)
	create(t, s, sibling)
	var a, b, c *hallpass.Record
	deadline := expiring(t, s, func(deadline time.Time) []*hallpass.Record {
		a, b, c = liveRecord(u), liveRecord(u), liveRecord(u)
		for _, r := range []*hallpass.Record{a, b, c} {
			r.IdleDeadline = deadline.In(zoneWest)
			r.Data["old"] = raw(`true`)
		}
		return []*hallpass.Record{a, b, c}
	}, func() error {
		for _, r := range []*hallpass.Record{a, b, c, sibling} {
			if _, err := s.Load(t.Context(), r.Key); err != nil {
				return fmt.Errorf("load: %w", err)
			}
		}
		if rs, err := s.ListUser(t.Context(), u); err != nil || len(rs) != 4 {
			return fmt.Errorf("ListUser: %d records, %v; want 4", len(rs), err)
		}
		return nil
	})
	waitGone(t, s, a.Key, deadline)
	wantGone(t, s, b.Key, "b, expired with a")
	wantGone(t, s, c.Key, "c, expired with a")
	wantList(t, s, u, sibling.Key)

	// A request that loaded the session before it expired must not revive
	// it by touching it.
	later := now()
	err := s.Update(t.Context(), a.Key, hallpass.Delta{
		Set:   map[string]json.RawMessage{"x": raw(`1`)},
		Touch: &hallpass.Touch{LastSeen: later, IdleDeadline: later.Add(time.Hour)},
	})
	wantErr(t, err, hallpass.ErrNotFound, "Update of an expired record")
	wantGone(t, s, a.Key, "after an Update tried to extend it")
	to := newKey()
	wantErr(t, s.Rotate(t.Context(), a.Key, to, hallpass.Delta{}), hallpass.ErrNotFound, "Rotate from an expired record")
	wantGone(t, s, to, "target of a failed Rotate")

	// An expired key is free again, and its new record inherits nothing.
	u2 := newUser()
	fresh := liveRecord(u2)
	fresh.Key = a.Key
	create(t, s, fresh)
	want := fresh.Clone()
	want.Version = 1
	wantRecord(t, load(t, s, a.Key), want)
	guest := liveRecord("")
	create(t, s, guest)
	if err := s.Rotate(t.Context(), guest.Key, b.Key, hallpass.Delta{}); err != nil {
		t.Fatalf("Rotate onto an expired key: %v", err)
	}
	want = guest.Clone()
	want.Key, want.Version = b.Key, 2
	wantRecord(t, load(t, s, b.Key), want)
	wantList(t, s, u, sibling.Key)
	wantList(t, s, u2, a.Key)

	n, err := s.DeleteUser(t.Context(), u, sibling.Key)
	if err != nil || n != 0 {
		t.Errorf("DeleteUser with only an expired record to remove = %d, %v; want 0, nil", n, err)
	}
	wantList(t, s, u, sibling.Key)
}

func testExpireAbsolute(t *testing.T, s hallpass.Store) {
	u := newUser()
	var r *hallpass.Record
	deadline := expiring(t, s, func(deadline time.Time) []*hallpass.Record {
		r = liveRecord(u)
		r.AbsoluteDeadline = deadline.In(zoneEast)
		return []*hallpass.Record{r}
	}, func() error {
		// Activity extends the idle deadline, never the absolute one.
		seen := now()
		err := s.Update(t.Context(), r.Key, hallpass.Delta{
			Touch: &hallpass.Touch{LastSeen: seen, IdleDeadline: seen.Add(2 * time.Hour)},
		})
		if err != nil {
			return fmt.Errorf("update: %w", err)
		}
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		if rs, err := s.ListUser(t.Context(), u); err != nil || len(rs) != 1 {
			return fmt.Errorf("ListUser: %d records, %v; want 1", len(rs), err)
		}
		return nil
	})
	waitGone(t, s, r.Key, deadline)
	wantList(t, s, u)
	wantErr(t, s.Update(t.Context(), r.Key, hallpass.Delta{}), hallpass.ErrNotFound, "Update of an expired record")
}

func testCreateExpired(t *testing.T, s hallpass.Store) {
	u := newUser()
	past := now().Add(-time.Second)
	idle := liveRecord(u)
	idle.IdleDeadline = past.In(zoneEast)
	abs := liveRecord(u)
	abs.AbsoluteDeadline = past.In(zoneWest)
	for _, r := range []*hallpass.Record{idle, abs} {
		if err := s.Create(t.Context(), r); err != nil {
			t.Errorf("Create of an expired record: %v, want nil", err)
		}
		wantGone(t, s, r.Key, "created expired")
		wantErr(t, s.Update(t.Context(), r.Key, hallpass.Delta{}), hallpass.ErrNotFound, "Update of a record created expired")
		to := newKey()
		wantErr(t, s.Rotate(t.Context(), r.Key, to, hallpass.Delta{}), hallpass.ErrNotFound, "Rotate from a record created expired")
		wantGone(t, s, to, "target of a failed Rotate")
	}
	wantList(t, s, u)
	live := liveRecord(u)
	live.Key = idle.Key
	create(t, s, live)
	want := live.Clone()
	want.Version = 1
	wantRecord(t, load(t, s, idle.Key), want)
	wantList(t, s, u, idle.Key)
	if n, err := s.DeleteUser(t.Context(), u); err != nil || n != 1 {
		t.Errorf("DeleteUser = %d, %v; want 1 (expired records do not count), nil", n, err)
	}
	wantList(t, s, u)
}

// model applies d to want as every store must and bumps the version.
func model(want *hallpass.Record, d hallpass.Delta) {
	d.Apply(want)
	want.Version++
}

func testUpdate(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	r.Data = map[string]json.RawMessage{"a": raw(`1`), "b": raw(`2`), "c": raw(`3`)}
	r.ReauthAt = now().Add(-30 * time.Second)
	r.Persistent = true
	create(t, s, r)
	want := r.Clone()
	want.Version = 1
	step := func(name string, d hallpass.Delta, data map[string]json.RawMessage) {
		t.Helper()
		update(t, s, r.Key, d)
		model(want, d)
		got := load(t, s, r.Key)
		wantRecord(t, got, want)
		if data != nil {
			wantData(t, got.Data, data)
		}
		if t.Failed() {
			t.Fatalf("after %s", name)
		}
	}

	step("Set and Remove", hallpass.Delta{
		Set:    map[string]json.RawMessage{"b": raw(`20`), "d": raw(`{"x": [4]}`)},
		Remove: []string{"a", "b", "never"}, // Remove goes first, so b ends up set
	}, map[string]json.RawMessage{"b": raw(`20`), "c": raw(`3`), "d": raw(`{"x": [4]}`)})
	step("Clear and Set", hallpass.Delta{
		Clear: true, // Clear goes first, so e survives it
		Set:   map[string]json.RawMessage{"e": raw(`"five"`)},
	}, map[string]json.RawMessage{"e": raw(`"five"`)})
	step("Clear", hallpass.Delta{Clear: true}, map[string]json.RawMessage{})
	step("zero Delta", hallpass.Delta{}, nil)
	base := now()
	// Meta is replaced as a whole: fields it leaves zero become zero.
	step("Meta", hallpass.Delta{Meta: &hallpass.Meta{
		UserID:           u,
		AuthTime:         base.Add(7 * time.Millisecond).In(zoneIST),
		AuthLevel:        "mfa",
		Remembered:       true,
		AbsoluteDeadline: base.Add(48 * time.Hour).In(zoneEast),
	}}, nil)
	if got := load(t, s, r.Key); !got.ReauthAt.IsZero() || got.Persistent || got.AuthLevel != "mfa" {
		t.Errorf("Meta not replaced as a whole: ReauthAt %v, Persistent %v, AuthLevel %q", got.ReauthAt, got.Persistent, got.AuthLevel)
	}
	step("Touch", hallpass.Delta{Touch: &hallpass.Touch{
		LastSeen:     base.Add(time.Minute).In(zoneWest),
		IdleDeadline: base.Add(3 * time.Hour).In(zoneWest),
		LastIP:       "192.0.2.9",
		LastUA:       "other/2",
	}}, nil)
	step("everything", hallpass.Delta{
		Clear:  true,
		Remove: []string{"e"},
		Set:    map[string]json.RawMessage{"f": raw(`null`)},
		Meta:   &hallpass.Meta{UserID: u, AuthLevel: "password", AbsoluteDeadline: base.Add(time.Hour)},
		Touch:  &hallpass.Touch{LastSeen: base.Add(2 * time.Minute), IdleDeadline: base.Add(4 * time.Hour)},
	}, map[string]json.RawMessage{"f": raw(`null`)})
	if want.Version != 8 {
		t.Fatalf("suite bug: %d steps", want.Version-1)
	}
	wantList(t, s, u, r.Key)
}

// testUpdateTouch checks that of two touches the later wins whatever
// order they arrive in. Older touches are spelled in a zone far east of
// newer ones, so comparing wall-clock text would get the order wrong.
func testUpdateTouch(t *testing.T, s hallpass.Store) {
	t0 := now()
	r := liveRecord("")
	r.Touch = hallpass.Touch{LastSeen: t0, IdleDeadline: t0.Add(30 * time.Minute), LastIP: "ip0", LastUA: "ua0"}
	create(t, s, r)
	want := r.Clone()
	want.Version = 1
	at := func(d time.Duration, z *time.Location) time.Time { return t0.Add(d).In(z) }
	steps := []struct {
		name  string
		touch hallpass.Touch
		want  hallpass.Touch
	}{
		{"newer",
			hallpass.Touch{LastSeen: at(2*time.Minute, zoneWest), IdleDeadline: at(32*time.Minute, zoneWest), LastIP: "ip2", LastUA: "ua2"},
			hallpass.Touch{LastSeen: at(2*time.Minute, time.UTC), IdleDeadline: at(32*time.Minute, time.UTC), LastIP: "ip2", LastUA: "ua2"}},
		{"older",
			hallpass.Touch{LastSeen: at(time.Minute, zoneEast), IdleDeadline: at(31*time.Minute, zoneEast), LastIP: "ip1", LastUA: "ua1"},
			hallpass.Touch{LastSeen: at(2*time.Minute, time.UTC), IdleDeadline: at(32*time.Minute, time.UTC), LastIP: "ip2", LastUA: "ua2"}},
		{"older LastSeen, later IdleDeadline",
			hallpass.Touch{LastSeen: at(time.Minute, zoneEast), IdleDeadline: at(60*time.Minute, zoneWest), LastIP: "ip1", LastUA: "ua1"},
			hallpass.Touch{LastSeen: at(2*time.Minute, time.UTC), IdleDeadline: at(60*time.Minute, time.UTC), LastIP: "ip2", LastUA: "ua2"}},
		{"newer LastSeen, earlier IdleDeadline",
			hallpass.Touch{LastSeen: at(3*time.Minute, zoneWest), IdleDeadline: at(40*time.Minute, zoneEast), LastIP: "ip3", LastUA: "ua3"},
			hallpass.Touch{LastSeen: at(3*time.Minute, time.UTC), IdleDeadline: at(60*time.Minute, time.UTC), LastIP: "ip3", LastUA: "ua3"}},
		{"newer without IP or UA",
			hallpass.Touch{LastSeen: at(4*time.Minute+5*time.Millisecond, zoneIST)},
			hallpass.Touch{LastSeen: at(4*time.Minute+5*time.Millisecond, time.UTC), IdleDeadline: at(60*time.Minute, time.UTC), LastIP: "ip3", LastUA: "ua3"}},
		{"same LastSeen",
			hallpass.Touch{LastSeen: at(4*time.Minute+5*time.Millisecond, zoneWest), LastIP: "ip4", LastUA: "ua4"},
			hallpass.Touch{LastSeen: at(4*time.Minute+5*time.Millisecond, time.UTC), IdleDeadline: at(60*time.Minute, time.UTC), LastIP: "ip3", LastUA: "ua3"}},
	}
	for _, st := range steps {
		touch := st.touch
		d := hallpass.Delta{Touch: &touch}
		update(t, s, r.Key, d)
		model(want, d)
		got := load(t, s, r.Key)
		wantRecord(t, got, want)
		// The model is Delta.Apply itself; spell the rule out too.
		if !sameTime(got.LastSeen, st.want.LastSeen) || !sameTime(got.IdleDeadline, st.want.IdleDeadline) ||
			got.LastIP != st.want.LastIP || got.LastUA != st.want.LastUA {
			t.Errorf("after %s touch: %+v, want %+v", st.name, got.Touch, st.want)
		}
		if t.Failed() {
			t.Fatalf("after %s touch", st.name)
		}
	}
}

func testUpdateMetaMovesUser(t *testing.T, s hallpass.Store) {
	u1, u2 := newUser(), newUser()
	r, other := liveRecord(u1), liveRecord(u1)
	create(t, s, r, other)
	wantList(t, s, u1, r.Key, other.Key)
	setUser := func(user string) {
		t.Helper()
		m := r.Meta
		m.UserID = user
		update(t, s, r.Key, hallpass.Delta{Meta: &m})
		if got := load(t, s, r.Key); got.UserID != user {
			t.Fatalf("UserID = %q, want %q", got.UserID, user)
		}
	}
	setUser(u2)
	wantList(t, s, u1, other.Key)
	wantList(t, s, u2, r.Key)
	setUser("") // signed out, still a guest session
	wantList(t, s, u1, other.Key)
	wantList(t, s, u2)
	setUser(u1)
	wantList(t, s, u1, r.Key, other.Key)
	wantList(t, s, u2)
	if n, err := s.DeleteUser(t.Context(), u2); err != nil || n != 0 {
		t.Errorf("DeleteUser of the user the record left = %d, %v; want 0, nil", n, err)
	}
	load(t, s, r.Key)
}

// testUpdateExpires ends a session by giving it a past AbsoluteDeadline.
func testUpdateExpires(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	create(t, s, r)
	m := r.Meta
	m.AbsoluteDeadline = now().Add(-time.Second)
	if err := s.Update(t.Context(), r.Key, hallpass.Delta{Meta: &m}); err != nil {
		t.Fatalf("Update that expires the record: %v, want nil", err)
	}
	wantGone(t, s, r.Key, "after an Update expired it")
	wantList(t, s, u)
	wantErr(t, s.Update(t.Context(), r.Key, hallpass.Delta{}), hallpass.ErrNotFound, "Update after expiry")
}

func testUpdateConcurrent(t *testing.T, s hallpass.Store) {
	const n = 100
	r := liveRecord(newUser())
	create(t, s, r)
	want := r.Clone()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		k, v := fmt.Sprintf("k%03d", i), raw(fmt.Sprint(i))
		want.Data[k] = v
		wg.Go(func() {
			<-start
			if err := s.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{k: v}}); err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	want.Version = n + 1
	wantRecord(t, load(t, s, r.Key), want)
}

func testTouchConcurrent(t *testing.T, s hallpass.Store) {
	const n = 50
	t0 := now()
	r := liveRecord("")
	r.Touch = hallpass.Touch{LastSeen: t0, IdleDeadline: t0.Add(30 * time.Minute), LastIP: "start"}
	create(t, s, r)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		// Goroutines tend to run in the order they start, so the first
		// gets the latest touch: a store that lets the last arrival win
		// ends up with an early one. Zones alternate so that a later
		// instant is often an earlier wall-clock reading.
		z := zoneEast
		if i%2 == 1 {
			z = zoneWest
		}
		touch := hallpass.Touch{
			LastSeen:     t0.Add(time.Duration(n-i) * time.Second).In(z),
			IdleDeadline: t0.Add(30*time.Minute + time.Duration(n-i)*time.Second).In(z),
			LastIP:       fmt.Sprintf("ip%d", n-i),
			LastUA:       fmt.Sprintf("ua%d", n-i),
		}
		wg.Go(func() {
			<-start
			if err := s.Update(t.Context(), r.Key, hallpass.Delta{Touch: &touch}); err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	got := load(t, s, r.Key)
	want := hallpass.Touch{
		LastSeen:     t0.Add(n * time.Second),
		IdleDeadline: t0.Add(30*time.Minute + n*time.Second),
		LastIP:       fmt.Sprintf("ip%d", n),
		LastUA:       fmt.Sprintf("ua%d", n),
	}
	if !sameTime(got.LastSeen, want.LastSeen) || !sameTime(got.IdleDeadline, want.IdleDeadline) ||
		got.LastIP != want.LastIP || got.LastUA != want.LastUA {
		t.Errorf("after concurrent touches: %+v, want the latest %+v", got.Touch, want)
	}
	if got.Version != n+1 {
		t.Errorf("Version = %d, want %d", got.Version, n+1)
	}
}

// testUpdateMissing checks that a request still running when its session
// is deleted cannot bring it back.
func testUpdateMissing(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	create(t, s, r)
	if err := s.Delete(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	t1 := now()
	revive := hallpass.Delta{
		Set:   map[string]json.RawMessage{"x": raw(`1`)},
		Meta:  &hallpass.Meta{UserID: u, AbsoluteDeadline: t1.Add(time.Hour)},
		Touch: &hallpass.Touch{LastSeen: t1, IdleDeadline: t1.Add(time.Hour)},
	}
	wantErr(t, s.Update(t.Context(), r.Key, revive), hallpass.ErrNotFound, "Update after Delete")
	wantGone(t, s, r.Key, "after Update of a deleted record")
	wantList(t, s, u)

	never := newKey()
	wantErr(t, s.Update(t.Context(), never, revive), hallpass.ErrNotFound, "Update of a key never created")
	wantGone(t, s, never, "after Update of a key never created")
	wantList(t, s, u)
}

func testRotate(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	r.Data = map[string]json.RawMessage{"a": raw(`1`), "b": raw(`[2]`)}
	create(t, s, r)
	want := r.Clone()
	want.Version = 1
	d := hallpass.Delta{Set: map[string]json.RawMessage{"b": raw(`"two"`)}}
	update(t, s, r.Key, d)
	model(want, d)

	to := newKey()
	t1 := now().Add(time.Minute)
	d = hallpass.Delta{
		Set:    map[string]json.RawMessage{"c": raw(`3`)},
		Remove: []string{"a"},
		Touch:  &hallpass.Touch{LastSeen: t1, IdleDeadline: t1.Add(time.Hour), LastIP: "192.0.2.1"},
	}
	if err := s.Rotate(t.Context(), r.Key, to, d); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	model(want, d)
	want.Key = to
	wantRecord(t, load(t, s, to), want) // same handle, CreatedAt, Meta; data moved and changed
	wantGone(t, s, r.Key, "old key after Rotate")
	wantList(t, s, u, to)
	wantErr(t, s.Update(t.Context(), r.Key, hallpass.Delta{}), hallpass.ErrNotFound, "Update of the old key")
	again := newKey()
	wantErr(t, s.Rotate(t.Context(), r.Key, again, hallpass.Delta{}), hallpass.ErrNotFound, "Rotate from the old key")
	wantGone(t, s, again, "target of a Rotate from the old key")

	// A record that has been rotated is an ordinary record.
	d = hallpass.Delta{Set: map[string]json.RawMessage{"d": raw(`4`)}}
	update(t, s, to, d)
	model(want, d)
	wantRecord(t, load(t, s, to), want)
}

// testRotateChangesUser follows a session through sign-in, a switch of
// user and sign-out, each of which rotates the key.
func testRotateChangesUser(t *testing.T, s hallpass.Store) {
	guest := liveRecord("")
	create(t, s, guest)
	u1, u2 := newUser(), newUser()
	key := guest.Key
	for _, user := range []string{u1, u2, ""} {
		to := newKey()
		meta := hallpass.Meta{UserID: user, AuthTime: now(), AuthLevel: "password", AbsoluteDeadline: now().Add(time.Hour)}
		if err := s.Rotate(t.Context(), key, to, hallpass.Delta{Meta: &meta}); err != nil {
			t.Fatalf("Rotate to user %q: %v", user, err)
		}
		got := load(t, s, to)
		if got.UserID != user || got.Handle != guest.Handle {
			t.Errorf("after Rotate: UserID %q, Handle %q; want %q, %q", got.UserID, got.Handle, user, guest.Handle)
		}
		wantGone(t, s, key, "old key")
		key = to
		for _, other := range []string{u1, u2} {
			if other == user {
				wantList(t, s, other, to)
			} else {
				wantList(t, s, other)
			}
		}
	}
	if got := load(t, s, key); got.Version != 4 {
		t.Errorf("Version after three rotations = %d, want 4", got.Version)
	}
}

func testRotateMissing(t *testing.T, s hallpass.Store) {
	u := newUser()
	to := newKey()
	d := hallpass.Delta{Meta: &hallpass.Meta{UserID: u, AbsoluteDeadline: now().Add(time.Hour)}}
	wantErr(t, s.Rotate(t.Context(), newKey(), to, d), hallpass.ErrNotFound, "Rotate from a key never created")
	wantGone(t, s, to, "target of a Rotate from nothing")
	wantList(t, s, u)

	deleted := liveRecord(u)
	create(t, s, deleted)
	if err := s.Delete(t.Context(), deleted.Key); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Rotate(t.Context(), deleted.Key, to, d), hallpass.ErrNotFound, "Rotate from a deleted key")
	wantGone(t, s, to, "target of a Rotate from a deleted key")
	wantList(t, s, u)

	// The missing source is the answer even when the target is taken.
	taken := liveRecord(newUser())
	create(t, s, taken)
	want := taken.Clone()
	want.Version = 1
	wantErr(t, s.Rotate(t.Context(), newKey(), taken.Key, d), hallpass.ErrNotFound, "Rotate from nothing onto a taken key")
	wantRecord(t, load(t, s, taken.Key), want)
}

func testRotateOntoExisting(t *testing.T, s hallpass.Store) {
	u1, u2, u3 := newUser(), newUser(), newUser()
	a, b := liveRecord(u1), liveRecord(u2)
	a.Data["a"] = raw(`"a"`)
	b.Data["b"] = raw(`"b"`)
	create(t, s, a, b)
	wantA, wantB := a.Clone(), b.Clone()
	wantA.Version, wantB.Version = 1, 1
	d := hallpass.Delta{
		Clear: true,
		Set:   map[string]json.RawMessage{"x": raw(`1`)},
		Meta:  &hallpass.Meta{UserID: u3},
	}
	wantErr(t, s.Rotate(t.Context(), a.Key, b.Key, d), hallpass.ErrExists, "Rotate onto a taken key")
	wantRecord(t, load(t, s, a.Key), wantA)
	wantRecord(t, load(t, s, b.Key), wantB)
	wantList(t, s, u1, a.Key)
	wantList(t, s, u2, b.Key)
	wantList(t, s, u3)

	wantErr(t, s.Rotate(t.Context(), a.Key, a.Key, d), hallpass.ErrExists, "Rotate onto itself")
	wantRecord(t, load(t, s, a.Key), wantA)
	wantList(t, s, u1, a.Key)
	wantList(t, s, u3)
}

// testRotateConcurrent races rotations of one key, as two requests that
// both decide to rotate do: exactly one may win.
func testRotateConcurrent(t *testing.T, s hallpass.Store) {
	const n = 8
	u := newUser()
	r := liveRecord(u)
	create(t, s, r)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		tos   [n]hallpass.Key
		errs  [n]error
	)
	for i := range n {
		tos[i] = newKey()
		wg.Go(func() {
			<-start
			errs[i] = s.Rotate(t.Context(), r.Key, tos[i], hallpass.Delta{})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("Rotates %d and %d from one key both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, hallpass.ErrNotFound):
			t.Errorf("Rotate %d: %v, want nil or ErrNotFound", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Rotate succeeded")
	}
	for i, to := range tos {
		if i == winner {
			if got := load(t, s, to); got.Handle != r.Handle || got.Version != 2 {
				t.Errorf("winner: Handle %q, Version %d; want %q, 2", got.Handle, got.Version, r.Handle)
			}
		} else {
			wantGone(t, s, to, fmt.Sprintf("target of losing Rotate %d", i))
		}
	}
	wantGone(t, s, r.Key, "source")
	wantList(t, s, u, tos[winner])
}

func testDelete(t *testing.T, s hallpass.Store) {
	u := newUser()
	a, b, c := liveRecord(u), liveRecord(u), liveRecord(u)
	guest := liveRecord("")
	create(t, s, a, b, c, guest)
	if err := s.Delete(t.Context(), a.Key, newKey(), guest.Key, b.Key, newKey()); err != nil {
		t.Fatalf("Delete with missing keys: %v", err)
	}
	for _, k := range []hallpass.Key{a.Key, b.Key, guest.Key} {
		wantGone(t, s, k, "deleted")
	}
	load(t, s, c.Key)
	wantList(t, s, u, c.Key)
	if err := s.Delete(t.Context()); err != nil {
		t.Errorf("Delete of no keys: %v", err)
	}
	if err := s.Delete(t.Context(), a.Key); err != nil {
		t.Errorf("Delete of a deleted key: %v", err)
	}
	if err := s.Delete(t.Context(), c.Key, c.Key); err != nil {
		t.Errorf("Delete of one key twice: %v", err)
	}
	wantGone(t, s, c.Key, "deleted")
	wantList(t, s, u)
}

func testListUser(t *testing.T, s hallpass.Store) {
	u1, u2 := newUser(), newUser()
	a, b, c := liveRecord(u1), liveRecord(u1), liveRecord(u2)
	a.Data["which"] = raw(`"a"`)
	b.Data["which"] = raw(`"b"`)
	expired := liveRecord(u1)
	expired.IdleDeadline = now().Add(-time.Minute)
	guest := liveRecord("")
	create(t, s, a, b, c, expired, guest)

	wantList(t, s, u1, a.Key, b.Key)
	wantList(t, s, u2, c.Key)
	wantList(t, s, newUser())
	for _, r := range []*hallpass.Record{a, b} {
		want := r.Clone()
		want.Version = 1
		if got, ok := list(t, s, u1)[r.Key]; ok {
			wantRecord(t, got, want)
		}
	}
	// Guests share the empty user ID; listing them would list every
	// guest session in the store.
	rs, err := s.ListUser(t.Context(), "")
	if err != nil || len(rs) != 0 {
		t.Errorf(`ListUser("") = %d records, %v; want none, nil`, len(rs), err)
	}
}

func testDeleteUser(t *testing.T, s hallpass.Store) {
	u1, u2 := newUser(), newUser()
	a, b, c, keep := liveRecord(u1), liveRecord(u1), liveRecord(u1), liveRecord(u1)
	expired := liveRecord(u1)
	expired.AbsoluteDeadline = now().Add(-time.Minute)
	other, guest := liveRecord(u2), liveRecord("")
	create(t, s, a, b, c, keep, expired, other, guest)

	n, err := s.DeleteUser(t.Context(), u1, keep.Key, other.Key, newKey())
	if err != nil || n != 3 {
		t.Errorf("DeleteUser = %d, %v; want 3 (the expired record does not count), nil", n, err)
	}
	for _, k := range []hallpass.Key{a.Key, b.Key, c.Key, expired.Key} {
		wantGone(t, s, k, "deleted by DeleteUser")
	}
	for _, k := range []hallpass.Key{keep.Key, other.Key, guest.Key} {
		load(t, s, k)
	}
	wantList(t, s, u1, keep.Key)
	wantList(t, s, u2, other.Key)

	if n, err := s.DeleteUser(t.Context(), ""); err != nil || n != 0 {
		t.Errorf(`DeleteUser("") = %d, %v; want 0, nil`, n, err)
	}
	load(t, s, guest.Key)
	if n, err := s.DeleteUser(t.Context(), newUser()); err != nil || n != 0 {
		t.Errorf("DeleteUser of an unknown user = %d, %v; want 0, nil", n, err)
	}
	if n, err := s.DeleteUser(t.Context(), u1); err != nil || n != 1 {
		t.Errorf("DeleteUser without keep = %d, %v; want 1, nil", n, err)
	}
	wantGone(t, s, keep.Key, "deleted by DeleteUser")
	wantList(t, s, u1)
	if n, err := s.DeleteUser(t.Context(), u1); err != nil || n != 0 {
		t.Errorf("DeleteUser again = %d, %v; want 0, nil", n, err)
	}
	load(t, s, other.Key)
	wantList(t, s, u2, other.Key)
}

// rotator rotates the session at key over and over until stopped or until
// a Rotate fails, and reports the error that ended it (nil when stopped).
type rotator struct {
	stop  atomic.Bool
	count atomic.Int64
	done  chan error
}

func startRotator(s hallpass.Store, key hallpass.Key) *rotator {
	ro := &rotator{done: make(chan error, 1)}
	go func() {
		for !ro.stop.Load() {
			next := newKey()
			if err := s.Rotate(context.Background(), key, next, hallpass.Delta{}); err != nil {
				ro.done <- err
				return
			}
			key = next
			ro.count.Add(1)
		}
		ro.done <- nil
	}()
	return ro
}

// waitStarted waits until the rotator is in its stride, so the race the
// caller wants to provoke can happen.
func (ro *rotator) waitStarted(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ro.count.Load() < 3 {
		select {
		case err := <-ro.done:
			t.Fatalf("Rotate: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			ro.stop.Store(true)
			t.Fatal("rotator made no progress")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func testListUserDuringRotate(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	create(t, s, r)
	ro := startRotator(s, r.Key)
	ro.waitStarted(t)
	defer func() {
		ro.stop.Store(true)
		if err := <-ro.done; err != nil {
			t.Errorf("Rotate: %v", err)
		}
	}()
	// At least 200 lists and 100 ms, so fast stores get many chances to
	// show a gap; at most a second, so slow ones finish.
	start := time.Now()
	for i := 0; (i < 200 || time.Since(start) < 100*time.Millisecond) && time.Since(start) < time.Second; i++ {
		rs, err := s.ListUser(t.Context(), u)
		if err != nil {
			t.Fatalf("ListUser: %v", err)
		}
		if len(rs) != 1 || rs[0].Handle != r.Handle {
			t.Fatalf("ListUser during rotations returned %d records, want the one being rotated", len(rs))
		}
	}
}

// testDeleteUserDuringRotate signs a user out everywhere while one of the
// user's sessions keeps rotating: the session must still end.
func testDeleteUserDuringRotate(t *testing.T, s hallpass.Store) {
	for trial := range 10 {
		u := newUser()
		r := liveRecord(u)
		create(t, s, r)
		ro := startRotator(s, r.Key)
		ro.waitStarted(t)
		n, err := s.DeleteUser(t.Context(), u)
		if err != nil || n != 1 {
			t.Errorf("trial %d: DeleteUser during rotations = %d, %v; want 1, nil", trial, n, err)
		}
		select {
		case err := <-ro.done:
			wantErr(t, err, hallpass.ErrNotFound, "Rotate after DeleteUser")
		case <-time.After(3 * time.Second):
			ro.stop.Store(true)
			<-ro.done
			t.Errorf("trial %d: the session kept rotating after DeleteUser", trial)
		}
		wantList(t, s, u)
		if t.Failed() {
			return
		}
	}
}

func testLargeValue(t *testing.T, s hallpass.Store) {
	big := func(seed string) json.RawMessage {
		// Varied text with characters JSON escapes, so that truncation,
		// splitting or mangled escapes all show.
		unit := seed + ` "quoted" back\slash ünïcødé 🎉 ` + "\t"
		var sb []byte
		for i := 0; len(sb) < 1<<20; i++ {
			sb = strconv.AppendInt(sb, int64(i), 10)
			sb = append(sb, unit...)
		}
		b, err := json.Marshal(string(sb))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r := liveRecord("")
	r.Data["big"] = big("first")
	create(t, s, r)
	want := r.Clone()
	want.Version = 1
	wantRecord(t, load(t, s, r.Key), want)

	d := hallpass.Delta{Set: map[string]json.RawMessage{"big2": big("second")}}
	update(t, s, r.Key, d)
	model(want, d)
	wantRecord(t, load(t, s, r.Key), want)
}

func testOddDataKeys(t *testing.T, s hallpass.Store) {
	keys := []string{
		"ключ", "鍵", "emoji 🎉", `a"b`, `a\b`, `$.x`, "a.b", "[0]", "",
		" ", "a/b", "{}", "a:b", "*", "%s", "a\tb", "'; DROP TABLE sessions; --", "{a,b}", "->>",
	}
	value := func(i int) json.RawMessage { return raw(fmt.Sprintf(`{"i": %d}`, i)) }
	r := liveRecord("")
	r.Data = map[string]json.RawMessage{}
	half := len(keys) / 2
	for i, k := range keys[:half] {
		r.Data[k] = value(i)
	}
	create(t, s, r)
	set := map[string]json.RawMessage{}
	for i, k := range keys[half:] {
		set[k] = value(half + i)
	}
	update(t, s, r.Key, hallpass.Delta{Set: set})
	want := map[string]json.RawMessage{}
	for i, k := range keys {
		want[k] = value(i)
	}
	wantData(t, load(t, s, r.Key).Data, want)
	for _, k := range keys {
		update(t, s, r.Key, hallpass.Delta{Remove: []string{k}})
		delete(want, k)
		wantData(t, load(t, s, r.Key).Data, want)
		if t.Failed() {
			t.Fatalf("after removing %q", k)
		}
	}
}

func testContextCanceled(t *testing.T, s hallpass.Store) {
	u := newUser()
	r := liveRecord(u)
	create(t, s, r)
	want := r.Clone()
	want.Version = 1
	ctx := cancelled(t)
	canceled := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", what, err)
		}
	}

	fresh := liveRecord(u)
	canceled(s.Create(ctx, fresh), "Create")
	_, err := s.Load(ctx, r.Key)
	canceled(err, "Load")
	canceled(s.Update(ctx, r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"x": raw(`1`)}}), "Update")
	to := newKey()
	canceled(s.Rotate(ctx, r.Key, to, hallpass.Delta{}), "Rotate")
	canceled(s.Delete(ctx, r.Key), "Delete")
	_, err = s.ListUser(ctx, u)
	canceled(err, "ListUser")
	n, err := s.DeleteUser(ctx, u)
	canceled(err, "DeleteUser")
	if n != 0 {
		t.Errorf("DeleteUser with a cancelled context reports %d removed", n)
	}

	wantGone(t, s, fresh.Key, "Created with a cancelled context")
	wantGone(t, s, to, "Rotated to with a cancelled context")
	wantRecord(t, load(t, s, r.Key), want)
	wantList(t, s, u, r.Key)
}

// testFarDeadlines stores deadlines further away than a count of
// milliseconds since 1970 holds in an int64 (or a double holds exactly),
// as a lifetime of "forever" spelled as a far date gives: the record must
// stay live through Create, Update and Rotate, not wrap into the past. A
// store may keep a nearer deadline than given, as long as it is more than
// a thousand years away.
func testFarDeadlines(t *testing.T, s hallpass.Store) {
	ctx := t.Context()
	far := time.Unix(1<<62, 0)
	soon := time.Now().AddDate(1000, 0, 0)
	user := newUser()
	for _, in := range []*hallpass.Record{
		{Handle: hallpass.NewHandle(), Meta: hallpass.Meta{UserID: user, AbsoluteDeadline: far}},
		{Handle: hallpass.NewHandle(), Meta: hallpass.Meta{UserID: user}, Touch: hallpass.Touch{IdleDeadline: far}},
		{Handle: hallpass.NewHandle(), Meta: hallpass.Meta{UserID: user, AbsoluteDeadline: far}, Touch: hallpass.Touch{IdleDeadline: far}},
	} {
		in.Key = newKey()
		if err := s.Create(ctx, in); err != nil {
			t.Fatalf("Create: %v", err)
		}
		check := func(what string, k hallpass.Key) {
			t.Helper()
			got, err := s.Load(ctx, k)
			if err != nil {
				t.Fatalf("Load after %s of a record with a far deadline: %v", what, err)
			}
			if got.ExpiresAt().Before(soon) {
				t.Fatalf("after %s, a far deadline came back as %v", what, got.ExpiresAt())
			}
		}
		check("Create", in.Key)
		d := hallpass.Delta{Set: map[string]json.RawMessage{"n": raw(`1`)}, Touch: &hallpass.Touch{LastSeen: time.Now(), IdleDeadline: far}}
		if err := s.Update(ctx, in.Key, d); err != nil {
			t.Fatalf("Update: %v", err)
		}
		check("Update", in.Key)
		meta := in.Meta
		meta.AbsoluteDeadline, meta.ReauthAt = far, time.Now()
		d = hallpass.Delta{Meta: &meta, Touch: &hallpass.Touch{LastSeen: far, IdleDeadline: far}}
		if err := s.Update(ctx, in.Key, d); err != nil {
			t.Fatalf("Update with a Meta: %v", err)
		}
		check("Update with a Meta", in.Key)
		to := newKey()
		if err := s.Rotate(ctx, in.Key, to, hallpass.Delta{}); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		check("Rotate", to)
		next := newKey()
		if err := s.Rotate(ctx, to, next, hallpass.Delta{Meta: &meta, Limit: &hallpass.Limit{Max: 10}}); err != nil {
			t.Fatalf("Rotate with a Meta and a Limit: %v", err)
		}
		check("Rotate with a Meta and a Limit", next)
	}
	list, err := s.ListUser(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("ListUser found %d of the 3 records with far deadlines", len(list))
	}
}
