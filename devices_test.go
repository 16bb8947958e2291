package hallpass_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// signIn logs user in from a client with the given User-Agent and address.
func (h *harness) signIn(user, ua, ip string) string {
	h.t.Helper()
	client := func(r *http.Request) {
		r.Header.Set("User-Agent", ua)
		r.RemoteAddr = ip + ":1234"
	}
	_, c := h.serve("", login(user, hallpass.LoginOptions{}), client)
	if c == "" {
		h.t.Fatal("sign-in gave no cookie")
	}
	if h.clients == nil {
		h.clients = make(map[string]func(*http.Request))
	}
	h.clients[c] = client
	return c
}

func (h *harness) devices(cookie string) []hallpass.SessionInfo {
	h.t.Helper()
	var list []hallpass.SessionInfo
	h.serve(cookie, func(w http.ResponseWriter, r *http.Request) {
		var err error
		if list, err = hallpass.FromRequest(r).Devices(); err != nil {
			h.t.Fatal(err)
		}
	})
	return list
}

func TestDevicesListAndRevoke(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	laptop := h.signIn("alice", "Firefox", "192.0.2.10")
	h.clock.Add(time.Minute)
	phone := h.signIn("alice", "Safari", "192.0.2.20")
	h.clock.Add(time.Minute)
	tablet := h.signIn("alice", "Chrome", "192.0.2.30")
	bob := h.signIn("bob", "Edge", "192.0.2.40")

	list := h.devices(phone)
	if len(list) != 3 {
		t.Fatalf("alice has %d devices, want 3", len(list))
	}
	if list[0].UserAgent != "Chrome" || list[2].UserAgent != "Firefox" {
		t.Fatalf("not sorted by last seen: %+v", list)
	}
	var current, phoneHandle, laptopHandle string
	for _, d := range list {
		if d.Current {
			current = d.Handle
		}
		switch d.UserAgent {
		case "Safari":
			phoneHandle = d.Handle
			if d.IP != "192.0.2.20" {
				t.Errorf("phone IP %q", d.IP)
			}
		case "Firefox":
			laptopHandle = d.Handle
		}
	}
	if current == "" || current != phoneHandle {
		t.Fatal("the requesting session is not marked current")
	}
	listJSON, _ := json.Marshal(list)
	for _, tok := range []string{laptop, phone, tablet} {
		if strings.Contains(string(listJSON), tok) {
			t.Fatal("device list contains a token")
		}
	}

	// Revoke one: the laptop's cookie is a guest afterwards.
	h.serve(phone, func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Revoke(laptopHandle); err != nil {
			t.Error(err)
		}
	})
	if res, _ := h.serve(laptop, reader); body(t, res) != "|0" {
		t.Fatal("revoked device still signed in")
	}
	if !h.events.has(hallpass.EventRevoked, hallpass.ReasonRevoke) {
		t.Fatal("no revoked event")
	}

	// Bob cannot revoke alice's sessions by handle.
	h.serve(bob, func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Revoke(phoneHandle); !errors.Is(err, hallpass.ErrUnknownHandle) {
			t.Errorf("bob revoking alice's handle: %v", err)
		}
	})
	if res, _ := h.serve(phone, reader); body(t, res) != "alice|0" {
		t.Fatal("another user's revoke took effect")
	}

	// Revoke others: only the phone stays.
	h.serve(phone, func(w http.ResponseWriter, r *http.Request) {
		n, err := hallpass.FromRequest(r).RevokeOthers()
		if err != nil || n != 1 {
			t.Errorf("RevokeOthers = %d, %v; want 1", n, err)
		}
	})
	if res, _ := h.serve(tablet, reader); body(t, res) != "|0" {
		t.Fatal("tablet survived revoke-others")
	}
	if res, _ := h.serve(phone, reader); body(t, res) != "alice|0" {
		t.Fatal("revoke-others ended the current session")
	}

	// Revoking this very session is a logout.
	res, after := h.serve(phone, func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Revoke(phoneHandle)
	})
	if after != "" || !strings.Contains(setCookieHeader(res, h.m.CookieName()), "Max-Age=0") {
		t.Fatal("revoking the current session did not drop the cookie")
	}

	// Revoke all, as after a password change.
	h.signIn("bob", "Edge 2", "192.0.2.41")
	n, err := h.m.RevokeAll(context.Background(), "bob")
	if err != nil || n != 2 {
		t.Fatalf("RevokeAll(bob) = %d, %v; want 2", n, err)
	}
	if res, _ := h.serve(bob, reader); body(t, res) != "|0" {
		t.Fatal("bob still signed in after RevokeAll")
	}
	if err := h.m.Revoke(context.Background(), "alice", "no-such-handle"); !errors.Is(err, hallpass.ErrUnknownHandle) {
		t.Fatalf("unknown handle: %v", err)
	}
}

