package hallpass_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// whoami answers the session's user id, or "guest".
func whoami(w http.ResponseWriter, r *http.Request) {
	if u := hallpass.FromRequest(r).UserID(); u != "" {
		io.WriteString(w, u)
		return
	}
	io.WriteString(w, "guest")
}

func (h *harness) who(cookie string) string {
	h.t.Helper()
	res, _ := h.serve(cookie, whoami)
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func TestSessionLimitEvictsOldest(t *testing.T) {
	h := newHarness(t, hallpass.Config{MaxSessions: 2})
	laptop := h.signIn("alice", "Firefox", "192.0.2.10")
	laptopHandle := h.only().Handle
	h.clock.Add(time.Minute)
	phone := h.signIn("alice", "Safari", "192.0.2.20")
	h.clock.Add(time.Minute)
	bob := h.signIn("bob", "Edge", "192.0.2.40")
	if got := h.who(laptop); got != "alice" {
		t.Fatalf("within the limit the laptop is %q, want alice", got)
	}
	h.events.reset()

	// A third device, signing in from a guest session with a cart.
	_, tablet := h.serve("", cart("book"))
	_, tablet = h.serve(tablet, login("alice", hallpass.LoginOptions{}))
	if got := h.who(tablet); got != "alice" {
		t.Fatalf("the new login is %q, want alice", got)
	}
	if got := h.who(laptop); got != "guest" {
		t.Errorf("the oldest session is %q after a login over the limit, want guest", got)
	}
	if got := h.who(phone); got != "alice" {
		t.Errorf("the second oldest session is %q, want alice", got)
	}
	if got := h.who(bob); got != "bob" {
		t.Errorf("another user's session is %q, want bob", got)
	}
	res, _ := h.serve(tablet, showCart)
	if b, _ := io.ReadAll(res.Body); string(b) != "book" {
		t.Errorf("the guest's cart after login is %q, want book", b)
	}
	ev := h.events.Find(hallpass.EventRevoked, "")
	if len(ev) != 1 || ev[0].Reason != hallpass.ReasonSessionLimit || ev[0].Handle != laptopHandle || ev[0].UserID != "alice" {
		t.Errorf("revoked events %+v, want one session_limit naming the laptop's handle %s and alice", ev, laptopHandle)
	}
	recs, err := h.store.ListUser(context.Background(), "alice")
	if err != nil || len(recs) != 2 {
		t.Errorf("alice holds %d sessions (%v), want 2", len(recs), err)
	}
}

func TestSessionLimitRefuseNew(t *testing.T) {
	h := newHarness(t, hallpass.Config{MaxSessions: 1, RefuseNewSessions: true})
	laptop := h.signIn("alice", "Firefox", "192.0.2.10")

	var loginErr error
	tryLogin := func(w http.ResponseWriter, r *http.Request) {
		loginErr = hallpass.FromRequest(r).Login("alice", hallpass.LoginOptions{})
		whoami(w, r)
	}
	// A stored guest session (a cart) and a guest never saved: both are
	// refused and stay guests, the cart intact.
	_, phone := h.serve("", cart("pen"))
	res, phone2 := h.serve(phone, tryLogin)
	if !errors.Is(loginErr, hallpass.ErrTooManySessions) || errors.Is(loginErr, hallpass.ErrStore) {
		t.Fatalf("login over the limit: %v, want ErrTooManySessions and not ErrStore", loginErr)
	}
	if b, _ := io.ReadAll(res.Body); string(b) != "guest" || phone2 != phone {
		t.Errorf("after the refusal the request is %q with cookie changed %v, want guest, unchanged", b, phone2 != phone)
	}
	res, _ = h.serve(phone, showCart)
	if b, _ := io.ReadAll(res.Body); string(b) != "pen" {
		t.Errorf("the refused guest's cart is %q, want pen", b)
	}
	_, fresh := h.serve("", tryLogin)
	if !errors.Is(loginErr, hallpass.ErrTooManySessions) || fresh != "" {
		t.Errorf("login of an unsaved guest over the limit: %v, cookie %q; want ErrTooManySessions, none", loginErr, fresh)
	}
	if got := h.who(laptop); got != "alice" {
		t.Errorf("the existing session is %q after refused logins, want alice", got)
	}
	if n := h.store.Len(); n != 2 { // the laptop and the phone's guest cart
		t.Errorf("store holds %d records, want 2: a refused login must leave nothing behind", n)
	}
	if ev := h.events.Find(hallpass.EventLoginRefused, ""); len(ev) != 2 || ev[0].UserID != "alice" || ev[0].Reason != hallpass.ReasonSessionLimit {
		t.Errorf("login_refused events %+v, want two for alice with reason session_limit", ev)
	}

	// Signing in again on the same device is not a new session; after a
	// logout elsewhere there is room.
	if _, c := h.serve(laptop, login("alice", hallpass.LoginOptions{})); c == laptop || h.who(c) != "alice" {
		t.Errorf("re-login on the only session failed")
	} else {
		laptop = c
	}
	h.serve(laptop, logout)
	if _, c := h.serve(phone, login("alice", hallpass.LoginOptions{})); h.who(c) != "alice" {
		t.Errorf("login after the other session logged out failed")
	}
}

// TestSessionLimitConcurrentLogins signs one user in from many browsers
// at once, half from unsaved guests (the create-then-rotate path).
func TestSessionLimitConcurrentLogins(t *testing.T) {
	for _, refuse := range []bool{true, false} {
		h := newHarness(t, hallpass.Config{MaxSessions: 1, RefuseNewSessions: refuse})
		const n = 8
		cookies := make([]string, n)
		for i := range n / 2 {
			_, cookies[i] = h.serve("", cart("x"))
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make([]string, n)
		for i := range n {
			wg.Go(func() {
				<-start
				_, results[i] = h.serve(cookies[i], func(w http.ResponseWriter, r *http.Request) {
					if err := hallpass.FromRequest(r).Login("alice", hallpass.LoginOptions{}); err != nil && !errors.Is(err, hallpass.ErrTooManySessions) {
						t.Errorf("Login: %v", err)
					}
				})
			})
		}
		close(start)
		wg.Wait()
		signedIn := 0
		for _, c := range results {
			if c != "" && h.who(c) == "alice" {
				signedIn++
			}
		}
		if signedIn != 1 {
			t.Errorf("RefuseNewSessions=%v: %d browsers are signed in after %d concurrent logins, want 1", refuse, signedIn, n)
		}
		evicted := len(h.events.Find(hallpass.EventRevoked, ""))
		refused := len(h.events.Find(hallpass.EventLoginRefused, ""))
		if refuse && (refused != n-1 || evicted != 0) || !refuse && (evicted != n-1 || refused != 0) {
			t.Errorf("RefuseNewSessions=%v: %d refused and %d evicted events, want %d of one kind", refuse, refused, evicted, n-1)
		}
	}
}

// cart returns a handler that puts item in the session's cart.
func cart(item string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Set("cart", item); err != nil {
			http.Error(w, err.Error(), 500)
		}
	}
}

func showCart(w http.ResponseWriter, r *http.Request) {
	item, err := hallpass.Get[string](hallpass.FromRequest(r), "cart")
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	io.WriteString(w, item)
}

// TestFailedLoginLeavesSessionAsItWas checks that neither OnLogin's merge
// (the user's saved data) nor the sign-in record survives a Login that
// fails, whether OnLogin or the store refuses it.
func TestFailedLoginLeavesSessionAsItWas(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hookErr error
	}{
		{"OnLogin error", errors.New("saved cart unavailable")},
		{"over the session limit", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := hallpass.Config{
				MaxSessions: 1, RefuseNewSessions: true,
				OnLogin: func(ctx context.Context, s *hallpass.Session) error {
					if err := s.Set("saved", "alice's private list"); err != nil {
						return err
					}
					return tc.hookErr
				},
			}
			h := newHarness(t, cfg)
			if tc.hookErr == nil {
				h.signIn("alice", "Firefox", "192.0.2.10")
			}
			_, guest := h.serve("", cart("pen"))
			var loginErr error
			var keys []string
			_, after := h.serve(guest, func(w http.ResponseWriter, r *http.Request) {
				s := hallpass.FromRequest(r)
				loginErr = s.Login("alice", hallpass.LoginOptions{})
				keys = s.Keys()
				if lvl := s.Auth().Level; lvl != hallpass.LevelNone {
					t.Errorf("auth level after a failed Login: %v", lvl)
				}
			})
			if loginErr == nil {
				t.Fatal("Login succeeded")
			}
			if len(keys) != 1 || keys[0] != "cart" {
				t.Errorf("keys during the request after a failed Login: %q, want [cart]", keys)
			}
			res, _ := h.serve(after, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, strings.Join(hallpass.FromRequest(r).Keys(), ","))
			})
			if b, _ := io.ReadAll(res.Body); string(b) != "cart" {
				t.Errorf("stored keys after a failed Login: %q, want cart", b)
			}
		})
	}
}

