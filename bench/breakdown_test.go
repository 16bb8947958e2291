//go:build breakdown

package bench

// BenchmarkBreakdown is not part of the comparison run: it needs the
// build tag,
//
//	go test -tags breakdown -run '^$' -bench Breakdown -benchtime 3s .
//
// It runs the server-backed stacks' read and write requests as
// BenchmarkRead and BenchmarkWrite do, with a timer around the store
// (hallpass.Store Load and Update; scs.Store Find and Commit), and
// reports where a request's time goes: load-µs/op and save-µs/op, the
// time spent in those calls (waiting for the server included), and
// rest-µs/op, the rest of the request. The timer costs two time.Now calls
// per store call.
//
// On Redis it also reports what the server spent per request:
// server-cpu-µs/op, the CPU time of the redis-server process (INFO cpu,
// used_cpu_user + used_cpu_sys: commands, scripts and socket I/O), and
// script-µs/op, the time Redis spent running EVALSHA and EVAL (INFO
// commandstats usec, the commands the script runs included). INFO is
// server-wide: anyone else using the server adds to both.
//
// BenchmarkBreakdown/Floor measures the bare round trip of each client,
// the floor of any request that goes to the server: a PING with rueidis
// (Hallpass's Redis client) and with a redigo pool (SCS's), and a
// prepared SELECT $1::int with a pgx pool (both PostgreSQL stores').
//
// Extra stacks, to show what a setting costs:
//
//   - HallpassPostgresNoNotify: pgstore without a cache and with
//     DisableNotify, without the NOTIFY every write sends for other
//     instances' caches (allowed only when no instance caches), to compare
//     with HallpassPostgresNoCache;
//   - HallpassPostgresAsync (no cache) and SCSPostgresAsync:
//     synchronous_commit=off on the pool's connections, so that a write
//     does not wait for its WAL flush: the difference to
//     HallpassPostgresNoCache and SCSPostgres is the flush wait.

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/gomodule/redigo/redis"
	"github.com/redis/rueidis"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// storeTimer times the calls to a hallpass.Store or an scs.Store.
type storeTimer struct {
	load, save time.Duration
}

type timedStore struct {
	hallpass.Store
	t *storeTimer
}

func (s *timedStore) Load(ctx context.Context, k hallpass.Key) (*hallpass.Record, error) {
	t0 := time.Now()
	r, err := s.Store.Load(ctx, k)
	s.t.load += time.Since(t0)
	return r, err
}

func (s *timedStore) Update(ctx context.Context, k hallpass.Key, d hallpass.Delta) error {
	t0 := time.Now()
	err := s.Store.Update(ctx, k, d)
	s.t.save += time.Since(t0)
	return err
}

type timedSCS struct {
	scs.Store
	t *storeTimer
}

func (s *timedSCS) Find(token string) ([]byte, bool, error) {
	t0 := time.Now()
	b, ok, err := s.Store.Find(token)
	s.t.load += time.Since(t0)
	return b, ok, err
}

func (s *timedSCS) Commit(token string, b []byte, expiry time.Time) error {
	t0 := time.Now()
	err := s.Store.Commit(token, b, expiry)
	s.t.save += time.Since(t0)
	return err
}

func (t *storeTimer) hooks() hooks {
	return hooks{
		hallpass: func(s hallpass.Store) hallpass.Store { return &timedStore{s, t} },
		scs:      func(s scs.Store) scs.Store { return &timedSCS{s, t} },
	}
}

// newHallpassPostgresNoNotify is HallpassPostgresNoCache with
// DisableNotify.
func newHallpassPostgresNoNotify(tb testing.TB, h hooks) *stack {
	return newHallpassPostgresOpts(tb, h, pgstore.Options{CacheTTL: -1, DisableNotify: true})
}

var asyncCommit = map[string]string{"synchronous_commit": "off"}

// newHallpassPostgresAsync is HallpassPostgresNoCache with
// synchronous_commit=off.
func newHallpassPostgresAsync(tb testing.TB, h hooks) *stack {
	h.pgParams = asyncCommit
	return newHallpassPostgresNoCache(tb, h)
}

