package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/csrf"
)

// Two-step reservation: POST /reserve holds one unit of an item's stock
// for the session for holdFor; POST /reserve/{id}/confirm makes it the
// session's for good. A hold that is not confirmed in time goes back on
// the shelf, and so does every hold of a session that ends (logout,
// revoke, expiry).
//
// Every attempt is recorded in reserve_attempts with one of three
// outcomes:
//
//   - success;
//   - fail: not the user's fault, and something the app's own pages can
//     lead to (out of stock, a hold that ran out or was already
//     confirmed, too many holds at once);
//   - suspicious: a request the pages cannot produce (another session's
//     hold, an id the app never issued, an item it does not sell, a
//     request refused by the CSRF check).
//
// Each row carries the session's handle and user, the client's address
// and the raw X-Forwarded-For, for whoever investigates.

// Reservation rules.
const (
	// holdFor is how long a hold keeps its unit before it must be
	// confirmed.
	holdFor = 5 * time.Minute
	// maxHolds bounds the holds a session (or a signed-in user, over all
	// their sessions) has at once, so that one visitor cannot empty the
	// shelves by clicking.
	maxHolds = 5
	// sweepEvery is how often the sweeper gives back the units of holds
	// that ran out. Between sweeps, reserving and the reservations page
	// give them back too, so stock is never short for long.
	sweepEvery = 30 * time.Second
	// keepEnded is how long a hold stays listed after it ended;
	// keepAttempts how long an attempt is kept (and counted).
	keepEnded    = 24 * time.Hour
	keepAttempts = 30 * 24 * time.Hour
	// eventTimeout bounds the database work done for a session event,
	// which runs on the request path.
	eventTimeout = 5 * time.Second
)

// Hold states.
const (
	stateHeld      = "held"
	stateConfirmed = "confirmed"
	stateReleased  = "released"
)

// Attempt outcomes and actions.
const (
	outcomeSuccess    = "success"
	outcomeFail       = "fail"
	outcomeSuspicious = "suspicious"

	actionReserve = "reserve"
	actionConfirm = "confirm"
)

// Reasons recorded with attempts. CSRF refusals are recorded as "csrf_"
// followed by csrf.Reason.
const (
	reasonOutOfStock     = "out_of_stock"
	reasonHoldLimit      = "hold_limit"
	reasonNoSession      = "no_session" // the session ended during the request
	reasonExpired        = "expired"    // the hold ran out before the confirm
	reasonReleased       = "released"   // the hold had already ended (timeout, session change)
	reasonConfirmed      = "already_confirmed"
	reasonOtherSession   = "other_session" // the same user's hold, made in another session
	reasonUserChanged    = "user_changed"  // made by this session for the user signed in before
	reasonUnknownItem    = "unknown_item"  // the shop does not sell it
	reasonMalformedID    = "malformed_id"  // not an id the app could have issued
	reasonUnknownID      = "unknown_id"    // well-formed, but no such hold
	reasonNotOwner       = "not_owner"     // another session's, and another user's, hold
	reasonUnreadableForm = "unreadable_form"
	reasonServerError    = "server_error"
)

// holdIDBytes is the entropy of a hold id: 128 bits, so that no one
// guesses another session's hold.
const holdIDBytes = 16

