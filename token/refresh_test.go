package token

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// one returns an instance over be's store, polling the Revocations often.
func one(t *testing.T, be backend) (*instance, *storetest.Clock) {
	clock := storetest.NewClock(start())
	a, _ := be.open(t, clock)
	return newInstance(t, a, clock, 5*time.Millisecond, nil), clock
}

func refresh(t *testing.T, is *Issuer, rt string) *Pair {
	t.Helper()
	p, err := is.Refresh(context.Background(), rt)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	return p
}

// TestRefreshRotates: a refresh gives a new pair with a new refresh
// token; the old one keeps giving the same successor within the grace
// window; the successor works.
func TestRefreshRotates(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, clock := one(t, be)
		p0 := issue(t, in.is, "alice")
		clock.Add(time.Minute)
		p1 := refresh(t, in.is, p0.RefreshToken)
		if p1.RefreshToken == p0.RefreshToken || p1.AccessToken == p0.AccessToken {
			t.Fatal("refresh did not issue new tokens")
		}
		if p1.Handle != p0.Handle || p1.UserID != "alice" {
			t.Errorf("pair %v after %v", p1, p0)
		}
		if c, err := in.is.Verify(p1.AccessToken); err != nil || c.Handle != p0.Handle {
			t.Errorf("new access token: %+v, %v", c, err)
		}
		if want := clock.Now().Add(DefaultRefreshTTL); p1.RefreshExpires.After(want) || p1.RefreshExpires.Before(want.Add(-DefaultRefreshTTL/10)) {
			t.Errorf("successor expires %v, want a fresh lifetime", p1.RefreshExpires)
		}
		clock.Add(DefaultRefreshGrace - time.Second)
		again := refresh(t, in.is, p0.RefreshToken)
		if again.RefreshToken != p1.RefreshToken {
			t.Error("the old token within the grace window got another successor: a second branch")
		}
		p2 := refresh(t, in.is, p1.RefreshToken)
		if p2.RefreshToken == p1.RefreshToken {
			t.Error("the successor did not rotate")
		}
		if n := in.events.count(hallpass.EventRotated, ""); n != 2 {
			t.Errorf("%d rotated events, want 2", n)
		}
	})
}

// TestRefreshParallel refreshes one token from 8 goroutines at once: all
// get the same successor, and the store holds one chain.
func TestRefreshParallel(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, _ := one(t, be)
		for round := range 5 {
			p0 := issue(t, in.is, "alice")
			var wg sync.WaitGroup
			got := make([]*Pair, 8)
			errs := make([]error, 8)
			startGun := make(chan struct{})
			for i := range got {
				wg.Go(func() {
					<-startGun
					got[i], errs[i] = in.is.Refresh(context.Background(), p0.RefreshToken)
				})
			}
			close(startGun)
			wg.Wait()
			for i := range got {
				if errs[i] != nil {
					t.Fatalf("round %d, request %d: %v", round, i, errs[i])
				}
				if got[i].RefreshToken != got[0].RefreshToken {
					t.Fatalf("round %d: request %d got another successor than request 0", round, i)
				}
			}
			// The successor is the one live token: it refreshes.
			refresh(t, in.is, got[0].RefreshToken)
		}
		if n := in.events.count(hallpass.EventRotated, ""); n != 10 {
			t.Errorf("%d rotations for 5 parallel rounds and 5 follow-ups, want 10", n)
		}
	})
}

// TestRefreshGraceFollowsChain: a late parallel request with the old
// token, after the client already used the successor, gets the live
// token, not the rotated-out successor (which would later count as
// reuse).
func TestRefreshGraceFollowsChain(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, clock := one(t, be)
		p0 := issue(t, in.is, "alice")
		p1 := refresh(t, in.is, p0.RefreshToken)
		clock.Add(time.Second)
		p2 := refresh(t, in.is, p1.RefreshToken)
		late := refresh(t, in.is, p0.RefreshToken)
		if late.RefreshToken != p2.RefreshToken {
			t.Error("a grace request did not get the live end of the chain")
		}
		clock.Add(time.Second)
		refresh(t, in.is, late.RefreshToken)
		if n := in.events.count(hallpass.EventSuspicious, hallpass.ReasonTokenReuse); n != 0 {
			t.Errorf("%d reuse events", n)
		}
	})
}

