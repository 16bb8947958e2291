package csrf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/csrf"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

// recorder keeps every event the Manager emits.
type recorder struct{ storetest.Events }

// suspicious returns the reasons of the suspicious events so far, and
// forgets them.
func (r *recorder) suspicious() []string {
	var reasons []string
	for _, e := range r.Find(hallpass.EventSuspicious, "") {
		reasons = append(reasons, e.Reason)
	}
	r.Reset()
	return reasons
}

// env is an app with forms behind a Manager over a real memstore and a
// Protection.
type env struct {
	t      *testing.T
	m      *hallpass.Manager
	p      *csrf.Protection
	events *recorder
	logs   *bytes.Buffer
	h      http.Handler
}

var formPage = template.Must(template.New("form").Parse(
	`<form method="post" action="/submit">{{.CSRFField}}<input name="text"></form>`))

func newEnv(t *testing.T, opts *csrf.Options) *env {
	t.Helper()
	store := memstore.New(nil)
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, events: &recorder{}, logs: new(bytes.Buffer)}
	m, err := hallpass.New(hallpass.Config{
		Store:  store,
		Events: e.events,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.m, e.p = m, csrf.New(opts)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		// The pattern the package documents: the field goes into the view
		// data before the template writes anything.
		data := struct{ CSRFField template.HTML }{csrf.Field(r)}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := formPage.Execute(w, data); err != nil {
			t.Error(err)
		}
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := csrf.Token(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, tok)
	})
	mux.HandleFunc("GET /meta", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, string(csrf.MetaTag(r)))
	})
	mux.HandleFunc("GET /visit", func(w http.ResponseWriter, r *http.Request) {
		hallpass.FromRequest(r).Set("visited", true)
	})
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain")
	})
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		// The middleware read the body; the parsed form is still here.
		io.WriteString(w, "ok "+r.PostFormValue("text"))
	})
	mux.HandleFunc("DELETE /item", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "deleted")
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		f, fh, err := r.FormFile("upload")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer f.Close()
		n, _ := io.Copy(io.Discard, f)
		fmt.Fprintf(w, "ok %s %s %d", r.FormValue("text"), fh.Filename, n)
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Login(r.PostFormValue("user"), hallpass.LoginOptions{}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "signed in")
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "signed out")
	})
	mux.HandleFunc("POST /webhooks/{name}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hook "+r.PathValue("name"))
	})
	e.h = m.Handler(e.p.Handler(mux))
	return e
}

// client is a browser: it keeps the session cookie between requests.
type client struct {
	e      *env
	cookie string
}

func (e *env) client() *client { return &client{e: e} }

// do sends req and returns the response status and body.
func (c *client) do(req *http.Request) (int, string, http.Header) {
	c.e.t.Helper()
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: c.e.m.CookieName(), Value: c.cookie})
	}
	rec := httptest.NewRecorder()
	c.e.h.ServeHTTP(rec, req)
	res := rec.Result()
	for _, ck := range res.Cookies() {
		if ck.Name == c.e.m.CookieName() {
			if ck.MaxAge < 0 || ck.Value == "" {
				c.cookie = ""
			} else {
				c.cookie = ck.Value
			}
		}
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

func (c *client) get(path string) (int, string) {
	c.e.t.Helper()
	code, body, _ := c.do(httptest.NewRequest(http.MethodGet, "http://localhost"+path, nil))
	return code, body
}

// token renders a form and returns the token in its hidden field.
func (c *client) token() string {
	c.e.t.Helper()
	code, body := c.get("/form")
	if code != http.StatusOK {
		c.e.t.Fatalf("GET /form: %d %s", code, body)
	}
	m := fieldRE.FindStringSubmatch(body)
	if m == nil {
		c.e.t.Fatalf("GET /form: no token field in %q", body)
	}
	return m[1]
}

var fieldRE = regexp.MustCompile(`<input type="hidden" name="csrf_token" value="([A-Za-z0-9_-]{86})">`)

// post sends a urlencoded form; opts adjust the request.
func (c *client) post(path string, form url.Values, opts ...func(*http.Request)) (int, string, http.Header) {
	c.e.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://localhost"+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, o := range opts {
		o(req)
	}
	return c.do(req)
}