var reserveSchema = []string{
	`CREATE TABLE IF NOT EXISTS holds (
		id TEXT PRIMARY KEY,
		session_handle TEXT NOT NULL,
		user_id TEXT NOT NULL DEFAULT '',
		item TEXT NOT NULL REFERENCES items (id),
		created_at INTEGER NOT NULL, -- Unix milliseconds, as every time here
		expires_at INTEGER NOT NULL,
		ended_at INTEGER,
		state TEXT NOT NULL CHECK (state IN ('held', 'confirmed', 'released'))
	)`,
	`CREATE INDEX IF NOT EXISTS holds_session ON holds (session_handle, state)`,
	`CREATE INDEX IF NOT EXISTS holds_user ON holds (user_id, state)`,
	`CREATE INDEX IF NOT EXISTS holds_expiry ON holds (state, expires_at)`,
	`CREATE TABLE IF NOT EXISTS reserve_attempts (
		id INTEGER PRIMARY KEY,
		at INTEGER NOT NULL,
		action TEXT NOT NULL CHECK (action IN ('reserve', 'confirm')),
		outcome TEXT NOT NULL CHECK (outcome IN ('success', 'fail', 'suspicious')),
		reason TEXT NOT NULL,
		user_id TEXT NOT NULL,
		session_handle TEXT NOT NULL,
		ip TEXT NOT NULL,
		xff TEXT NOT NULL,
		item TEXT NOT NULL,
		hold_id TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS reserve_attempts_outcome ON reserve_attempts (outcome)`,
	`CREATE INDEX IF NOT EXISTS reserve_attempts_at ON reserve_attempts (at)`,
}

// reservations holds units of stock for sessions (two-step checkout).
type reservations struct {
	db  *sql.DB
	now func() time.Time
	log atomic.Pointer[slog.Logger] // nil: slog.Default()

	every   time.Duration // between sweeps
	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc // stops the sweeper
	done    chan struct{}      // closed when the sweeper has stopped
}

// newReservations makes the tables. The sweeper starts with the routes
// (reserveRoutes), so that an app that fails to build leaves no
// goroutine behind; Close stops it.
func newReservations(ctx context.Context, db *sql.DB, now func() time.Time) (*reservations, error) {
	if now == nil {
		now = time.Now
	}
	for _, q := range reserveSchema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("reservations schema: %w", err)
		}
	}
	return &reservations{db: db, now: now, every: sweepEvery}, nil
}

// start starts the sweeper, once; log gets its errors and those of
// session events.
func (rs *reservations) start(log *slog.Logger) {
	if log != nil {
		rs.log.Store(log)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.started || rs.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs.started, rs.cancel, rs.done = true, cancel, make(chan struct{})
	go rs.sweeper(ctx, rs.every)
}

// running reports whether the sweeper runs.
func (rs *reservations) running() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.started && !rs.closed
}

// Close stops the sweeper and waits for it. It is safe to call more than
// once, and before start.
func (rs *reservations) Close() error {
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return nil
	}
	rs.closed = true
	started := rs.started
	rs.mu.Unlock()
	if started {
		rs.cancel()
		<-rs.done
	}
	return nil
}