// TestRefreshReuseRevokesFamily uses a rotated-out token after the grace
// window: the family ends (refresh and access tokens), a suspicious
// event names the user and handle, and no token appears in any event.
func TestRefreshReuseRevokesFamily(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, clock := one(t, be)
		other := issue(t, in.is, "alice") // another device of the same user
		p0 := issue(t, in.is, "alice")
		p1 := refresh(t, in.is, p0.RefreshToken)
		clock.Add(DefaultRefreshGrace)
		_, err := in.is.Refresh(context.Background(), p0.RefreshToken)
		if !errors.Is(err, ErrRevoked) {
			t.Fatalf("reuse after the grace window: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Refresh(context.Background(), p1.RefreshToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("the successor after reuse: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Verify(p1.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("the family's access token after reuse: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Refresh(context.Background(), p0.RefreshToken); err == nil {
			t.Error("the reused token works again")
		}
		if _, err := in.is.Verify(other.AccessToken); err != nil {
			t.Errorf("another device of the user: %v", err)
		}
		refresh(t, in.is, other.RefreshToken)

		var found bool
		for _, ev := range in.events.all() {
			if ev.Kind == hallpass.EventSuspicious && ev.Reason == hallpass.ReasonTokenReuse {
				found = ev.UserID == "alice" && ev.Handle == p0.Handle
			}
			for _, tok := range []string{p0.RefreshToken, p1.RefreshToken, p0.AccessToken, p1.AccessToken} {
				for _, field := range []string{ev.Handle, ev.UserID, ev.Reason, ev.IP, ev.UserAgent, ev.ForwardedFor} {
					if strings.Contains(field, tok) || (field != "" && strings.Contains(tok, field) && len(field) > 20) {
						t.Errorf("event %+v carries a token", ev)
					}
				}
			}
		}
		if !found {
			t.Errorf("no suspicious{token_reuse} event for alice and the family's handle in %+v", in.events.all())
		}
	})
}

// TestRefreshAfterCutoff: signing out everywhere ends refresh tokens.
func TestRefreshAfterCutoff(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, clock := one(t, be)
		p := issue(t, in.is, "alice")
		bob := issue(t, in.is, "bob")
		clock.Add(time.Millisecond)
		if err := in.is.RevokeUser(context.Background(), "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := in.is.Refresh(context.Background(), p.RefreshToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("refresh after the cutoff: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Verify(p.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("access after the cutoff: %v, want ErrRevoked", err)
		}
		refresh(t, in.is, bob.RefreshToken)
		fresh := issue(t, in.is, "alice")
		refresh(t, in.is, fresh.RefreshToken)
	})
}

// TestRevokeHandle ends one family by its public id (device logout).
func TestRevokeHandle(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, _ := one(t, be)
		p := issue(t, in.is, "alice")
		keep := issue(t, in.is, "alice")
		p1 := refresh(t, in.is, p.RefreshToken)
		if err := in.is.RevokeHandle(context.Background(), p.Handle); err != nil {
			t.Fatal(err)
		}
		if _, err := in.is.Refresh(context.Background(), p1.RefreshToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("refresh of a revoked family: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Refresh(context.Background(), p.RefreshToken); err == nil {
			t.Error("the revoked family's old token (within grace) still refreshes")
		}
		if _, err := in.is.Verify(p1.AccessToken); !errors.Is(err, ErrRevoked) {
			t.Errorf("access token of a revoked family: %v, want ErrRevoked", err)
		}
		if _, err := in.is.Verify(keep.AccessToken); err != nil {
			t.Errorf("the other family: %v", err)
		}
		refresh(t, in.is, keep.RefreshToken)
		var found bool
		for _, ev := range in.events.all() {
			found = found || ev.Kind == hallpass.EventRevoked && ev.Handle == p.Handle && ev.UserID == "alice"
		}
		if !found {
			t.Errorf("no revoked event naming alice and the handle: %+v", in.events.all())
		}
	})
}

// TestRefreshExpires: a refresh token unused for RefreshTTL is gone.
func TestRefreshExpires(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		in, clock := one(t, be)
		p := issue(t, in.is, "alice")
		clock.Add(p.RefreshExpires.Sub(clock.Now()))
		if _, err := in.is.Refresh(context.Background(), p.RefreshToken); !errors.Is(err, ErrRefresh) {
			t.Errorf("expired refresh token: %v, want ErrRefresh", err)
		}
		if _, err := in.is.Refresh(context.Background(), newRefreshToken()); !errors.Is(err, ErrRefresh) {
			t.Errorf("unknown refresh token: %v, want ErrRefresh", err)
		}
	})
}

// TestStoreHoldsNoToken looks at every record the Issuer writes: no
// token in it, no user id in its Meta (no device session, no session
// limit), and the user's session list stays empty.
func TestStoreHoldsNoToken(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		clock := storetest.NewClock(start())
		a, _ := be.open(t, clock)
		tr, ok := a.(*tracked)
		if !ok {
			tr = &tracked{Store: a}
		}
		in := newInstance(t, tr, clock, time.Hour, nil)
		p0 := issue(t, in.is, "alice")
		p1 := refresh(t, in.is, p0.RefreshToken)
		refresh(t, in.is, p0.RefreshToken)
		clock.Add(DefaultRefreshGrace)
		in.is.Refresh(context.Background(), p0.RefreshToken) // reuse
		tr.mu.Lock()
		written := tr.written
		tr.mu.Unlock()
		if len(written) < 4 {
			t.Fatalf("only %d writes seen", len(written))
		}
		secrets := []string{p0.RefreshToken, p1.RefreshToken, p0.AccessToken, p1.AccessToken,
			strings.TrimPrefix(p0.RefreshToken, refreshPrefix), strings.TrimPrefix(p1.RefreshToken, refreshPrefix)}
		for _, w := range written {
			for _, s := range secrets {
				if strings.Contains(w, s) {
					t.Errorf("the store was given a token: %q", w)
				}
			}
			if _, user, _ := strings.Cut(w, "\x00"); strings.HasPrefix(user, "alice") {
				t.Errorf("a record with user id alice in its Meta: %q", w)
			}
		}
		recs, err := in.store.ListUser(context.Background(), "alice")
		if err != nil || len(recs) != 0 {
			t.Errorf("alice has %d sessions (%v); token families are not sessions", len(recs), err)
		}
	})
}