func header(k, v string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

func withToken(tok string, more url.Values) url.Values {
	v := url.Values{"csrf_token": {tok}}
	for k, vs := range more {
		v[k] = vs
	}
	return v
}

// wantRefused checks a 403 with reason and the matching suspicious event.
func (e *env) wantRefused(t *testing.T, code int, body string, reason csrf.Reason) {
	t.Helper()
	if code != http.StatusForbidden || !strings.Contains(body, string(reason)) {
		t.Errorf("got %d %q, want 403 with reason %s", code, body, reason)
	}
	got := e.events.suspicious()
	if len(got) != 1 || got[0] != "csrf_"+string(reason) {
		t.Errorf("suspicious events %q, want [csrf_%s]", got, reason)
	}
}

func (e *env) wantOK(t *testing.T, code int, body, want string) {
	t.Helper()
	if code != http.StatusOK || body != want {
		t.Errorf("got %d %q, want 200 %q", code, body, want)
	}
	if got := e.events.suspicious(); len(got) > 0 {
		t.Errorf("unexpected suspicious events %q", got)
	}
}

func TestGetRendersField(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	code, body := c.get("/form")
	if code != http.StatusOK || !fieldRE.MatchString(body) {
		t.Fatalf("got %d %q, want the hidden field", code, body)
	}
	if c.cookie == "" {
		t.Error("rendering a token did not start a guest session")
	}
}

func TestSafeRequestsNeedNoTokenAndStartNoSession(t *testing.T) {
	e := newEnv(t, nil)
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace} {
		c := e.client()
		req := httptest.NewRequest(method, "http://localhost/plain", nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		code, _, h := c.do(req)
		if code == http.StatusForbidden {
			t.Errorf("%s refused", method)
		}
		if h.Get("Set-Cookie") != "" {
			t.Errorf("%s without a token render set a cookie", method)
		}
	}
	if got := e.events.suspicious(); len(got) > 0 {
		t.Errorf("suspicious events %q", got)
	}
}

func TestPostWithField(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	tok := c.token()
	code, body, _ := c.post("/submit", withToken(tok, url.Values{"text": {"hello"}}))
	e.wantOK(t, code, body, "ok hello")
	// A token is not single-use.
	code, body, _ = c.post("/submit", withToken(tok, url.Values{"text": {"again"}}))
	e.wantOK(t, code, body, "ok again")
}

func TestMissingToken(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	c.token()
	code, body, h := c.post("/submit", url.Values{"text": {"hello"}})
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	// A body the middleware does not parse carries no field either.
	req := httptest.NewRequest(http.MethodPost, "http://localhost/submit", strings.NewReader(`csrf_token=x`))
	req.Header.Set("Content-Type", "text/plain")
	code, body, _ = c.do(req)
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
	// Nor does the query string: tokens in URLs end up in logs.
	tok := c.token()
	code, body, _ = c.post("/submit?csrf_token="+tok, url.Values{"text": {"hello"}})
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
}

func TestMalformedToken(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	tok := c.token()
	for name, bad := range map[string]string{
		"short":          tok[:85],
		"long":           tok + "A",
		"padded":         tok + "==",
		"std alphabet +": "+" + tok[1:],
		"std alphabet /": "/" + tok[1:],
		"trailing bits":  tok[:85] + "B", // canonical tokens end in A, Q, g or w
		"newline inside": tok[:40] + "\n" + tok[41:],
		"space":          tok[:85] + " ",
		"non-ASCII":      tok[:84] + "é",
		"session token":  hallpass.NewToken(),
		"garbage":        "not a token",
	} {
		t.Run(name, func(t *testing.T) {
			code, body, _ := c.post("/submit", withToken(bad, nil))
			e.wantRefused(t, code, body, csrf.ReasonMalformedToken)
		})
	}
}

func TestTokenFromAnotherSession(t *testing.T) {
	e := newEnv(t, nil)
	alice, mallory := e.client(), e.client()
	mine := mallory.token()
	alice.token() // alice's session has a secret of its own
	code, body, _ := alice.post("/submit", withToken(mine, nil))
	e.wantRefused(t, code, body, csrf.ReasonWrongToken)

	fresh := e.client() // a session that never rendered a token
	if code, _ := fresh.get("/visit"); code != http.StatusOK || fresh.cookie == "" {
		t.Fatal("no session for the third client")
	}
	code, body, _ = fresh.post("/submit", withToken(mine, nil))
	e.wantRefused(t, code, body, csrf.ReasonNoSecret)
}

func TestReplayAfterLogout(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	code, body, _ := c.post("/login", withToken(c.token(), url.Values{"user": {"alice"}}))
	e.wantOK(t, code, body, "signed in")
	tok := c.token()
	oldCookie := c.cookie
	code, body, _ = c.post("/logout", withToken(tok, nil))
	e.wantOK(t, code, body, "signed out")
	if c.cookie != "" {
		t.Fatal("logout left a cookie")
	}
	// The browser after logout, and an attacker with a copy of the old
	// cookie: the session, and the secret with it, is gone.
	code, body, _ = c.post("/submit", withToken(tok, nil))
	e.wantRefused(t, code, body, csrf.ReasonNoSecret)
	c.cookie = oldCookie
	code, body, _ = c.post("/submit", withToken(tok, nil))
	e.events.suspicious() // hallpass reports the unknown cookie too
	if code != http.StatusForbidden || !strings.Contains(body, string(csrf.ReasonNoSecret)) {
		t.Errorf("replay with the old cookie: %d %q", code, body)
	}
}

func TestGuestTokenRefusedAfterLogin(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	guestTok := c.token()
	otherTab := c.token() // a second form rendered while still a guest
	code, body, _ := c.post("/login", withToken(guestTok, url.Values{"user": {"alice"}}))
	e.wantOK(t, code, body, "signed in")

	code, body, _ = c.post("/submit", withToken(otherTab, nil))
	e.wantRefused(t, code, body, csrf.ReasonNoSecret)

	// A page rendered after sign-in works.
	code, body, _ = c.post("/submit", withToken(c.token(), url.Values{"text": {"hi"}}))
	e.wantOK(t, code, body, "ok hi")
	// And the guest's token still does not.
	code, body, _ = c.post("/submit", withToken(otherTab, nil))
	e.wantRefused(t, code, body, csrf.ReasonWrongToken)
}

func TestSecretBoundToUser(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	code, body, _ := c.post("/login", withToken(c.token(), url.Values{"user": {"alice"}}))
	e.wantOK(t, code, body, "signed in")
	aliceTok := c.token()
	code, body, _ = c.post("/login", withToken(aliceTok, url.Values{"user": {"bob"}}))
	e.wantOK(t, code, body, "signed in")
	code, body, _ = c.post("/submit", withToken(aliceTok, nil))
	e.wantRefused(t, code, body, csrf.ReasonNoSecret)
}

func TestMasking(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	a, b := c.token(), c.token()
	if a == b {
		t.Fatal("two renders gave the same token")
	}
	for _, tok := range []string{a, b} {
		code, body, _ := c.post("/submit", withToken(tok, url.Values{"text": {"x"}}))
		e.wantOK(t, code, body, "ok x")
	}
}

func TestHeaderTransport(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	_, meta := c.get("/meta")
	m := regexp.MustCompile(`^<meta name="csrf-token" content="([A-Za-z0-9_-]{86})">$`).FindStringSubmatch(meta)
	if m == nil {
		t.Fatalf("meta tag %q", meta)
	}
	req := httptest.NewRequest(http.MethodPost, "http://localhost/submit", strings.NewReader(`{"text":"hi"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(csrf.DefaultHeaderName, m[1])
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	code, body, _ := c.do(req)
	e.wantOK(t, code, body, "ok ")

	// Methods whose bodies ParseForm ignores need the header.
	req = httptest.NewRequest(http.MethodDelete, "http://localhost/item", nil)
	req.Header.Set("X-Csrf-Token", m[1])
	code, body, _ = c.do(req)
	e.wantOK(t, code, body, "deleted")

	req = httptest.NewRequest(http.MethodDelete, "http://localhost/item", nil)
	code, body, _ = c.do(req)
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
}

func TestCrossOrigin(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	tok := c.token()
	code, body, _ := c.post("/submit", withToken(tok, nil),
		header("Origin", "https://evil.example"), header("Sec-Fetch-Site", "cross-site"))
	e.wantRefused(t, code, body, csrf.ReasonCrossOrigin)
	// A browser without Sec-Fetch-Site.
	code, body, _ = c.post("/submit", withToken(tok, nil), header("Origin", "https://evil.example"))
	e.wantRefused(t, code, body, csrf.ReasonCrossOrigin)
	// A sibling subdomain is same-site, not same-origin.
	code, body, _ = c.post("/submit", withToken(tok, nil), header("Sec-Fetch-Site", "same-site"))
	e.wantRefused(t, code, body, csrf.ReasonCrossOrigin)

	code, body, _ = c.post("/submit", withToken(tok, url.Values{"text": {"x"}}),
		header("Origin", "http://localhost"), header("Sec-Fetch-Site", "same-origin"))
	e.wantOK(t, code, body, "ok x")
}

func TestTrustedOrigin(t *testing.T) {
	e := newEnv(t, &csrf.Options{TrustedOrigins: []string{"https://app.example"}})
	c := e.client()
	tok := c.token()
	code, body, _ := c.post("/submit", withToken(tok, url.Values{"text": {"x"}}),
		header("Origin", "https://app.example"), header("Sec-Fetch-Site", "cross-site"))
	e.wantOK(t, code, body, "ok x")
	// Trusted for the browser check only: the token is still needed.
	code, body, _ = c.post("/submit", nil,
		header("Origin", "https://app.example"), header("Sec-Fetch-Site", "cross-site"))
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)

	if err := e.p.AddTrustedOrigin("app.example/path"); err == nil || !strings.HasPrefix(err.Error(), "csrf: ") {
		t.Errorf("AddTrustedOrigin of an invalid origin: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("New with an invalid trusted origin did not panic")
			}
		}()
		csrf.New(&csrf.Options{TrustedOrigins: []string{"https://app.example/path"}})
	}()
}

func TestJSONError(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	c.token()
	for name, opt := range map[string]func(*http.Request){
		"accept":       header("Accept", "text/plain;q=0.5, application/json"),
		"accept+json":  header("Accept", "application/problem+json"),
		"content-type": header("Content-Type", "application/json; charset=utf-8"),
	} {
		t.Run(name, func(t *testing.T) {
			code, body, h := c.post("/submit", nil, opt)
			e.wantRefused(t, code, body, csrf.ReasonMissingToken)
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil || len(got) != 2 || got["error"] != "csrf" || got["reason"] != "missing_token" {
				t.Errorf("body %q (%v)", body, err)
			}
		})
	}
}

func multipartBody(t *testing.T, fields map[string]string, file []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, err := mw.CreateFormFile("upload", "notes.txt")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(file)
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestMultipart(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	body, ct := multipartBody(t, map[string]string{"csrf_token": c.token(), "text": "hi"}, []byte("hello file"))
	req := httptest.NewRequest(http.MethodPost, "http://localhost/upload", body)
	req.Header.Set("Content-Type", ct)
	code, got, _ := c.do(req)
	e.wantOK(t, code, got, "ok hi notes.txt 10")

	body, ct = multipartBody(t, map[string]string{"text": "hi"}, []byte("hello file"))
	req = httptest.NewRequest(http.MethodPost, "http://localhost/upload", body)
	req.Header.Set("Content-Type", ct)
	code, got, _ = c.do(req)
	e.wantRefused(t, code, got, csrf.ReasonMissingToken)
}

// TestMultipartTempFilesRemoved covers what net/http cannot do once
// middleware has copied the request: remove the temporary files of a
// large upload.
func TestMultipartTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	e := newEnv(t, &csrf.Options{MaxFormBytes: 64 << 20})
	c := e.client()
	file := bytes.Repeat([]byte("x"), 33<<20) // more than is kept in memory
	body, ct := multipartBody(t, map[string]string{"csrf_token": c.token(), "text": "big"}, file)
	req := httptest.NewRequest(http.MethodPost, "http://localhost/upload", body)
	req.Header.Set("Content-Type", ct)
	code, got, _ := c.do(req)
	e.wantOK(t, code, got, fmt.Sprintf("ok big notes.txt %d", len(file)))
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestMaxFormBytes(t *testing.T) {
	e := newEnv(t, &csrf.Options{MaxFormBytes: 1 << 10})
	c := e.client()
	tok := c.token()
	code, body, _ := c.post("/submit", withToken(tok, url.Values{"text": {strings.Repeat("x", 2<<10)}}))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("urlencoded: got %d %q, want 413", code, body)
	}
	mb, ct := multipartBody(t, map[string]string{"csrf_token": tok}, bytes.Repeat([]byte("x"), 2<<10))
	req := httptest.NewRequest(http.MethodPost, "http://localhost/upload", mb)
	req.Header.Set("Content-Type", ct)
	if code, body, _ := c.do(req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("multipart: got %d %q, want 413", code, body)
	}
	// The header needs no body, whatever its size.
	req = httptest.NewRequest(http.MethodPost, "http://localhost/submit", strings.NewReader(strings.Repeat("x", 2<<10)))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(csrf.DefaultHeaderName, tok)
	code, body, _ = c.do(req)
	e.wantOK(t, code, body, "ok ")

	req = httptest.NewRequest(http.MethodPost, "http://localhost/upload", strings.NewReader("garbage"))
	req.Header.Set("Content-Type", "multipart/form-data") // no boundary
	if code, body, _ := c.do(req); code != http.StatusBadRequest {
		t.Errorf("broken multipart: got %d %q, want 400", code, body)
	}
	if got := e.events.suspicious(); len(got) > 0 {
		t.Errorf("unreadable forms are not CSRF: events %q", got)
	}
}

func TestNoSession(t *testing.T) {
	p := csrf.New(nil)
	h := p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the handler ran without a session")
	}))
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://localhost/", nil))
		if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "Manager.Handler") {
			t.Errorf("%s: got %d %q, want 500 naming Manager.Handler", method, rec.Code, rec.Body)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "http://localhost/", nil)
	if _, err := csrf.Token(req); !errors.Is(err, hallpass.ErrNoSession) {
		t.Errorf("Token without a session: %v", err)
	}
	if f := csrf.Field(req); f != "" {
		t.Errorf("Field without a session: %q", f)
	}
}

func TestBypassPattern(t *testing.T) {
	e := newEnv(t, &csrf.Options{InsecureBypassPatterns: []string{"POST /webhooks/{name}"}})
	c := e.client()
	code, body, _ := c.post("/webhooks/pay", nil, header("Sec-Fetch-Site", "cross-site"), header("Origin", "https://pay.example"))
	e.wantOK(t, code, body, "hook pay")
	// Only the pattern: other routes are still checked.
	code, body, _ = c.post("/submit", nil)
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
	// A path ServeMux would clean and redirect does not match.
	code, body, _ = c.post("/webhooks/../submit", nil)
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)

	e.p.AddInsecureBypassPattern("POST /submit")
	code, body, _ = c.post("/submit", url.Values{"text": {"x"}})
	e.wantOK(t, code, body, "ok x")

	func() {
		defer func() {
			if recover() == nil {
				t.Error("a conflicting pattern did not panic")
			}
		}()
		e.p.AddInsecureBypassPattern("POST /submit")
	}()
}

func TestCustomNames(t *testing.T) {
	e := newEnv(t, &csrf.Options{FieldName: "authenticity_token", HeaderName: "X-Token"})
	c := e.client()
	_, page := c.get("/form")
	m := regexp.MustCompile(`name="authenticity_token" value="([A-Za-z0-9_-]{86})"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("page %q lacks the custom field", page)
	}
	code, body, _ := c.post("/submit", url.Values{"authenticity_token": {m[1]}, "text": {"x"}})
	e.wantOK(t, code, body, "ok x")
	code, body, _ = c.post("/submit", url.Values{"text": {"y"}}, header("X-Token", m[1]))
	e.wantOK(t, code, body, "ok y")
	code, body, _ = c.post("/submit", url.Values{"csrf_token": {m[1]}})
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
}

func TestZeroOptions(t *testing.T) {
	e := newEnv(t, &csrf.Options{})
	c := e.client()
	code, body, _ := c.post("/submit", withToken(c.token(), url.Values{"text": {"x"}}))
	e.wantOK(t, code, body, "ok x")

	var p csrf.Protection // the zero Protection works too
	e.h = e.m.Handler(p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })))
	code, body, _ = c.post("/", nil)
	e.wantRefused(t, code, body, csrf.ReasonMissingToken)
}