func (rs *reservations) logger() *slog.Logger {
	if l := rs.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

func (rs *reservations) sweeper(ctx context.Context, every time.Duration) {
	defer close(rs.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := rs.sweep(ctx); err != nil && ctx.Err() == nil {
			rs.logger().WarnContext(ctx, "reservations sweep", "err", err)
		}
	}
}

// sweep gives back the units of holds that ran out, and forgets ended
// holds and old attempts.
func (rs *reservations) sweep(ctx context.Context) error {
	if _, err := rs.releaseExpired(ctx); err != nil {
		return err
	}
	now := rs.now()
	if _, err := rs.db.ExecContext(ctx, `DELETE FROM holds WHERE state <> 'held' AND ended_at < ?`, ms(now.Add(-keepEnded))); err != nil {
		return fmt.Errorf("forget ended holds: %w", err)
	}
	if _, err := rs.db.ExecContext(ctx, `DELETE FROM reserve_attempts WHERE at < ?`, ms(now.Add(-keepAttempts))); err != nil {
		return fmt.Errorf("forget old attempts: %w", err)
	}
	return nil
}

// ms is t in Unix milliseconds, as the tables keep times.
func ms(t time.Time) int64 { return t.UnixMilli() }

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// releaseExpired gives back the units of every hold that ran out, and
// returns how many. It takes the write lock only if there is one.
func (rs *reservations) releaseExpired(ctx context.Context) (int, error) {
	now := ms(rs.now())
	var found bool
	if err := rs.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM holds WHERE state = 'held' AND expires_at <= ?)`, now).Scan(&found); err != nil {
		return 0, fmt.Errorf("find expired holds: %w", err)
	}
	if !found {
		return 0, nil
	}
	return rs.releaseTx(ctx, `expires_at <= ?`, now)
}

// releaseTx is release in a transaction of its own.
func (rs *reservations) releaseTx(ctx context.Context, cond string, args ...any) (int, error) {
	tx, err := rs.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	n, err := rs.release(ctx, tx, cond, args...)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// release ends the holds still held that match cond (an SQL condition on
// holds with args) and puts their units back in stock. Only a hold still
// held is released, and the state changes in the same statement that
// picks it, so no unit is ever given back twice.
func (rs *reservations) release(ctx context.Context, tx *sql.Tx, cond string, args ...any) (int, error) {
	rows, err := tx.QueryContext(ctx,
		`UPDATE holds SET state = 'released', ended_at = ? WHERE state = 'held' AND (`+cond+`) RETURNING item`,
		append([]any{ms(rs.now())}, args...)...)
	if err != nil {
		return 0, fmt.Errorf("release holds: %w", err)
	}
	back := make(map[string]int)
	n := 0
	for rows.Next() {
		var it string
		if err := rows.Scan(&it); err != nil {
			rows.Close()
			return 0, fmt.Errorf("release holds: %w", err)
		}
		back[it]++
		n++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("release holds: %w", err)
	}
	for it, k := range back {
		if _, err := tx.ExecContext(ctx, `UPDATE items SET stock = stock + ? WHERE id = ?`, k, it); err != nil {
			return 0, fmt.Errorf("restock %s: %w", it, err)
		}
	}
	return n, nil
}

// sessionEvent is a hallpass event sink: the holds of a session end with
// it. It runs on the request path, synchronously, so it does nothing
// unless there is a hold to change, and then one short transaction.
func (rs *reservations) sessionEvent(ctx context.Context, e hallpass.Event) {
	var cond string
	var args []any
	switch e.Kind {
	case hallpass.EventLoggedOut, hallpass.EventRevoked, hallpass.EventExpiredIdle, hallpass.EventExpiredAbsolute:
		switch {
		case e.Handle != "":
			cond, args = `session_handle = ?`, []any{e.Handle}
		case e.Kind == hallpass.EventRevoked && e.UserID != "":
			// RevokeAll: every session of the user ended.
			cond, args = `user_id = ?`, []any{e.UserID}
		default:
			return
		}
	case hallpass.EventAuthenticated:
		if e.Handle == "" || e.UserID == "" {
			return
		}
		rs.signedIn(ctx, e.Handle, e.UserID)
		return
	default:
		return
	}
	// The request may be over (or its client gone) before the holds
	// are released; the release must happen anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	if err := rs.releaseIfAny(ctx, cond, args...); err != nil {
		rs.logger().ErrorContext(ctx, "release holds of an ended session", "kind", string(e.Kind), "handle", e.Handle, "user", e.UserID, "err", err)
	}
}

// releaseIfAny releases the holds matching cond, taking the write lock
// only if there are some.
func (rs *reservations) releaseIfAny(ctx context.Context, cond string, args ...any) error {
	var found bool
	if err := rs.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM holds WHERE state = 'held' AND (`+cond+`))`, args...).Scan(&found); err != nil {
		return err
	}
	if !found {
		return nil
	}
	_, err := rs.releaseTx(ctx, cond, args...)
	return err
}

// signedIn follows a sign-in into session handle: a guest's holds become
// the user's (so that signing the user out everywhere ends them), and
// holds of another user who was signed in to the same session end.
func (rs *reservations) signedIn(ctx context.Context, handle, user string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	err := func() error {
		var found bool
		if err := rs.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM holds WHERE state = 'held' AND session_handle = ? AND user_id <> ?)`, handle, user).Scan(&found); err != nil {
			return err
		}
		if !found {
			return nil
		}
		tx, err := rs.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := rs.release(ctx, tx, `session_handle = ? AND user_id NOT IN ('', ?)`, handle, user); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE holds SET user_id = ? WHERE state = 'held' AND session_handle = ? AND user_id = ''`, user, handle); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		rs.logger().ErrorContext(ctx, "move holds to the signed-in user", "handle", handle, "user", user, "err", err)
	}
}