// TestClearKeepsSignIn: Clear empties the app's data, not how the user
// signed in, and Keys shows only the app's own keys.
func TestClearKeepsSignIn(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	c := h.signIn("alice", "Firefox", "192.0.2.1")
	h.serve(c, cart("pen"))
	var keys []string
	var level hallpass.Level
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		keys = s.Keys()
		if err := s.Clear(); err != nil {
			t.Fatal(err)
		}
		level = s.Auth().Level
	})
	if len(keys) != 1 || keys[0] != "cart" {
		t.Errorf("Keys = %q, want only the app's [cart]", keys)
	}
	if level != hallpass.LevelSingleFactor {
		t.Errorf("level right after Clear: %v, want single_factor", level)
	}
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if got := s.Keys(); len(got) != 0 {
			t.Errorf("keys after Clear: %q", got)
		}
		if a := s.Auth(); a.UserID != "alice" || a.Level != hallpass.LevelSingleFactor {
			t.Errorf("after Clear the session is %q at %v, want alice at single_factor", a.UserID, a.Level)
		}
	})
}

// TestClearLeavesOthersChanges: Clear removes the keys its request knows
// of and does not write the library's own: a change another request of
// the session made to them meanwhile (here the downgrade a browser change
// makes) stays, and so does a key that request set.
func TestClearLeavesOthersChanges(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	c := h.signIn("alice", "Firefox", "192.0.2.1")
	h.serve(c, cart("pen"))
	k := hallpass.KeyOf(c)
	var other json.RawMessage
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		// Meanwhile, another request of the session.
		rec, err := h.store.Load(r.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		other = json.RawMessage(strings.Replace(string(rec.Data["hallpass.auth"]), `{`, `{"reauth_required":true,`, 1))
		d := hallpass.Delta{Set: map[string]json.RawMessage{"hallpass.auth": other, "wishlist": json.RawMessage(`"book"`)}}
		if err := h.store.Update(r.Context(), k, d); err != nil {
			t.Fatal(err)
		}
		if err := s.Clear(); err != nil {
			t.Fatal(err)
		}
	})
	rec, err := h.store.Load(t.Context(), k)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(rec.Data["hallpass.auth"]); got != string(other) {
		t.Errorf("hallpass.auth after Clear = %s, want the other request's %s", got, other)
	}
	if _, ok := rec.Data["cart"]; ok {
		t.Error("Clear left the key its request knew of")
	}
	if string(rec.Data["wishlist"]) != `"book"` {
		t.Errorf("Clear removed a key set meanwhile by another request: %q", rec.Data["wishlist"])
	}
}
