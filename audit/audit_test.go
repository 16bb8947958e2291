package audit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/audit"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/pgstore"
	"github.com/hallpass/hallpass/store/redisstore"
	"github.com/hallpass/hallpass/store/sqlitestore"
	"github.com/hallpass/hallpass/store/storetest"
	"github.com/jackc/pgx/v5"
)

var quiet = slog.New(slog.DiscardHandler)

// backend opens a fresh, empty store for one test. now is the store's
// clock; only the stores with clock set accept a fake one.
type backend struct {
	name  string
	clock bool
	open  func(t *testing.T, now func() time.Time) hallpass.Store
}

func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// backends are memstore and sqlitestore always, and Redis and
// PostgreSQL when their test servers are configured (skipped otherwise,
// failed under CI=true).
var backends = []backend{
	{name: "memstore", clock: true, open: func(t *testing.T, now func() time.Time) hallpass.Store {
		s := memstore.New(&memstore.Options{Now: now})
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{name: "sqlitestore", clock: true, open: func(t *testing.T, now func() time.Time) hallpass.Store {
		dir := t.TempDir()
		s, err := sqlitestore.Open(filepath.Join(dir, "s.db"), &sqlitestore.Options{Now: now, SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return &inDir{s, dir}
	}},
	{name: "redisstore", open: func(t *testing.T, _ func() time.Time) hallpass.Store {
		url := storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_URL")
		s, err := redisstore.Open(url, &redisstore.Options{KeyPrefix: randomName("hallpass-audit-test-") + ":"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		tr := &tracked{Store: s}
		t.Cleanup(tr.cleanup) // runs before Close
		return tr
	}},
	{name: "pgstore", open: func(t *testing.T, _ func() time.Time) hallpass.Store {
		url := storetest.ServiceURL(t, "HALLPASS_TEST_POSTGRES_URL")
		table := randomName("hallpass_audit_test_")
		t.Cleanup(func() { dropTable(t, url, table) }) // runs after Close
		s, err := pgstore.Open(t.Context(), url, &pgstore.Options{Table: table, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

// inDir is a store that keeps its files in dir.
type inDir struct {
	hallpass.Store
	dir string
}

// tracked remembers every key and user it wrote, so that a test on a
// shared server can remove what it left there.
type tracked struct {
	hallpass.Store
	mu    sync.Mutex
	keys  []hallpass.Key
	users map[string]bool
}

func (s *tracked) note(k hallpass.Key, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	if s.users == nil {
		s.users = make(map[string]bool)
	}
	if user != "" {
		s.users[user] = true
	}
}

func (s *tracked) Create(ctx context.Context, r *hallpass.Record) error {
	s.note(r.Key, r.UserID)
	return s.Store.Create(ctx, r)
}

func (s *tracked) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	user := ""
	if d.Meta != nil {
		user = d.Meta.UserID
	}
	s.note(to, user)
	return s.Store.Rotate(ctx, from, to, d)
}

func (s *tracked) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Store.Delete(ctx, s.keys...)
	for u := range s.users {
		s.Store.DeleteUser(ctx, u)
	}
}

func dropTable(t *testing.T, url, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("drop table: %v", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Errorf("drop table: %v", err)
	}
}

func eachBackend(t *testing.T, clockOnly bool, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		if clockOnly && !b.clock {
			continue
		}
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

func newLog(t *testing.T, st hallpass.Store, opts *audit.Options) *audit.Log {
	t.Helper()
	if opts == nil {
		opts = &audit.Options{}
	}
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	l, err := audit.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func flush(t *testing.T, l *audit.Log) {
	t.Helper()
	if err := l.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// describe spells events for comparison; times as UnixNano, so that
// zones and monotonic readings do not count.
func describe(evs []hallpass.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s/%s/%s/%s/%d/%s/%s/%s\n", e.Kind, e.Reason, e.Handle, e.UserID, e.Time.UnixNano(), e.IP, e.UserAgent, e.ForwardedFor)
	}
	return b.String()
}

func check(t *testing.T, what string, got []hallpass.Event, err error, want ...hallpass.Event) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if g, w := describe(got), describe(want); g != w {
		t.Errorf("%s:\ngot\n%swant\n%s", what, g, w)
	}
}

// TestQueries stores a mix of events and queries them by user and kind,
// newest first, on every store.
func TestQueries(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, b backend) {
		st := b.open(t, nil)
		l := newLog(t, st, nil)
		base := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
		ev := func(i int, kind hallpass.EventKind, reason, user string) hallpass.Event {
			return hallpass.Event{
				Kind: kind, Reason: reason, UserID: user, Handle: fmt.Sprintf("handle-%d", i),
				Time: base.Add(time.Duration(i) * time.Second), IP: "192.0.2.7",
				UserAgent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", ForwardedFor: "198.51.100.1, 10.0.0.1",
			}
		}
		all := []hallpass.Event{
			ev(0, hallpass.EventCreated, "", "alice"),
			ev(1, hallpass.EventAuthenticated, "", "alice"),
			ev(2, hallpass.EventExtended, "", "alice"),
			ev(3, hallpass.EventRotated, "", "alice"),
			ev(4, hallpass.EventSuspicious, hallpass.ReasonUnknownToken, ""),
			ev(5, hallpass.EventAuthenticated, "", "bob"),
			ev(6, hallpass.EventRevoked, hallpass.ReasonRevokeOthers, "alice"),
			ev(7, hallpass.EventLoggedOut, "", "alice"),
			ev(8, hallpass.EventLoginRefused, hallpass.ReasonSessionLimit, "bob"),
			ev(9, hallpass.EventExpiredIdle, "", "carol"),
			ev(10, hallpass.EventExpiredAbsolute, "", "carol"),
			ev(11, hallpass.EventRenewed, "", "alice"),
			// Two at the same instant: the one emitted later is newer.
			ev(12, hallpass.EventSuspicious, hallpass.ReasonTokenReuse, "alice"),
			ev(12, hallpass.EventRevoked, hallpass.ReasonTokenReuse, "alice"),
			ev(13, hallpass.EventWriteRefused, hallpass.ReasonCookieTooLarge, "alice"),
		}
		// Emitted out of order, as several instances or a slow request
		// would: queries sort by the events' times.
		for _, i := range []int{0, 1, 2, 3, 5, 4, 6, 7, 8, 10, 9, 11, 12, 13, 14} {
			l.Emit(t.Context(), all[i])
		}
		flush(t, l)
		ctx := t.Context()

		got, err := l.Latest(ctx, 0)
		check(t, "Latest(0)", got, err, all[13], all[12], all[10], all[9], all[8], all[7], all[6], all[5], all[4], all[1])
		got, err = l.Latest(ctx, 3)
		check(t, "Latest(3)", got, err, all[13], all[12], all[10])
		got, err = l.ForUser(ctx, "alice", 0)
		check(t, "ForUser(alice)", got, err, all[13], all[12], all[7], all[6], all[1])
		got, err = l.ForUser(ctx, "bob", 1)
		check(t, "ForUser(bob, 1)", got, err, all[8])
		got, err = l.Query(ctx, audit.Query{User: "alice", Kind: hallpass.EventRevoked})
		check(t, "alice's revocations", got, err, all[13], all[6])
		got, err = l.Query(ctx, audit.Query{Kind: hallpass.EventAuthenticated})
		check(t, "sign-ins", got, err, all[5], all[1])
		got, err = l.Query(ctx, audit.Query{Kind: hallpass.EventSuspicious, Limit: 1})
		check(t, "the latest suspicious event", got, err, all[12])
		got, err = l.ForUser(ctx, "dave", 10)
		check(t, "ForUser(dave)", got, err)
		if _, err := l.ForUser(ctx, "", 10); err == nil {
			t.Error("ForUser without a user id succeeded")
		}
		if n := l.Dropped(); n != 0 {
			t.Errorf("Dropped = %d", n)
		}
	})
}

// TestRetention checks that events expire with the store after the
// retention, on the stores that take a fake clock.
func TestRetention(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, b backend) {
		clock := storetest.NewClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
		st := b.open(t, clock.Now)
		l := newLog(t, st, &audit.Options{Now: clock.Now})
		short := newLog(t, st, &audit.Options{Now: clock.Now, Retention: time.Hour})
		l.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventLoggedOut, UserID: "alice", Time: clock.Now()})
		short.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventLoggedOut, UserID: "bob", Time: clock.Now()})
		flush(t, l)
		flush(t, short)
		count := func(user string) int {
			t.Helper()
			evs, err := l.ForUser(t.Context(), user, 0)
			if err != nil {
				t.Fatal(err)
			}
			return len(evs)
		}
		clock.Add(61 * time.Minute)
		if count("alice") != 1 || count("bob") != 0 {
			t.Errorf("after 61 minutes: alice %d, bob %d events; want 1 and 0 (1 h retention)", count("alice"), count("bob"))
		}
		clock.Add(30*24*time.Hour - 62*time.Minute) // a minute before 30 days
		if count("alice") != 1 {
			t.Error("event gone before 30 days")
		}
		clock.Add(2 * time.Minute)
		if count("alice") != 0 {
			t.Error("event kept after 30 days")
		}
		if evs, err := l.Latest(t.Context(), 0); err != nil || len(evs) != 0 {
			t.Errorf("Latest after 30 days: %d events, %v", len(evs), err)
		}
	})
}

// TestBounds checks that the lists keep at most their bound, and the
// newest events.
func TestBounds(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, b backend) {
		st := b.open(t, nil)
		l := newLog(t, st, &audit.Options{MaxEvents: 10, MaxUserEvents: 3})
		base := time.Now().Truncate(time.Second)
		var alice []hallpass.Event
		var every []hallpass.Event
		for i := range 25 {
			e := hallpass.Event{Kind: hallpass.EventAuthenticated, Handle: fmt.Sprint(i), UserID: []string{"alice", "bob"}[i%2], Time: base.Add(time.Duration(i) * time.Second)}
			l.Emit(t.Context(), e)
			every = append([]hallpass.Event{e}, every...)
			if e.UserID == "alice" {
				alice = append([]hallpass.Event{e}, alice...)
			}
		}
		flush(t, l)
		for list, want := range map[string]int{audit.GlobalUser: 10, audit.UserPrefix + "alice": 3, audit.UserPrefix + "bob": 3} {
			recs, err := st.ListUser(t.Context(), list)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != want {
				t.Errorf("%s holds %d records, want %d", list, len(recs), want)
			}
		}
		got, err := l.Latest(t.Context(), 0)
		check(t, "Latest", got, err, every[:10]...)
		got, err = l.ForUser(t.Context(), "alice", 0)
		check(t, "ForUser(alice)", got, err, alice[:3]...)
	})
}

