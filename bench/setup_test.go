package bench

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"

	"github.com/hallpass/hallpass"
)

// The TestSetup tests check that the benchmarks measure what they claim:
// with the warm-up cookie, every request loads the existing session (a
// guest would read 0), writes increment it, and, for the stores, a read
// is exactly one load and a write one load plus one save.

// check serves one request through h with the Cookie header cookie and
// checks the body.
func check(t *testing.T, what string, h http.Handler, cookie, want string) *http.Response {
	t.Helper()
	w := serve(h, newRequest(cookie))
	if w.Code != http.StatusOK || w.Body.String() != want {
		t.Fatalf("%s: got %d %q, want 200 %q", what, w.Code, w.Body.String(), want)
	}
	return w.Result()
}

// checkCounter runs the request sequence of the benchmarks on a stack
// built by l: reads see the warm-up value, writes with the warm-up cookie
// see wantWrites, and a read afterwards sees wantAfter.
func checkCounter(t *testing.T, st *stack, wantWrites []string, wantAfter string) {
	t.Helper()
	for i := range 3 {
		check(t, "read "+strconv.Itoa(i), st.read, st.cookie, "1")
	}
	for i, want := range wantWrites {
		check(t, "write "+strconv.Itoa(i), st.write, st.cookie, want)
	}
	check(t, "read after writes", st.read, st.cookie, wantAfter)
}

func TestSetupBaseline(t *testing.T) {
	st := newBaseline(t, hooks{})
	checkCounter(t, st, []string{"2", "3", "4"}, "4")
}

// countingStore counts the calls a request makes to a hallpass.Store.
type countingStore struct {
	hallpass.Store
	loads, creates, updates, rotates, deletes int
}

func (c *countingStore) Load(ctx context.Context, k hallpass.Key) (*hallpass.Record, error) {
	c.loads++
	return c.Store.Load(ctx, k)
}

func (c *countingStore) Create(ctx context.Context, r *hallpass.Record) error {
	c.creates++
	return c.Store.Create(ctx, r)
}

func (c *countingStore) Update(ctx context.Context, k hallpass.Key, d hallpass.Delta) error {
	c.updates++
	return c.Store.Update(ctx, k, d)
}

func (c *countingStore) Rotate(ctx context.Context, from, to hallpass.Key, d hallpass.Delta) error {
	c.rotates++
	return c.Store.Rotate(ctx, from, to, d)
}

func (c *countingStore) Delete(ctx context.Context, keys ...hallpass.Key) error {
	c.deletes++
	return c.Store.Delete(ctx, keys...)
}

func (c *countingStore) counts() [5]int {
	return [5]int{c.loads, c.creates, c.updates, c.rotates, c.deletes}
}

// wrap is a hooks.hallpass that puts c around the stack's store.
func (c *countingStore) wrap(s hallpass.Store) hallpass.Store {
	c.Store = s
	return c
}

func TestSetupHallpass(t *testing.T) {
	cs := &countingStore{}
	st := newHallpass(t, hooks{hallpass: cs.wrap})
	checkHallpassStack(t, st, cs)
}

// checkHallpassStack checks a Hallpass stack built with cs around its
// store, right after its warm-up: reads see the warm-up value, writes
// increment it, a read is one Load and a write one Load and one Update,
// and neither sets a cookie.
func checkHallpassStack(t *testing.T, st *stack, cs *countingStore) {
	t.Helper()
	if got, want := cs.counts(), [5]int{st.setupReads, 1, 0, 0, 0}; got != want {
		t.Fatalf("warm-up: store calls (load, create, update, rotate, delete) %v, want %v", got, want)
	}
	checkCounter(t, st, []string{"2", "3", "4"}, "4")

	// A read is one Load and nothing else (the touch throttle: the session
	// was seen less than a minute ago), and sets no cookie.
	before := cs.counts()
	resp := check(t, "read", st.read, st.cookie, "4")
	if got, want := cs.counts(), before; got != [5]int{want[0] + 1, want[1], want[2], want[3], want[4]} {
		t.Errorf("read: store calls %v after %v, want one Load only", got, before)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("read set cookies %q", sc)
	}
	// A write is one Load and one Update, and keeps the token.
	before = cs.counts()
	resp = check(t, "write", st.write, st.cookie, "5")
	if got, want := cs.counts(), before; got != [5]int{want[0] + 1, want[1], want[2] + 1, want[3], want[4]} {
		t.Errorf("write: store calls %v after %v, want one Load and one Update", got, before)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("write set cookies %q", sc)
	}
	// Without the cookie the handler sees a guest: the 1 above came from
	// the store.
	check(t, "guest read", st.read, "", "0")
}

