package live_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/live"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// bus is a memstore that is also a Broadcaster within the process, as a
// store shared by two app instances is over the network.
type bus struct {
	*memstore.Store
	storetest.Bus
}

// twoInstances returns two apps over one store, each with its own
// Manager and Hub, sharing ends through bc only: no periodic checks.
func twoInstances(t *testing.T, store hallpass.Store, bc hallpass.Broadcaster, clock *storetest.Clock) (a, b *app) {
	return newApp(t, store, bc, clock, fast, hallpass.Config{}), newApp(t, store, bc, clock, fast, hallpass.Config{})
}

func newBus(t *testing.T, clock *storetest.Clock) *bus {
	b := &bus{Store: memstore.New(&memstore.Options{Now: clock.Now})}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestAcrossInstances(t *testing.T) {
	clock := newClock()
	b := newBus(t, clock)
	testAcrossInstances(t, b, b, clock)
	for _, msg := range b.Sent() {
		var v map[string]any
		if len(msg) > 1024 || !utf8.Valid(msg) || json.Unmarshal(msg, &v) != nil || v["topic"] != live.Topic {
			t.Errorf("broadcast %q: want JSON of at most 1 KiB with topic %q", msg, live.Topic)
		}
	}
}

// testAcrossInstances checks that ends on instance A reach streams on
// instance B, and that a user-wide end spares the session that made it.
func testAcrossInstances(t *testing.T, store hallpass.Store, bc hallpass.Broadcaster, clock *storetest.Clock) {
	a, b := twoInstances(t, store, bc, clock)
	user := "alice-" + hallpass.NewHandle()
	phone, laptop, tablet := a.login(user), a.login(user), a.login(user)
	onPhone, onLaptop, onTablet := b.open(phone), b.open(laptop), b.open(tablet)

	if err := a.m.Revoke(t.Context(), user, a.status(tablet).Handle); err != nil {
		t.Fatal(err)
	}
	wantReason(t, onTablet.ended(), live.ReasonRevoked)

	if code, _ := a.do("POST", "/revoke-others", laptop); code != 200 {
		t.Fatalf("revoke-others: %d", code)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(200 * time.Millisecond)

	if code, _ := a.do("POST", "/logout", laptop); code != 200 {
		t.Fatalf("logout: %d", code)
	}
	wantReason(t, onLaptop.ended(), live.ReasonLoggedOut)

	desk := a.login(user)
	onDesk := b.open(desk)
	if _, err := a.m.RevokeAll(t.Context(), user); err != nil {
		t.Fatal(err)
	}
	wantReason(t, onDesk.ended(), live.ReasonRevoked)
}

func TestLostBroadcastRechecks(t *testing.T) {
	clock := newClock()
	bc := newBus(t, clock)
	a, b := twoInstances(t, bc, bc, clock)
	phone, laptop := a.login("alice"), a.login("alice")
	onPhone, onLaptop := b.open(phone), b.open(laptop)

	bc.Lose(true)
	if code, _ := a.do("POST", "/revoke-others", laptop); code != 200 {
		t.Fatalf("revoke-others: %d", code)
	}
	// Nothing reached B: without the nil it would wait for its hourly check.
	onPhone.live(100 * time.Millisecond)
	bc.Reconnect()
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(100 * time.Millisecond)
}

func TestBroadcastOthersIgnored(t *testing.T) {
	clock := newClock()
	bc := newBus(t, clock)
	var errs []error
	var mu sync.Mutex
	opts := fast
	opts.OnError = func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	a := newApp(t, bc, bc, clock, opts, hallpass.Config{})
	s := a.open(a.login("alice"))
	handle := a.status(a.login("alice")).Handle
	for _, msg := range []string{
		`{"topic":"hallpass.revocation","k":"u","s":"alice","c":1,"x":2}`, // another user of the channel
		`{"topic":"someone.else","all":true}`,
		`["not", "an", "object"]`,
		`{"topic":"hallpass.live","reason":"revoked"}`, // names no one
		`{"topic":"hallpass.live","handle":"` + handle + `","reason":"bored"}`,
	} {
		bc.Broadcast(t.Context(), []byte(msg))
	}
	s.live(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 2 {
		t.Errorf("reported %d malformed broadcasts, want 2: %v", len(errs), errs)
	}
}

func TestBroadcastLongUserID(t *testing.T) {
	// A user id too long for a 1 KiB message: the other instances are
	// asked to re-check every stream instead.
	clock := newClock()
	bc := newBus(t, clock)
	a, b := twoInstances(t, bc, bc, clock)
	user := strings.Repeat("u", 2000)
	phone, laptop := a.login(user), a.login(user)
	onPhone, onLaptop := b.open(phone), b.open(laptop)
	if code, _ := a.do("POST", "/revoke-others", laptop); code != 200 {
		t.Fatalf("revoke-others: %d", code)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(100 * time.Millisecond)
	for _, msg := range bc.Sent() {
		if len(msg) > 1024 {
			t.Errorf("broadcast of %d bytes", len(msg))
		}
	}
}

func TestAcrossRedisInstances(t *testing.T) {
	url := storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_URL")
	// Redis expires keys by its own clock: this one must agree.
	clock := storetest.NewClock(time.Now())
	prefix := "hallpass-test-live-" + hallpass.NewHandle() + ":"
	open := func() *redisstore.Store {
		s, err := redisstore.Open(url, &redisstore.Options{KeyPrefix: prefix, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s1, s2 := open(), open()
	a := newApp(t, s1, s1, clock, fast, hallpass.Config{})
	b := newApp(t, s2, s2, clock, fast, hallpass.Config{})
	user := "alice-" + hallpass.NewHandle()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := s1.DeleteUser(ctx, user); err != nil { // the test's records, and the index
			t.Errorf("cleaning up: %v", err)
		}
	})
	phone, laptop := a.login(user), a.login(user)
	onPhone, onLaptop := b.open(phone), b.open(laptop)
	if code, _ := a.do("POST", "/revoke-others", laptop); code != 200 {
		t.Fatalf("revoke-others: %d", code)
	}
	wantReason(t, onPhone.ended(), live.ReasonRevoked)
	onLaptop.live(200 * time.Millisecond)
	if err := a.m.Revoke(t.Context(), user, a.status(laptop).Handle); err != nil {
		t.Fatal(err)
	}
	wantReason(t, onLaptop.ended(), live.ReasonRevoked)
}
