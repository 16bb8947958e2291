package hallpass_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

const (
	firefox130 = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	firefox131 = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
	chrome     = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36"
	edge       = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36 Edg/128.0"
)

func from(ip, ua string) func(*http.Request) {
	return func(r *http.Request) { r.RemoteAddr = ip + ":1"; r.Header.Set("User-Agent", ua) }
}

func TestClientChangeDefaults(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}), from("192.0.2.1", firefox130))
	sensitive := h.m.Require(hallpass.Requirement{Level: hallpass.LevelSingleFactor})(http.HandlerFunc(reader))

	// A browser update is no change.
	h.events.reset()
	if res, _ := h.serve(c, sensitive.ServeHTTP, from("192.0.2.1", firefox131)); res.StatusCode != 200 {
		t.Fatalf("browser update treated as a change: %d", res.StatusCode)
	}
	if h.events.has(hallpass.EventSuspicious, "") {
		t.Fatal("event for a browser update")
	}
	// A new address is logged, once, and nothing else happens.
	for range 3 {
		h.clock.Add(time.Second)
		if res, _ := h.serve(c, sensitive.ServeHTTP, from("198.51.100.7", firefox131)); res.StatusCode != 200 {
			t.Fatal("IP change blocked the request; default is log only")
		}
	}
	if n := h.events.Count(hallpass.EventSuspicious, hallpass.ReasonIPChanged); n != 1 {
		t.Fatalf("%d ip_changed events for one change, want 1", n)
	}
	// Another browser with the same cookie: still signed in, but sensitive
	// routes ask for re-authentication until it happens.
	res, _ := h.serve(c, sensitive.ServeHTTP, from("198.51.100.7", chrome))
	if res.StatusCode != http.StatusForbidden || !h.events.has(hallpass.EventSuspicious, hallpass.ReasonUserAgentChanged) {
		t.Fatalf("browser change: status %d", res.StatusCode)
	}
	if res, _ := h.serve(c, reader, from("198.51.100.7", chrome)); body(t, res) != "alice|0" {
		t.Fatal("require-reauth policy signed the user out")
	}
	_, c = h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Reauthenticate(hallpass.MethodPassword); err != nil {
			t.Error(err)
		}
	}, from("198.51.100.7", chrome))
	if res, _ := h.serve(c, sensitive.ServeHTTP, from("198.51.100.7", chrome)); res.StatusCode != 200 {
		t.Fatalf("after re-authentication: %d", res.StatusCode)
	}
}

func TestClientChangeRevoke(t *testing.T) {
	h := newHarness(t, hallpass.Config{OnUserAgentChange: hallpass.ClientChangeRevoke, OnIPChange: hallpass.ClientChangeIgnore})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}), from("192.0.2.1", chrome))
	if res, _ := h.serve(c, reader, from("203.0.113.5", chrome)); body(t, res) != "alice|0" || h.events.has(hallpass.EventSuspicious, hallpass.ReasonIPChanged) {
		t.Fatal("ignored IP change acted on")
	}
	if res, _ := h.serve(c, reader, from("203.0.113.5", edge)); body(t, res) != "|0" {
		t.Fatal("revoke policy kept the session")
	}
	if !h.events.has(hallpass.EventRevoked, hallpass.ReasonUserAgentChanged) {
		t.Fatal("no revoked event")
	}
	if res, _ := h.serve(c, reader, from("192.0.2.1", chrome)); body(t, res) != "|0" {
		t.Fatal("session came back for the original browser")
	}
}

func TestClientChangeGuestsIgnored(t *testing.T) {
	h := newHarness(t, hallpass.Config{OnUserAgentChange: hallpass.ClientChangeRevoke})
	_, c := h.serve("", counter, from("192.0.2.1", chrome))
	h.clock.Add(time.Second)
	if res, _ := h.serve(c, reader, from("192.0.2.2", firefox130)); body(t, res) != "|1" {
		t.Fatal("a guest's cart was dropped for a client change")
	}
}

// updateCounter is a memstore that counts Updates.
type updateCounter struct {
	*memstore.Store
	n atomic.Int32
}

func (u *updateCounter) Update(ctx context.Context, k hallpass.Key, d hallpass.Delta) error {
	u.n.Add(1)
	return u.Store.Update(ctx, k, d)
}

// TestClientChangeWritesOnce: the downgrade on a browser change already
// records the new client; the request must not write it a second time.
func TestClientChangeWritesOnce(t *testing.T) {
	// The harness's clock starts at this instant and this test does not
	// move it.
	clock := storetest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	st := &updateCounter{Store: memstore.New(&memstore.Options{Now: clock.Now})}
	defer st.Close()
	h := newHarness(t, hallpass.Config{Store: st})
	c := h.signIn("alice", firefox131, "192.0.2.1")
	st.n.Store(0)
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {}, from("192.0.2.1", chrome))
	if n := st.n.Load(); n != 1 {
		t.Errorf("a request from another browser made %d store updates, want 1 (the downgrade)", n)
	}
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		if lvl := hallpass.FromRequest(r).Auth().Level; lvl != hallpass.LevelRemembered {
			t.Errorf("level after the browser change: %v, want remembered", lvl)
		}
	}, from("192.0.2.1", chrome))
}