// requester is who made a request, as an attempt records it.
type requester struct {
	handle, user string
	ip, xff      string
}

func (a *app) requester(r *http.Request) requester {
	s := hallpass.FromRequest(r)
	return requester{handle: s.Handle(), user: s.UserID(), ip: a.sessions.ClientIP(r), xff: r.Header.Get("X-Forwarded-For")}
}

// attempt is one reserve or confirm attempt and how it ended.
type attempt struct {
	action, outcome, reason string
	item, holdID            string
}

// clip bounds what a client sent before it is stored: valid UTF-8, at
// most n bytes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// record stores one attempt, in q's transaction if q is one.
func (rs *reservations) record(ctx context.Context, q execer, who requester, at attempt) error {
	_, err := q.ExecContext(ctx,
		`INSERT INTO reserve_attempts (at, action, outcome, reason, user_id, session_handle, ip, xff, item, hold_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		ms(rs.now()), at.action, at.outcome, at.reason, who.user, who.handle,
		clip(who.ip, 64), clip(who.xff, 512), clip(at.item, 64), clip(at.holdID, 64))
	if err != nil {
		return fmt.Errorf("record %s attempt: %w", at.action, err)
	}
	return nil
}

// counts returns how many attempts ended in each outcome; every outcome
// is in the map, with 0 if none.
func (rs *reservations) counts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{outcomeSuccess: 0, outcomeFail: 0, outcomeSuspicious: 0}
	rows, err := rs.db.QueryContext(ctx, `SELECT outcome, COUNT(*) FROM reserve_attempts GROUP BY outcome`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var o string
		var n int
		if err := rows.Scan(&o, &n); err != nil {
			return nil, err
		}
		out[o] = n
	}
	return out, rows.Err()
}

// result is how a reserve or confirm attempt ended.
type result struct {
	attempt
	expires time.Time // of a new hold
}

// newHoldID returns a random, unguessable hold id.
func newHoldID() string {
	b := make([]byte, holdIDBytes)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// wellFormedID reports whether id could be one newHoldID made.
func wellFormedID(id string) bool {
	if len(id) != base64.RawURLEncoding.EncodedLen(holdIDBytes) {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(id)
	return err == nil && len(b) == holdIDBytes
}

// hold reserves one unit of item for who, and records the attempt.
func (rs *reservations) hold(ctx context.Context, who requester, item string) (result, error) {
	res := result{attempt: attempt{action: actionReserve, item: item}}
	switch {
	case !known(item):
		res.outcome, res.reason = outcomeSuspicious, reasonUnknownItem
		return res, rs.record(ctx, rs.db, who, res.attempt)
	case who.handle == "":
		res.outcome, res.reason = outcomeFail, reasonNoSession
		return res, rs.record(ctx, rs.db, who, res.attempt)
	}
	tx, err := rs.db.BeginTx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer tx.Rollback()
	now := rs.now()
	// Units of holds that ran out are back on the shelf before anyone
	// is told an item is out of stock.
	if _, err := rs.release(ctx, tx, `expires_at <= ?`, ms(now)); err != nil {
		return res, err
	}
	res.outcome, res.reason = outcomeSuccess, ""
	var held int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM holds WHERE state = 'held' AND (session_handle = ? OR (? <> '' AND user_id = ?))`,
		who.handle, who.user, who.user).Scan(&held); err != nil {
		return res, err
	}
	if held >= maxHolds {
		res.outcome, res.reason = outcomeFail, reasonHoldLimit
	} else {
		r, err := tx.ExecContext(ctx, `UPDATE items SET stock = stock - 1 WHERE id = ? AND stock > 0`, item)
		if err != nil {
			return res, err
		}
		if n, err := r.RowsAffected(); err != nil {
			return res, err
		} else if n == 0 {
			res.outcome, res.reason = outcomeFail, reasonOutOfStock
		}
	}
	if res.outcome == outcomeSuccess {
		res.holdID, res.expires = newHoldID(), now.Add(holdFor)
		if _, err := tx.ExecContext(ctx, `INSERT INTO holds (id, session_handle, user_id, item, created_at, expires_at, state) VALUES (?, ?, ?, ?, ?, ?, 'held')`,
			res.holdID, who.handle, who.user, item, ms(now), ms(res.expires)); err != nil {
			return res, err
		}
	}
	if err := rs.record(ctx, tx, who, res.attempt); err != nil {
		return res, err
	}
	return res, tx.Commit()
}

