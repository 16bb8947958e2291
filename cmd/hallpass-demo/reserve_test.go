package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

var confirmFormRE = regexp.MustCompile(`action="/reserve/([A-Za-z0-9_-]+)/confirm"`)

// holdIDs returns the ids of the confirm forms on a reservations page.
func holdIDs(body string) []string {
	var ids []string
	for _, m := range confirmFormRE.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// reserve reserves item from the client's browser, as the catalog's
// Reserve button does, and returns the id of the new hold.
func (c *client) reserve(item string) string {
	c.e.t.Helper()
	before := holdIDs(c.get("/reservations").body)
	wantRedirect(c.e.t, c.post("/reserve", url.Values{"item": {item}}), "/reservations")
	after := holdIDs(c.get("/reservations").body)
	if len(after) != len(before)+1 {
		c.e.t.Fatalf("reserving %s: confirm forms %q, then %q: want one more", item, before, after)
	}
	return after[0] // newest first
}

// postXFF is post with an X-Forwarded-For header, as through a proxy.
func (c *client) postXFF(path string, form url.Values, xff string) response {
	c.e.t.Helper()
	form = url.Values{"csrf_token": {c.csrfToken()}, "item": form["item"]}
	req := c.newPost(path, form)
	req.Header.Set("Origin", c.e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("X-Forwarded-For", xff)
	return c.do(req)
}

func (e *env) stock(item string) int {
	e.t.Helper()
	return dbStock(e.t, e.app.db, item)
}

func dbStock(t *testing.T, db *sql.DB, item string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT stock FROM items WHERE id = ?`, item).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) holdState(id string) string {
	e.t.Helper()
	return dbHoldState(e.t, e.app.db, id)
}

func dbHoldState(t *testing.T, db *sql.DB, id string) string {
	t.Helper()
	var s string
	if err := db.QueryRowContext(context.Background(), `SELECT state FROM holds WHERE id = ?`, id).Scan(&s); err != nil {
		t.Fatalf("hold %s: %v", id, err)
	}
	return s
}

// attemptRow is a row of reserve_attempts.
type attemptRow struct {
	Action, Outcome, Reason, User, Handle, IP, XFF, Item, HoldID string
}

func (e *env) attempts() []attemptRow {
	e.t.Helper()
	rows, err := e.app.db.QueryContext(context.Background(),
		`SELECT action, outcome, reason, user_id, session_handle, ip, xff, item, hold_id FROM reserve_attempts ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []attemptRow
	for rows.Next() {
		var a attemptRow
		if err := rows.Scan(&a.Action, &a.Outcome, &a.Reason, &a.User, &a.Handle, &a.IP, &a.XFF, &a.Item, &a.HoldID); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// lastAttempt returns the latest attempt and checks how it ended.
func (e *env) lastAttempt(action, outcome, reason string) attemptRow {
	e.t.Helper()
	all := e.attempts()
	if len(all) == 0 {
		e.t.Fatalf("no attempt recorded; want %s %s %s", action, outcome, reason)
	}
	a := all[len(all)-1]
	if a.Action != action || a.Outcome != outcome || a.Reason != reason {
		e.t.Fatalf("last attempt %+v; want %s %s %q", a, action, outcome, reason)
	}
	return a
}

func (e *env) wantCounts(success, fail, suspicious int) {
	e.t.Helper()
	got, err := e.app.reservations.counts(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	want := map[string]int{"success": success, "fail": fail, "suspicious": suspicious}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		e.t.Errorf("counts %v, want %v; attempts:\n%+v", got, want, e.attempts())
	}
}

func (e *env) userID(name string) string {
	e.t.Helper()
	u, err := e.app.users.ByName(e.t.Context(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return fmt.Sprint(u.ID)
}

// TestReserveAndConfirm walks the happy path of a guest: reserve, see
// the hold, confirm, with each attempt recorded with its client.
func TestReserveAndConfirm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	r := c.get("/reservations")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "You hold no reservations.", `<dd class="success">0</dd>`)

	lamps := e.stock("lamp")
	wantRedirect(t, c.postXFF("/reserve", url.Values{"item": {"lamp"}}, "203.0.113.7, 10.0.0.1"), "/reservations")
	if got := e.stock("lamp"); got != lamps-1 {
		t.Fatalf("stock after a hold %d, want %d", got, lamps-1)
	}
	a := e.lastAttempt("reserve", "success", "")
	if a.IP != "127.0.0.1" || a.XFF != "203.0.113.7, 10.0.0.1" || a.Item != "lamp" || a.Handle == "" || a.User != "" {
		t.Errorf("attempt %+v: want the client's address, its X-Forwarded-For, the item and the guest session's handle", a)
	}
	r = c.get("/reservations")
	wantBody(t, r, "Desk lamp is reserved for you until", "Desk lamp", "held until", "Confirm")
	ids := holdIDs(r.body)
	if len(ids) != 1 {
		t.Fatalf("confirm forms %q, want one", ids)
	}
	id := ids[0]
	if len(id) < 22 {
		t.Errorf("hold id %q is short: it must be unguessable", id)
	}
	var handle string
	if err := e.app.db.QueryRow(`SELECT session_handle FROM holds WHERE id = ?`, id).Scan(&handle); err != nil || handle != a.Handle {
		t.Errorf("hold made by session %q (%v); the attempt says %q", handle, err, a.Handle)
	}
	wantNoBody(t, c.get("/reservations"), "is reserved for you") // the flash shows once

	wantRedirect(t, c.post("/reserve/"+id+"/confirm", nil), "/reservations")
	e.lastAttempt("confirm", "success", "")
	r = c.get("/reservations")
	wantBody(t, r, "Confirmed: Desk lamp is yours.", "confirmed")
	wantNoBody(t, r, "held until")
	if holdIDs(r.body) != nil {
		t.Errorf("a confirmed hold still has a confirm form")
	}
	if got, state := e.stock("lamp"), e.holdState(id); got != lamps-1 || state != "confirmed" {
		t.Errorf("after confirming: stock %d, state %s; want %d, confirmed", got, state, lamps-1)
	}

	// A second confirm (two tabs, a double click) is the user's own hold:
	// a failure, not an attack.
	wantRedirect(t, c.post("/reserve/"+id+"/confirm", nil), "/reservations")
	e.lastAttempt("confirm", "fail", "already_confirmed")
	wantBody(t, c.get("/reservations"), "Desk lamp was already confirmed.")

	// The end of the session does not take back what was confirmed.
	wantRedirectHome(t, c.post("/logout", nil))
	if got := e.stock("lamp"); got != lamps-1 {
		t.Errorf("stock after logging out with a confirmed hold %d, want %d", got, lamps-1)
	}
	e.wantCounts(2, 1, 0)
	wantBody(t, c.get("/reservations"), "You hold no reservations.",
		`<dd class="success">2</dd>`, `<dd class="fail">1</dd>`, `<dd class="suspicious">0</dd>`)
}

// TestReserveOtherSessionsHold: a hold can be confirmed only by the
// session that made it. Anyone else's attempt is suspicious and gets the
// same 404 as an id that does not exist; the same user on another device
// only fails.
func TestReserveOtherSessionsHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.client()
	wantRedirectHome(t, alice.signup("alice", "correct horse"))
	id := alice.reserve("mug")
	mugs := e.stock("mug")

	bob := e.client()
	wantRedirectHome(t, bob.signup("bobby", "correct horse"))
	r := bob.post("/reserve/"+id+"/confirm", nil)
	wantStatus(t, r, http.StatusNotFound)
	wantBody(t, r, "There is no such reservation in this session.")
	wantNoBody(t, r, "Enamel mug") // nothing about the hold leaks
	if a := e.lastAttempt("confirm", "suspicious", "not_owner"); a.User != e.userID("bobby") || a.HoldID != id || a.Item != "mug" {
		t.Errorf("attempt %+v: want bob's id, the hold and its item", a)
	}

	guest := e.client()
	wantStatus(t, guest.post("/reserve/"+id+"/confirm", nil), http.StatusNotFound)
	e.lastAttempt("confirm", "suspicious", "not_owner")

	// alice on her phone: her own hold, but not this session's.
	phone := e.client()
	wantRedirectHome(t, phone.login("alice", "correct horse", false))
	wantRedirect(t, phone.post("/reserve/"+id+"/confirm", nil), "/reservations")
	wantBody(t, phone.get("/reservations"), "was made on another device")
	e.lastAttempt("confirm", "fail", "other_session")

	if s := e.holdState(id); s != "held" || e.stock("mug") != mugs {
		t.Fatalf("after others' attempts: state %s, stock %d; want held, %d", s, e.stock("mug"), mugs)
	}
	wantRedirect(t, alice.post("/reserve/"+id+"/confirm", nil), "/reservations")
	e.lastAttempt("confirm", "success", "")
	e.wantCounts(2, 1, 2)
}

// TestReserveForgedID: ids the app never issued, and items it does not
// sell, are suspicious and get a 404.
func TestReserveForgedID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ id, reason string }{
		{newHoldID(), "unknown_id"},                // well-formed, unknown
		{"AAAAAAAAAAAAAAAAAAAAAA", "unknown_id"},   // well-formed (canonical), unknown
		{"AAAAAAAAAAAAAAAAAAAAAB", "malformed_id"}, // right length, not canonical base64url
		{"42", "malformed_id"},
		{"not-an-id", "malformed_id"},
		{long, "malformed_id"},
	} {
		r := c.post("/reserve/"+tc.id+"/confirm", nil)
		wantStatus(t, r, http.StatusNotFound)
		wantBody(t, r, "There is no such reservation in this session.")
		if a := e.lastAttempt("confirm", "suspicious", tc.reason); len(a.HoldID) > 64 || a.Handle == "" {
			t.Errorf("attempt %+v: the id must be stored clipped, with the session", a)
		}
	}
	for _, item := range []string{"piano", "", long} {
		r := c.post("/reserve", url.Values{"item": {item}})
		wantStatus(t, r, http.StatusNotFound)
		wantBody(t, r, "The shop has no such item.")
		e.lastAttempt("reserve", "suspicious", "unknown_item")
	}
	var n int
	if err := e.app.db.QueryRow(`SELECT COUNT(*) FROM holds`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d holds (%v) after forged requests, want none", n, err)
	}
	e.wantCounts(0, 0, 9)
}

// TestReserveExpiredHold: a hold not confirmed in time goes back on the
// shelf, whether the next thing to look is a confirm, the reservations
// page or another reservation.
func TestReserveExpiredHold(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	c := e.client()
	notebooks := e.stock("notebook")
	id := c.reserve("notebook")

	clock.Add(holdFor - time.Second)
	wantBody(t, c.get("/reservations"), "held until") // not yet
	clock.Add(time.Second)
	wantRedirect(t, c.post("/reserve/"+id+"/confirm", nil), "/reservations")
	e.lastAttempt("confirm", "fail", "expired")
	r := c.get("/reservations")
	wantBody(t, r, "ran out before you confirmed it", "released")
	wantNoBody(t, r, "held until")
	if s, n := e.holdState(id), e.stock("notebook"); s != "released" || n != notebooks {
		t.Fatalf("expired hold: state %s, stock %d; want released, %d", s, n, notebooks)
	}
	// Once released, it stays released, and its unit is not given back
	// twice.
	wantRedirect(t, c.post("/reserve/"+id+"/confirm", nil), "/reservations")
	e.lastAttempt("confirm", "fail", "released")
	if n := e.stock("notebook"); n != notebooks {
		t.Fatalf("stock %d after confirming a released hold, want %d", n, notebooks)
	}

	// The reservations page releases what ran out, before the sweeper.
	id2 := c.reserve("notebook")
	clock.Add(holdFor)
	wantNoBody(t, c.get("/reservations"), "held until")
	if s, n := e.holdState(id2), e.stock("notebook"); s != "released" || n != notebooks {
		t.Fatalf("hold past its time seen on the page: state %s, stock %d; want released, %d", s, n, notebooks)
	}
	e.wantCounts(2, 2, 0)
}

// TestReserveOutOfStock: a hold takes a unit; with none left, the
// attempt fails (not the user's fault), and stock never goes below zero.
func TestReserveOutOfStock(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now})
	first := e.client()
	plants := e.stock("plant")
	for range plants {
		first.reserve("plant")
	}
	if n := e.stock("plant"); n != 0 {
		t.Fatalf("stock %d after holding every plant, want 0", n)
	}
	second := e.client()
	wantRedirect(t, second.post("/reserve", url.Values{"item": {"plant"}}), "/reservations")
	e.lastAttempt("reserve", "fail", "out_of_stock")
	r := second.get("/reservations")
	wantBody(t, r, "Sorry, Small cactus is out of stock.", "You hold no reservations.")
	if n := e.stock("plant"); n != 0 {
		t.Fatalf("stock %d, want 0", n)
	}
	// A unit whose hold ran out is back before anyone is told there is
	// none, sweeper or not.
	clock.Add(holdFor)
	wantRedirect(t, second.post("/reserve", url.Values{"item": {"plant"}}), "/reservations")
	e.lastAttempt("reserve", "success", "")
	if n := e.stock("plant"); n != plants-1 {
		t.Fatalf("stock %d after the holds ran out and one more, want %d", n, plants-1)
	}
	e.wantCounts(plants+1, 1, 0)
}

