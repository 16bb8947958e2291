package hallpass

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Handler returns middleware that puts a Session in each request's context
// and saves it before the first byte of the response. If the store cannot
// load or save the session, the request fails closed through
// Config.ErrorHandler (503 by default) and nothing is half-written.
//
// Handler may be nested: an inner Handler of the same Manager passes the
// request through.
func (m *Manager) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := FromContext(r.Context()); s != nil && s.m == m {
			next.ServeHTTP(w, r)
			return
		}
		sw := &sessionWriter{ResponseWriter: w, r: r}
		s := &sw.s
		if err := m.load(r, s); err != nil {
			m.cfg.ErrorHandler(w, r, err)
			return
		}
		sw.r = r.WithContext(s.ctx)
		next.ServeHTTP(sw, sw.r)
		if !sw.started {
			sw.commit()
		}
		// net/http removes multipart temp files only for the request it
		// made; a form parsed on our copy is ours to clean up.
		if f := sw.r.MultipartForm; f != nil && f != r.MultipartForm {
			f.RemoveAll()
		}
	})
}

// Background returns middleware that marks requests as background: the
// session is loaded and saved as usual, but the request does not slide the
// idle deadline. Use it for polling and status routes. It must run inside
// Handler.
func (m *Manager) Background(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := FromRequest(r); s != nil {
			s.mu.Lock()
			s.background = true
			s.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// load fills s with the session the request's cookie names, or a guest.
func (m *Manager) load(r *http.Request, s *Session) error {
	ctx := r.Context()
	s.m = m
	s.ctx = contextWithSession(ctx, s)
	s.ip, s.ua, s.xff = m.cfg.ClientIP(r), r.UserAgent(), r.Header.Get("X-Forwarded-For")
	s.requestTime = m.now()
	if h := m.cfg.BackgroundHeader; h != "-" && r.Header.Get(h) != "" {
		s.background = true
	}

	// A cookie that names no live session makes a guest, and is left
	// alone: this request may have been sent just before a Login or Renew
	// in another request, and a clearing Set-Cookie arriving after that
	// response would sign the user out. Only Logout clears the cookie; a
	// guest's first write replaces it.
	value, n := ReadCookie(r.Header, m.cookie.Name)
	if n == 0 {
		return nil
	}
	if n > 1 {
		// Cookie tossing from a sibling host, or a browser in a strange
		// state: trusting either copy could pin the victim to an
		// attacker's session.
		m.emit(ctx, EventSuspicious, ReasonDuplicateCookie, nil, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	if m.sealer != nil {
		return m.loadSealed(ctx, s, value)
	}
	key, err := ParseToken(value)
	if err != nil {
		m.emit(ctx, EventSuspicious, ReasonMalformedCookie, nil, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	rec, err := m.store.Load(ctx, key)
	expired, isExpired := errors.AsType[*ExpiredError](err)
	if isExpired && expired.Record != nil {
		rec, err = expired.Record, nil
	}
	if err == nil && isExpired {
		if _, dead := asTombstone(rec); dead {
			// A rotation's tombstone past its theft window: no session
			// expired, the token is simply unknown now.
			err = ErrNotFound
		}
	}
	if errors.Is(err, ErrNotFound) {
		m.emit(ctx, EventSuspicious, ReasonUnknownToken, nil, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	if err != nil {
		return fmt.Errorf("%w: load: %w", ErrStore, err)
	}
	if isExpired || rec.Expired(s.requestTime) {
		// End it here rather than wait for the sweeper, so the event says
		// why and for whom.
		kind := EventExpiredIdle
		if !rec.AbsoluteDeadline.IsZero() && !s.requestTime.Before(rec.AbsoluteDeadline) {
			kind = EventExpiredAbsolute
		}
		if err := m.store.Delete(ctx, key); err != nil {
			return fmt.Errorf("%w: delete expired: %w", ErrStore, err)
		}
		m.emit(ctx, kind, "", rec, s.ip, s.ua)
		return m.badCookie(ctx, s)
	}
	if rec.Key != key {
		return fmt.Errorf("%w: load returned a record under another key", ErrStore)
	}
	if ts, ok := asTombstone(rec); ok {
		next, token, err := m.followTombstone(ctx, s, value, ts)
		if err != nil || next == nil {
			return err
		}
		// Within the grace window: serve the successor, and hand the
		// client its token.
		rec, value, s.newCookie = next, token, true
	}
	s.rec, s.token, s.data = rec, value, rec.Data
	if live, err := m.checkClient(ctx, s); err != nil || !live {
		s.rec, s.token, s.data = nil, "", nil
		return err
	}
	return nil
}

// badCookie counts a cookie that named no live session against the
// client's address. The request goes on as a guest unless the address is
// over the limit and throttling is on.
func (m *Manager) badCookie(ctx context.Context, s *Session) error {
	if m.flood == nil {
		return nil
	}
	over, first := m.flood.hit(s.ip, s.requestTime)
	if first {
		m.emit(ctx, EventSuspicious, ReasonTokenFlood, nil, s.ip, s.ua)
	}
	if over && m.cfg.ThrottleUnknownTokens {
		return ErrTooManyBadCookies
	}
	return nil
}

// commit saves the session and sets or drops the cookie. It runs
// once, just before the response starts.
func (s *Session) commit(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = true
	m := s.m
	now := m.now()

	if s.rec == nil {
		if !s.dirtyLocked() {
			if s.dropCookie {
				m.clearCookie(w)
				m.noStore(w, true)
			}
			return nil
		}
		rec := m.newRecord(now, s.ip, s.ua)
		rec.Data = s.data
		token, err := m.create(s.ctx, rec)
		if err != nil {
			return err
		}
		s.rec, s.token = rec, token
		s.resetPendingLocked()
		m.emit(s.ctx, EventCreated, "", rec, s.ip, s.ua)
		m.warnPlainHTTP(r)
		m.setCookie(w, token, rec.Persistent, rec.ExpiresAt(), now)
		m.noStore(w, true)
		return nil
	}

	d := s.pendingLocked()
	touched := s.touchDueLocked(now)
	if touched {
		d.Touch = &Touch{LastSeen: now, IdleDeadline: m.nextIdleDeadline(s.rec, now), LastIP: s.ip, LastUA: s.ua}
	}
	if !s.newCookie && m.rotateDue(s.rec, now) {
		rec, token, err := m.rotatePeriodic(s.ctx, s.rec, s.token, d, now)
		if errors.Is(err, ErrNotFound) {
			s.goneLocked()
			return nil
		}
		if err != nil {
			return err
		}
		s.rec, s.token, s.newCookie = rec, token, true
		s.resetPendingLocked()
		d = Delta{}
	}
	if m.sealer != nil && (!d.IsZero() || s.reseal) {
		rec := *s.rec
		rec.Data = s.data
		(&Delta{Touch: d.Touch}).Apply(&rec)
		rec.Version++
		token, err := m.seal(s.ctx, &rec, s.ip, s.ua)
		if err != nil {
			return err
		}
		s.rec, s.token, s.newCookie = &rec, token, true
		s.resetPendingLocked()
		if s.forceTouch {
			m.emit(s.ctx, EventExtended, "", s.rec, s.ip, s.ua)
		}
	} else if !d.IsZero() {
		err := m.store.Update(s.ctx, s.rec.Key, d)
		if errors.Is(err, ErrNotFound) {
			s.goneLocked()
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: update: %w", ErrStore, err)
		}
		// s.rec is the store's and read-only; the data view is already
		// the session's own, so a shallow copy is enough.
		rec := *s.rec
		rec.Data = s.data
		(&Delta{Touch: d.Touch}).Apply(&rec)
		rec.Version++
		s.rec = &rec
		s.resetPendingLocked()
		if s.forceTouch {
			m.emit(s.ctx, EventExtended, "", s.rec, s.ip, s.ua)
		}
	}
	// A persistent cookie's Max-Age follows the server-side deadline, so
	// it is re-issued whenever that moves.
	cookie := s.newCookie || touched && s.rec.Persistent
	if cookie {
		m.warnPlainHTTP(r)
		m.setCookie(w, s.token, s.rec.Persistent, s.rec.ExpiresAt(), now)
	}
	m.noStore(w, cookie || s.rec.UserID != "" && w.Header().Get("Cache-Control") == "")
	return nil
}

// noStore marks the response uncacheable when must is true, unless
// Config.AllowCaching says to leave caching to the application.
func (m *Manager) noStore(w http.ResponseWriter, must bool) {
	if must && !m.cfg.AllowCaching {
		w.Header().Set("Cache-Control", "no-store")
	}
}

// touchDueLocked reports whether this request slides the idle deadline.
func (s *Session) touchDueLocked(now time.Time) bool {
	return s.forceTouch || s.clientChanged || !s.background && now.Sub(s.rec.LastSeen) >= s.m.touchEvery
}

// sessionWriter saves the session before the first byte of the response
// goes out. It holds the Session itself so a request costs one allocation
// for both.
type sessionWriter struct {
	http.ResponseWriter
	r       *http.Request
	s       Session
	started bool // commit ran
	failed  bool // commit failed; the error response replaced the handler's
}

// errSessionFailed is what the handler's writes return once the session
// could not be saved and the error response went out instead.
var errSessionFailed = errors.New("hallpass: response replaced by the session error response")

func (w *sessionWriter) commit() {
	w.started = true
	if err := w.s.commit(w.ResponseWriter, w.r); err != nil {
		w.failed = true
		w.s.m.cfg.ErrorHandler(w.ResponseWriter, w.r, err)
	}
}

func (w *sessionWriter) WriteHeader(code int) {
	if !w.started {
		// 1xx responses (103 Early Hints) are not the response; 101 is.
		if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			w.ResponseWriter.WriteHeader(code)
			return
		}
		w.commit()
	}
	if !w.failed {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *sessionWriter) Write(b []byte) (int, error) {
	if !w.started {
		w.commit()
	}
	if w.failed {
		return 0, errSessionFailed
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps io.Copy's sendfile fast path.
func (w *sessionWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.started {
		w.commit()
	}
	if w.failed {
		return 0, errSessionFailed
	}
	return io.Copy(w.ResponseWriter, src)
}

// Flush implements http.Flusher for streaming handlers (SSE).
func (w *sessionWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *sessionWriter) FlushError() error {
	if !w.started {
		w.commit()
	}
	if w.failed {
		return errSessionFailed
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker (WebSockets). The session is saved first.
func (w *sessionWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.started {
		w.commit()
	}
	if w.failed {
		return nil, nil, errSessionFailed
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *sessionWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