// TestNoToken runs a real Manager through a guest cart, a sign-in, a
// sign-out and a replay of the old cookie, with the log in its sinks and
// in its store, and then looks for every cookie it issued, and the store
// keys they hash to, in everything the log stored (and, for SQLite, in
// the database files).
func TestNoToken(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, b backend) {
		st := b.open(t, nil)
		l := newLog(t, st, nil)
		m, err := hallpass.New(hallpass.Config{Store: st, Events: l, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/cart", func(w http.ResponseWriter, r *http.Request) { hallpass.FromRequest(r).Set("cart", []string{"tea"}) })
		mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
			if err := hallpass.FromRequest(r).Login("alice", hallpass.LoginOptions{}); err != nil {
				t.Error(err)
			}
		})
		mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
			if err := hallpass.FromRequest(r).Logout(); err != nil {
				t.Error(err)
			}
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, hallpass.FromRequest(r).UserID()) })
		h := m.Handler(mux)
		var tokens []string
		do := func(path, cookie string) (string, string) {
			req := httptest.NewRequest("GET", "http://localhost"+path, nil)
			req.RemoteAddr = "192.0.2.9:4321"
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
			if cookie != "" {
				req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: cookie})
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			for _, c := range rec.Result().Cookies() {
				if c.Name == m.CookieName() {
					cookie = c.Value
					if c.Value != "" {
						tokens = append(tokens, c.Value)
					}
				}
			}
			return cookie, rec.Body.String()
		}
		guest, _ := do("/cart", "")
		signedIn, _ := do("/login", guest)
		if _, who := do("/", signedIn); who != "alice" {
			t.Fatalf("signed in as %q", who)
		}
		do("/logout", signedIn)
		if _, who := do("/", signedIn); who != "" {
			t.Fatalf("the old cookie still signs in as %q", who)
		}
		do("/", guest) // rotated out at login: unknown
		if len(tokens) < 2 {
			t.Fatalf("saw %d session cookies", len(tokens))
		}
		flush(t, l)

		mine, err := l.ForUser(t.Context(), "alice", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(mine) != 2 || mine[0].Kind != hallpass.EventLoggedOut || mine[1].Kind != hallpass.EventAuthenticated ||
			mine[0].Handle == "" || mine[0].Handle != mine[1].Handle || mine[0].IP != "192.0.2.9" {
			t.Errorf("alice's events: %s", describe(mine))
		}
		all, err := l.Latest(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) < 3 || all[0].Kind != hallpass.EventSuspicious {
			t.Errorf("the log (the replays should be suspicious): %s", describe(all))
		}

		var stored bytes.Buffer
		for _, list := range []string{audit.GlobalUser, audit.UserPrefix + "alice"} {
			recs, err := st.ListUser(t.Context(), list)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				j, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				stored.Write(j)
				fmt.Fprintf(&stored, "%+v %s\n", *r, r.Key)
			}
		}
		// The search below does see what the log stored.
		if len(mine) == 0 || !bytes.Contains(stored.Bytes(), []byte(mine[0].Handle)) {
			t.Fatal("the stored records do not hold the events' handles")
		}
		var files [][]byte
		if d, ok := st.(*inDir); ok {
			entries, err := os.ReadDir(d.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(d.dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, b)
			}
		}
		for _, tok := range tokens {
			key := hallpass.KeyOf(tok)
			for _, spelling := range []string{tok, key.String(), base64.StdEncoding.EncodeToString(key[:])} {
				if bytes.Contains(stored.Bytes(), []byte(spelling)) {
					t.Errorf("the audit log holds a session cookie, or its key: %s", spelling)
				}
				for _, f := range files {
					if bytes.Contains(f, []byte(spelling)) {
						t.Errorf("the database file holds a session cookie: %s", spelling)
					}
				}
			}
		}
	})
}

