package main

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/audit"
	"github.com/hallpass/hallpass/csrf"
	"github.com/hallpass/hallpass/live"
	"github.com/hallpass/hallpass/metrics"
	"github.com/hallpass/hallpass/remember"
	"github.com/hallpass/hallpass/secure"
	"github.com/hallpass/hallpass/token"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// options configures an app; zero values mean the defaults.
type options struct {
	Store       string        // session store: "" (the SQLite db), memory, redis://…, postgres://…
	IdleTimeout time.Duration // hallpass.Config.IdleTimeout
	Lifetime    time.Duration // hallpass.Config.Lifetime
	RotateEvery time.Duration // hallpass.Config.RotateEvery
	RotateGrace time.Duration // hallpass.Config.RotateGrace
	MaxSessions int           // hallpass.Config.MaxSessions (evicting the oldest)
	// TrustedProxies may set X-Forwarded-For and -Proto (secure.Options).
	TrustedProxies []string
	// HTTPSPort is where plain-HTTP requests are redirected; 0 for 443.
	HTTPSPort int
	// Admin is the username that gets the admin role once signed up.
	Admin string
	// AccessTTL is the lifetime of API access tokens; 0 for token's default.
	AccessTTL time.Duration
	// EventLog, if set, also receives every session event as a JSON line.
	EventLog io.Writer
	// RememberFor is how long "keep me signed in" lasts after the last
	// visit (remember.Config.Lifetime).
	RememberFor time.Duration
	// ReauthWindow is how recently the password must have been typed for
	// a password change; default defaultReauthWindow.
	ReauthWindow time.Duration
	Argon2       argon2Params     // default defaultArgon2
	Logger       *slog.Logger     // default slog.Default()
	Now          func() time.Time // hallpass.Config.Now, for tests
}

// defaultReauthWindow is the -reauth-window default.
const defaultReauthWindow = 5 * time.Minute

// app is the demo shop: its handlers are methods, so that each new page
// reaches the database, the sessions and the templates the same way.
type app struct {
	db        *sql.DB
	store     sessionStore
	sessions  *hallpass.Manager
	users     *users
	passwords *hasher
	pages     map[string]*template.Template
	log       *slog.Logger
	transport *secure.Policy // HTTPS redirect, HSTS, trusted proxies
	remember  *remember.Remember
	shop      *shop
	throttle  *throttle // failed logins per account and address
	tokens    *token.Issuer
	// reservations holds stock for sessions (POST /reserve).
	reservations *reservations
	// revocations lists revoked tokens and sign-out-everywhere cutoffs.
	revocations *hallpass.Revocations
	// reauthWindow is how recently the password must have been typed
	// for a password change.
	reauthWindow time.Duration
	now          func() time.Time
	audit        *audit.Log           // security events, for /admin
	live         *live.Hub            // ends open pages of ended sessions
	closing      chan struct{}        // closed by Close: long requests end
	metrics      *prometheus.Registry // for /metrics
	adminName    string               // -admin
}

