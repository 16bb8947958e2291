package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hallpass/hallpass"
)

type adminUser struct {
	User     *user
	Sessions []hallpass.SessionInfo
}

type adminPage struct {
	Users        []adminUser
	Total        int
	Events       []hallpass.Event
	Reservations map[string]int
}

// requireAdmin returns the signed-in admin, or answers 403 (or sends a
// guest to log in) and returns nil.
func (a *app) requireAdmin(w http.ResponseWriter, r *http.Request) *user {
	u := a.requireUser(w, r)
	if u == nil {
		return nil
	}
	if !u.IsAdmin() {
		a.render(w, r, http.StatusForbidden, "message", "Forbidden", u, "This page is for administrators.")
		return nil
	}
	return u
}

// admin handles GET /admin.
func (a *app) admin(w http.ResponseWriter, r *http.Request) {
	u := a.requireAdmin(w, r)
	if u == nil {
		return
	}
	all, err := a.users.All(r.Context())
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	var p adminPage
	for _, v := range all {
		list, err := a.sessions.UserSessions(r.Context(), strconv.FormatInt(v.ID, 10))
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		p.Users = append(p.Users, adminUser{User: v, Sessions: list})
		p.Total += len(list)
	}
	// The log writes in the background: what is queued is shown too.
	if err := a.audit.Flush(r.Context()); err != nil {
		a.serverError(w, r, err)
		return
	}
	if p.Events, err = a.audit.Latest(r.Context(), 50); err != nil {
		a.serverError(w, r, err)
		return
	}
	if p.Reservations, err = a.reservations.counts(r.Context()); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, http.StatusOK, "admin", "Admin", u, p)
}

// adminRevoke handles POST /admin/users/{id}/sessions/{handle}/revoke.
func (a *app) adminRevoke(w http.ResponseWriter, r *http.Request) {
	if a.requireAdmin(w, r) == nil {
		return
	}
	user, handle := r.PathValue("id"), r.PathValue("handle")
	if _, err := a.remember.ForgetSession(r.Context(), user, handle); err != nil {
		a.serverError(w, r, err)
		return
	}
	err := a.sessions.Revoke(r.Context(), user, handle)
	if err != nil && !errors.Is(err, hallpass.ErrUnknownHandle) {
		a.serverError(w, r, err)
		return
	}
	a.adminDone(w, r, "Session revoked.")
}

// adminRevokeAll handles POST /admin/users/{id}/revoke-all: every session,
// remember-me series and token of the user.
func (a *app) adminRevokeAll(w http.ResponseWriter, r *http.Request) {
	if a.requireAdmin(w, r) == nil {
		return
	}
	user := r.PathValue("id")
	if _, err := a.remember.ForgetAll(r.Context(), user); err != nil {
		a.serverError(w, r, err)
		return
	}
	n, err := a.sessions.RevokeAll(r.Context(), user)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.adminDone(w, r, "Signed the user out everywhere ("+strconv.Itoa(n)+" sessions).")
}

// adminMetrics handles GET /metrics for administrators; -metrics-addr
// serves the same on a listener of its own, for a scraper.
func (a *app) adminMetrics(w http.ResponseWriter, r *http.Request) {
	if a.requireAdmin(w, r) == nil {
		return
	}
	a.MetricsHandler().ServeHTTP(w, r)
}

// MetricsHandler serves the Prometheus metrics.
func (a *app) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{})
}

func (a *app) adminDone(w http.ResponseWriter, r *http.Request, msg string) {
	a.flashTo(w, r, msg, "/admin")
}

// adminEvents handles GET /admin/events: the security events as they are
// kept, as server-sent events, for the admin page's live table. It reads
// the audit log every two seconds rather than listening to the Manager,
// so that it shows what every instance kept.
func (a *app) adminEvents(w http.ResponseWriter, r *http.Request) {
	if a.requireAdmin(w, r) == nil {
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	// The page already shows what was kept before: start after it.
	var last time.Time
	seen := make(map[string]bool) // events at exactly last, already shown
	eventID := func(e hallpass.Event) string {
		return e.Time.String() + string(e.Kind) + e.Reason + e.Handle + e.UserID
	}
	if a.audit.Flush(r.Context()) == nil {
		if evs, err := a.audit.Latest(r.Context(), 50); err == nil && len(evs) > 0 {
			last = evs[0].Time
			for _, e := range evs {
				if e.Time.Equal(last) {
					seen[eventID(e)] = true
				}
			}
		}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.closing:
			return
		case <-tick.C:
		}
		if err := a.audit.Flush(r.Context()); err != nil {
			continue
		}
		evs, err := a.audit.Latest(r.Context(), 50)
		if err != nil {
			continue
		}
		for i := len(evs) - 1; i >= 0; i-- { // oldest first
			e := evs[i]
			id := eventID(e)
			if e.Time.Before(last) || e.Time.Equal(last) && seen[id] {
				continue
			}
			if e.Time.After(last) {
				last, seen = e.Time, make(map[string]bool)
			}
			seen[id] = true
			data, _ := json.Marshal(map[string]string{
				"time": e.Time.UTC().Format("15:04:05"), "kind": string(e.Kind), "reason": e.Reason,
				"user": e.UserID, "handle": e.Handle, "ip": e.IP, "forwarded_for": e.ForwardedFor,
			})
			if _, err := fmt.Fprintf(w, "event: audit\ndata: %s\n\n", data); err != nil {
				return
			}
		}
		if _, err := io.WriteString(w, ": tick\n\n"); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
