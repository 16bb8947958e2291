// Package storetest is the conformance suite for hallpass.Store. Every
// store runs it from its own tests:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) hallpass.Store { return newStore(t) })
//	}
//
// The suite is the executable form of the Store contract. Where the doc
// comments in package hallpass leave room, these are the rules a store
// must follow; each one is checked by a case below.
//
// Times. A store must keep every time field to at least millisecond
// precision. It need not keep the time zone or the monotonic clock
// reading: the suite compares instants with time.Time.Equal after
// truncating both sides to the millisecond, and its inputs are whole
// milliseconds in non-UTC zones, so truncating and rounding stores both
// pass. A zero time must come back as a zero time (IsZero), not as the
// Unix epoch.
//
// Data. Values come back as semantically equal JSON (whitespace, key
// order, escapes and number spelling may change, the numeric value may
// not). A key whose value is null is present. A record without keys may
// come back with a nil or an empty map. Keys are arbitrary UTF-8 strings,
// including "" and strings that mean something in JSON paths or query
// languages; values of 1 MiB must work. The suite only stores valid JSON
// without NUL characters.
//
// Version. Create stores Version 1 whatever the input says; every
// successful Update adds 1, even of a zero Delta; a successful Rotate adds
// 1.
//
// Expiry. An expired record is a missing record for every method, at the
// store's clock, which must agree with the test process's clock to within
// a few tens of milliseconds; it must become invisible within 3 s of its
// deadline (stores with exact clocks hide it at once). In particular:
// Load, Update and Rotate from it give ErrNotFound, and an Update whose
// Touch would extend its deadline does not revive it; Create and Rotate
// onto its key succeed and replace it entirely (Version 1, none of its
// data, none of its user index entry); ListUser omits it; DeleteUser does
// not count it. Create of an already expired record returns nil and
// leaves nothing loadable. An Update that makes a record expire (say a
// Meta with a past AbsoluteDeadline) returns nil.
//
// Rotate. When from is not live Rotate gives ErrNotFound even if to is
// taken. Rotate with from == to of a live record gives ErrExists and
// changes nothing. A failed Rotate changes neither key.
//
// Guests. Records with an empty UserID are not indexed: ListUser("")
// returns no records and a nil error, and DeleteUser("") removes nothing
// and returns 0 and a nil error. DeleteUser ignores keep keys that are
// missing or belong to another user.
//
// Atomicity. Rotate is atomic for every observer: ListUser never misses
// or doubles a record that is being rotated, and DeleteUser never misses
// one, so "sign out everywhere" cannot be escaped by a concurrent
// rotation. Concurrent Updates of one record all apply (none is lost),
// and of concurrent Creates of a key, or Rotates from a key, exactly one
// succeeds.
//
// Limits. A Rotate carrying a Limit counts the live records of the
// user the record has afterwards (the Delta's Meta, or else its own),
// other than from and to, and does so atomically with the move: however
// many Rotates into one user run at once, at most Limit.Max sessions
// remain, and with RefuseNew exactly as many succeed as fit. Evicted is
// called once per deleted session, with its handle.
//
// Ownership. Records a store returns are read-only to the caller: a store
// may hand the same record to many callers (from memory or a local cache),
// so callers Clone before changing one; and a returned record is a
// snapshot that later writes do not change. Records and deltas a caller passes
// in stay the caller's: mutating their maps, or the Meta a Delta points
// to, after the call does not change the store. JSON values themselves
// are never mutated by anyone.
//
// Context. Every method called with an already cancelled context returns
// an error for which errors.Is(err, context.Canceled) holds, and changes
// nothing.
//
// Shared stores. newStore may return a fresh store for each case or the
// same one, even one on a server holding other data: the suite uses
// random keys and random user IDs everywhere and never assumes a store is
// empty. Cases run one after another; apart from waits for deadlines to
// pass, the whole suite should take a few seconds.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// Run runs the conformance suite, each case as a subtest with a store from
// newStore.
func Run(t *testing.T, newStore func(t *testing.T) hallpass.Store) {
	t.Helper()
	RunExcept(t, newStore)
}

// RunExcept is Run without the named cases, for a store mode whose
// documentation says it does not guarantee what they check (Redis Cluster
// and rotation, say). The omission is the store's documented limit, not a
// skip: the cases are not run at all. It fails on a name that is not a
// case, so a typo cannot silently drop one.
func RunExcept(t *testing.T, newStore func(t *testing.T) hallpass.Store, except ...string) {
	t.Helper()
	omit := make(map[string]bool)
	for _, name := range except {
		if !slices.ContainsFunc(cases, func(c testCase) bool { return c.name == name }) {
			t.Fatalf("storetest: RunExcept: no case named %q", name)
		}
		omit[name] = true
	}
	for _, c := range cases {
		if !omit[c.name] {
			t.Run(c.name, func(t *testing.T) { c.run(t, newStore(t)) })
		}
	}
}