func TestErrorHandler(t *testing.T) {
	var got []csrf.Reason
	e := newEnv(t, &csrf.Options{ErrorHandler: func(w http.ResponseWriter, r *http.Request, reason csrf.Reason) {
		got = append(got, reason)
		http.Error(w, "nope", http.StatusTeapot)
	}})
	c := e.client()
	code, body, _ := c.post("/submit", nil)
	if code != http.StatusTeapot || body != "nope\n" || len(got) != 1 || got[0] != csrf.ReasonMissingToken {
		t.Errorf("got %d %q, reasons %v", code, body, got)
	}
	if ev := e.events.suspicious(); len(ev) != 1 || ev[0] != "csrf_missing_token" {
		t.Errorf("the event is emitted whatever the ErrorHandler: %q", ev)
	}
}

func TestTokenAfterResponseStarted(t *testing.T) {
	e := newEnv(t, nil)
	var tokErr error
	var field template.HTML
	e.h = e.m.Handler(e.p.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "started")
		_, tokErr = csrf.Token(r)
		field = csrf.Field(r)
	})))
	e.client().get("/")
	if tokErr == nil || !strings.Contains(tokErr.Error(), "csrf:") || !errors.Is(tokErr, hallpass.ErrResponseStarted) {
		t.Errorf("Token after the response started: %v", tokErr)
	}
	if field != "" {
		t.Errorf("Field after the response started: %q", field)
	}
}