// confirm completes hold id for who, and records the attempt.
func (rs *reservations) confirm(ctx context.Context, who requester, id string) (result, error) {
	res := result{attempt: attempt{action: actionConfirm, holdID: id}}
	if !wellFormedID(id) {
		res.outcome, res.reason = outcomeSuspicious, reasonMalformedID
		return res, rs.record(ctx, rs.db, who, res.attempt)
	}
	tx, err := rs.db.BeginTx(ctx, nil)
	if err != nil {
		return res, err
	}
	defer tx.Rollback()
	var h struct {
		handle, user, state string
		expires             int64
	}
	err = tx.QueryRowContext(ctx, `SELECT session_handle, user_id, item, state, expires_at FROM holds WHERE id = ?`, id).
		Scan(&h.handle, &h.user, &res.item, &h.state, &h.expires)
	now := rs.now()
	switch {
	case errors.Is(err, sql.ErrNoRows):
		res.outcome, res.reason = outcomeSuspicious, reasonUnknownID
	case err != nil:
		return res, err
	case who.handle == "" || h.handle != who.handle:
		if h.user != "" && h.user == who.user {
			// The user's own hold from another device: not an attack,
			// but this session cannot confirm it.
			res.outcome, res.reason = outcomeFail, reasonOtherSession
		} else {
			res.outcome, res.reason = outcomeSuspicious, reasonNotOwner
		}
	case h.user != "" && h.user != who.user:
		// Made in this session by the user signed in before: it ended
		// with that user's sign-in.
		if _, err := rs.release(ctx, tx, `id = ?`, id); err != nil {
			return res, err
		}
		res.outcome, res.reason = outcomeFail, reasonUserChanged
	case h.state == stateConfirmed:
		res.outcome, res.reason = outcomeFail, reasonConfirmed
	case h.state == stateReleased:
		res.outcome, res.reason = outcomeFail, reasonReleased
	case h.expires <= ms(now):
		if _, err := rs.release(ctx, tx, `id = ?`, id); err != nil {
			return res, err
		}
		res.outcome, res.reason = outcomeFail, reasonExpired
	default:
		r, err := tx.ExecContext(ctx, `UPDATE holds SET state = 'confirmed', ended_at = ? WHERE id = ? AND state = 'held'`, ms(now), id)
		if err != nil {
			return res, err
		}
		if n, err := r.RowsAffected(); err != nil {
			return res, err
		} else if n != 1 {
			return res, fmt.Errorf("confirm hold: %d rows changed", n)
		}
		res.outcome = outcomeSuccess
	}
	if err := rs.record(ctx, tx, who, res.attempt); err != nil {
		return res, err
	}
	return res, tx.Commit()
}

// holdView is a hold as the reservations page shows it.
type holdView struct {
	ID        string
	Item      string // the item's name
	State     string
	ExpiresAt time.Time
}

// Active reports whether the hold can still be confirmed.
func (h holdView) Active() bool { return h.State == stateHeld }