// Inputs are spelled in zones other than UTC and the local one, so a store
// that compares or stores wall-clock readings instead of instants fails.
var (
	zoneEast = time.FixedZone("UTC+14", 14*3600)
	zoneWest = time.FixedZone("UTC-09:30", -(9*3600 + 1800))
	zoneIST  = time.FixedZone("UTC+05:30", 5*3600+1800)
)

// expiryGrace is how long after a deadline a store may still show the
// record: enough for a server clock a little behind and for slow CI.
const expiryGrace = 3 * time.Second

func newKey() hallpass.Key { return hallpass.KeyOf(hallpass.NewToken()) }

// newUser returns a user ID no other run uses, so shared stores work.
func newUser() string { return "storetest-" + hallpass.NewHandle() }

// now returns the current time as a whole millisecond, without monotonic
// reading, so that stores with millisecond precision keep it exactly.
func now() time.Time { return time.Now().Truncate(time.Millisecond) }

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// liveRecord returns a typical signed-in session that stays live for the
// length of any case.
func liveRecord(userID string) *hallpass.Record {
	t := now()
	level := "password"
	if userID == "" {
		level = ""
	}
	return &hallpass.Record{
		Key:    newKey(),
		Handle: hallpass.NewHandle(),
		Meta: hallpass.Meta{
			UserID:           userID,
			AuthTime:         t.Add(-time.Minute).In(zoneEast),
			AuthLevel:        level,
			AbsoluteDeadline: t.Add(24 * time.Hour).In(zoneWest),
		},
		Touch: hallpass.Touch{
			LastSeen:     t.In(zoneIST),
			IdleDeadline: t.Add(time.Hour).In(zoneEast),
			LastIP:       "198.51.100.4",
			LastUA:       "storetest/1",
		},
		CreatedAt: t.Add(-time.Minute).In(zoneWest),
		CreatedIP: "198.51.100.4",
		CreatedUA: "storetest/1",
		Data:      map[string]json.RawMessage{"n": raw(`1`)},
	}
}

func create(t *testing.T, s hallpass.Store, rs ...*hallpass.Record) {
	t.Helper()
	for _, r := range rs {
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatalf("Create(%s): %v", r.Key, err)
		}
	}
}

func load(t *testing.T, s hallpass.Store, k hallpass.Key) *hallpass.Record {
	t.Helper()
	r, err := s.Load(t.Context(), k)
	if err != nil {
		t.Fatalf("Load(%s): %v", k, err)
	}
	if r == nil {
		t.Fatalf("Load(%s) returned a nil record and no error", k)
	}
	return r
}

