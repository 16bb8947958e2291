package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/redis/rueidis"
)

const urlVar = "HALLPASS_TEST_REDIS_URL"

// testURL returns the test server's URL, skipping the test without one.
func testURL(t testing.TB) string {
	t.Helper()
	return storetest.ServiceURL(t, urlVar)
}

// serverAddr returns the host:port a redis:// URL names.
func serverAddr(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "6379"
	}
	return net.JoinHostPort(host, port)
}

// newClient connects to the test server. mod, if not nil, adjusts the
// options first (to go through a proxy, say). The client is closed when
// the test ends.
func newClient(t testing.TB, raw string, mod func(*rueidis.ClientOption)) rueidis.Client {
	t.Helper()
	co, err := rueidis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&co)
	}
	c, err := rueidis.NewClient(co)
	if err != nil {
		t.Fatalf("connect to %s: %v", urlVar, err)
	}
	t.Cleanup(c.Close)
	return c
}

// testPrefix returns a KeyPrefix no other test run uses, and deletes its
// keys when the test ends.
func testPrefix(t testing.TB, raw string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "hallpass-test-" + hex.EncodeToString(b[:]) + ":"
	admin := newClient(t, raw, func(o *rueidis.ClientOption) { o.DisableCache = true })
	t.Cleanup(func() { deletePrefix(t, admin, prefix) }) // runs before admin's Close
	return prefix
}

// deletePrefix deletes every key under prefix, on every node, with SCAN
// so that a shared server is not blocked.
func deletePrefix(t testing.TB, c rueidis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.Nodes() {
		var cursor uint64
		for {
			e, err := n.Do(ctx, n.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Errorf("cleaning %s*: %v", prefix, err)
				return
			}
			cmds := make(rueidis.Commands, len(e.Elements))
			for i, k := range e.Elements {
				cmds[i] = c.B().Unlink().Key(k).Build() // one key each: keys may be in different slots
			}
			for _, r := range c.DoMulti(ctx, cmds...) {
				if err := r.Error(); err != nil {
					t.Errorf("cleaning %s*: %v", prefix, err)
					return
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
}

// newStore returns a Store on its own client.
func newStore(t testing.TB, raw string, opts Options, mod func(*rueidis.ClientOption)) *Store {
	t.Helper()
	c := newClient(t, raw, func(o *rueidis.ClientOption) {
		if opts.CacheTTL < 0 {
			o.DisableCache = true
		}
		if mod != nil {
			mod(o)
		}
	})
	s, err := New(c, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // before the client's Close
	return s
}

func testKey() hallpass.Key { return hallpass.KeyOf(hallpass.NewToken()) }

func testUser() string { return "redisstore-test-" + hallpass.NewHandle() }

// liveRecord returns a signed-in record live for a day.
func liveRecord(user string) *hallpass.Record {
	now := time.Now().Truncate(time.Millisecond)
	return &hallpass.Record{
		Key:       testKey(),
		Handle:    hallpass.NewHandle(),
		Meta:      hallpass.Meta{UserID: user, AuthTime: now, AuthLevel: "password", AbsoluteDeadline: now.Add(24 * time.Hour)},
		Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour), LastIP: "192.0.2.1", LastUA: "test"},
		CreatedAt: now,
		CreatedIP: "192.0.2.1",
		CreatedUA: "test",
		Data:      map[string]json.RawMessage{"n": json.RawMessage(`1`)},
	}
}
