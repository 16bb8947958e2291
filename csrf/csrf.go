// Package csrf protects applications that use hallpass sessions against
// cross-site request forgery.
//
// A Protection checks every request with an unsafe method (anything but
// GET, HEAD, OPTIONS and TRACE) twice:
//
//  1. Browsers say where a request comes from: net/http's
//     CrossOriginProtection refuses a request whose Sec-Fetch-Site or
//     Origin header names another origin.
//  2. A synchronizer token: the request must carry a token, in the form
//     field "csrf_token" or the header "X-CSRF-Token", that was rendered
//     from a secret kept in the request's session.
//
// The first layer needs no change to pages. The second holds where the
// first fails open: browsers too old to send either header, a plain-HTTP
// page on the same host (CrossOriginProtection compares hosts, not
// schemes), and origins added with AddTrustedOrigin.
//
// The Protection runs inside hallpass's Manager.Handler, because the
// secret lives in the session:
//
//	m, _ := hallpass.New(hallpass.Config{Store: memstore.New(nil)})
//	http.ListenAndServe(addr, m.Handler(csrf.New(nil).Handler(mux)))
//
// # Rendering tokens
//
// Every form that posts needs the hidden field; Field returns it. The
// first call in a session creates the secret, which writes to the session
// (and so starts a guest session: login forms need protecting too). A
// session can only be written before the response starts, so get the
// field before executing the template and pass it in the view data:
//
//	data := struct{ CSRFField template.HTML }{csrf.Field(r)}
//	page.Execute(w, data) // {{.CSRFField}} inside each <form method="post">
//
// A template function called during Execute would run after the template
// has written its first bytes, when a session without a secret can no
// longer be changed: the page would work for returning visitors and fail
// for new ones. That is why this package offers no FuncMap.
//
// Scripts send the token in the header: render MetaTag into the page's
// <head>, and read it once:
//
//	const token = document.querySelector('meta[name="csrf-token"]').content;
//	fetch("/api/items", {method: "POST", headers: {"X-CSRF-Token": token}, body});
//
// A token stays valid for as long as the session and its user do, and may
// be sent any number of times.
//
// # Tokens
//
// The secret is 32 bytes from crypto/rand, stored in the session under
// SessionKey together with the id of the user signed in when it was made.
// A secret made for someone else counts as absent, so the secret changes
// at sign-in (guest → alice, alice → bob) with no hook: a form rendered
// before the sign-in is refused after it, with reason no_secret. Logout
// ends the session, and its tokens with it.
//
// Each rendered token is a fresh one-time pad followed by pad XOR secret,
// in base64url without padding (86 characters). Two renders never look
// alike, so the secret cannot be recovered from compressed responses
// (BREACH). Tokens are parsed strictly (exact length, canonical
// base64url) and compared in constant time. Tokens are never accepted
// from the URL, and never written to an event, a log or an error.
//
// # Failures
//
// A refused request gets 403 Forbidden with one of the Reason values, as
// JSON {"error":"csrf","reason":"missing_token"} for clients that ask for
// JSON and as a line of text otherwise (see DefaultErrorHandler and
// Options.ErrorHandler). Each refusal emits a hallpass suspicious event
// whose reason is "csrf_" followed by the Reason.
//
// Two requests racing to create a session's first secret (two tabs
// opened at the same moment) each save one; the last write wins, and the
// other page's form is refused once with wrong_token. Reloading the page
// fixes it.
package csrf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hallpass/hallpass"
)

// Defaults for the zero values of Options, and the names the helpers use.
const (
	DefaultFieldName    = "csrf_token"
	DefaultHeaderName   = "X-CSRF-Token"
	DefaultMaxFormBytes = 10 << 20
	// MetaName is the name of the <meta> element MetaTag renders.
	MetaName = "csrf-token"
	// SessionKey is the session key this package reserves for its secret.
	SessionKey = "hallpass.csrf"
)

// multipartMemory caps how much of a multipart body is held in memory;
// beyond it file parts go to temporary files. It is net/http's own
// default for FormValue.
const multipartMemory = 32 << 20

// Reason says why a request was refused. Its values are stable and meant
// for machines: they appear in error responses and, prefixed with
// "csrf_", in hallpass events.
type Reason string

// The reasons for refusing a request.
const (
	// ReasonCrossOrigin: the browser said the request comes from another
	// origin (Sec-Fetch-Site, or Origin not matching Host).
	ReasonCrossOrigin Reason = "cross_origin"
	// ReasonMissingToken: neither the header nor the form field carries a
	// token.
	ReasonMissingToken Reason = "missing_token"
	// ReasonMalformedToken: the token is not 86 characters of canonical
	// base64url.
	ReasonMalformedToken Reason = "malformed_token"
	// ReasonWrongToken: a well-formed token that the session's secret did
	// not make (a token from another session, or forged).
	ReasonWrongToken Reason = "wrong_token"
	// ReasonNoSecret: the session has no secret for its current user: it
	// ended (a token replayed after Logout), it is another session that
	// never rendered a token, or the user changed since the page was
	// rendered.
	ReasonNoSecret Reason = "no_secret"
)

