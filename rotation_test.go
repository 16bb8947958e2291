package hallpass_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

func rotationHarness(t *testing.T) *harness {
	return newHarness(t, hallpass.Config{
		IdleTimeout: time.Hour, Lifetime: 24 * time.Hour,
		RotateEvery: 10 * time.Minute, RotateGrace: 30 * time.Second,
	})
}

func TestPeriodicRotation(t *testing.T) {
	h := rotationHarness(t)
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	handle := h.only().Handle
	h.clock.Add(9 * time.Minute)
	if _, c := h.serve(t0, reader); c != t0 {
		t.Fatal("rotated before RotateEvery")
	}
	h.clock.Add(2 * time.Minute)
	res, t1 := h.serve(t0, counter)
	if t1 == t0 || t1 == "" || body(t, res) != "alice|1" {
		t.Fatal("no rotation after RotateEvery, or the request lost its write")
	}
	if !h.events.has(hallpass.EventRotated, "") {
		t.Fatal("no rotated event")
	}
	after := h.only()
	if after.Handle != handle {
		t.Fatal("rotation changed the handle")
	}
	// Requests already in flight with t0, or other tabs, within the grace
	// window: all served, all handed the same successor.
	for range 3 {
		h.clock.Add(5 * time.Second)
		res, c := h.serve(t0, reader)
		if got := body(t, res); got != "alice|1" || c != t1 {
			t.Fatalf("old token within grace: %q, cookie is successor %v", got, c == t1)
		}
	}
	if h.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenReuse) {
		t.Fatal("use within grace reported as reuse")
	}
	if res, _ := h.serve(t1, reader); body(t, res) != "alice|1" {
		t.Fatal("successor does not work")
	}
	// Guests never rotate.
	_, g := h.serve("", counter)
	h.clock.Add(20 * time.Minute)
	if _, c := h.serve(g, counter); c != g {
		t.Fatal("guest session rotated")
	}
}

func TestTokenReuseAfterGraceRevokes(t *testing.T) {
	h := rotationHarness(t)
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader) // the browser rotates to t1
	h.clock.Add(time.Minute)     // past the grace window
	h.events.reset()
	res, c := h.serve(t0, reader) // someone replays the stolen t0
	if got := body(t, res); got != "|0" || c != t0 {
		t.Fatalf("reused token: %q, got a new cookie %v", got, c != t0)
	}
	if !h.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenReuse) || !h.events.has(hallpass.EventRevoked, hallpass.ReasonTokenReuse) {
		t.Fatal("no token_reuse events")
	}
	if res, _ := h.serve(t1, reader); body(t, res) != "|0" {
		t.Fatal("the session survived token reuse")
	}
}

func TestTokenReuseFollowsChain(t *testing.T) {
	h := rotationHarness(t)
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader)
	h.clock.Add(11 * time.Minute)
	_, t2 := h.serve(t1, reader)
	if t2 == t1 || t1 == t0 {
		t.Fatal("expected two rotations")
	}
	h.clock.Add(time.Minute)
	h.serve(t0, reader) // two rotations old
	if res, _ := h.serve(t2, reader); body(t, res) != "|0" {
		t.Fatal("reuse of a token two rotations old did not revoke the session")
	}
}

func TestTombstonesAreNotSessions(t *testing.T) {
	h := rotationHarness(t)
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader)
	if h.store.Len() != 2 {
		t.Fatalf("%d records, want the session and one tombstone", h.store.Len())
	}
	var devices []hallpass.SessionInfo
	h.serve(t1, func(w http.ResponseWriter, r *http.Request) { devices, _ = hallpass.FromRequest(r).Devices() })
	if len(devices) != 1 {
		t.Fatalf("%d devices listed, want 1: a tombstone shows", len(devices))
	}
	if _, err := h.store.Load(context.Background(), hallpass.KeyOf(t0)); err != nil {
		t.Fatal("tombstone missing")
	}
	// RevokeAll ends the session; the tombstone then leads nowhere.
	if _, err := h.m.RevokeAll(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if res, _ := h.serve(t0, reader); body(t, res) != "|0" {
		t.Fatal("tombstone led to a revoked session")
	}
}

func TestRotationAcrossInstances(t *testing.T) {
	h := rotationHarness(t)
	cfg := hallpass.Config{Store: h.store, Now: h.clock.Now, Events: h.events,
		IdleTimeout: time.Hour, Lifetime: 24 * time.Hour, RotateEvery: 10 * time.Minute, RotateGrace: 30 * time.Second}
	other, err := hallpass.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader) // rotated on instance A
	a := h.m
	h.m = other // a parallel request with t0 reaches instance B
	res, c := h.serve(t0, reader)
	h.m = a
	if got := body(t, res); got != "alice|0" || c != t1 {
		t.Fatalf("instance B: %q, same successor %v", got, c == t1)
	}
}

func TestRotationOff(t *testing.T) {
	h := newHarness(t, hallpass.Config{IdleTimeout: time.Hour, RotateEvery: -1})
	_, c := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(50 * time.Minute)
	if _, c2 := h.serve(c, reader); c2 != c {
		t.Fatal("rotated with RotateEvery < 0")
	}
}

func TestRotationLeaksNoToken(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, hallpass.Config{
		IdleTimeout: time.Hour, RotateEvery: 10 * time.Minute, RotateGrace: 30 * time.Second,
		Events: hallpass.SlogSink{Logger: slog.New(slog.NewJSONHandler(&logs, nil))},
	})
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader)
	h.serve(t0, reader)
	h.clock.Add(time.Minute)
	h.serve(t0, reader)
	if !strings.Contains(logs.String(), "token_reuse") {
		t.Fatal("scenario did not reach token reuse")
	}
	for _, tok := range []string{t0, t1} {
		if strings.Contains(logs.String(), tok) {
			t.Fatal("a token reached the log")
		}
	}
	// The store holds neither token in clear: the tombstone's successor is
	// sealed.
	rec, err := h.store.Load(context.Background(), hallpass.KeyOf(t0))
	if err == nil {
		for _, v := range rec.Data {
			if bytes.Contains(v, []byte(t1)) {
				t.Fatal("tombstone holds the successor token in clear")
			}
		}
	}
}

func TestExpiredTombstoneIsUnknown(t *testing.T) {
	h := newHarness(t, hallpass.Config{
		IdleTimeout: time.Hour, Lifetime: 48 * time.Hour,
		RotateEvery: 10 * time.Minute, RotateGrace: 30 * time.Second, TheftWindow: time.Hour,
	})
	_, t0 := h.serve("", login("alice", hallpass.LoginOptions{}))
	h.clock.Add(11 * time.Minute)
	_, t1 := h.serve(t0, reader)
	h.clock.Add(30 * time.Minute)
	_, t1 = h.serve(t1, reader)   // keep the session alive; rotates again
	h.clock.Add(31 * time.Minute) // the first tombstone is past its hour
	h.events.reset()
	if res, _ := h.serve(t0, reader); body(t, res) != "|0" {
		t.Fatal("expired tombstone served something")
	}
	if h.events.has(hallpass.EventExpiredIdle, "") || h.events.has(hallpass.EventSuspicious, hallpass.ReasonTokenReuse) {
		t.Fatal("an expired tombstone was reported as an expiry or a reuse")
	}
	if !h.events.has(hallpass.EventSuspicious, hallpass.ReasonUnknownToken) {
		t.Fatal("no unknown_token event")
	}
	if res, _ := h.serve(t1, reader); body(t, res) != "alice|0" {
		t.Fatal("the live session was harmed")
	}
}
