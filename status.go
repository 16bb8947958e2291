package hallpass

import (
	"encoding/json"
	"net/http"
	"time"
)

// Status is what the status handler reports about the current session.
// Times are nil for a guest that has no stored session.
type Status struct {
	Authenticated     bool       `json:"authenticated"`
	User              string     `json:"user,omitempty"`
	Handle            string     `json:"handle,omitempty"`
	Persistent        bool       `json:"persistent"`
	IdleExpiresAt     *time.Time `json:"idle_expires_at"`
	AbsoluteExpiresAt *time.Time `json:"absolute_expires_at"`
	// ServerTime lets a client compute remaining time without trusting
	// its own clock.
	ServerTime time.Time `json:"server_time"`
}

// Status returns the session's status. It changes nothing.
func (s *Session) Status() Status {
	st := Status{}
	if s == nil {
		return st
	}
	st.ServerTime = s.m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rec; r != nil {
		idle, abs := r.IdleDeadline, r.AbsoluteDeadline
		if s.touchDueLocked(st.ServerTime) {
			idle = s.m.nextIdleDeadline(r, st.ServerTime)
		}
		st.Authenticated, st.User, st.Handle, st.Persistent = r.UserID != "", r.UserID, r.Handle, r.Persistent
		st.IdleExpiresAt, st.AbsoluteExpiresAt = &idle, &abs
	}
	return st
}

// nextIdleDeadline is where a touch at now moves r's idle deadline.
func (m *Manager) nextIdleDeadline(r *Record, now time.Time) time.Time {
	idle, _ := m.timeouts(r.Persistent)
	next := now.Add(idle)
	if !r.AbsoluteDeadline.IsZero() {
		next = minTime(next, r.AbsoluteDeadline)
	}
	if next.Before(r.IdleDeadline) {
		return r.IdleDeadline
	}
	return next
}

// StatusHandler returns a handler that reports the session's Status as
// JSON. It never extends the session: pages can poll it to warn before the
// idle timeout. It works inside or outside Handler.
func (m *Manager) StatusHandler() http.Handler {
	return m.Handler(m.Background(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		writeJSON(w, http.StatusOK, FromRequest(r).Status())
	})))
}

// ExtendHandler returns a handler that, on POST, slides the idle deadline
// now and reports the new Status as JSON. It works inside or outside
// Handler. Put it behind CSRF protection like any unsafe route.
func (m *Manager) ExtendHandler() http.Handler {
	return m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		s := FromRequest(r)
		if err := s.Extend(); err != nil {
			// Only ErrResponseStarted is possible here, from a wrapping
			// handler that already wrote.
			http.Error(w, "session could not be extended", http.StatusInternalServerError)
			return
		}
		writeJSON(w, http.StatusOK, s.Status())
	}))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