// TestReservedUsers checks that nobody can sign in as one of the log's
// lists, which would let a session list, or revoke, the audit records.
func TestReservedUsers(t *testing.T) {
	st := memstore.New(nil)
	t.Cleanup(func() { st.Close() })
	m, err := hallpass.New(hallpass.Config{Store: st, Logger: quiet, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {})})
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{audit.GlobalUser, audit.UserPrefix + "alice", audit.UserPrefix} {
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := hallpass.FromRequest(r).Login(user, hallpass.LoginOptions{}); err == nil {
				t.Errorf("Login(%q) succeeded", user)
			}
		}))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://localhost/", nil))
	}
}

func TestKinds(t *testing.T) {
	st := memstore.New(nil)
	t.Cleanup(func() { st.Close() })
	l := newLog(t, st, &audit.Options{Kinds: []hallpass.EventKind{hallpass.EventCreated}})
	now := time.Now()
	l.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventCreated, Handle: "a", Time: now})
	l.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventSuspicious, Handle: "b", Time: now})
	flush(t, l)
	got, err := l.Latest(t.Context(), 0)
	if err != nil || len(got) != 1 || got[0].Handle != "a" {
		t.Errorf("got %s, %v; want the created event only", describe(got), err)
	}
}

// TestClip checks that client-supplied strings are stored bounded, as
// valid UTF-8.
func TestClip(t *testing.T) {
	st := memstore.New(nil)
	t.Cleanup(func() { st.Close() })
	l := newLog(t, st, nil)
	ua := strings.Repeat("é", 1000) // 2 bytes each: 512 falls between runes' ends
	l.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventSuspicious, UserAgent: ua, ForwardedFor: strings.Repeat("1", 5000), Time: time.Now()})
	flush(t, l)
	got, err := l.Latest(t.Context(), 1)
	if err != nil || len(got) != 1 {
		t.Fatal(got, err)
	}
	if u := got[0].UserAgent; len(u) > 512 || len(u) < 510 || !utf8.ValidString(u) || !strings.HasPrefix(ua, u) {
		t.Errorf("stored User-Agent of %d bytes, valid %v", len(u), utf8.ValidString(u))
	}
	if len(got[0].ForwardedFor) != 512 {
		t.Errorf("stored X-Forwarded-For of %d bytes", len(got[0].ForwardedFor))
	}
}