// TestReserveHoldLimit: one session cannot hold more than maxHolds units
// at once.
func TestReserveHoldLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	for range maxHolds {
		c.reserve("mug")
	}
	wantRedirect(t, c.post("/reserve", url.Values{"item": {"socks"}}), "/reservations")
	e.lastAttempt("reserve", "fail", "hold_limit")
	wantBody(t, c.get("/reservations"), fmt.Sprintf("You already hold %d items.", maxHolds))
	if n := e.stock("socks"); n != 8 {
		t.Errorf("socks stock %d, want 8", n)
	}
	// Confirming one makes room.
	id := holdIDs(c.get("/reservations").body)[0]
	wantRedirect(t, c.post("/reserve/"+id+"/confirm", nil), "/reservations")
	c.reserve("socks")
}

// TestReserveReleasedWhenSessionEnds: the holds of a session end with it
// (logout, revoke, sign out everywhere, idle expiry, another user's
// sign-in), and their units go back on the shelf at once.
func TestReserveReleasedWhenSessionEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantRedirectHome(t, e.client().signup("alice", "correct horse"))
	want := func(what, id, item string, stock int) {
		t.Helper()
		if s, n := e.holdState(id), e.stock(item); s != "released" || n != stock {
			t.Fatalf("after %s: hold %s, %s stock %d; want released, %d", what, s, item, n, stock)
		}
	}

	t.Run("logout", func(t *testing.T) {
		c := e.client()
		wantRedirectHome(t, c.login("alice", "correct horse", false))
		id := c.reserve("lamp")
		wantRedirectHome(t, c.post("/logout", nil))
		want("logout", id, "lamp", 5)
	})
	t.Run("guest logout", func(t *testing.T) {
		c := e.client()
		id := c.reserve("lamp")
		wantRedirectHome(t, c.post("/logout", nil))
		want("a guest's logout", id, "lamp", 5)
	})
	t.Run("revoke", func(t *testing.T) {
		laptop, phone := e.client(), e.client()
		wantRedirectHome(t, laptop.login("alice", "correct horse", false))
		wantRedirectHome(t, phone.login("alice", "correct horse", false))
		id := laptop.reserve("socks")
		var handle string
		if err := e.app.db.QueryRow(`SELECT session_handle FROM holds WHERE id = ?`, id).Scan(&handle); err != nil {
			t.Fatal(err)
		}
		wantRedirect(t, phone.post("/account/sessions/"+handle+"/revoke", nil), "/account/sessions")
		want("revoking the device", id, "socks", 8)
		wantBody(t, phone.get("/"), "Signed in as alice")
	})
	t.Run("sign out everywhere", func(t *testing.T) {
		// A guest's holds become the user's at sign-in, so that ending
		// every session of the user ends them too.
		guest := e.client()
		lamp := guest.reserve("lamp")
		mug := guest.reserve("mug")
		wantRedirectHome(t, guest.login("alice", "correct horse", false))
		wantRedirect(t, guest.post("/reserve/"+lamp+"/confirm", nil), "/reservations")
		e.lastAttempt("confirm", "success", "")
		other := e.client()
		wantRedirectHome(t, other.login("alice", "correct horse", false))
		other.reserve("notebook")
		wantRedirectHome(t, other.post("/logout/all", nil))
		want("signing out everywhere", mug, "mug", 20)
		if n := e.stock("notebook"); n != 12 {
			t.Errorf("notebook stock %d, want 12", n)
		}
		if s := e.holdState(lamp); s != "confirmed" {
			t.Errorf("confirmed hold %s after signing out everywhere", s)
		}
	})
	t.Run("another user signs in", func(t *testing.T) {
		wantRedirectHome(t, e.client().signup("bobby", "correct horse"))
		c := e.client()
		wantRedirectHome(t, c.login("alice", "correct horse", false))
		id := c.reserve("plant")
		wantRedirectHome(t, c.login("bobby", "correct horse", false))
		want("bob signing in over alice", id, "plant", 3)
	})
}

