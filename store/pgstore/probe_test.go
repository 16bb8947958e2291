package pgstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestCacheDefaults checks when a Store caches: by default, for a
// minute; not with a negative CacheTTL; not with DisableNotify, which says
// no instance caches.
func TestCacheDefaults(t *testing.T) {
	url := testURL(t)
	for _, c := range []struct {
		name string
		o    Options
		ttl  time.Duration // 0: no cache
	}{
		{"Default", Options{}, time.Minute},
		{"TTL", Options{CacheTTL: 5 * time.Second}, 5 * time.Second},
		{"Off", Options{CacheTTL: -1}, 0},
		{"DisableNotify", Options{DisableNotify: true}, 0},
		{"OffDisableNotify", Options{CacheTTL: -1, DisableNotify: true}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.Table = newTable(t, url)
			s := open(t, url, c.o)
			switch {
			case c.ttl == 0 && s.cache != nil:
				t.Fatal("the cache is on")
			case c.ttl == 0:
				return
			case s.cache == nil:
				t.Fatal("the cache is off")
			case s.cache.ttl != c.ttl:
				t.Fatalf("cache TTL %v, want %v", s.cache.ttl, c.ttl)
			}
			r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h"}
			if err := s.Create(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := s.Load(t.Context(), r.Key); err != nil {
					t.Fatal(err)
				}
			}
			if hits, misses := s.CacheStats(); hits != 2 || misses != 1 {
				t.Fatalf("CacheStats = %d hits, %d misses; want 2, 1", hits, misses)
			}
		})
	}
}

// lockedBuffer is a log sink the listener may write to while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProbe gives a Store a listening connection that notifications from
// other connections do not reach, as through PgBouncer in transaction
// mode, where LISTEN succeeds and nothing ever arrives. The cache must
// stay off, so that another instance's change shows at once, the log must
// say why, and subscribers must not be told that broadcasts are heard;
// once notifications arrive again, the cache comes on by itself.
func TestProbe(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	var lose atomic.Bool
	lose.Store(true)
	var logs lockedBuffer
	s, err := Open(t.Context(), url, &Options{
		Table:        table,
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		loseProbes:   &lose,
		probeBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var reloads atomic.Int32
	defer s.Subscribe(func(msg []byte) {
		if msg == nil {
			reloads.Add(1)
		}
	})()
	other := open(t, url, Options{Table: table, CacheTTL: -1})

	r := &hallpass.Record{Key: hallpass.KeyOf(hallpass.NewToken()), Handle: "h",
		Data: map[string]json.RawMessage{"n": json.RawMessage(`1`)}}
	if err := s.Create(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(probeTimeout + time.Second)
	for n := 2; time.Now().Before(deadline); n++ {
		if _, err := s.Load(t.Context(), r.Key); err != nil {
			t.Fatal(err)
		}
		v := json.RawMessage(strings.Repeat("1", n))
		if err := other.Update(t.Context(), r.Key, hallpass.Delta{Set: map[string]json.RawMessage{"n": v}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(t.Context(), r.Key)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data["n"]) != string(v) {
			t.Fatalf("Load after another instance's update: n = %s, want %s: served from a cache that hears nothing", got.Data["n"], v)
		}
		if s.cache.live.Load() {
			t.Fatal("the cache is on though the probe never arrived")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if hits, _ := s.CacheStats(); hits != 0 {
		t.Errorf("%d cache hits without a working listener", hits)
	}
	if n := reloads.Load(); n != 0 {
		t.Errorf("subscribers told %d times that broadcasts are heard", n)
	}
	if !strings.Contains(logs.String(), "did not reach the listening connection") {
		t.Errorf("the log does not say why the cache is off:\n%s", logs.String())
	}

	lose.Store(false)
	waitLive(t, s, true)
	for deadline := time.Now().Add(5 * time.Second); reloads.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("subscribers were not told to reload once notifications arrived")
		}
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(t.Context(), r.Key); err != nil {
		t.Fatal(err)
	}
	if hits, _ := s.CacheStats(); hits == 0 {
		t.Error("no cache hit once notifications arrive")
	}
	if !strings.Contains(logs.String(), "notification connection back") {
		t.Errorf("the log does not say the cache is back:\n%s", logs.String())
	}
}

// TestCacheNeedsNotify: a positive CacheTTL with DisableNotify is refused.
func TestCacheNeedsNotify(t *testing.T) {
	url := testURL(t)
	if s, err := Open(t.Context(), url, &Options{Table: newTable(t, url), CacheTTL: time.Minute, DisableNotify: true, Logger: quiet}); err == nil {
		s.Close()
		t.Fatal("Open accepted a cache without notifications")
	}
}

// deafProxy forwards PostgreSQL's protocol between clients and target
// but drops every NotificationResponse ('A') the server sends, as a
// transaction pooler in effect does to a LISTEN. It returns its address.
func deafProxy(t *testing.T, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(s, c); s.Close() }()
			go func() {
				defer c.Close()
				defer s.Close()
				// The server's messages after startup are a type byte and
				// a length; the startup exchange is too (the client's
				// SSLRequest is refused with a single 'N' byte only when
				// asked, and sslmode=disable does not ask).
				hdr := make([]byte, 5)
				for {
					if _, err := io.ReadFull(s, hdr); err != nil {
						return
					}
					body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
					if _, err := io.ReadFull(s, body); err != nil {
						return
					}
					if hdr[0] == 'A' {
						continue
					}
					if _, err := c.Write(append(hdr, body...)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDeafConnection runs a Store whose every connection goes through a
// proxy that drops notifications: LISTEN succeeds, nothing ever arrives.
// Unlike TestProbe, nothing in the Store is told to fail; the probe must
// notice by itself, keep the cache off and say why.
func TestDeafConnection(t *testing.T) {
	url := testURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "sslmode=disable") {
		t.Skip("the proxy speaks plain PostgreSQL only; use sslmode=disable")
	}
	addr := deafProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var logs lockedBuffer
	s, err := New(t.Context(), pool, &Options{Table: newTable(t, url), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for deadline := time.Now().Add(probeTimeout + time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s.cache.live.Load() {
			t.Fatal("the cache is on though no notification reaches the store")
		}
	}
	if !strings.Contains(logs.String(), "notifications do not reach the listening connection") {
		t.Fatalf("the log does not say why the cache is off:\n%s", logs.String())
	}
}