// TestTokenNotDisclosed checks that no token, secret or session token
// reaches an event, a log line or an error response.
func TestTokenNotDisclosed(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	tok := c.token()
	other := e.client().token()
	c.post("/submit", withToken(tok[:85]+"A", nil))
	c.post("/submit", withToken(other, nil))
	_, b1, _ := c.post("/submit", withToken(other, nil), header("Accept", "application/json"))
	_, b2, _ := c.post("/submit", withToken(tok, nil), header("Sec-Fetch-Site", "cross-site"))
	c.post("/login", withToken(tok, url.Values{"user": {"alice"}}))
	_, b3, _ := c.post("/submit", withToken(tok, nil))

	var seen strings.Builder
	for _, ev := range e.events.All() {
		fmt.Fprintf(&seen, "%+v\n", ev)
	}
	seen.WriteString(e.logs.String())
	seen.WriteString(b1 + b2 + b3)
	for _, secret := range []string{tok, tok[:20], other, other[:20], c.cookie} {
		if strings.Contains(seen.String(), secret) {
			t.Errorf("%q disclosed in %s", secret, seen.String())
		}
	}
}

func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client()
	tok := c.token()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			cc := &client{e: e, cookie: c.cookie}
			req := httptest.NewRequest(http.MethodPost, "http://localhost/submit", strings.NewReader(withToken(tok, nil).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if code, body, _ := cc.do(req); code != http.StatusOK {
				t.Errorf("got %d %q", code, body)
			}
		})
	}
	wg.Wait()
}

// BenchmarkHandler measures what the check adds to a POST that carries
// its token in the header, over the session middleware alone.
func BenchmarkHandler(b *testing.B) {
	store := memstore.New(nil)
	defer store.Close()
	m, err := hallpass.New(hallpass.Config{Store: store, Events: hallpass.SinkFunc(func(context.Context, hallpass.Event) {})})
	if err != nil {
		b.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	var cookie, tok string
	setup := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tok, _ = csrf.Token(r) }))
	rec := httptest.NewRecorder()
	setup.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://localhost/", nil))
	cookie = rec.Result().Cookies()[0].Value

	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"session", m.Handler(ok)},
		{"session+csrf", m.Handler(csrf.New(nil).Handler(ok))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "http://localhost/", nil)
			req.AddCookie(&http.Cookie{Name: m.CookieName(), Value: cookie})
			req.Header.Set(csrf.DefaultHeaderName, tok)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				bc.h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body)
				}
			}
		})
	}
}