// TestReserveReleasedOnIdleExpiry: a session that idles out loses its
// holds when it is found expired, even before the holds run out.
func TestReserveReleasedOnIdleExpiry(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock(time.Now())
	e := newEnvOptions(t, options{Now: clock.Now, IdleTimeout: time.Minute})
	c := e.client()
	// Signed in without "keep me signed in": a guest's session is
	// persistent, with the long idle timeout.
	wantRedirectHome(t, c.signup("alice", "correct horse"))
	id := c.reserve("plant")
	clock.Add(2 * time.Minute) // the session is idle; the hold has time left
	wantStatus(t, c.get("/"), http.StatusOK)
	if s, n := e.holdState(id), e.stock("plant"); s != "released" || n != 3 {
		t.Fatalf("after the session idled out: hold %s, stock %d; want released, 3", s, n)
	}
}

// TestReserveMissingCSRF: requests the CSRF check refuses never reach
// the handlers, and are recorded as suspicious attempts with the client.
// It needs csrf.Options.ErrorHandler = a.csrfRefused in app.go.
func TestReserveMissingCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client()
	id := c.reserve("socks")
	socks := e.stock("socks")

	post := func(path string, form url.Values, site string) response {
		t.Helper()
		req := c.newPost(path, form)
		req.Header.Set("Origin", e.srv.URL)
		req.Header.Set("Sec-Fetch-Site", site)
		req.Header.Set("X-Forwarded-For", "198.51.100.9")
		r := c.do(req)
		wantStatus(t, r, http.StatusForbidden)
		return r
	}
	post("/reserve", url.Values{"item": {"socks"}}, "same-origin")
	if a := e.lastAttempt("reserve", "suspicious", "csrf_missing_token"); a.Item != "socks" || a.IP != "127.0.0.1" || a.XFF != "198.51.100.9" || a.Handle == "" {
		t.Errorf("attempt %+v: want the item, the client and the session", a)
	}
	post("/reserve/"+id+"/confirm", nil, "same-origin")
	if a := e.lastAttempt("confirm", "suspicious", "csrf_missing_token"); a.HoldID != id {
		t.Errorf("attempt %+v: want hold %s", a, id)
	}
	post("/reserve/"+id+"/confirm", url.Values{"csrf_token": {"x"}}, "same-origin")
	e.lastAttempt("confirm", "suspicious", "csrf_malformed_token")
	post("/reserve/"+id+"/confirm", url.Values{"csrf_token": {c.csrfToken()}}, "cross-site")
	e.lastAttempt("confirm", "suspicious", "csrf_cross_origin")

	// Other routes' refusals are not reservation attempts.
	n := len(e.attempts())
	post("/cart/add", url.Values{"item": {"socks"}}, "same-origin")
	if len(e.attempts()) != n {
		t.Errorf("a refused POST /cart/add was recorded as a reservation attempt")
	}
	if s, m := e.holdState(id), e.stock("socks"); s != "held" || m != socks {
		t.Errorf("after refused requests: hold %s, stock %d; want held, %d", s, m, socks)
	}
	e.wantCounts(1, 0, 4)
}

