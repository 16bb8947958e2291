package bench

// Setup tests of the server-backed stacks (servers_test.go). Besides the
// checks of the in-process stacks (reads see the warm-up value, writes
// increment it, store calls per request), they pin how many round trips a
// request makes to its server, counted up to three ways, all on the
// stacks exactly as benchmarked:
//
//   - on the wire, by every stack: its wireCounter counts the writes on
//     the connections its client opened to the server, one per round trip
//     (see wireCounter). Only the stack's own connections are counted, so
//     other users of a shared server do not disturb it. The benchmarks
//     report the same count as round-trips/op.
//   - by statement, on PostgreSQL: a pgx.QueryTracer on the stack's pool
//     counts the statements sent (Query, QueryRow, Exec), by their first
//     word, and batches (pgx.BatchTracer).
//   - by command, on Redis, at the server: INFO stats
//     (total_commands_processed) and INFO commandstats (calls per command)
//     before and after the requests. INFO is server-wide, and commands a
//     script runs count too (HMGET, HSET, ... inside the EVALSHA).
//
// Every count is taken over a window of windowRequests consecutive
// requests, after one request of the same kind, and the window is
// repeated (up to 10 times) until it shows the expected number:
// background traffic (a client's keep-alive PING, the pgstore listener's
// check, another client of a shared Redis) can only add to a window, so
// the smallest count over the windows is what the requests themselves
// cost, and it must equal the expected one exactly.

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/hallpass/hallpass/store/storetest"
)

// windowRequests is the number of requests in one counting window.
const windowRequests = 50

// counts are named counters; a snapshot of them, or a difference.
type counts map[string]int64

// wireCounts is a snapshot function of st's wire counter.
func wireCounts(st *stack) func() counts {
	return func() counts { return counts{"round trips": st.wire.writes.Load()} }
}

// queryCounter is a pgx tracer that counts statements, in all and by
// their first word (SELECT, WITH, INSERT, ...), and batches. LISTEN, which
// pgstore's listener sends once per connection it listens on, is not
// counted: it is no request's.
type queryCounter struct {
	mu sync.Mutex
	c  counts
}

func (q *queryCounter) add(k string) {
	q.mu.Lock()
	if q.c == nil {
		q.c = counts{}
	}
	q.c[k]++
	q.mu.Unlock()
}

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	verb, _, _ := strings.Cut(strings.TrimSpace(d.SQL), " ")
	verb = strings.ToUpper(verb)
	if verb != "LISTEN" {
		q.add("statements")
		q.add(verb)
	}
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (q *queryCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	q.add("batches")
	return ctx
}

func (q *queryCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (q *queryCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (q *queryCounter) snapshot() counts {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := maps.Clone(q.c)
	if c == nil {
		c = counts{}
	}
	return c
}

// redisInfo returns a snapshot function of the server's command counters:
// "commands" (INFO stats total_commands_processed, less the INFO
// commands this function sent) and every command's calls (INFO
// commandstats, "cmdstat_hgetall" as "hgetall").
func redisInfo(t *testing.T) func() counts {
	t.Helper()
	co, err := rueidis.ParseURL(storetest.ServiceURL(t, redisURLVar))
	if err != nil {
		t.Fatal(err)
	}
	co.DisableCache = true
	c, err := rueidis.NewClient(co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var infos int64
	return func() counts {
		s, err := c.Do(context.Background(), c.B().Info().Section("stats", "commandstats").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		snap := counts{}
		for line := range strings.Lines(s) {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				snap["commands"] = n - infos // the earlier INFOs are in n, this one is not yet
			}
			if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
				name, stats, _ := strings.Cut(rest, ":")
				calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
				n, _ := strconv.ParseInt(calls, 10, 64)
				snap[name] = n
			}
		}
		if name := "info"; snap[name] > 0 {
			snap[name] -= infos
		}
		infos++
		return snap
	}
}

// serveN sends n requests through h with the cookie and checks each
// answers 200.
func serveN(t *testing.T, h http.Handler, cookie string, n int) {
	t.Helper()
	for range n {
		if w := serve(h, newRequest(cookie)); w.Code != http.StatusOK {
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	}
}

// perRequest is a check of one counter over a window: want per request.
type perRequest struct {
	counter string
	want    int64
}

// checkWindows sends windows of windowRequests requests through h, each
// after one request more, up to ten, until the checked counters, each at
// its smallest over the windows so far, are exactly want per request.
// It returns the smallest difference of every counter, for the log.
func checkWindows(t *testing.T, what string, h http.Handler, cookie string, snap func() counts, checks ...perRequest) counts {
	t.Helper()
	const n = windowRequests
	var least counts
	for range 10 {
		// One request first, so that a window is the steady state of
		// repeated requests of its kind: the first write after reads
		// finds the record still cached, later ones do not.
		serveN(t, h, cookie, 1)
		before := snap()
		serveN(t, h, cookie, n)
		after := snap()
		d := counts{}
		for k, v := range after {
			if v != before[k] {
				d[k] = v - before[k]
			}
		}
		if least == nil {
			least = d
		} else {
			for k := range least {
				least[k] = min(least[k], d[k])
			}
		}
		ok := true
		for _, c := range checks {
			ok = ok && least[c.counter] == c.want*n
		}
		if ok {
			break
		}
	}
	for _, c := range checks {
		if got := least[c.counter]; got != c.want*n {
			t.Errorf("%s: %s: %d over %d requests (%.2f per request) in the best of 10 windows, want %d per request",
				what, c.counter, got, n, float64(got)/n, c.want)
		}
	}
	t.Logf("%s: per request: %s", what, perRequestString(least, n))
	return least
}

// perRequestString formats c divided by n, sorted by name.
func perRequestString(c counts, n int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if c[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(c[k])/float64(n)))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// ---- Hallpass on Redis ----

// TestSetupHallpassRedis: with the client-side cache on (the default), a
// read-only request makes no round trip after warm-up, and Redis runs no
// command for it: its Load is a DoCache hit. A repeated write request is
// one round trip, its Update (one EVALSHA): its Load is served from the
// record the store's previous write left as its current copy (its own
// write connection tracks with NOLOOP, so only other clients' changes
// drop it).
func TestSetupHallpassRedis(t *testing.T) {
	cs := &countingStore{}
	st := newHallpassRedis(t, hooks{hallpass: cs.wrap})
	checkHallpassStack(t, st, cs)
	serveN(t, st.read, st.cookie, 3) // cache the record after the writes
	info := redisInfo(t)
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 0})
	checkWindows(t, "read, at the server", st.read, st.cookie, info, perRequest{"commands", 0})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 1})
	checkWindows(t, "write, at the server", st.write, st.cookie, info,
		perRequest{"hgetall", 0}, perRequest{"evalsha", 1}, perRequest{"eval", 0}, perRequest{"script|load", 0})
}

