package main

// End-to-end tests in a real browser: Chromium, driven by chromedp over
// the DevTools protocol, against the app on a real loopback listener.
//
// They need a Chromium: HALLPASS_TEST_CHROMIUM names it, else "chromium"
// on the PATH. Without one they skip, except under CI=true, where they
// fail. HALLPASS_SCREENSHOTS names the directory for the screenshots
// (home.png, devices.png, idle-dialog.png, admin.png); without it they go
// to a temporary directory. To refresh the README's pictures:
//
//	HALLPASS_SCREENSHOTS=$PWD/docs/screenshots go test -run Browser ./cmd/hallpass-demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// browserTestTimeout bounds each browser test, browsers included.
const browserTestTimeout = 60 * time.Second

// browserPassword is the password of every account the browser tests
// make.
const browserPassword = "correct horse battery staple"

// chromiumPath returns the Chromium to drive: HALLPASS_TEST_CHROMIUM, or
// "chromium" on the PATH. Without one the test skips, or fails under
// CI=true, where a missing browser must not pass unnoticed.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HALLPASS_TEST_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("HALLPASS_TEST_CHROMIUM=%q: %v", p, err)
		}
		return path
	}
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	const msg = "no Chromium for the browser tests: set HALLPASS_TEST_CHROMIUM to its path, or install it (apt-get install chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this fails instead of skipping")
	}
	t.Skip(msg)
	return ""
}

// browserEnv is the app for a browser test. The server listens on
// 127.0.0.1 (httptest), and the browser reaches it as localhost: a
// browser counts http://localhost as a secure context, so it keeps the
// app's __Host- (Secure) cookies, and 127.0.0.1 stays a different site,
// free for an attacker's page.
type browserEnv struct {
	*env
	chromium string
	base     string          // http://localhost:PORT
	ctx      context.Context // bounds the test, browsers included
}

func newBrowserEnv(t *testing.T, opts options) *browserEnv {
	t.Helper()
	chromium := chromiumPath(t)
	e := newEnvOptions(t, opts)
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the env's own cleanup, so it runs before it: the
	// browsers (started later still) are gone before the server closes.
	ctx, cancel := context.WithTimeout(context.Background(), browserTestTimeout)
	t.Cleanup(cancel)
	return &browserEnv{env: e, chromium: chromium, base: "http://localhost:" + u.Port(), ctx: ctx}
}

// browser is one Chromium process; ctx is its first tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	dir  string // the profile (user data directory)
	out  *syncBuffer
	stop func()
}

// startBrowser starts a headless Chromium on the profile in dir, or on a
// fresh one if dir is "". The test's cleanup closes it, if Close has not.
func (be *browserEnv) startBrowser(dir string) *browser {
	t := be.t
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	out := new(syncBuffer)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(be.ctx,
		chromedp.ExecPath(be.chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, dir: dir, out: out}
	b.stop = sync.OnceFunc(func() {
		// A graceful close lets Chromium write its cookies to the
		// profile; the allocator's cancel waits for the process.
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing Chromium: %v", err)
		}
		cancelTab()
		cancelAlloc()
		checkNoChromium(t, dir)
		if t.Failed() {
			t.Logf("Chromium output (profile %s), D-Bus complaints left out:\n%s", dir, withoutDBus(out.String()))
		}
	})
	t.Cleanup(b.stop)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start Chromium %s: %v\n%s", be.chromium, err, withoutDBus(out.String()))
	}
	if runtime.GOOS == "linux" && len(processesUsing(dir)) == 0 {
		t.Fatalf("no process has --user-data-dir=%s on its command line: the check for leftover processes would prove nothing", dir)
	}
	return b
}

// withoutDBus drops the lines in which Chromium says it found no D-Bus,
// as in a container, from its output.
func withoutDBus(out string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "dbus") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// Close closes the browser and waits until no process of it is left.
func (b *browser) Close() { b.stop() }

// newTab opens another tab in the browser.
func (b *browser) newTab() context.Context {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel) // runs before the browser's own cleanup
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	return ctx
}