// TestReserveConcurrent: racing holds never sell more than the stock,
// racing confirms succeed once, and racing releases give a unit back
// once.
func TestReserveConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rs := e.app.reservations
	ctx := t.Context()
	const n = 12
	results := make([]result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = rs.hold(ctx, requester{handle: fmt.Sprint("h", i), ip: "192.0.2.1"}, "plant")
		})
	}
	wg.Wait()
	var held []int
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		switch r.reason {
		case "":
			held = append(held, i)
		case reasonOutOfStock:
		default:
			t.Fatalf("hold %d: %+v", i, r)
		}
	}
	if len(held) != 3 || e.stock("plant") != 0 {
		t.Fatalf("%d holds of 3 plants, stock %d", len(held), e.stock("plant"))
	}

	owner := requester{handle: fmt.Sprint("h", held[0])}
	ok := make([]bool, n)
	for i := range n {
		wg.Go(func() {
			r, err := rs.confirm(ctx, owner, results[held[0]].holdID)
			errs[i], ok[i] = err, r.outcome == outcomeSuccess
		})
	}
	wg.Wait()
	confirmed := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if ok[i] {
			confirmed++
		}
	}
	if confirmed != 1 {
		t.Fatalf("%d confirms of one hold succeeded, want 1", confirmed)
	}

	ended := hallpass.Event{Kind: hallpass.EventLoggedOut, Handle: fmt.Sprint("h", held[1])}
	for range n {
		wg.Go(func() { rs.sessionEvent(ctx, ended) })
	}
	wg.Wait()
	if s := e.stock("plant"); s != 1 {
		t.Fatalf("stock %d after one session ended %d times, want 1", s, n)
	}
	e.wantCounts(3+1, n-3+n-1, 0)
}