// TestSetupHallpassRedisNoCache: with CacheTTL -1, a read-only request is
// one round trip, one HGETALL, and a write request two: the HGETALL and
// one EVALSHA.
func TestSetupHallpassRedisNoCache(t *testing.T) {
	cs := &countingStore{}
	st := newHallpassRedisNoCache(t, hooks{hallpass: cs.wrap})
	checkHallpassStack(t, st, cs)
	info := redisInfo(t)
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 1})
	checkWindows(t, "read, at the server", st.read, st.cookie, info,
		perRequest{"commands", 1}, perRequest{"hgetall", 1})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 2})
	checkWindows(t, "write, at the server", st.write, st.cookie, info,
		perRequest{"hgetall", 1}, perRequest{"evalsha", 1}, perRequest{"eval", 0}, perRequest{"script|load", 0})
}

// ---- Hallpass on PostgreSQL ----

// TestSetupHallpassPostgresNoCache: without the cache, a read-only
// request is one statement (the SELECT of Load) and one round trip, and a
// write request two: the SELECT and one UPDATE (a WITH ... UPDATE that
// also sends the NOTIFY).
func TestSetupHallpassPostgresNoCache(t *testing.T) {
	cs, qc := &countingStore{}, &queryCounter{}
	st := newHallpassPostgresNoCache(t, hooks{hallpass: cs.wrap, tracer: qc})
	checkHallpassStack(t, st, cs)
	checkWindows(t, "read, statements", st.read, st.cookie, qc.snapshot,
		perRequest{"statements", 1}, perRequest{"SELECT", 1}, perRequest{"batches", 0})
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 1})
	checkWindows(t, "write, statements", st.write, st.cookie, qc.snapshot,
		perRequest{"statements", 2}, perRequest{"SELECT", 1}, perRequest{"WITH", 1}, perRequest{"batches", 0})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 2})
}

// TestSetupHallpassPostgres: with pgstore's defaults, the cache on (and
// the listener up, which the stack waits for), a read-only request makes
// no round trip; a repeated write request is the UPDATE alone: the
// previous write put the row it returned in the cache, and its own
// versioned notification does not evict it.
func TestSetupHallpassPostgres(t *testing.T) {
	cs, qc := &countingStore{}, &queryCounter{}
	st := newHallpassPostgres(t, hooks{hallpass: cs.wrap, tracer: qc})
	checkHallpassStack(t, st, cs)
	serveN(t, st.read, st.cookie, 3) // cache the record after the writes
	checkWindows(t, "read, statements", st.read, st.cookie, qc.snapshot, perRequest{"statements", 0})
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 0})
	checkWindows(t, "write, statements", st.write, st.cookie, qc.snapshot,
		perRequest{"statements", 1}, perRequest{"SELECT", 0}, perRequest{"WITH", 1}, perRequest{"batches", 0})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 1})
}

// ---- SCS on Redis and PostgreSQL ----

// TestSetupSCSRedis: a read is one GET; a write is the GET and then
// MULTI, SET, PEXPIREAT, EXEC sent together: two round trips.
func TestSetupSCSRedis(t *testing.T) {
	cs := &countingSCS{}
	st := newSCSRedis(t, hooks{scs: cs.wrap})
	checkSCSStack(t, st, cs)
	info := redisInfo(t)
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 1})
	checkWindows(t, "read, at the server", st.read, st.cookie, info,
		perRequest{"commands", 1}, perRequest{"get", 1})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 2})
	checkWindows(t, "write, at the server", st.write, st.cookie, info,
		perRequest{"commands", 5}, perRequest{"get", 1}, perRequest{"set", 1}, perRequest{"exec", 1})
}

// TestSetupSCSPostgres: a read is one SELECT; a write the SELECT and one
// INSERT ... ON CONFLICT DO UPDATE.
func TestSetupSCSPostgres(t *testing.T) {
	cs, qc := &countingSCS{}, &queryCounter{}
	st := newSCSPostgres(t, hooks{scs: cs.wrap, tracer: qc})
	checkSCSStack(t, st, cs)
	checkWindows(t, "read, statements", st.read, st.cookie, qc.snapshot,
		perRequest{"statements", 1}, perRequest{"SELECT", 1})
	checkWindows(t, "read, on the wire", st.read, st.cookie, wireCounts(st), perRequest{"round trips", 1})
	checkWindows(t, "write, statements", st.write, st.cookie, qc.snapshot,
		perRequest{"statements", 2}, perRequest{"SELECT", 1}, perRequest{"INSERT", 1})
	checkWindows(t, "write, on the wire", st.write, st.cookie, wireCounts(st), perRequest{"round trips", 2})
}
