package live

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hallpass/hallpass"
)

// writeTimeout bounds each write to a stream, so that a client that
// stops reading cannot hold a handler (and Close) forever. It also lifts
// any http.Server.WriteTimeout, which would cut every stream short.
const writeTimeout = 10 * time.Second

// checkTimeout bounds one liveness check against the store.
const checkTimeout = 10 * time.Second

// Handler returns the server-sent events handler for GET requests of
// sessions of m. It works inside or outside m.Handler, and marks its
// requests background: an open stream never slides the idle deadline.
//
// A guest gets 401 and a JSON body; a session with Options.MaxStreams
// streams open gets 429; a closed Hub gets 503 (an EventSource does not
// retry any of these). Otherwise the response is a stream that sends
// "retry:", a comment every Options.Heartbeat, and, when the session
// ends, one event
//
//	event: ended
//	data: {"reason":"revoked"}
//
// with reason ReasonRevoked, ReasonExpired or ReasonLoggedOut, after
// which it closes. It also closes when the client goes away and on
// Hub.Close.
//
// The session is saved before the stream starts (hallpass saves before
// the first byte); nothing may change it afterwards, so the handler
// reads it only.
func (h *Hub) Handler(m *hallpass.Manager) http.Handler {
	return m.Handler(m.Background(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serve(m, w, r)
	})))
}

func (h *Hub) serve(m *hallpass.Manager, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, "method_not_allowed")
		return
	}
	st := hallpass.FromRequest(r).Status()
	if !st.Authenticated || st.IdleExpiresAt == nil || st.AbsoluteExpiresAt == nil {
		writeJSON(w, http.StatusUnauthorized, "unauthenticated")
		return
	}
	s := &stream{handle: st.Handle, user: st.User, abs: *st.AbsoluteExpiresAt, wake: make(chan struct{}, 1)}
	switch err := h.add(s); err {
	case nil:
	case errTooMany:
		writeJSON(w, http.StatusTooManyRequests, "too_many_streams")
		return
	default:
		writeJSON(w, http.StatusServiceUnavailable, "closed")
		return
	}
	defer h.remove(s)

	// Registered first, checked second: an end that came before the
	// registration is in the store by now, one after it is delivered.
	ctx := r.Context()
	reason, deadline, _ := h.check(ctx, m, s, earliest(*st.IdleExpiresAt, s.abs))

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	rc := http.NewResponseController(w)
	send := func(text string) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := io.WriteString(w, text); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: " + strconv.FormatInt(h.opts.Retry.Milliseconds(), 10) + "\n\n") {
		return
	}
	if reason != "" {
		send(ended(reason))
		return
	}

	heartbeat := time.NewTicker(h.opts.Heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(h.opts.CheckInterval)
	defer poll.Stop()
	timer := time.NewTimer(h.until(deadline))
	defer timer.Stop()
	for {
		hint, recheck := "", false
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-heartbeat.C:
			if !send(":\n\n") {
				return
			}
		case <-s.wake:
			reason, hint, recheck = s.take()
		case <-poll.C:
			recheck = true
		case <-timer.C:
			recheck = true
		}
		if reason == "" && recheck {
			var known bool
			reason, deadline, known = h.check(ctx, m, s, deadline)
			if !known && hint != "" {
				reason = hint
			}
			wait := h.until(deadline)
			if wait == 0 {
				// Past the deadline and still live only when the store
				// could not be asked: do not spin on it.
				wait = h.opts.CheckInterval
			}
			timer.Reset(wait)
		}
		if reason != "" {
			send(ended(reason))
			return
		}
	}
}

// check asks the store whether s's session is still live, and returns
// why it ended ("" if it did not), its next deadline, and whether the
// store could tell (false: it failed, or sessions are sealed cookies).
// deadline is the last one known.
func (h *Hub) check(ctx context.Context, m *hallpass.Manager, s *stream, deadline time.Time) (string, time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	sessions, err := h.lists.list(ctx, m, s.user)
	now := h.opts.Now()
	if errors.Is(err, hallpass.ErrNoServerState) {
		// Sealed cookie sessions have no list to look in, and their idle
		// deadline lives in a cookie this stream cannot see: only the
		// absolute deadline is certain.
		if !now.Before(s.abs) {
			return ReasonExpired, s.abs, true
		}
		return "", s.abs, false
	}
	if err != nil {
		// The read reported its own failure, once for every stream it
		// served; a wait cut short (the client left, the Hub closed, a
		// read in progress and the next took too long) is no failure.
		return "", deadline, false // keep the stream; try again at the next check
	}
	for _, si := range sessions {
		if si.Handle == s.handle {
			d := earliest(si.IdleDeadline, si.AbsoluteDeadline)
			if !now.Before(d) {
				return ReasonExpired, d, true
			}
			return "", d, true
		}
	}
	if !now.Before(deadline) {
		return ReasonExpired, deadline, true
	}
	return ReasonRevoked, deadline, true
}

// until is how long from now until t, by the Hub's clock.
func (h *Hub) until(t time.Time) time.Duration {
	return max(t.Sub(h.opts.Now()), 0)
}

// earliest returns the earlier of two deadlines; a zero one is none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func ended(reason string) string {
	b, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{reason})
	return "event: ended\ndata: " + string(b) + "\n\n"
}

func writeJSON(w http.ResponseWriter, code int, e string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{e})
}