// newApp builds the app on db, which keeps both users and sessions. Close
// the app before db.
func newApp(ctx context.Context, db *sql.DB, opts options) (*app, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Argon2 == (argon2Params{}) {
		opts.Argon2 = defaultArgon2
	}
	if opts.ReauthWindow <= 0 {
		opts.ReauthWindow = defaultReauthWindow
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	us, err := newUsers(ctx, db)
	if err != nil {
		return nil, err
	}
	pol, err := secure.New(&secure.Options{TrustedProxies: opts.TrustedProxies, HTTPSPort: opts.HTTPSPort})
	if err != nil {
		return nil, fmt.Errorf("-trusted-proxy: %w", err)
	}
	sh, err := newShop(ctx, db)
	if err != nil {
		return nil, err
	}
	res, err := newReservations(ctx, db, opts.Now)
	if err != nil {
		return nil, err
	}
	events := hallpass.Sinks{hallpass.SlogSink{Logger: opts.Logger}}
	if opts.EventLog != nil {
		events = append(events, hallpass.SlogSink{Logger: slog.New(slog.NewJSONHandler(opts.EventLog, nil))})
	}
	// Holds end with the session that made them.
	events = append(events, hallpass.SinkFunc(res.sessionEvent))
	if opts.Admin != "" {
		if _, err := us.MakeAdmin(ctx, opts.Admin); err != nil {
			return nil, err
		}
	}
	st, err := openStore(ctx, opts.Store, db)
	if err != nil {
		return nil, err
	}
	// Every store operation is timed, and every event counted, for
	// /metrics; the security events are kept in the store, for /admin.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	met, err := metrics.New(reg, nil)
	if err != nil {
		st.Close()
		return nil, err
	}
	st = met.Store(storeKind(opts.Store), st).(sessionStore)
	trail, err := audit.New(st, &audit.Options{Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		st.Close()
		return nil, err
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "hallpass_audit_dropped_total",
		Help: "Security events the audit log could not keep.",
	}, func() float64 { return float64(trail.Dropped()) }))
	// Open pages learn at once when their session ends on any instance.
	bc, _ := st.(hallpass.Broadcaster)
	hub := live.NewHub(bc, &live.Options{Now: opts.Now, OnError: func(err error) { opts.Logger.Warn("live", "err", err) }})
	events = append(events, met, trail, hub)
	// Revoked tokens (and sign-out-everywhere cutoffs) are shared by
	// every instance through the session store.
	rev, err := hallpass.NewRevocations(ctx, st, &hallpass.RevocationOptions{Now: opts.Now, OnError: func(err error) {
		opts.Logger.Warn("revocation list", "err", err)
	}})
	if err != nil {
		st.Close()
		return nil, err
	}
	m, err := hallpass.New(hallpass.Config{
		Store:    st,
		ClientIP: pol.ClientIP,
		Events:   events,
		// A guest's cart survives closing the browser, and joins the
		// user's saved cart at login.
		GuestPersistent: true,
		OnLogin:         sh.mergeCart,
		Revocations:     rev,
		IdleTimeout:     opts.IdleTimeout,
		Lifetime:        opts.Lifetime,
		RotateEvery:     opts.RotateEvery,
		RotateGrace:     opts.RotateGrace,
		MaxSessions:     opts.MaxSessions,
		Logger:          opts.Logger, // events, warnings and store errors
		Now:             opts.Now,
	})
	if err != nil {
		rev.Close()
		st.Close()
		return nil, err
	}
	key, err := secret(ctx, db, "remember")
	if err != nil {
		st.Close()
		return nil, err
	}
	rm, err := remember.New(remember.Config{Sessions: m, Key: key, Lifetime: opts.RememberFor, Now: opts.Now})
	if err != nil {
		rev.Close()
		st.Close()
		return nil, err
	}
	seed, err := secret(ctx, db, "token-ed25519")
	if err != nil {
		rev.Close()
		st.Close()
		return nil, err
	}
	a := &app{
		reservations: res,
		throttle:     newThrottle(opts.Now),
		shop:         sh,
		remember:     rm,
		db:           db,
		store:        st,
		sessions:     m,
		users:        us,
		passwords:    newHasher(opts.Argon2),
		pages:        pages,
		log:          opts.Logger,
		transport:    pol,

		reauthWindow: opts.ReauthWindow,
		revocations:  rev,
		now:          cmpOrNow(opts.Now),
		audit:        trail,
		live:         hub,
		closing:      make(chan struct{}),
		metrics:      reg,
		adminName:    opts.Admin,
	}
	if a.tokens, err = newTokens(a, seed, st, rev, opts.AccessTTL, opts.Now); err != nil {
		rev.Close()
		st.Close()
		return nil, err
	}
	return a, nil
}

// Close stops the session store's background work. It leaves the
// database open for its owner to close.
func (a *app) Close() error {
	close(a.closing)
	a.live.Close()
	a.audit.Close()
	a.reservations.Close()
	a.revocations.Close()
	return a.store.Close()
}

// parsePages parses each page template together with the layout, so that
// every page can fill the layout's "content" block its own way.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := make(map[string]*template.Template)
	for _, name := range names {
		if path.Base(name) == "layout.html" {
			continue
		}
		t, err := template.ParseFS(templateFS, "templates/layout.html", name)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(path.Base(name), ".html")] = t
	}
	return pages, nil
}