// newSCSPostgresAsync is SCSPostgres with synchronous_commit=off.
func newSCSPostgresAsync(tb testing.TB, h hooks) *stack {
	h.pgParams = asyncCommit
	return newSCSPostgres(tb, h)
}

// redisServerStats returns the redis-server's CPU time (INFO cpu) and the
// time it spent running scripts (INFO commandstats), in µs.
func redisServerStats(b *testing.B, c rueidis.Client) (cpu, scripts float64) {
	s, err := c.Do(context.Background(), c.B().Info().Section("cpu", "commandstats").Build()).ToString()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(s) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_user", "used_cpu_sys":
			sec, _ := strconv.ParseFloat(v, 64)
			cpu += sec * 1e6
		case "cmdstat_evalsha", "cmdstat_eval":
			_, usec, _ := strings.Cut(v, ",usec=")
			usec, _, _ = strings.Cut(usec, ",")
			n, _ := strconv.ParseFloat(usec, 64)
			scripts += n
		}
	}
	return cpu, scripts
}

func BenchmarkBreakdown(b *testing.B) {
	b.Run("Floor/RueidisPing", func(b *testing.B) {
		co, err := rueidis.ParseURL(storetest.ServiceURL(b, redisURLVar))
		if err != nil {
			b.Fatal(err)
		}
		co.DisableCache = true
		c, err := rueidis.NewClient(co)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Do(ctx, c.B().Ping().Build()).Error(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor/RedigoPing", func(b *testing.B) {
		url := storetest.ServiceURL(b, redisURLVar)
		pool := &redis.Pool{MaxIdle: 10, Dial: func() (redis.Conn, error) { return redis.DialURL(url) }}
		defer pool.Close()
		b.ReportAllocs()
		for b.Loop() {
			c := pool.Get()
			_, err := c.Do("PING")
			c.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Floor/PostgresSelect", func(b *testing.B) {
		pool := newPool(b, storetest.ServiceURL(b, postgresURLVar), hooks{}, &wireCounter{}, nil)
		ctx := context.Background()
		var n int
		b.ReportAllocs()
		for b.Loop() {
			if err := pool.QueryRow(ctx, "SELECT $1::int", 1).Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	})

	stacks := append(libs[4:len(libs):len(libs)],
		lib{"HallpassPostgresNoNotify", newHallpassPostgresNoNotify},
		lib{"HallpassPostgresAsync", newHallpassPostgresAsync},
		lib{"SCSPostgresAsync", newSCSPostgresAsync})
	for _, kind := range []string{"Read", "Write"} {
		for _, l := range stacks {
			b.Run(kind+"/"+l.name, func(b *testing.B) {
				var info rueidis.Client
				if strings.Contains(l.name, "Redis") {
					co, err := rueidis.ParseURL(storetest.ServiceURL(b, redisURLVar))
					if err != nil {
						b.Fatal(err)
					}
					co.DisableCache = true
					if info, err = rueidis.NewClient(co); err != nil {
						b.Fatal(err)
					}
					b.Cleanup(info.Close)
				}
				t := &storeTimer{}
				st := l.new(b, t.hooks())
				h := st.read
				if kind == "Write" {
					h = st.write
				}
				*t = storeTimer{}
				var cpu, scripts float64
				if info != nil {
					cpu, scripts = redisServerStats(b, info)
				}
				start := time.Now()
				w, iters := run(b, st, h, newRequest(st.cookie))
				total := time.Since(start)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code)
				}
				per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(iters) }
				b.ReportMetric(per(t.load), "load-µs/op")
				b.ReportMetric(per(t.save), "save-µs/op")
				b.ReportMetric(per(total-t.load-t.save), "rest-µs/op")
				if info != nil {
					cpu2, scripts2 := redisServerStats(b, info)
					b.ReportMetric((cpu2-cpu)/float64(iters), "server-cpu-µs/op")
					b.ReportMetric((scripts2-scripts)/float64(iters), "script-µs/op")
				}
			})
		}
	}
}
