package token

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/sqlitestore"
	"github.com/hallpass/hallpass/store/storetest"
)

// start is where test clocks begin: now, so that servers that expire keys
// by their own clock (Redis) agree with the stores' clocks.
func start() time.Time { return time.Now().Truncate(time.Millisecond) }

// events records what an Issuer emits.
type events struct{ storetest.Events }

func (e *events) all() []hallpass.Event { return e.All() }

func (e *events) count(kind hallpass.EventKind, reason string) int {
	n := 0
	for _, ev := range e.all() {
		if ev.Kind == kind && ev.Reason == reason {
			n++
		}
	}
	return n
}

// bus makes a memstore a hallpass.Broadcaster within the process: what a
// store shared by several processes does over the network.
type bus struct {
	*memstore.Store
	storetest.Bus
}

// tracked records every record written through it, so that a test can
// look at what the store was given and delete it afterwards from a
// shared server.
type tracked struct {
	hallpass.Store
	mu      sync.Mutex
	keys    []hallpass.Key
	written []string // every record's and delta's data, JSON as given
}

func (s *tracked) Create(ctx context.Context, r *hallpass.Record) error {
	s.note(r.Key, r.Handle, r.UserID, r.Data)
	return s.Store.Create(ctx, r)
}

func (s *tracked) Update(ctx context.Context, k hallpass.Key, d hallpass.Delta) error {
	s.note(k, "", metaUser(d), d.Set)
	return s.Store.Update(ctx, k, d)
}

func (s *tracked) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	s.note(to, "", metaUser(d), d.Set)
	return s.Store.Rotate(ctx, from, to, d)
}

func metaUser(d hallpass.Delta) string {
	if d.Meta != nil {
		return d.Meta.UserID
	}
	return ""
}

func (s *tracked) note(k hallpass.Key, handle, user string, data map[string]json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	var b strings.Builder
	b.WriteString(handle + "\x00" + user + "\x00")
	for k, v := range data {
		b.WriteString(k + "=" + string(v) + "\x00")
	}
	s.written = append(s.written, b.String())
}

func (s *tracked) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	keys := slices.Clone(s.keys)
	s.mu.Unlock()
	s.Store.Delete(ctx, keys...)
	s.Store.DeleteUser(ctx, hallpass.RevocationsUser)
}

// instance is one app instance: a store client, its Revocations and an
// Issuer, sharing a clock and a key with the other instances of a test.
type instance struct {
	store  hallpass.Store
	rev    *hallpass.Revocations
	is     *Issuer
	events *events
}

// backend opens the stores of two instances sharing one server (or one
// memstore), with the clock as their time.
type backend struct {
	name string
	// pushes says the store is a hallpass.Broadcaster: a revocation on
	// one instance reaches the other before the call returns. Otherwise
	// it arrives within the Revocations' poll interval.
	pushes bool
	open   func(t *testing.T, clock *storetest.Clock) (a, b hallpass.Store)
}

func backends() []backend {
	return []backend{
		{"memstore", true, func(t *testing.T, clock *storetest.Clock) (hallpass.Store, hallpass.Store) {
			s := &bus{Store: memstore.New(&memstore.Options{Now: clock.Now})}
			t.Cleanup(func() { s.Close() })
			return s, s
		}},
		{"sqlitestore", false, func(t *testing.T, clock *storetest.Clock) (hallpass.Store, hallpass.Store) {
			path := filepath.Join(t.TempDir(), "tokens.db")
			open := func() hallpass.Store {
				s, err := sqlitestore.Open(path, &sqlitestore.Options{Now: clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(), open()
		}},
		{"redisstore", false, func(t *testing.T, clock *storetest.Clock) (hallpass.Store, hallpass.Store) {
			url := storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_URL")
			open := func() hallpass.Store {
				s, err := redisstore.Open(url, &redisstore.Options{KeyPrefix: "hallpass-token-test:", Now: clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return track(t, s)
			}
			return open(), open()
		}},
		{"pgstore", false, func(t *testing.T, clock *storetest.Clock) (hallpass.Store, hallpass.Store) {
			url := storetest.ServiceURL(t, "HALLPASS_TEST_POSTGRES_URL")
			open := func() hallpass.Store {
				s, err := pgstore.Open(t.Context(), url, &pgstore.Options{Table: "hallpass_token_test", Now: clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return track(t, s)
			}
			return open(), open()
		}},
	}
}

// track wraps a store on a shared server so that what the test wrote is
// deleted when it ends (before the store is closed: cleanups run last in,
// first out).
func track(t *testing.T, s hallpass.Store) hallpass.Store {
	tr := &tracked{Store: s}
	t.Cleanup(tr.cleanup)
	return tr
}

// eachBackend runs f as a subtest on every backend.
func eachBackend(t *testing.T, f func(t *testing.T, be backend)) {
	for _, be := range backends() {
		t.Run(be.name, func(t *testing.T) { f(t, be) })
	}
}

// testKey is the signing key of every test Issuer.
var testKey = NewKey("test-1")

// newInstance returns an instance over s. poll is the Revocations' poll
// interval; mod, if not nil, changes the Config first.
func newInstance(t testing.TB, s hallpass.Store, clock *storetest.Clock, poll time.Duration, mod func(*Config)) *instance {
	t.Helper()
	rev, err := hallpass.NewRevocations(t.Context(), s, &hallpass.RevocationOptions{
		PollInterval: poll,
		Now:          clock.Now,
		OnError:      func(err error) { t.Logf("revocations: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rev.Close() })
	ev := &events{}
	cfg := Config{
		Issuer: "https://issuer.example", Audience: "https://api.example",
		Keys: []Key{testKey}, Store: s, Revocations: rev,
		Events: ev, Now: clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	is, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &instance{store: s, rev: rev, is: is, events: ev}
}

// single returns one instance over a memstore.
func single(t testing.TB, mod func(*Config)) (*instance, *storetest.Clock) {
	clock := storetest.NewClock(start())
	s := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { s.Close() })
	return newInstance(t, s, clock, time.Hour, mod), clock
}

func issue(t testing.TB, is *Issuer, user string) *Pair {
	t.Helper()
	p, err := is.IssueForUser(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// within polls cond for up to bound, and returns how long it took.
func within(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > bound {
			t.Fatalf("not within %v: %s", bound, what)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(begin)
}