func update(t *testing.T, s hallpass.Store, k hallpass.Key, d hallpass.Delta) {
	t.Helper()
	if err := s.Update(t.Context(), k, d); err != nil {
		t.Fatalf("Update(%s): %v", k, err)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func wantGone(t *testing.T, s hallpass.Store, k hallpass.Key, what string) {
	t.Helper()
	r, err := s.Load(t.Context(), k)
	if !errors.Is(err, hallpass.ErrNotFound) {
		t.Errorf("%s: Load = %v, %v; want ErrNotFound", what, r, err)
	}
}

// list returns ListUser's records by key, failing on errors and on a key
// listed twice.
func list(t *testing.T, s hallpass.Store, userID string) map[hallpass.Key]*hallpass.Record {
	t.Helper()
	rs, err := s.ListUser(t.Context(), userID)
	if err != nil {
		t.Fatalf("ListUser(%q): %v", userID, err)
	}
	m := make(map[hallpass.Key]*hallpass.Record, len(rs))
	for _, r := range rs {
		if r == nil {
			t.Fatalf("ListUser(%q) returned a nil record", userID)
		}
		if _, dup := m[r.Key]; dup {
			t.Errorf("ListUser(%q) lists %s twice", userID, r.Key)
		}
		m[r.Key] = r
	}
	return m
}

// wantList checks that ListUser(userID) lists exactly keys, each a record
// of userID.
func wantList(t *testing.T, s hallpass.Store, userID string, keys ...hallpass.Key) {
	t.Helper()
	got := list(t, s, userID)
	var missing, extra []string
	for _, k := range keys {
		if _, ok := got[k]; !ok {
			missing = append(missing, k.String())
		}
	}
	for k, r := range got {
		if !slices.Contains(keys, k) {
			extra = append(extra, k.String())
		}
		if r.UserID != userID {
			t.Errorf("ListUser(%q) lists %s with UserID %q", userID, k, r.UserID)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("ListUser(%q): missing %v, unexpected %v", userID, missing, extra)
	}
}

// sameTime compares instants at the millisecond precision stores promise.
func sameTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	return a.Truncate(time.Millisecond).Equal(b.Truncate(time.Millisecond))
}

// wantRecord compares every field of got with want; checkFieldsKnown keeps
// the list complete.
func wantRecord(t *testing.T, got, want *hallpass.Record) {
	t.Helper()
	var diffs []string
	str := func(name, g, w string) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	tm := func(name string, g, w time.Time) {
		if !sameTime(g, w) {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	boolean := func(name string, g, w bool) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	if got.Key != want.Key {
		diffs = append(diffs, fmt.Sprintf("Key = %s, want %s", got.Key, want.Key))
	}
	str("Handle", got.Handle, want.Handle)
	str("UserID", got.UserID, want.UserID)
	tm("AuthTime", got.AuthTime, want.AuthTime)
	str("AuthLevel", got.AuthLevel, want.AuthLevel)
	boolean("Remembered", got.Remembered, want.Remembered)
	tm("ReauthAt", got.ReauthAt, want.ReauthAt)
	boolean("Persistent", got.Persistent, want.Persistent)
	tm("AbsoluteDeadline", got.AbsoluteDeadline, want.AbsoluteDeadline)
	tm("LastSeen", got.LastSeen, want.LastSeen)
	tm("IdleDeadline", got.IdleDeadline, want.IdleDeadline)
	str("LastIP", got.LastIP, want.LastIP)
	str("LastUA", got.LastUA, want.LastUA)
	tm("CreatedAt", got.CreatedAt, want.CreatedAt)
	str("CreatedIP", got.CreatedIP, want.CreatedIP)
	str("CreatedUA", got.CreatedUA, want.CreatedUA)
	if got.Version != want.Version {
		diffs = append(diffs, fmt.Sprintf("Version = %d, want %d", got.Version, want.Version))
	}
	diffs = append(diffs, dataDiffs(got.Data, want.Data)...)
	if len(diffs) > 0 {
		t.Errorf("record %s:\n\t%s", want.Key, strings.Join(diffs, "\n\t"))
	}
}

func wantData(t *testing.T, got, want map[string]json.RawMessage) {
	t.Helper()
	if diffs := dataDiffs(got, want); len(diffs) > 0 {
		t.Errorf("Data:\n\t%s", strings.Join(diffs, "\n\t"))
	}
}

func dataDiffs(got, want map[string]json.RawMessage) []string {
	var diffs []string
	for _, k := range sortedKeys(want) {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("Data[%q] missing, want %s", k, short(want[k])))
		case !jsonEqual(g, want[k]):
			diffs = append(diffs, fmt.Sprintf("Data[%q] = %s, want %s", k, short(g), short(want[k])))
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("Data[%q] = %s, want no such key", k, short(got[k])))
		}
	}
	return diffs
}

func sortedKeys(m map[string]json.RawMessage) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// short keeps failure messages about 1 MiB values readable.
func short(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%s... (%d bytes)", b[:60], len(b))
	}
	return string(b)
}

// jsonEqual reports whether a and b are the same JSON value: equal after
// decoding, with numbers compared exactly rather than as float64.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true // the suite only writes valid JSON; skip decoding megabytes
	}
	va, ok := decodeJSON(a)
	if !ok {
		return false
	}
	vb, ok := decodeJSON(b)
	return ok && jsonValuesEqual(va, vb)
}

func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return v, true
}

func jsonValuesEqual(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, va := range a {
			vb, ok := b[k]
			if !ok || !jsonValuesEqual(va, vb) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		return ok && slices.EqualFunc(a, b, jsonValuesEqual)
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, okA := new(big.Rat).SetString(string(a))
		rb, okB := new(big.Rat).SetString(string(b))
		return okA && okB && ra.Cmp(rb) == 0
	default: // string, bool, nil
		return a == b
	}
}

// checkFieldsKnown fails when Record, Meta or Touch gain a field that
// wantRecord and the round-trip case do not know, so the suite cannot
// silently stop covering every field.
func checkFieldsKnown(t *testing.T) {
	t.Helper()
	known := map[reflect.Type][]string{
		reflect.TypeFor[hallpass.Record](): {"Key", "Handle", "Meta", "Touch", "CreatedAt", "CreatedIP", "CreatedUA", "Data", "Version"},
		reflect.TypeFor[hallpass.Meta]():   {"UserID", "AuthTime", "AuthLevel", "Remembered", "ReauthAt", "Persistent", "AbsoluteDeadline"},
		reflect.TypeFor[hallpass.Touch]():  {"LastSeen", "IdleDeadline", "LastIP", "LastUA"},
	}
	for typ, want := range known {
		var got []string
		for i := range typ.NumField() {
			got = append(got, typ.Field(i).Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%v has fields %v; storetest knows %v: teach wantRecord and RoundTrip the change", typ, got, want)
		}
	}
}

// cancelled returns a context that is already cancelled.
func cancelled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}
