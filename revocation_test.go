package hallpass_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

func newRevocations(t *testing.T, s hallpass.Store, clock *storetest.Clock, poll time.Duration) *hallpass.Revocations {
	t.Helper()
	r, err := hallpass.NewRevocations(t.Context(), s, &hallpass.RevocationOptions{
		PollInterval: poll,
		Retain:       time.Hour,
		Now:          clock.Now,
		OnError:      func(err error) { t.Errorf("revocations: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// eventually polls cond for up to two seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 2s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRevocationsUserCutoff(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	r := newRevocations(t, s, clock, time.Hour)

	before := clock.Now().Add(-time.Second)
	if r.Revoked("alice", "", before) {
		t.Fatal("revoked before anything was revoked")
	}
	if err := r.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	cutoff := clock.Now()
	if got := r.Cutoff("alice"); !got.Equal(cutoff) {
		t.Errorf("Cutoff = %v, want %v", got, cutoff)
	}
	switch {
	case !r.Revoked("alice", "", before):
		t.Error("a credential issued before the cutoff is still valid")
	case !r.Revoked("alice", "some-jti", before):
		t.Error("a credential with an id, issued before the cutoff, is still valid")
	case r.Revoked("alice", "", cutoff):
		t.Error("a credential issued at the cutoff (a fresh login) is revoked")
	case r.Revoked("bob", "", before):
		t.Error("another user's credential is revoked")
	}

	// A later cutoff moves it; an earlier call cannot move it back.
	clock.Add(time.Minute)
	if err := r.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked("alice", "", cutoff.Add(30*time.Second)) {
		t.Error("the second cutoff did not apply")
	}
}

func TestRevocationsIDExpires(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	r := newRevocations(t, s, clock, 5*time.Millisecond)
	if err := r.RevokeID(t.Context(), "jti-1", clock.Now().Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked("", "jti-1", clock.Now()) || r.Revoked("", "jti-2", clock.Now()) {
		t.Fatal("RevokeID did not revoke exactly jti-1")
	}
	if err := r.RevokeID(t.Context(), "already-expired", clock.Now().Add(-time.Second)); err != nil || r.Revoked("", "already-expired", clock.Now()) {
		t.Errorf("revoking an expired credential: %v; it should be a no-op", err)
	}
	if err := r.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if n := s.Len(); n != 2 {
		t.Errorf("store holds %d records, want 2 entries", n)
	}
	clock.Add(10 * time.Minute)
	eventually(t, "the id entry is dropped once what it revoked has expired", func() bool {
		return !r.Revoked("", "jti-1", clock.Now().Add(-time.Hour))
	})
	if !r.Revoked("alice", "", clock.Now().Add(-time.Hour)) {
		t.Error("the user cutoff (retained an hour) went with the id")
	}
	clock.Add(time.Hour)
	eventually(t, "the user cutoff is dropped after Retain", func() bool {
		return !r.Revoked("alice", "", clock.Now().Add(-2*time.Hour))
	})
	if n := s.Len(); n != 0 {
		t.Errorf("store holds %d records after every entry expired, want 0", n)
	}
}

// TestRevocationsShareThroughStore runs two "instances" on one store that
// cannot broadcast: the second learns by reloading, and a third started
// later learns at start.
func TestRevocationsShareThroughStore(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	a := newRevocations(t, s, clock, time.Hour)
	b := newRevocations(t, s, clock, 5*time.Millisecond)
	issued := clock.Now().Add(-time.Second)
	if err := a.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeID(t.Context(), "jti-1", clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance B learns of A's revocations", func() bool {
		return b.Revoked("alice", "", issued) && b.Revoked("", "jti-1", issued)
	})
	c := newRevocations(t, s, clock, time.Hour)
	if !c.Revoked("alice", "", issued) || !c.Revoked("", "jti-1", issued) {
		t.Error("an instance started later does not know the revocations")
	}
}

// localBus is a memstore that is also a Broadcaster, within the process.
type localBus struct {
	*memstore.Store
	storetest.Bus
}

func TestRevocationsBroadcast(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	bus := &localBus{Store: memstore.New(&memstore.Options{Now: clock.Now})}
	defer bus.Close()
	// Reloads only every hour: what B knows at once came by broadcast.
	a := newRevocations(t, bus, clock, time.Hour)
	b := newRevocations(t, bus, clock, time.Hour)
	issued := clock.Now().Add(-time.Second)
	if err := a.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	if !b.Revoked("alice", "", issued) {
		t.Fatal("B does not know of A's revocation when RevokeUser returns")
	}

	bus.Lose(true)
	if err := a.RevokeID(t.Context(), "jti-lost", clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if b.Revoked("", "jti-lost", issued) {
		t.Fatal("the bus did not lose the message; the test proves nothing")
	}
	bus.Reconnect()
	if !b.Revoked("", "jti-lost", issued) {
		t.Error("after a reconnect B did not reload the revocation it missed")
	}

	// Garbage on the channel is reported and changes nothing.
	a.Close()
	b.Close()
	var reported []error
	var mu sync.Mutex
	c, err := hallpass.NewRevocations(t.Context(), bus, &hallpass.RevocationOptions{
		Now: clock.Now, PollInterval: time.Hour,
		OnError: func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{`{`, `{"topic":"hallpass.revocation","k":"z","s":"bob","x":1}`, `{"topic":"hallpass.revocation","k":"u","s":"","x":1}`, `[1]`} {
		bus.Broadcast(t.Context(), []byte(msg))
	}
	// Other users of the channel are none of its business.
	bus.Broadcast(t.Context(), []byte(`{"topic":"someone.else","k":"u","s":"bob","c":99999999999999,"x":99999999999999}`))
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 4 {
		t.Errorf("%d of 4 malformed broadcasts reported: %v", len(reported), reported)
	}
	if c.Revoked("bob", "", issued) {
		t.Error("a malformed broadcast revoked bob")
	}
}

func TestReservedUserIDs(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	var err error
	h.serve("", func(w http.ResponseWriter, r *http.Request) {
		err = hallpass.FromRequest(r).Login(hallpass.RevocationsUser, hallpass.LoginOptions{})
	})
	if err == nil {
		t.Error("Login as the revocation list's user id succeeded")
	}
	if _, err := h.m.RevokeAll(t.Context(), hallpass.RevocationsUser); err == nil {
		t.Error("RevokeAll of the revocation list's user id succeeded")
	}
}

// TestSignOutEverywhereCutsOffStatelessCredentials checks that the
// Manager's user-wide revocations reach its Revocations.
func TestSignOutEverywhereCutsOffStatelessCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(h *harness, cookie string) error
	}{
		{"RevokeAll", func(h *harness, _ string) error {
			_, err := h.m.RevokeAll(context.Background(), "alice")
			return err
		}},
		{"RevokeOthers", func(h *harness, c string) (err error) {
			h.serve(c, func(w http.ResponseWriter, r *http.Request) { _, err = hallpass.FromRequest(r).RevokeOthers() })
			return err
		}},
		{"CredentialsChanged", func(h *harness, c string) (err error) {
			h.serve(c, func(w http.ResponseWriter, r *http.Request) {
				_, err = hallpass.FromRequest(r).CredentialsChanged(true)
			})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
			s := memstore.New(&memstore.Options{Now: clock.Now})
			defer s.Close()
			r := newRevocations(t, s, clock, time.Hour)
			h := newHarness(t, hallpass.Config{Store: s, Revocations: r})
			h.clock = clock
			c := h.signIn("alice", "Firefox", "192.0.2.1")
			issued := clock.Now()
			clock.Add(time.Second)
			if r.Revoked("alice", "", issued) {
				t.Fatal("revoked before the revocation")
			}
			if err := tc.revoke(h, c); err != nil {
				t.Fatal(err)
			}
			if !r.Revoked("alice", "", issued) {
				t.Error("alice's stateless credentials issued before are still valid")
			}
			if r.Revoked("bob", "", issued) {
				t.Error("bob's are revoked")
			}
		})
	}
}

func TestCutoffsStrictlyIncrease(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	r := newRevocations(t, s, clock, time.Hour)
	if err := r.RevokeUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	between := r.Cutoff("alice") // issued right after the first, same millisecond
	if r.Revoked("alice", "", between) {
		t.Fatal("a credential issued at the cutoff is revoked")
	}
	if err := r.RevokeUser(t.Context(), "alice"); err != nil { // the clock has not moved
		t.Fatal(err)
	}
	if !r.Revoked("alice", "", between) {
		t.Error("a credential issued between two revocations in one millisecond survived the second")
	}
}

// TestRevokeDeviceRevokesItsHandle: tokens issued for a session name its
// handle, so revoking the device puts the handle on the list.
func TestRevokeDeviceRevokesItsHandle(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	r := newRevocations(t, s, clock, time.Hour)
	h := newHarness(t, hallpass.Config{Store: s, Revocations: r})
	c := h.signIn("alice", "Firefox", "192.0.2.1")
	recs, err := s.ListUser(t.Context(), "alice")
	if err != nil || len(recs) != 1 {
		t.Fatal(len(recs), err)
	}
	handle := recs[0].Handle
	if err := h.m.Revoke(t.Context(), "alice", handle); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked("", handle, clock.Now()) {
		t.Error("the revoked device's handle is not on the list")
	}
	if got := h.who(c); got != "guest" {
		t.Errorf("the revoked device is %q", got)
	}
}

// TestRevokeIDWithoutExpiry: a credential with no expiry (a zero until)
// or one further away than milliseconds count is revoked, and the
// revocation is kept in the store, where another instance finds it; it
// used to wrap into the past and be dropped as already expired.
func TestRevokeIDWithoutExpiry(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := memstore.New(&memstore.Options{Now: clock.Now})
	defer s.Close()
	r := newRevocations(t, s, clock, time.Hour)
	for _, c := range []struct {
		id    string
		until time.Time
	}{{"no-expiry", time.Time{}}, {"far", time.Unix(1<<62, 0)}} {
		if err := r.RevokeID(t.Context(), c.id, c.until); err != nil {
			t.Fatal(err)
		}
		if !r.Revoked("", c.id, clock.Now()) {
			t.Errorf("%s: not revoked", c.id)
		}
	}
	other := newRevocations(t, s, clock, time.Hour)
	for _, id := range []string{"no-expiry", "far"} {
		if !other.Revoked("", id, clock.Now()) {
			t.Errorf("%s: another instance does not know of the revocation", id)
		}
	}
	clock.Add(hallpass.DefaultRevocationRetain + time.Minute)
	if !r.Revoked("", "far", clock.Now()) {
		t.Error("a far revocation ended with Retain")
	}
}