// countingSCS counts the calls a request makes to an scs.Store.
type countingSCS struct {
	scs.Store
	finds, commits int
}

func (c *countingSCS) Find(token string) ([]byte, bool, error) {
	c.finds++
	return c.Store.Find(token)
}

func (c *countingSCS) Commit(token string, b []byte, expiry time.Time) error {
	c.commits++
	return c.Store.Commit(token, b, expiry)
}

// wrap is a hooks.scs that puts c around the stack's store.
func (c *countingSCS) wrap(s scs.Store) scs.Store {
	c.Store = s
	return c
}

func TestSetupSCS(t *testing.T) {
	cs := &countingSCS{}
	st := newSCS(t, hooks{scs: cs.wrap})
	checkSCSStack(t, st, cs)
}

// checkSCSStack checks an SCS stack built with cs around its store, right
// after its warm-up: reads see the warm-up value, writes increment it, a
// read is one Find and a write one Find and one Commit.
func checkSCSStack(t *testing.T, st *stack, cs *countingSCS) {
	t.Helper()
	if cs.finds != 0 || cs.commits != 1 {
		t.Fatalf("warm-up: %d finds, %d commits, want 0 and 1", cs.finds, cs.commits)
	}
	checkCounter(t, st, []string{"2", "3", "4"}, "4")

	finds, commits := cs.finds, cs.commits
	resp := check(t, "read", st.read, st.cookie, "4")
	if cs.finds != finds+1 || cs.commits != commits {
		t.Errorf("read: %d finds, %d commits, want one find only", cs.finds-finds, cs.commits-commits)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("read set cookies %q", sc)
	}
	finds, commits = cs.finds, cs.commits
	check(t, "write", st.write, st.cookie, "5")
	if cs.finds != finds+1 || cs.commits != commits+1 {
		t.Errorf("write: %d finds, %d commits, want one of each", cs.finds-finds, cs.commits-commits)
	}
	check(t, "guest read", st.read, "", "0")
}

func TestSetupGorilla(t *testing.T) {
	st := newGorilla(t, hooks{})
	// With the warm-up cookie every write decodes n = 1 and encodes 2:
	// the session is the cookie, which the benchmark does not follow.
	checkCounter(t, st, []string{"2", "2", "2"}, "1")

	// Following the cookie chain, the value increments, and each write
	// sends a new encrypted cookie.
	cookie := st.cookie
	for i := 2; i <= 4; i++ {
		resp := check(t, "chained write", st.write, cookie, strconv.Itoa(i))
		var next string
		for _, c := range resp.Cookies() {
			if c.Name == gorillaName {
				next = c.Name + "=" + c.Value
			}
		}
		if next == "" || next == cookie {
			t.Fatalf("chained write %d: no new cookie", i)
		}
		cookie = next
	}
	check(t, "chained read", st.read, cookie, "4")

	// A read sets no cookie.
	if sc := check(t, "read", st.read, st.cookie, "1").Header.Values("Set-Cookie"); len(sc) != 0 {
		t.Errorf("read set cookies %q", sc)
	}
	// The cookie is authenticated: a tampered one does not load n.
	tampered := st.cookie[:len(st.cookie)-2] + "AA"
	if tampered == st.cookie {
		tampered = st.cookie[:len(st.cookie)-2] + "BB"
	}
	if w := serve(st.read, newRequest(tampered)); w.Body.String() == "1" {
		t.Errorf("tampered cookie still read n = 1")
	}
	check(t, "guest read", st.read, "", "0")
}