// sessionHolds returns the holds of session handle, newest first. Holds
// that ran out are released first.
func (rs *reservations) sessionHolds(ctx context.Context, handle string) ([]holdView, error) {
	if handle == "" {
		return nil, nil
	}
	if _, err := rs.releaseExpired(ctx); err != nil {
		return nil, err
	}
	rows, err := rs.db.QueryContext(ctx, `SELECT id, item, state, expires_at FROM holds WHERE session_handle = ? ORDER BY created_at DESC, id LIMIT 50`, handle)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []holdView
	for rows.Next() {
		var h holdView
		var exp int64
		if err := rows.Scan(&h.ID, &h.Item, &h.State, &exp); err != nil {
			return nil, err
		}
		h.Item, h.ExpiresAt = itemName(h.Item), time.UnixMilli(exp)
		out = append(out, h)
	}
	return out, rows.Err()
}

// itemName is the catalog name of item id.
func itemName(id string) string {
	for _, it := range catalog {
		if it.ID == id {
			return it.Name
		}
	}
	return id
}

// reservationsPage is the data of reservations.html.
type reservationsPage struct {
	Holds       []holdView
	HoldMinutes int
	// Attempts counts the shop's reservation attempts by outcome.
	Attempts struct{ Success, Fail, Suspicious int }
}

// reserveRoutes adds the reservation routes to mux.
func (a *app) reserveRoutes(mux *http.ServeMux) {
	a.reservations.start(a.log)
	mux.HandleFunc("GET /reservations", a.showReservations)
	mux.HandleFunc("POST /reserve", a.reserve)
	mux.HandleFunc("POST /reserve/{id}/confirm", a.confirmReservation)
}

// showReservations handles GET /reservations: this session's holds, and
// how the shop's attempts ended.
func (a *app) showReservations(w http.ResponseWriter, r *http.Request) {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	p := reservationsPage{HoldMinutes: int(holdFor / time.Minute)}
	if p.Holds, err = a.reservations.sessionHolds(r.Context(), hallpass.FromRequest(r).Handle()); err != nil {
		a.serverError(w, r, err)
		return
	}
	c, err := a.reservations.counts(r.Context())
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	p.Attempts.Success, p.Attempts.Fail, p.Attempts.Suspicious = c[outcomeSuccess], c[outcomeFail], c[outcomeSuspicious]
	a.render(w, r, http.StatusOK, "reservations", "Reservations", u, p)
}

// reserve handles POST /reserve.
func (a *app) reserve(w http.ResponseWriter, r *http.Request) {
	who := a.requester(r)
	if !a.reserveForm(w, r, who, actionReserve) {
		return
	}
	res, err := a.reservations.hold(r.Context(), who, r.PostFormValue("item"))
	if err != nil {
		a.attemptFailed(w, r, who, res.attempt, err)
		return
	}
	name := itemName(res.item)
	var msg string
	switch res.reason {
	case "":
		msg = fmt.Sprintf("%s is reserved for you until %s. Confirm it before then.", name, res.expires.UTC().Format("15:04:05 MST"))
	case reasonUnknownItem:
		a.reservationMissing(w, r, "The shop has no such item.")
		return
	case reasonOutOfStock:
		msg = fmt.Sprintf("Sorry, %s is out of stock.", name)
	case reasonHoldLimit:
		msg = fmt.Sprintf("You already hold %d items. Confirm one, or let it run out, before reserving more.", maxHolds)
	default: // reasonNoSession
		msg = "Your session ended. Please try again."
	}
	a.reservationDone(w, r, msg)
}