// checkNoChromium fails the test if a process still runs on the profile
// dir (every Chromium process has it on its command line), waiting a
// moment for stragglers, and kills those it finds.
func checkNoChromium(t *testing.T, dir string) {
	t.Helper()
	var left []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left = processesUsing(dir)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("Chromium processes %v still run on profile %s after the browser closed", left, dir)
		for _, pid := range left {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
}

// processesUsing lists the processes with --user-data-dir=dir on their
// command line. Only Linux has /proc; elsewhere it finds none.
func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir)
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		if slices.ContainsFunc(bytes.Split(cmdline, []byte{0}), func(arg []byte) bool { return bytes.Equal(arg, want) }) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// do runs actions in the tab, failing the test on an error.
func do(t *testing.T, tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tab, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the tab, awaiting a promise.
func eval[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the JavaScript expression is true in the tab,
// across navigations (an error meanwhile, such as a page being replaced,
// counts as false), and returns how long that took.
func waitJS(t *testing.T, tab context.Context, within time.Duration, expr string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(tab, time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return time.Since(start)
		}
		lastErr = err
		if time.Now().After(deadline) || tab.Err() != nil {
			href, _ := chromedp.Run(tab, chromedp.Evaluate[string](`location.href`))
			t.Fatalf("after %v, still not true: %s (page %s, last error %v)", within, expr, href, lastErr)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitPath waits until the tab shows the page at path (with its query).
func (be *browserEnv) waitPath(tab context.Context, within time.Duration, path string) time.Duration {
	be.t.Helper()
	return waitJS(be.t, tab, within, fmt.Sprintf(`document.readyState !== "loading" && location.href === %s`, strconv.Quote(be.base+path)))
}

// signUp signs a new account up in the tab, from the signup form.
func (be *browserEnv) signUp(tab context.Context, name string, remember bool) {
	be.t.Helper()
	be.fillAuthForm(tab, "/signup", name, remember)
}

// logIn signs in to an existing account in the tab, from the login form.
func (be *browserEnv) logIn(tab context.Context, name string) {
	be.t.Helper()
	be.fillAuthForm(tab, "/login", name, false)
}

func (be *browserEnv) fillAuthForm(tab context.Context, path, name string, remember bool) {
	be.t.Helper()
	steps := []chromedp.Action[chromedp.Void]{
		chromedp.Navigate(be.base + path),
		chromedp.SendKeys(chromedp.CSS(`form.auth input[name=username]`), name),
		chromedp.SendKeys(chromedp.CSS(`form.auth input[name=password]`), browserPassword),
	}
	if remember {
		steps = append(steps, chromedp.Click(chromedp.CSS(`form.auth input[name=remember]`)))
	}
	steps = append(steps, chromedp.Click(chromedp.CSS(`form.auth button[type=submit]`)))
	do(be.t, tab, path, steps...)
	be.waitPath(tab, 10*time.Second, "/")
	if got := eval[string](be.t, tab, `document.querySelector("p.who").textContent`); got != "Signed in as "+name {
		be.t.Fatalf("%s as %s: the home page says %q", path, name, got)
	}
}

// openLive opens path in the tab and waits until its live script has its
// event stream open: the server then tells the page at once when the
// session ends elsewhere.
func (be *browserEnv) openLive(tab context.Context, path string) {
	be.t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	responses := chromedp.Events(ctx, network.ResponseReceived)
	do(be.t, tab, "open "+path, chromedp.Navigate(be.base+path))
	for ev, err := range responses {
		if err != nil {
			be.t.Fatalf("%s: the page opened no event stream: %v", path, err)
		}
		if ev.Response.URL == be.base+"/session/events" {
			if ev.Response.Status != http.StatusOK {
				be.t.Fatalf("%s: GET /session/events: %d", path, ev.Response.Status)
			}
			return
		}
	}
}

// watchLeave returns a channel that gets the time at which the tab's
// main frame navigates to a URL starting with prefix.
func watchLeave(tab context.Context, prefix string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	navs := chromedp.Events(tab, page.FrameNavigated)
	go func() {
		for ev, err := range navs {
			if err != nil {
				return
			}
			if ev.Frame.ParentID == "" && strings.HasPrefix(ev.Frame.URL, prefix) {
				ch <- time.Now()
				return
			}
		}
	}()
	return ch
}

// sessionStatus is GET /session as the page's script reads it.
type sessionStatus struct {
	Authenticated bool      `json:"authenticated"`
	User          string    `json:"user"`
	IdleExpiresAt time.Time `json:"idle_expires_at"`
}

// status asks for the session status from the page, as a background
// request, which does not slide the idle deadline.
func status(t *testing.T, tab context.Context) sessionStatus {
	t.Helper()
	return eval[sessionStatus](t, tab, `fetch("/session", {cache: "no-store", headers: {"Hallpass-Background": "1", "Accept": "application/json"}}).then((r) => r.json())`)
}

// cartLines reads the cart page's table as "name=qty" lines.
func (be *browserEnv) cartLines(tab context.Context) []string {
	be.t.Helper()
	do(be.t, tab, "open the cart", chromedp.Navigate(be.base+"/cart"))
	return eval[[]string](be.t, tab, `Array.from(document.querySelectorAll("table.cart tbody tr"), (tr) => tr.cells[0].textContent + "=" + tr.cells[2].textContent)`)
}

// addToCart clicks "Add to cart" for item on the home page.
func (be *browserEnv) addToCart(tab context.Context, item string, wantInCart int) {
	be.t.Helper()
	do(be.t, tab, "add "+item, chromedp.Navigate(be.base+"/"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`form[action="/cart/add"]:has(input[name=item][value=%q]) button`, item))))
	waitJS(be.t, tab, 10*time.Second, fmt.Sprintf(`location.pathname === "/" && document.querySelector('a[href="/cart"]').textContent === "Cart (%d)"`, wantInCart))
}

// cookies returns the browser's cookies for the app, HttpOnly ones
// included, from the DevTools protocol.
func (be *browserEnv) cookies(tab context.Context) map[string]*network.Cookie {
	be.t.Helper()
	res, err := chromedp.Call(tab, network.GetCookies, network.GetCookiesParams{URLs: []string{be.base + "/"}})
	if err != nil {
		be.t.Fatalf("Network.getCookies: %v", err)
	}
	m := make(map[string]*network.Cookie)
	for _, c := range res.Cookies {
		m[c.Name] = c
	}
	return m
}

// screenshot writes a PNG of the tab's viewport, or of the whole page if
// full, as name in the directory that HALLPASS_SCREENSHOTS names, or in a
// temporary one.
func screenshot(t *testing.T, tab context.Context, name string, full bool) {
	t.Helper()
	dir := os.Getenv("HALLPASS_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100) // 100: PNG
	}
	png, err := chromedp.Run(tab, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG", name)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// The tests.

// TestBrowserSignUpSignIn signs up, out and in again through the forms,
// and takes the signed-in home page's picture.
func TestBrowserSignUpSignIn(t *testing.T) {
	be := newBrowserEnv(t, options{})
	b := be.startBrowser("")
	be.signUp(b.ctx, "ada", false)
	if got := eval[string](t, b.ctx, `document.querySelector("p.flash").textContent`); got != "Signed in." {
		t.Errorf("after signup the flash says %q", got)
	}

	do(t, b.ctx, "log out", chromedp.Click(chromedp.CSS(`form[data-hallpass-signout] button`)))
	waitJS(t, b.ctx, 10*time.Second, `location.pathname === "/" && document.querySelector("p.who").textContent === "Guest"`)
	if st := status(t, b.ctx); st.Authenticated {
		t.Fatalf("after logout: %+v", st)
	}

	be.logIn(b.ctx, "ada")
	if st := status(t, b.ctx); !st.Authenticated {
		t.Fatalf("after login: %+v", st)
	}
	screenshot(t, b.ctx, "home.png", false)
}

// TestBrowserGuestCartSurvivesRestart fills a guest's cart, closes the
// browser completely and starts a new one on the same profile: the cart
// is still there, and joins the account's saved cart at login.
func TestBrowserGuestCartSurvivesRestart(t *testing.T) {
	be := newBrowserEnv(t, options{})
	// The account already has a saved cart, from another device.
	c := be.client()
	wantRedirectHome(t, c.signup("carol", browserPassword))
	wantRedirectHome(t, c.post("/cart/add", url.Values{"item": {"mug"}}))

	profile := t.TempDir()
	b := be.startBrowser(profile)
	be.addToCart(b.ctx, "lamp", 1)
	ck := be.cookies(b.ctx)[cookieName]
	if ck == nil || ck.Session {
		t.Fatalf("the guest's session cookie is %+v; want a persistent one", ck)
	}
	b.Close()

	b = be.startBrowser(profile)
	if got, want := be.cartLines(b.ctx), []string{"Desk lamp=1"}; !slices.Equal(got, want) {
		t.Fatalf("after the restart the guest's cart holds %q, want %q", got, want)
	}
	be.logIn(b.ctx, "carol")
	if got, want := be.cartLines(b.ctx), []string{"Desk lamp=1", "Enamel mug=1"}; !slices.Equal(got, want) {
		t.Errorf("after login the cart holds %q, want %q", got, want)
	}
	u, err := be.app.users.ByName(be.ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	saved, err := be.app.shop.saved(be.ctx, strconv.FormatInt(u.ID, 10))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"lamp": 1, "mug": 1}; fmt.Sprint(saved) != fmt.Sprint(want) {
		t.Errorf("saved cart %v, want %v", saved, want)
	}
}

// TestBrowserCookieHiddenFromScript checks that page scripts cannot read
// the session and remember-me cookies, while the browser holds them.
func TestBrowserCookieHiddenFromScript(t *testing.T) {
	be := newBrowserEnv(t, options{})
	b := be.startBrowser("")
	be.signUp(b.ctx, "eve", true)

	// document.cookie works: a cookie set by script shows.
	got := eval[string](t, b.ctx, `document.cookie = "probe=1; path=/; SameSite=Lax"; document.cookie`)
	if !strings.Contains(got, "probe=1") {
		t.Fatalf("document.cookie = %q; the cookie set by script is missing, so the check below proves nothing", got)
	}
	if strings.Contains(got, "__Host-hallpass") {
		t.Errorf("document.cookie = %q shows a hallpass cookie", got)
	}

	cks := be.cookies(b.ctx)
	for _, name := range []string{cookieName, "__Host-hallpass-remember"} {
		ck := cks[name]
		switch {
		case ck == nil:
			t.Errorf("the browser holds no %s cookie (it holds %v)", name, slices.Sorted(maps.Keys(cks)))
		case !ck.HTTPOnly || !ck.Secure || ck.SameSite != network.CookieSameSiteLax || ck.Path != "/":
			t.Errorf("%s: HttpOnly %v, Secure %v, SameSite %q, Path %q; want HttpOnly, Secure, Lax, /", name, ck.HTTPOnly, ck.Secure, ck.SameSite, ck.Path)
		}
	}
}

// TestBrowserIdleDialogStay waits for the idle warning and stays signed
// in. The layout warns 60 s before the idle deadline, so with a 65 s
// idle timeout the dialog comes about 5 s after the last request.
func TestBrowserIdleDialogStay(t *testing.T) {
	be := newBrowserEnv(t, options{IdleTimeout: 65 * time.Second})
	b := be.startBrowser("")
	be.signUp(b.ctx, "ida", false)
	before := status(t, b.ctx)
	if !before.Authenticated || before.IdleExpiresAt.IsZero() {
		t.Fatalf("status after signup: %+v", before)
	}

	took := waitJS(t, b.ctx, 15*time.Second, `!!document.querySelector("dialog.hallpass-dialog[open]")`)
	t.Logf("the idle dialog opened %v after the home page", took.Round(10*time.Millisecond))
	// The dialog is modal and has the focus on its first choice.
	if got := eval[string](t, b.ctx, `document.activeElement.className`); got != "hallpass-stay" {
		t.Errorf("focus on %q, want the stay button", got)
	}
	if got := eval[string](t, b.ctx, `document.querySelector("dialog.hallpass-dialog h2").textContent`); got != "Are you still there?" {
		t.Errorf("dialog title %q", got)
	}
	screenshot(t, b.ctx, "idle-dialog.png", false)

	do(t, b.ctx, "stay signed in", chromedp.Click(chromedp.CSS(`dialog.hallpass-dialog .hallpass-stay`)))
	waitJS(t, b.ctx, 5*time.Second, `!document.querySelector("dialog.hallpass-dialog[open]")`)
	// The extend request is on its way; wait for its new deadline.
	var after sessionStatus
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		after = status(t, b.ctx)
		if !after.IdleExpiresAt.Equal(before.IdleExpiresAt) || time.Now().After(deadline) {
			break
		}
	}
	if !after.Authenticated || !after.IdleExpiresAt.After(before.IdleExpiresAt) {
		t.Fatalf("after 'Stay signed in' the status is %+v; before it was %+v", after, before)
	}
	t.Logf("idle deadline moved by %v", after.IdleExpiresAt.Sub(before.IdleExpiresAt).Round(time.Millisecond))
	if got := eval[string](t, b.ctx, `location.pathname`); got != "/" {
		t.Errorf("the page went to %s", got)
	}
	if open := eval[bool](t, b.ctx, `!!document.querySelector("dialog.hallpass-dialog[open]")`); open {
		t.Error("the dialog is open again right after the extend")
	}
}

// TestBrowserIdleDialogIgnored ignores the idle warning: at the deadline
// the page leaves for the login page, which says why. The idle timeout
// (8 s) is below the layout's 60 s warning, so the dialog opens at once.
func TestBrowserIdleDialogIgnored(t *testing.T) {
	const idle = 8 * time.Second
	be := newBrowserEnv(t, options{IdleTimeout: idle})
	b := be.startBrowser("")
	be.signUp(b.ctx, "ivo", false)
	start := time.Now()
	waitJS(t, b.ctx, 5*time.Second, `!!document.querySelector("dialog.hallpass-dialog[open]")`)
	be.waitPath(b.ctx, idle+10*time.Second, "/login?ended=expired&next=%2F")
	t.Logf("the page left %v after the home page loaded (idle timeout %v)", time.Since(start).Round(10*time.Millisecond), idle)
	if got := eval[string](t, b.ctx, `document.querySelector("main h1 + p.flash").textContent`); !strings.Contains(got, "without activity") {
		t.Errorf("the login page says %q", got)
	}
	if st := status(t, b.ctx); st.Authenticated {
		t.Errorf("still signed in: %+v", st)
	}
}

// TestBrowserSignOutOtherTab signs out in one tab: the other tab of the
// same browser leaves for the login page.
func TestBrowserSignOutOtherTab(t *testing.T) {
	be := newBrowserEnv(t, options{})
	b := be.startBrowser("")
	tabA := b.ctx
	be.signUp(tabA, "tess", false)
	tabB := b.newTab()
	be.openLive(tabB, "/cart")
	be.openLive(tabA, "/")

	left := watchLeave(tabB, be.base+"/login?ended=")
	start := time.Now()
	do(t, tabA, "log out", chromedp.Click(chromedp.CSS(`form[data-hallpass-signout] button`)))
	select {
	case at := <-left:
		t.Logf("the other tab left %v after the click", at.Sub(start).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		href, _ := chromedp.Run(tabB, chromedp.Location())
		t.Fatalf("the other tab is still on %s 2 s after the logout", href)
	}
	be.waitPath(tabB, 5*time.Second, "/login?ended=logged_out&next=%2Fcart")
	if got := eval[string](t, tabB, `document.querySelector("main h1 + p.flash").textContent`); got != "You signed out in another tab." {
		t.Errorf("the other tab's login page says %q", got)
	}
	waitJS(t, tabA, 5*time.Second, `location.pathname === "/" && document.querySelector("p.who").textContent === "Guest"`)
}

// TestBrowserSignOutOtherDevices signs in as one user in two browsers;
// "Sign out all other devices" in one sends the other's open page to the
// login page within a second.
func TestBrowserSignOutOtherDevices(t *testing.T) {
	be := newBrowserEnv(t, options{})
	a := be.startBrowser("")
	b := be.startBrowser("")
	be.signUp(a.ctx, "otto", false)
	be.logIn(b.ctx, "otto")
	be.openLive(b.ctx, "/")
	be.openLive(a.ctx, "/account/sessions")
	if n := eval[int](t, a.ctx, `document.querySelectorAll("ul.devices > li").length`); n != 2 {
		t.Fatalf("the devices page lists %d devices, want 2", n)
	}
	screenshot(t, a.ctx, "devices.png", false)

	left := watchLeave(b.ctx, be.base+"/login?ended=")
	start := time.Now()
	do(t, a.ctx, "sign out other devices", chromedp.Click(chromedp.CSS(`form[action="/account/sessions/revoke-others"] button`)))
	select {
	case at := <-left:
		d := at.Sub(start)
		t.Logf("the other browser left %v after the click", d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("the other browser took %v to leave; want at most 1 s", d)
		}
	case <-time.After(5 * time.Second):
		href, _ := chromedp.Run(b.ctx, chromedp.Location())
		t.Fatalf("the other browser is still on %s 5 s after the click", href)
	}
	be.waitPath(b.ctx, 5*time.Second, "/login?ended=revoked&next=%2F")
	if st := status(t, b.ctx); st.Authenticated {
		t.Errorf("the other browser is still signed in: %+v", st)
	}
	// The browser that asked stays signed in.
	waitJS(t, a.ctx, 5*time.Second, `location.pathname === "/account/sessions" && document.querySelectorAll("ul.devices > li").length === 1`)
	if st := status(t, a.ctx); !st.Authenticated {
		t.Errorf("the browser that signed the others out is signed out: %+v", st)
	}
}

// TestBrowserCrossOriginFormRefused posts forms to the app from a page on
// another site (127.0.0.1, while the app is localhost): the app refuses
// them with 403 in its CSRF check, and nothing changes.
func TestBrowserCrossOriginFormRefused(t *testing.T) {
	be := newBrowserEnv(t, options{})
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A form that submits itself, as soon as the page loads.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>Win a prize</title>
<form method="post" action="%s"><input type="hidden" name="item" value="mug"><input type="hidden" name="csrf_token" value="guess"></form>
<script>document.forms[0].submit()</script>`, html.EscapeString(be.base+r.URL.Query().Get("to")))
	}))
	t.Cleanup(attacker.Close)
	if host, _, _ := net.SplitHostPort(strings.TrimPrefix(attacker.URL, "http://")); host != "127.0.0.1" {
		t.Fatalf("the attacker's page is on %s; want 127.0.0.1", attacker.URL)
	}

	b := be.startBrowser("")
	be.signUp(b.ctx, "mallory-target", false)
	be.addToCart(b.ctx, "mug", 1)

	for _, path := range []string{"/cart/add", "/logout"} {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		responses := chromedp.Events(ctx, network.ResponseReceived)
		do(t, b.ctx, "open the attacker's page", chromedp.Navigate(attacker.URL+"/?to="+url.QueryEscape(path)))
		var resp *network.Response
		for ev, err := range responses {
			if err != nil {
				t.Fatalf("no response from the app to the cross-site POST %s: %v", path, err)
			}
			if ev.Response.URL == be.base+path {
				resp = ev.Response
				break
			}
		}
		cancel()
		if resp.Status != http.StatusForbidden {
			t.Errorf("cross-site POST %s: status %d, want 403", path, resp.Status)
		}
		be.waitPath(b.ctx, 5*time.Second, path)
		if body := eval[string](t, b.ctx, `document.body.innerText`); !strings.Contains(body, "CSRF check (cross_origin)") {
			t.Errorf("cross-site POST %s answered %q; want the CSRF check's cross-origin refusal", path, body)
		}
	}
	if logs := be.logs.String(); strings.Count(logs, "csrf_cross_origin") < 2 {
		t.Errorf("the app logged fewer than two csrf_cross_origin events:\n%s", logs)
	}

	// Still signed in, and the cart as it was.
	do(t, b.ctx, "home", chromedp.Navigate(be.base+"/"))
	if got := eval[string](t, b.ctx, `document.querySelector("p.who").textContent + ", " + document.querySelector('a[href="/cart"]').textContent`); got != "Signed in as mallory-target, Cart (1)" {
		t.Errorf("after the attacks the home page says %q", got)
	}
	u, err := be.app.users.ByName(be.ctx, "mallory-target")
	if err != nil {
		t.Fatal(err)
	}
	saved, err := be.app.shop.saved(be.ctx, strconv.FormatInt(u.ID, 10))
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 1 || saved["mug"] != 1 {
		t.Errorf("saved cart %v, want map[mug:1]", saved)
	}
}

// TestBrowserAdminPage opens the admin page as the admin, right after
// signing up (a fresh sign-in), and takes its picture.
func TestBrowserAdminPage(t *testing.T) {
	be := newBrowserEnv(t, options{Admin: "root"})
	b := be.startBrowser("")
	be.signUp(b.ctx, "root", false)
	do(t, b.ctx, "open the admin page", chromedp.Click(chromedp.CSS(`header a[href="/admin"]`)))
	be.waitPath(b.ctx, 10*time.Second, "/admin")
	if got := eval[string](t, b.ctx, `document.querySelector("main h1").textContent`); got != "Admin" {
		t.Fatalf("the admin link led to %q", got)
	}
	if got := eval[string](t, b.ctx, `document.querySelector("p.total-sessions").textContent`); got != "1 signed-in session" {
		t.Errorf("admin page: %q", got)
	}
	screenshot(t, b.ctx, "admin.png", true) // the events table is below the fold
}