// TestReserveSweeper: the sweeper releases holds that ran out with no
// request to notice, forgets ended holds after a day, and stops on Close.
func TestReserveSweeper(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := openDB(filepath.Join(t.TempDir(), "demo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := newShop(ctx, db); err != nil {
		t.Fatal(err)
	}
	clock := storetest.NewClock(time.Now())
	rs, err := newReservations(ctx, db, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rs.every = time.Millisecond
	rs.start(nil)
	res, err := rs.hold(ctx, requester{handle: "h"}, "plant")
	if err != nil || res.outcome != outcomeSuccess {
		t.Fatalf("hold: %+v, %v", res, err)
	}
	if n := dbStock(t, db, "plant"); n != 2 {
		t.Fatalf("stock %d, want 2", n)
	}
	poll := func(what string, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the sweeper did not %s", what)
			}
		}
	}
	clock.Add(holdFor)
	poll("release the hold", func() bool { return dbStock(t, db, "plant") == 3 })
	if s := dbHoldState(t, db, res.holdID); s != "released" {
		t.Fatalf("hold %s, want released", s)
	}
	clock.Add(keepEnded + time.Second)
	poll("forget the ended hold", func() bool {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM holds`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rs.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
	if rs.running() {
		t.Error("the sweeper runs after Close")
	}

	// The app's sweeper starts with its routes, and stops with the app;
	// an app that is never served starts none.
	e := newEnv(t)
	if !e.app.reservations.running() {
		t.Error("the app's sweeper is not running")
	}
	idle, err := newReservations(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if idle.running() {
		t.Error("a sweeper runs before the routes exist")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	idle.start(nil)
	if idle.running() {
		t.Error("a sweeper started after Close")
	}
}