// Options configures a Protection. Every zero value means the documented
// default.
type Options struct {
	// FieldName is the form field that carries the token. Default
	// "csrf_token".
	FieldName string
	// HeaderName is the request header that carries the token, for
	// scripts. It is checked before the form, and when present the body
	// is not read. Default "X-CSRF-Token".
	HeaderName string
	// MaxFormBytes bounds the body read to find the form field, for
	// application/x-www-form-urlencoded and multipart/form-data requests;
	// a larger body is refused with 413. The handler can still read the
	// parsed form (r.PostFormValue, r.FormFile), but not the raw body.
	// Routes taking larger uploads should raise it or send the token in
	// the header. Default 10 MiB.
	MaxFormBytes int64
	// ErrorHandler writes the response to a refused request. The
	// suspicious event has already been emitted. Default
	// DefaultErrorHandler.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, reason Reason)
	// TrustedOrigins lists origins ("https://app.example.com") whose
	// cross-origin requests pass the browser check, as with
	// CrossOriginProtection.AddTrustedOrigin. They still need a valid
	// token. New panics on an invalid entry; use
	// Protection.AddTrustedOrigin for origins read at run time.
	TrustedOrigins []string
	// InsecureBypassPatterns lists ServeMux patterns whose requests skip
	// both checks, as with Protection.AddInsecureBypassPattern. New
	// panics on an invalid or conflicting pattern.
	InsecureBypassPatterns []string
}

// Protection is CSRF middleware; see Handler. Its methods are safe for
// concurrent use, including while it serves requests. The zero value is
// valid and uses the defaults, with no trusted origins or bypass
// patterns. A Protection must not be copied after first use.
type Protection struct {
	field, header string
	maxForm       int64
	onError       func(http.ResponseWriter, *http.Request, Reason)

	origins    http.CrossOriginProtection
	bypass     atomic.Pointer[http.ServeMux]
	bypassInit sync.Mutex
}

// New returns a Protection configured by opts; nil means the defaults.
// It panics if opts.TrustedOrigins or opts.InsecureBypassPatterns holds
// an invalid entry: like a ServeMux pattern, they are part of the
// program.
func New(opts *Options) *Protection {
	p := &Protection{}
	if opts == nil {
		return p
	}
	p.field, p.header = opts.FieldName, opts.HeaderName
	p.maxForm, p.onError = opts.MaxFormBytes, opts.ErrorHandler
	for _, o := range opts.TrustedOrigins {
		if err := p.AddTrustedOrigin(o); err != nil {
			panic(err)
		}
	}
	for _, pat := range opts.InsecureBypassPatterns {
		p.AddInsecureBypassPattern(pat)
	}
	return p
}

func (p *Protection) fieldName() string {
	if p.field == "" {
		return DefaultFieldName
	}
	return p.field
}

func (p *Protection) headerName() string {
	if p.header == "" {
		return DefaultHeaderName
	}
	return p.header
}

func (p *Protection) maxFormBytes() int64 {
	if p.maxForm <= 0 {
		return DefaultMaxFormBytes
	}
	return p.maxForm
}

// AddTrustedOrigin lets cross-origin requests whose Origin header is
// exactly origin ("scheme://host[:port]") pass the browser check. They
// still need a valid token, so the trusted origin must be able to get one
// (a page served by this app on another host name, say). It returns an
// error for an invalid origin.
func (p *Protection) AddTrustedOrigin(origin string) error {
	if err := p.origins.AddTrustedOrigin(origin); err != nil {
		return fmt.Errorf("csrf: %w", err)
	}
	return nil
}

// AddInsecureBypassPattern turns off both checks for requests matching
// pattern, which has the syntax and precedence of a ServeMux pattern
// ("POST /webhooks/{provider}"). It is for routes that cannot carry a
// token and do not rely on the session cookie, such as webhooks that
// authenticate with a signature. A request that ServeMux would redirect
// to the pattern (an unclean path, a missing trailing slash) is still
// checked.
//
// It panics if pattern is invalid or conflicts with one already added.
func (p *Protection) AddInsecureBypassPattern(pattern string) {
	mux := p.bypass.Load()
	if mux == nil {
		p.bypassInit.Lock()
		if mux = p.bypass.Load(); mux == nil {
			mux = http.NewServeMux()
			p.bypass.Store(mux)
		}
		p.bypassInit.Unlock()
	}
	mux.Handle(pattern, bypassed)
}

type bypassHandler struct{ _ byte } // not zero-size, so the pointer is unique