// TestInstances runs two instances (Issuer + Revocations + store client)
// on one store: what one revokes, the other refuses, at once when the
// store pushes revocations, else within the poll interval.
func TestInstances(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		clock := storetest.NewClock(start())
		sa, sb := be.open(t, clock)
		const poll = 20 * time.Millisecond
		a := newInstance(t, sa, clock, poll, nil)
		b := newInstance(t, sb, clock, poll, nil)
		// Without a push, B learns within a poll; allow for a loaded
		// machine running tests in parallel.
		bound := 10 * poll
		refused := func(what string, check func() error) {
			t.Helper()
			if be.pushes {
				if err := check(); !errors.Is(err, ErrRevoked) {
					t.Errorf("%s: B answered %v right after A's revocation, want ErrRevoked", what, err)
				}
				return
			}
			d := within(t, bound, what, func() bool { return errors.Is(check(), ErrRevoked) })
			t.Logf("%s: B refused %v after A's revocation (poll %v)", what, d.Round(time.Millisecond), poll)
		}

		// One token.
		p := issue(t, a.is, "alice")
		c, err := b.is.Verify(p.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.is.Revoke(context.Background(), &c); err != nil {
			t.Fatal(err)
		}
		refused("one access token", func() error { _, err := b.is.Verify(p.AccessToken); return err })

		// One device: access token through the Revocations, refresh
		// through the store.
		p = issue(t, a.is, "alice")
		p = refresh(t, b.is, p.RefreshToken)
		if err := a.is.RevokeHandle(context.Background(), p.Handle); err != nil {
			t.Fatal(err)
		}
		refused("device access token", func() error { _, err := b.is.Verify(p.AccessToken); return err })
		refused("device refresh token", func() error { _, err := b.is.Refresh(context.Background(), p.RefreshToken); return err })

		// The user, everywhere.
		p = issue(t, b.is, "alice")
		clock.Add(time.Millisecond)
		if err := a.is.RevokeUser(context.Background(), "alice"); err != nil {
			t.Fatal(err)
		}
		refused("user access token", func() error { _, err := b.is.Verify(p.AccessToken); return err })
		refused("user refresh token", func() error { _, err := b.is.Refresh(context.Background(), p.RefreshToken); return err })

		// Reuse detected on B ends the family on A.
		p0 := issue(t, a.is, "carol")
		p1 := refresh(t, a.is, p0.RefreshToken)
		clock.Add(DefaultRefreshGrace)
		if _, err := b.is.Refresh(context.Background(), p0.RefreshToken); !errors.Is(err, ErrRevoked) {
			t.Fatalf("reuse on B: %v", err)
		}
		refused("refresh after reuse seen by the other instance", func() error { _, err := a.is.Refresh(context.Background(), p1.RefreshToken); return err })
		refused("access after reuse seen by the other instance", func() error { _, err := a.is.Verify(p1.AccessToken); return err })
	})
}

// TestIssueForSession hands tokens to a signed-in hallpass session: they
// carry its handle, and revoking that handle ends them.
func TestIssueForSession(t *testing.T) {
	in, _ := single(t, nil)
	m, err := hallpass.New(hallpass.Config{Store: in.store, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {})})
	if err != nil {
		t.Fatal(err)
	}
	var p *Pair
	var handle string
	var issueErr, guestErr error
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		_, guestErr = in.is.IssueForSession(r.Context(), s)
		if err := s.Login("alice", hallpass.LoginOptions{}); err != nil {
			t.Fatal(err)
		}
		handle = s.Handle()
		p, issueErr = in.is.IssueForSession(r.Context(), s)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "https://localhost/login", nil))
	if guestErr == nil {
		t.Error("a guest session got tokens")
	}
	if issueErr != nil {
		t.Fatal(issueErr)
	}
	if p.Handle != handle || p.UserID != "alice" {
		t.Errorf("pair for %q/%q, want alice and the session handle %q", p.UserID, p.Handle, handle)
	}
	c, err := in.is.Verify(p.AccessToken)
	if err != nil || c.Handle != handle {
		t.Fatalf("claims %+v, %v", c, err)
	}
	if err := in.is.RevokeHandle(context.Background(), handle); err != nil {
		t.Fatal(err)
	}
	if _, err := in.is.Verify(p.AccessToken); !errors.Is(err, ErrRevoked) {
		t.Errorf("access token after its session handle was revoked: %v", err)
	}
	if _, err := in.is.Refresh(context.Background(), p.RefreshToken); !errors.Is(err, ErrRevoked) {
		t.Errorf("refresh token after its session handle was revoked: %v", err)
	}
}