// Handler returns the app's routes with everything they need around them.
func (a *app) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /cart", a.showCart)
	mux.HandleFunc("POST /cart/add", a.changeCart(+1))
	mux.HandleFunc("POST /cart/remove", a.changeCart(-1))
	mux.HandleFunc("GET /signup", a.signupForm)
	mux.HandleFunc("POST /signup", a.signup)
	mux.HandleFunc("GET /login", a.loginForm)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /logout", a.logout)
	mux.HandleFunc("GET /account", a.account)
	mux.HandleFunc("GET /account/sessions", a.devices)
	mux.HandleFunc("POST /account/sessions/{handle}/revoke", a.revokeDevice)
	mux.HandleFunc("POST /account/sessions/revoke-others", a.revokeOthers)
	mux.HandleFunc("GET /reauth", a.reauthForm)
	mux.HandleFunc("POST /reauth", a.reauth)
	// Changing the password needs the current one typed recently, on top
	// of the current one in the form: a session cookie stolen hours ago,
	// or an unlocked browser, is not enough to take the account over.
	fresh := a.sessions.Require(hallpass.Requirement{FreshWithin: a.reauthWindow, ReauthURL: "/reauth", LoginURL: "/login"})
	mux.Handle("POST /account/password", fresh(http.HandlerFunc(a.changePassword)))
	mux.Handle("GET /account/mfa", fresh(http.HandlerFunc(a.mfaForm)))
	mux.Handle("GET /account/mfa/qr.png", fresh(http.HandlerFunc(a.mfaQR)))
	mux.Handle("POST /account/mfa", fresh(http.HandlerFunc(a.mfaEnrol)))
	mux.Handle("POST /account/email", fresh(http.HandlerFunc(a.changeEmail)))
	mux.Handle("GET /admin", fresh(http.HandlerFunc(a.admin)))
	mux.Handle("GET /metrics", fresh(http.HandlerFunc(a.adminMetrics)))
	mux.Handle("GET /admin/events", fresh(a.sessions.Background(http.HandlerFunc(a.adminEvents))))
	mux.Handle("POST /admin/users/{id}/sessions/{handle}/revoke", fresh(http.HandlerFunc(a.adminRevoke)))
	mux.Handle("POST /admin/users/{id}/revoke-all", fresh(http.HandlerFunc(a.adminRevokeAll)))
	mux.HandleFunc("GET /login/mfa", a.mfaLoginForm)
	mux.HandleFunc("POST /login/mfa", a.mfaLogin)
	mux.Handle("GET /session", a.sessions.StatusHandler())
	mux.Handle("POST /session/extend", a.sessions.ExtendHandler())
	mux.Handle("GET /session/events", a.live.Handler(a.sessions))
	mux.Handle("GET /hallpass-live.js", live.Script())
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	// The session is outermost because the CSRF check reads its secret
	// from the session; the security headers come next so that refusals
	// get them too. Checking before any handler runs covers every unsafe
	// route, /session/extend included. The CSRF check reads the form, so
	// it gets the app's own bound on form size.
	a.apiRoutes(mux)
	a.reserveRoutes(mux)
	mux.HandleFunc("POST /logout/all", a.logoutAll)
	// The API authenticates with Bearer tokens, never cookies, so a
	// cross-site request cannot ride on a browser's session there.
	// Refusals on the reservation routes are recorded as suspicious
	// attempts.
	protect := csrf.New(&csrf.Options{MaxFormBytes: maxFormBytes, InsecureBypassPatterns: []string{"/api/"}, ErrorHandler: a.csrfRefused})
	// A browser coming back with only its remember-me cookie is signed in
	// before anything reads the session.
	return a.transport.Handler(a.sessions.Handler(a.remember.Handler(securityHeaders(protect.Handler(mux)))))
}

// RedirectHandler answers every plain-HTTP request with a redirect to the
// same URL over HTTPS, for -redirect-http.
func (a *app) RedirectHandler() http.Handler { return a.transport.RedirectHandler() }

// securityHeaders keeps the pages out of frames and from loading anything
// but their own stylesheet: the app needs no scripts at all.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// view is what every page template gets: the layout's fields, and the
// page's own data in Page.
type view struct {
	Title string
	User  *user // nil for a guest
	Flash string
	// CSRFField is the hidden input that every POST form must carry.
	CSRFField template.HTML
	// CSRFMeta carries the token for the page's script (Extend).
	CSRFMeta template.HTML
	Page     any
}

// render writes the page called name. It renders into a buffer first, so
// a template error becomes a clean 500 rather than half a page, and the
// session is saved before the first byte goes out.
func (a *app) render(w http.ResponseWriter, r *http.Request, status int, name, title string, u *user, page any) {
	t, ok := a.pages[name]
	if !ok {
		a.serverError(w, r, fmt.Errorf("no page template %q", name))
		return
	}
	flash, err := hallpass.Pop[string](hallpass.FromRequest(r), flashKey)
	if err != nil {
		a.log.WarnContext(r.Context(), "flash message", "err", err)
	}
	// The field may create the session's CSRF secret, a session write,
	// so it is made before anything is written.
	v := view{Title: title, User: u, Flash: flash, CSRFField: csrf.Field(r), CSRFMeta: csrf.MetaTag(r), Page: page}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		a.serverError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages show who is signed in; a shared cache must not serve one
	// user's page to another, nor the back button show it after logout.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// serverError logs err and answers with a generic error page. The log
// carries the method and path only: query strings and headers can hold
// secrets.
func (a *app) serverError(w http.ResponseWriter, r *http.Request, err error) {
	a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	if errors.Is(err, hallpass.ErrStore) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "The service is temporarily unavailable. Please try again.", http.StatusServiceUnavailable)
		return
	}
	http.Error(w, "Something went wrong. Please try again.", http.StatusInternalServerError)
}

// currentUser returns the signed-in user, or nil for a guest.
func (a *app) currentUser(r *http.Request) (*user, error) {
	s := hallpass.FromRequest(r)
	uid := s.UserID()
	if uid == "" {
		return nil, nil
	}
	id, err := strconv.ParseInt(uid, 10, 64)
	if err == nil {
		var u *user
		u, err = a.users.ByID(r.Context(), id)
		if err == nil {
			return u, nil
		}
	}
	if errors.Is(err, errNoUser) || errors.Is(err, strconv.ErrSyntax) || errors.Is(err, strconv.ErrRange) {
		// The account was deleted after this session signed in to it, or
		// the id was never one of ours: the session must not stay signed
		// in to nothing.
		return nil, s.Logout()
	}
	return nil, err
}

func cmpOrNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