// blocking is a store whose Create waits for release (or for its
// context), telling entered when it starts.
type blocking struct {
	hallpass.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) Create(ctx context.Context, r *hallpass.Record) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Store.Create(ctx, r)
}

// TestQueueFull checks that Emit does not wait for a slow store: events
// beyond the queue are dropped, counted and reported.
func TestQueueFull(t *testing.T) {
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	st := &blocking{Store: mem, entered: make(chan struct{}, 1), release: make(chan struct{})}
	var logged bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(p)
	}), nil))
	l := newLog(t, st, &audit.Options{QueueSize: 2, Logger: logger})
	e := hallpass.Event{Kind: hallpass.EventSuspicious, Time: time.Now()}
	l.Emit(t.Context(), e)
	<-st.entered // the writer holds the first event
	start := time.Now()
	for range 5 {
		l.Emit(t.Context(), e)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("5 Emits took %v with the store stuck", d)
	}
	if n := l.Dropped(); n != 3 {
		t.Errorf("Dropped = %d, want 3 (one being written, two queued)", n)
	}
	close(st.release)
	flush(t, l)
	got, err := l.Latest(t.Context(), 0)
	if err != nil || len(got) != 3 {
		t.Errorf("stored %d events, %v; want 3", len(got), err)
	}
	l.Close()
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logged.String(), "dropped=3") {
		t.Errorf("drops not reported: %s", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestClose checks that Close takes about WriteTimeout even with a store
// that never answers, and that later Emits are dropped.
func TestClose(t *testing.T) {
	mem := memstore.New(nil)
	t.Cleanup(func() { mem.Close() })
	st := &blocking{Store: mem, entered: make(chan struct{}, 1), release: make(chan struct{})}
	l := newLog(t, st, &audit.Options{WriteTimeout: 50 * time.Millisecond})
	e := hallpass.Event{Kind: hallpass.EventSuspicious, Time: time.Now()}
	for range 100 {
		l.Emit(t.Context(), e)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a 50 ms WriteTimeout", d)
	}
	if n := l.Dropped(); n != 100 {
		t.Errorf("Dropped = %d, want 100", n)
	}
	l.Emit(t.Context(), e)
	if n := l.Dropped(); n != 101 {
		t.Errorf("Dropped after an Emit after Close = %d, want 101", n)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Flush(t.Context()); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
}

// failing is a store that is down.
type failing struct{ hallpass.Store }

var errDown = errors.New("store down")

func (failing) Create(context.Context, *hallpass.Record) error { return errDown }
func (failing) ListUser(context.Context, string) ([]*hallpass.Record, error) {
	return nil, errDown
}

func TestStoreDown(t *testing.T) {
	l := newLog(t, failing{}, nil)
	l.Emit(t.Context(), hallpass.Event{Kind: hallpass.EventLoggedOut, UserID: "alice", Time: time.Now()})
	flush(t, l)
	if n := l.Dropped(); n != 1 {
		t.Errorf("Dropped = %d, want 1", n)
	}
	if _, err := l.Latest(t.Context(), 10); !errors.Is(err, errDown) {
		t.Errorf("Latest: %v, want the store's error", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := audit.New(nil, nil); err == nil {
		t.Error("New without a store succeeded")
	}
	st := memstore.New(nil)
	t.Cleanup(func() { st.Close() })
	if _, err := audit.New(st, &audit.Options{Retention: -time.Hour}); err == nil {
		t.Error("New with a negative retention succeeded")
	}
}

// TestConcurrentEmit emits from many goroutines while querying, for the
// race detector.
func TestConcurrentEmit(t *testing.T) {
	st := memstore.New(nil)
	t.Cleanup(func() { st.Close() })
	l := newLog(t, st, &audit.Options{QueueSize: 4096})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				l.Emit(context.Background(), hallpass.Event{Kind: hallpass.EventAuthenticated, UserID: fmt.Sprint("u", g), Handle: fmt.Sprint(i), Time: time.Now()})
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := l.Latest(context.Background(), 10); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	flush(t, l)
	got, err := l.Latest(t.Context(), 0)
	if err != nil || uint64(len(got))+l.Dropped() != 800 {
		t.Errorf("%d stored + %d dropped, want 800 (%v)", len(got), l.Dropped(), err)
	}
	for g := range 4 {
		mine, _ := l.ForUser(t.Context(), fmt.Sprint("u", g), 0)
		if len(mine) != 200 {
			t.Errorf("u%d: %d events, want 200", g, len(mine))
		}
	}
}

func BenchmarkEmit(b *testing.B) {
	st := memstore.New(nil)
	b.Cleanup(func() { st.Close() })
	l, err := audit.New(st, &audit.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	e := hallpass.Event{Kind: hallpass.EventAuthenticated, UserID: "alice", Handle: "h", Time: time.Now()}
	b.Run("kept", func(b *testing.B) {
		for b.Loop() {
			l.Emit(context.Background(), e)
		}
	})
	b.Run("ignored", func(b *testing.B) {
		e := e
		e.Kind = hallpass.EventExtended
		b.ReportAllocs()
		for b.Loop() {
			l.Emit(context.Background(), e)
		}
	})
}

// BenchmarkLatest measures a query of a full log (DefaultMaxEvents
// events), the admin page's cost.
func BenchmarkLatest(b *testing.B) {
	for _, name := range []string{"memstore", "sqlitestore"} {
		b.Run(name, func(b *testing.B) {
			var st hallpass.Store
			if name == "memstore" {
				m := memstore.New(nil)
				b.Cleanup(func() { m.Close() })
				st = m
			} else {
				s, err := sqlitestore.Open(filepath.Join(b.TempDir(), "s.db"), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				st = s
			}
			l, err := audit.New(st, &audit.Options{Logger: quiet, QueueSize: audit.DefaultMaxEvents})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { l.Close() })
			now := time.Now()
			for i := range audit.DefaultMaxEvents {
				l.Emit(context.Background(), hallpass.Event{
					Kind: hallpass.EventSuspicious, Reason: hallpass.ReasonUnknownToken, Handle: fmt.Sprint(i),
					Time: now.Add(time.Duration(i) * time.Millisecond), IP: "192.0.2.1",
					UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
				})
			}
			if err := l.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				evs, err := l.Latest(context.Background(), 50)
				if err != nil || len(evs) != 50 {
					b.Fatal(len(evs), err)
				}
			}
		})
	}
}