func TestStatusDoesNotExtend(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: 10 * time.Minute, Lifetime: time.Hour})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	before := h.only()
	status := func(cookie string) (int, map[string]any) {
		req := httptest.NewRequest("GET", "/session", nil)
		if cookie != "" {
			req.Header.Set("Cookie", h.m.CookieName()+"="+cookie)
		}
		rec := httptest.NewRecorder()
		h.m.StatusHandler().ServeHTTP(rec, req)
		if rec.Header().Get("Cache-Control") != "no-store" || len(rec.Result().Cookies()) != 0 {
			t.Fatal("status response cacheable or sets a cookie")
		}
		var v map[string]any
		json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v
	}
	for range 3 {
		h.clock.Add(3 * time.Minute)
		code, v := status(c)
		if code != 200 || v["authenticated"] != true || v["user"] != "alice" || v["handle"] != before.Handle {
			t.Fatalf("status %d %v", code, v)
		}
		if v["idle_expires_at"] != before.IdleDeadline.Format(time.RFC3339Nano) {
			t.Fatalf("idle_expires_at %v, want %v", v["idle_expires_at"], before.IdleDeadline)
		}
	}
	if got := h.only(); !got.IdleDeadline.Equal(before.IdleDeadline) || got.Version != before.Version {
		t.Fatal("polling the status extended or wrote the session")
	}
	if _, v := status(""); v["authenticated"] != false || v["idle_expires_at"] != nil {
		t.Fatalf("guest status %v", v)
	}

	// Extend: POST only; moves the idle deadline to now + idle timeout.
	ext := func(method string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/session/extend", nil)
		req.Header.Set("Cookie", h.m.CookieName()+"="+c)
		rec := httptest.NewRecorder()
		h.m.ExtendHandler().ServeHTTP(rec, req)
		return rec
	}
	if rec := ext("GET"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET extend: %d", rec.Code)
	}
	rec := ext("POST")
	var v map[string]any
	json.Unmarshal(rec.Body.Bytes(), &v)
	want := h.clock.Now().Add(10 * time.Minute)
	if got := h.only().IdleDeadline; !got.Equal(want) {
		t.Fatalf("extend moved the deadline to %v, want %v", got, want)
	}
	if v["idle_expires_at"] != want.Format(time.RFC3339Nano) {
		t.Fatalf("extend reported %v, want %v", v["idle_expires_at"], want)
	}
	if !h.events.has(hallpass.EventExtended, "") {
		t.Fatal("no extended event")
	}
}

func TestReportCarriesSessionIdentity(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	c := h.signIn("alice", "probe", "192.0.2.9")
	h.events.reset()
	h.serve(c, func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Report(hallpass.EventSuspicious, "csrf_missing")
	})
	events := h.events.All()
	if len(events) != 1 {
		t.Fatalf("%d events", len(events))
	}
	e := events[0]
	if e.Kind != hallpass.EventSuspicious || e.Reason != "csrf_missing" || e.UserID != "alice" || e.Handle == "" || e.IP != "192.0.2.9" || e.UserAgent != "probe" {
		t.Fatalf("event %+v", e)
	}
}

func TestCredentialsChanged(t *testing.T) {
	h := newHarness(t, hallpass.Config{})
	here := h.signIn("alice", "Firefox", "192.0.2.10")
	other := h.signIn("alice", "Safari", "192.0.2.20")
	bob := h.signIn("bob", "Edge", "192.0.2.30")
	res, renewed := h.serve(here, func(w http.ResponseWriter, r *http.Request) {
		n, err := hallpass.FromRequest(r).CredentialsChanged(true)
		if err != nil || n != 1 {
			t.Errorf("CredentialsChanged(keep) = %d, %v; want 1", n, err)
		}
	})
	if res.StatusCode != 200 || renewed == here || renewed == "" {
		t.Fatal("the kept session did not get a new token")
	}
	h.clients[renewed] = h.clients[here]
	for cookie, want := range map[string]string{here: "|0", other: "|0", renewed: "alice|0", bob: "bob|0"} {
		if res, _ := h.serve(cookie, reader); body(t, res) != want {
			t.Errorf("after the change, a cookie gives %q, want %q", body(t, res), want)
		}
	}
	if !h.events.has(hallpass.EventRevoked, hallpass.ReasonCredentialsChanged) {
		t.Fatal("no revoked{credentials_changed} event")
	}
	// Without keepThis this session ends too.
	res, after := h.serve(renewed, func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).CredentialsChanged(false)
	})
	if after != "" || !strings.Contains(setCookieHeader(res, h.m.CookieName()), "Max-Age=0") {
		t.Fatal("CredentialsChanged(false) left this session's cookie")
	}
	if recs, _ := h.store.ListUser(context.Background(), "alice"); len(recs) != 0 {
		t.Fatalf("%d sessions of alice left", len(recs))
	}
}