// confirmReservation handles POST /reserve/{id}/confirm.
func (a *app) confirmReservation(w http.ResponseWriter, r *http.Request) {
	who := a.requester(r)
	if !a.reserveForm(w, r, who, actionConfirm) {
		return
	}
	res, err := a.reservations.confirm(r.Context(), who, r.PathValue("id"))
	if err != nil {
		a.attemptFailed(w, r, who, res.attempt, err)
		return
	}
	name := itemName(res.item)
	var msg string
	switch res.reason {
	case "":
		msg = fmt.Sprintf("Confirmed: %s is yours.", name)
	case reasonMalformedID, reasonUnknownID, reasonNotOwner:
		// The same answer whether the hold exists or not: a hold id is
		// no one else's business.
		a.reservationMissing(w, r, "There is no such reservation in this session.")
		return
	case reasonExpired:
		msg = fmt.Sprintf("Your hold on %s ran out before you confirmed it, and it went back on the shelf. You can reserve it again.", name)
	case reasonReleased, reasonUserChanged:
		msg = fmt.Sprintf("Your hold on %s had already ended. You can reserve it again.", name)
	case reasonConfirmed:
		msg = fmt.Sprintf("%s was already confirmed.", name)
	default: // reasonOtherSession
		msg = fmt.Sprintf("Your hold on %s was made on another device: confirm it there.", name)
	}
	a.reservationDone(w, r, msg)
}

// reserveForm reads the form of a reserve or confirm request; if it
// cannot, it records the attempt, answers 400 and returns false. (The
// CSRF check has read it already, so this is a formality.)
func (a *app) reserveForm(w http.ResponseWriter, r *http.Request, who requester, action string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		at := attempt{action: action, outcome: outcomeSuspicious, reason: reasonUnreadableForm, holdID: r.PathValue("id")}
		if err := a.reservations.record(context.WithoutCancel(r.Context()), a.reservations.db, who, at); err != nil {
			a.log.ErrorContext(r.Context(), "reservation attempt", "err", err)
		}
		http.Error(w, "The form could not be read.", http.StatusBadRequest)
		return false
	}
	return true
}

// attemptFailed answers an attempt that failed on the server's side,
// after recording it as a failure if the database still lets it.
func (a *app) attemptFailed(w http.ResponseWriter, r *http.Request, who requester, at attempt, err error) {
	at.outcome, at.reason = outcomeFail, reasonServerError
	if rerr := a.reservations.record(context.WithoutCancel(r.Context()), a.reservations.db, who, at); rerr != nil {
		a.log.ErrorContext(r.Context(), "reservation attempt", "err", rerr)
	}
	a.serverError(w, r, err)
}

// reservationDone sends the browser to its reservations with msg.
func (a *app) reservationDone(w http.ResponseWriter, r *http.Request, msg string) {
	a.flashTo(w, r, msg, "/reservations")
}

// reservationMissing answers 404 with msg.
func (a *app) reservationMissing(w http.ResponseWriter, r *http.Request, msg string) {
	u, err := a.currentUser(r)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, http.StatusNotFound, "reservation-missing", "Not found", u, msg)
}

// csrfRefused is the CSRF check's csrf.Options.ErrorHandler: a refused
// reserve or confirm request is recorded as a suspicious attempt, and
// every refusal gets csrf.DefaultErrorHandler's answer.
func (a *app) csrfRefused(w http.ResponseWriter, r *http.Request, reason csrf.Reason) {
	if action, id := reserveAction(r); action != "" {
		at := attempt{action: action, outcome: outcomeSuspicious, reason: "csrf_" + string(reason), holdID: id}
		if action == actionReserve && r.PostForm != nil {
			// Read by the CSRF check if it got that far; never read
			// here, as the request is refused.
			at.item = r.PostForm.Get("item")
		}
		if err := a.reservations.record(context.WithoutCancel(r.Context()), a.reservations.db, a.requester(r), at); err != nil {
			a.log.ErrorContext(r.Context(), "reservation attempt", "err", err)
		}
	}
	csrf.DefaultErrorHandler(w, r, reason)
}

// reserveAction returns the action of a request to a reservation route,
// and the hold id of a confirm, or "" for any other request.
func reserveAction(r *http.Request) (action, id string) {
	if r.Method != http.MethodPost {
		return "", ""
	}
	p := r.URL.Path
	if p == "/reserve" {
		return actionReserve, ""
	}
	if rest, ok := strings.CutPrefix(p, "/reserve/"); ok {
		if id, ok := strings.CutSuffix(rest, "/confirm"); ok && id != "" && !strings.Contains(id, "/") {
			return actionConfirm, id
		}
	}
	return "", ""
}