func (*bypassHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

var bypassed http.Handler = new(bypassHandler)

func (p *Protection) isBypassed(r *http.Request) bool {
	mux := p.bypass.Load()
	if mux == nil {
		return false
	}
	// ServeMux answers a request it would redirect with its own handler,
	// so only a direct match reaches the sentinel.
	h, _ := mux.Handler(r)
	return h == bypassed
}

// safeMethod reports whether method must not change state, and so needs
// no check.
func safeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

type ctxKey struct{}

// errNoSession is the whole 500 response when the Protection is not
// inside Manager.Handler: it is for the developer, who sees it on the
// first request.
const errNoSession = "csrf: no hallpass session in the request context; " +
	"wrap the CSRF middleware with Manager.Handler, for example m.Handler(csrf.New(nil).Handler(mux))"

// Handler returns middleware that refuses unsafe requests failing either
// check, and passes everything else to next. It must run inside a
// hallpass Manager.Handler; without a session in the request context it
// answers every request with 500 and a message saying so.
//
// To find the form field it parses the form (bounded by MaxFormBytes), so
// next sees r.PostForm and r.MultipartForm already filled.
func (p *Protection) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		if s == nil {
			http.Error(w, errNoSession, http.StatusInternalServerError)
			return
		}
		if p.field != "" && p.field != DefaultFieldName {
			// Only Field needs to find the Protection, and only for a
			// custom name; the default costs no copy of the request.
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, p))
		}
		if safeMethod(r.Method) || p.isBypassed(r) {
			next.ServeHTTP(w, r)
			return
		}
		// net/http removes multipart temporary files only for the request
		// it created, and hallpass handed us a copy.
		defer func() {
			if r.MultipartForm != nil {
				_ = r.MultipartForm.RemoveAll()
			}
		}()
		if p.origins.Check(r) != nil {
			p.fail(w, r, s, ReasonCrossOrigin)
			return
		}
		token, status := p.requestToken(w, r)
		if status != 0 {
			http.Error(w, http.StatusText(status)+": the form could not be read to check its CSRF token", status)
			return
		}
		if reason := check(s, token); reason != "" {
			p.fail(w, r, s, reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requestToken returns the token the request carries, or "" if none. A
// non-zero status means the form could not be read.
func (p *Protection) requestToken(w http.ResponseWriter, r *http.Request) (token string, status int) {
	if v := r.Header.Get(p.headerName()); v != "" {
		return v, 0
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	switch ct {
	case "application/x-www-form-urlencoded":
		if r.Body == nil {
			return "", 0
		}
		r.Body = http.MaxBytesReader(w, r.Body, p.maxFormBytes())
		err = r.ParseForm()
	case "multipart/form-data":
		if r.Body == nil {
			return "", 0
		}
		max := p.maxFormBytes()
		r.Body = http.MaxBytesReader(w, r.Body, max)
		err = r.ParseMultipartForm(min(max, multipartMemory))
	default:
		// A body in any other format may be meant for the handler to
		// stream; it cannot hold the form field anyway.
		return "", 0
	}
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return "", http.StatusRequestEntityTooLarge
		}
		return "", http.StatusBadRequest
	}
	return r.PostForm.Get(p.fieldName()), 0
}

// check verifies token against the session's secret and returns why it
// fails, or "".
func check(s *hallpass.Session, token string) Reason {
	if token == "" {
		return ReasonMissingToken
	}
	t, ok := parseToken(token)
	if !ok {
		return ReasonMalformedToken
	}
	secret, ok := loadSecret(s)
	if !ok {
		return ReasonNoSecret
	}
	if !t.verify(&secret) {
		return ReasonWrongToken
	}
	return ""
}

func (p *Protection) fail(w http.ResponseWriter, r *http.Request, s *hallpass.Session, reason Reason) {
	s.Report(hallpass.EventSuspicious, "csrf_"+string(reason))
	h := p.onError
	if h == nil {
		h = DefaultErrorHandler
	}
	h(w, r, reason)
}

// DefaultErrorHandler answers 403 Forbidden. A client that asks for JSON
// (Accept names application/json or a +json type, or the request body is
// JSON, as a script's fetch sends) gets {"error":"csrf","reason":...};
// anyone else a line of text with the reason.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, reason Reason) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if !wantsJSON(r) {
		http.Error(w, "Forbidden: the request failed the CSRF check ("+string(reason)+"). Reload the page and try again.", http.StatusForbidden)
		return
	}
	body, _ := json.Marshal(struct {
		Error  string `json:"error"`
		Reason Reason `json:"reason"`
	}{"csrf", reason})
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(append(body, '\n'))
}

func wantsJSON(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if isJSON(strings.TrimSpace(mt)) {
				return true
			}
		}
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return isJSON(ct)
}

func isJSON(mediaType string) bool {
	mt := strings.ToLower(mediaType)
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}
