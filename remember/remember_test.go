package remember_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/cookiestore"
	"github.com/hallpass/hallpass/remember"
	"github.com/hallpass/hallpass/store/memstore"
	"github.com/hallpass/hallpass/store/storetest"
)

type opener = func(t *testing.T, clock *storetest.Clock) hallpass.Store

// issued returns an env and a browser in which user signed in with the
// remember box ticked.
func issued(t *testing.T, open opener, mod func(*remember.Config), name string) (*env, *browser) {
	t.Helper()
	clock := start()
	e := newEnv(t, open(t, clock), clock, mod)
	b := e.browser()
	b.login(name, true)
	if b.remember() == "" {
		t.Fatal("Issue set no remember-me cookie")
	}
	return e, b
}

// comeBack is the browser after a restart: the session cookie is gone,
// the remember-me cookie stays.
func comeBack(b *browser) *browser {
	c := b.clone()
	c.dropSession()
	return c
}

// TestRememberedSignIn: a browser with only the remember-me cookie is
// signed in as remembered, and its cookie rotates.
func TestRememberedSignIn(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		old := b.remember()
		c := comeBack(b)
		got, res := c.whoami()
		if got.User != alice || got.Level != hallpass.LevelRemembered.String() || !got.Remembered {
			t.Fatalf("after coming back: %+v, want %s remembered", got, alice)
		}
		if c.session() == "" {
			t.Fatal("no session cookie after a remember-me sign-in")
		}
		ck := res.cookies[e.rm.CookieName()]
		if ck == nil || ck.Value == old {
			t.Fatalf("remember-me cookie not rotated: %v", ck)
		}
		oldSel, _, _ := strings.Cut(old, ".")
		newSel, _, _ := strings.Cut(ck.Value, ".")
		if oldSel != newSel {
			t.Errorf("selector changed on rotation: %q → %q", oldSel, newSel)
		}
		if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Domain != "" ||
			ck.Name != "__Host-hallpass-remember" {
			t.Errorf("cookie attributes: %+v", ck)
		}
		if want := int(remember.DefaultLifetime / time.Second); ck.MaxAge != want {
			t.Errorf("Max-Age = %d, want %d", ck.MaxAge, want)
		}
		if cc := res.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", cc)
		}
		if len(e.find(hallpass.EventAuthenticated, "")) < 2 {
			t.Error("no authenticated event for the remembered sign-in")
		}
		rec := e.series(ck.Value)
		if rec == nil || rec.UserID != "" {
			t.Fatalf("series record %+v: want one with no user id", rec)
		}
		if got.Series != rec.Handle {
			t.Errorf("session's %s = %q, want the series handle %q", remember.SessionKey, got.Series, rec.Handle)
		}
		if _, ok := rec.Data["session:"+got.Handle]; !ok {
			t.Errorf("the series did not record the session it started")
		}

		// Signed in now: the next request leaves the series alone.
		_, res = c.whoami()
		if _, ok := res.cookies[e.rm.CookieName()]; ok {
			t.Error("a signed-in request touched the remember-me cookie")
		}
		// The series is no device, and counts for no session limit.
		devices, err := e.m.UserSessions(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(devices) != 2 {
			t.Errorf("%d devices, want 2 sessions (password, remembered)", len(devices))
		}
		// The old cookie, presented again within the grace window, is the
		// same browser's parallel request: the same successor.
		d := comeBack(b)
		d.whoami()
		if d.remember() != ck.Value {
			t.Errorf("old cookie within grace got %q, want %q", d.remember(), ck.Value)
		}
	})
}

func (e *env) find(kind hallpass.EventKind, reason string) []hallpass.Event {
	return e.events.find(kind, reason)
}

// TestNoSecretInStore: no record the store holds contains a validator, a
// selector or a session token, in any spelling.
func TestNoSecretInStore(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		cookies := []string{b.remember(), b.session()}
		c := comeBack(b)
		c.whoami()
		cookies = append(cookies, c.remember(), c.session())

		var recs []*hallpass.Record
		for _, k := range []hallpass.Key{seriesKey(b.remember()), userIndexKey(alice)} {
			rec, err := e.store.Load(t.Context(), k)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			recs = append(recs, rec)
		}
		sessions, err := e.store.ListUser(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, sessions...)

		var secrets []string
		for _, ck := range cookies {
			secrets = append(secrets, ck)
			sel, val, ok := strings.Cut(ck, ".")
			if !ok { // a session token
				continue
			}
			raw, err := base64.RawURLEncoding.DecodeString(val)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, sel, val, string(raw),
				base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw),
				fmt.Sprintf("%x", raw))
		}
		for _, rec := range recs {
			dump := fmt.Sprintf("%+v", *rec)
			for k, v := range rec.Data {
				dump += k + "=" + string(v) + "\n"
			}
			for _, s := range secrets {
				if strings.Contains(dump, s) {
					t.Errorf("record %s holds a secret (%d chars)", rec.Handle, len(s))
				}
			}
		}
	})
}

// TestParallelSameSuccessor: eight requests presenting the same cookie at
// once all sign in and all get the same new cookie.
func TestParallelSameSuccessor(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		const n = 8
		got := make([]string, n)
		users := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			c := comeBack(b)
			wg.Go(func() {
				m, _ := c.whoami()
				got[i], users[i] = c.remember(), m.User
			})
		}
		wg.Wait()
		for i := range n {
			if users[i] != alice {
				t.Errorf("request %d signed in as %q", i, users[i])
			}
			if got[i] != got[0] || got[i] == b.remember() {
				t.Errorf("request %d got cookie %q, request 0 %q (old %q)", i, got[i], got[0], b.remember())
			}
		}
		// The successor works, and its use is no theft.
		e.clock.Add(time.Hour)
		c := comeBack(b)
		c.setRemember(got[0])
		if m, _ := c.whoami(); m.User != alice {
			t.Errorf("the successor signs in %q", m.User)
		}
		if ev := e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft); len(ev) > 0 {
			t.Errorf("theft reported: %+v", ev)
		}
	})
}

// TestReuseAfterGraceIsTheft: the previous cookie after the grace window
// ends the series and every session started from it, and reports theft;
// the user's other sessions, and other users, are untouched.
func TestReuseAfterGraceIsTheft(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice, bob := user("alice"), user("bob")
		e, victim := issued(t, open, nil, alice)
		seriesHandle := e.series(victim.remember()).Handle
		stolen := victim.remember()

		// Another of alice's browsers, signed in by password only, and bob.
		other := e.browser()
		other.login(alice, false)
		bobs := e.browser()
		bobs.login(bob, true)

		thief := comeBack(victim)
		if m, _ := thief.whoami(); m.User != alice {
			t.Fatalf("thief not signed in: %+v", m)
		}
		e.clock.Add(30 * time.Second)
		second := comeBack(victim) // within grace: accepted
		if m, _ := second.whoami(); m.User != alice || second.remember() != thief.remember() {
			t.Fatalf("within grace: %+v, cookie %q want %q", m, second.remember(), thief.remember())
		}

		e.clock.Add(time.Minute) // past the grace window
		late := comeBack(victim)
		m, res := late.whoami()
		if res.code != http.StatusOK || m.User != "" {
			t.Fatalf("after grace: %d %+v, want a guest", res.code, m)
		}
		if late.remember() != "" {
			t.Error("the reused cookie was not cleared")
		}
		if e.series(stolen) != nil {
			t.Error("the series survived the theft")
		}
		for name, br := range map[string]*browser{"thief": thief, "second": second, "issuing session": victim} {
			c := br.clone()
			delete(c.jar, e.rm.CookieName())
			if m, _ := c.whoami(); m.User != "" {
				t.Errorf("%s's session survived the theft", name)
			}
		}
		if m, _ := other.whoami(); m.User != alice {
			t.Error("alice's password session elsewhere was revoked")
		}
		if m, _ := comeBack(bobs).whoami(); m.User != bob {
			t.Error("bob's series was touched")
		}

		ev := e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)
		if len(ev) != 1 || ev[0].Handle != seriesHandle || ev[0].UserID != alice {
			t.Fatalf("theft events %+v, want one with handle %s and user %s", ev, seriesHandle, alice)
		}
		noSecretInEvents(t, e, stolen, thief.remember(), victim.session(), thief.session())
	})
}

// noSecretInEvents checks that no event field carries any part of the
// cookies.
func noSecretInEvents(t *testing.T, e *env, cookies ...string) {
	t.Helper()
	for _, ev := range e.events.all() {
		dump := fmt.Sprintf("%+v", ev)
		for _, ck := range cookies {
			for _, part := range strings.Split(ck, ".") {
				if part != "" && strings.Contains(dump, part) {
					t.Errorf("event %s/%s carries a secret", ev.Kind, ev.Reason)
				}
			}
		}
	}
}

// TestWrongValidatorIsTheft: a known selector with another validator,
// even within the grace window, is theft.
func TestWrongValidatorIsTheft(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		sel, _, _ := strings.Cut(b.remember(), ".")
		forged := comeBack(b)
		forged.setRemember(sel + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32)))
		if m, _ := forged.whoami(); m.User != "" {
			t.Fatalf("a forged validator signed in %q", m.User)
		}
		if e.series(b.remember()) != nil {
			t.Error("the series survived")
		}
		if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 1 {
			t.Error("no theft event")
		}
		if m, _ := comeBack(b).whoami(); m.User != "" {
			t.Error("the real cookie still signs in after the theft")
		}
		if m, _ := b.whoami(); m.User != "" {
			t.Error("the session the series was issued in survived")
		}
	})
}

// TestForgetEndsThisDevice: logout ends this browser's series only.
func TestForgetEndsThisDevice(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, laptop := issued(t, open, nil, alice)
		phone := e.browser()
		phone.login(alice, true)
		laptopCookie := laptop.remember()

		if r := laptop.do("POST", "/logout"); r.code != http.StatusOK {
			t.Fatalf("logout: %d %s", r.code, r.body)
		}
		if laptop.remember() != "" || laptop.session() != "" {
			t.Error("logout left cookies behind")
		}
		if e.series(laptopCookie) != nil {
			t.Error("the laptop's series survived logout")
		}
		replay := laptop.clone()
		replay.setRemember(laptopCookie)
		if m, _ := replay.whoami(); m.User != "" {
			t.Error("the laptop's cookie signs in after logout")
		}
		if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 0 {
			t.Error("a forgotten series reported theft")
		}
		if m, _ := comeBack(phone).whoami(); m.User != alice {
			t.Error("the phone's series ended too")
		}
	})
}

// TestForgetAll ends every series of a user and no one else's.
func TestForgetAll(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice, bob := user("alice"), user("bob")
		e, laptop := issued(t, open, nil, alice)
		phone := e.browser()
		phone.login(alice, true)
		bobs := e.browser()
		bobs.login(bob, true)

		n, err := e.rm.ForgetAll(t.Context(), alice)
		if err != nil || n != 2 {
			t.Fatalf("ForgetAll = %d, %v; want 2", n, err)
		}
		for _, br := range []*browser{laptop, phone} {
			c := comeBack(br)
			if m, _ := c.whoami(); m.User != "" {
				t.Error("a series of alice survived ForgetAll")
			}
			if c.remember() != "" {
				t.Error("the cookie of a forgotten series was not cleared")
			}
		}
		if m, _ := comeBack(bobs).whoami(); m.User != bob {
			t.Error("bob's series ended")
		}
		if n, err := e.rm.ForgetAll(t.Context(), alice); err != nil || n != 0 {
			t.Errorf("second ForgetAll = %d, %v; want 0", n, err)
		}
		// A series issued afterwards is indexed and forgotten as well.
		tablet := e.browser()
		tablet.login(alice, true)
		if n, err := e.rm.ForgetAll(t.Context(), alice); err != nil || n != 1 {
			t.Errorf("ForgetAll after a new series = %d, %v; want 1", n, err)
		}
	})
}

// TestIssueReplacesSeries: a browser holds one series; issuing again ends
// the one it had.
func TestIssueReplacesSeries(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		first := b.remember()
		b.login(alice, true)
		if b.remember() == first {
			t.Fatal("second Issue kept the cookie")
		}
		if e.series(first) != nil {
			t.Error("the first series survived")
		}
		if n, err := e.rm.ForgetAll(t.Context(), alice); err != nil || n != 1 {
			t.Errorf("ForgetAll = %d, %v; want 1", n, err)
		}
	})
}

// TestExpiry: a series lives Lifetime from its last use, never longer than
// MaxLifetime from its start, and an expired one gives a guest and drops
// the cookie.
func TestExpiry(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		const day = 24 * time.Hour
		alice := user("alice")
		e, b := issued(t, open, func(c *remember.Config) { c.Lifetime, c.MaxLifetime = 10*day, 25*day }, alice)
		cookie := b.remember()
		for i := range 3 { // used on days 8, 16 and 24: each use extends
			e.clock.Add(8 * day)
			c := comeBack(b)
			c.setRemember(cookie)
			m, res := c.whoami()
			if m.User != alice {
				t.Fatalf("use %d: not signed in", i+1)
			}
			cookie = c.remember()
			want := int(min(10*day, 25*day-time.Duration(i+1)*8*day) / time.Second)
			if got := res.cookies[e.rm.CookieName()].MaxAge; got != want {
				t.Errorf("use %d: Max-Age %d, want %d", i+1, got, want)
			}
		}
		e.clock.Add(2 * day) // day 26: past MaxLifetime, though used on day 24
		c := comeBack(b)
		c.setRemember(cookie)
		if m, _ := c.whoami(); m.User != "" {
			t.Fatal("signed in past MaxLifetime")
		}
		if c.remember() != "" {
			t.Error("expired cookie not cleared")
		}

		// Idle: unused for Lifetime.
		d := e.browser()
		d.login(alice, true)
		e.clock.Add(10*day + time.Second)
		c = comeBack(d)
		if m, _ := c.whoami(); m.User != "" || c.remember() != "" {
			t.Errorf("idle series: signed in as %q, cookie %q", m.User, c.remember())
		}
		if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 0 {
			t.Error("expiry reported as theft")
		}
	})
}

// TestGarbledCookies: bad cookies give a guest and are dropped, never a
// 500, and never cost the real series.
func TestGarbledCookies(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, b := issued(t, open, nil, alice)
		good := b.remember()
		sel, val, _ := strings.Cut(good, ".")
		name := e.rm.CookieName()
		nonCanonical := sel[:21] + string(sel[21]^1) + "." + val // trailing bits set
		cases := map[string]string{
			"empty":          name + "=",
			"too long":       name + "=" + strings.Repeat(good, 200),
			"bad base64":     name + "=" + strings.Repeat("!", 22) + "." + val,
			"non-canonical":  name + "=" + nonCanonical,
			"padded":         name + "=" + sel + "==." + val,
			"std alphabet":   name + "=+" + sel[1:] + "." + val,
			"missing dot":    name + "=" + sel + val,
			"two dots":       name + "=" + sel + "." + val[:21] + "." + val[22:],
			"NUL":            name + "=" + sel + "." + val[:42] + "\x00",
			"newline inside": name + "=" + sel[:21] + "\n" + "." + val,
			"short":          name + "=" + sel + "." + val[:42],
			"duplicate":      name + "=" + good + "; " + name + "=" + good,
			"quoted":         name + `="` + good + `"`,
		}
		for what, header := range cases {
			c := e.browser()
			req := newRequest("GET", "/me")
			req.Header["Cookie"] = []string{header}
			res := c.send(req)
			if res.code != http.StatusOK || !strings.Contains(res.body, `"user":""`) {
				t.Errorf("%s: %d %q, want 200 and a guest", what, res.code, res.body)
			}
			if ck := res.cookies[name]; ck == nil || ck.MaxAge >= 0 {
				t.Errorf("%s: cookie not cleared: %v", what, ck)
			}
		}
		if len(e.find(hallpass.EventSuspicious, hallpass.ReasonMalformedCookie)) == 0 {
			t.Error("no malformed_cookie event")
		}
		if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 0 {
			t.Error("a garbled cookie was taken for theft")
		}
		if m, _ := comeBack(b).whoami(); m.User != alice {
			t.Error("the real cookie stopped working")
		}
	})
}

// TestUnknownSelector: a well-formed cookie naming no series is a guest
// and is dropped.
func TestUnknownSelector(t *testing.T) {
	clock := start()
	e := newEnv(t, backends[0].open(t, clock), clock, nil)
	b := e.browser()
	b.setRemember(strings.Repeat("A", 22) + "." + strings.Repeat("A", 43))
	if m, res := b.whoami(); res.code != http.StatusOK || m.User != "" || b.remember() != "" {
		t.Errorf("unknown selector: %d %+v cookie %q", res.code, m, b.remember())
	}
}

// TestRequireRefusesRemembered: a remembered session is never fresh.
func TestRequireRefusesRemembered(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		_, b := issued(t, open, nil, user("alice"))
		if r := b.do("GET", "/sensitive"); r.code != http.StatusOK {
			t.Fatalf("password session refused: %d %s", r.code, r.body)
		}
		c := comeBack(b)
		if r := c.do("GET", "/sensitive"); r.code != http.StatusForbidden || !strings.Contains(r.body, "reauth_required") {
			t.Errorf("remembered session: %d %s, want 403 reauth_required", r.code, r.body)
		}
	})
}

// TestStoreDown: a store that fails gives 503 with Retry-After, signs
// nobody in and keeps the cookie; once the store is back, the cookie
// works.
func TestStoreDown(t *testing.T) {
	clock := start()
	path := t.TempDir() + "/s.db"
	st := openSQLite(t, path, clock)
	e := newEnv(t, st, clock, nil)
	b := e.browser()
	alice := user("alice")
	b.login(alice, true)
	cookie := b.remember()
	st.Close()

	c := comeBack(b)
	_, res := c.whoami()
	if res.code != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("store down: %d (Retry-After %q), want 503 with Retry-After", res.code, res.header.Get("Retry-After"))
	}
	if _, ok := res.cookies[e.m.CookieName()]; ok {
		t.Error("a session cookie was sent while the store was down")
	}
	if _, ok := res.cookies[e.rm.CookieName()]; ok || c.remember() != cookie {
		t.Error("the remember-me cookie changed while the store was down")
	}

	e2 := newEnv(t, openSQLite(t, path, clock), clock, nil)
	c2 := e2.browser()
	c2.setRemember(cookie)
	if m, _ := c2.whoami(); m.User != alice {
		t.Errorf("after the store came back: %+v", m)
	}
}

// TestKeyRing: a request in the grace window of a rotation made with a
// previous key is still served, with the same successor.
func TestKeyRing(t *testing.T) {
	clock := start()
	st := backends[0].open(t, clock)
	e := newEnv(t, st, clock, nil)
	b := e.browser()
	alice := user("alice")
	b.login(alice, true)
	first := comeBack(b)
	first.whoami() // rotated with testKey
	newKey := []byte(strings.Repeat("k", 32))

	ring := newEnv(t, st, clock, func(c *remember.Config) { c.Key, c.PreviousKeys = newKey, [][]byte{testKey} })
	c := &browser{e: ring, jar: map[string]string{ring.rm.CookieName(): b.remember()}}
	if m, _ := c.whoami(); m.User != alice || c.remember() != first.remember() {
		t.Errorf("with the old key in the ring: %+v, cookie %q want %q", m, c.remember(), first.remember())
	}

	noRing := newEnv(t, st, clock, func(c *remember.Config) { c.Key = newKey })
	d := &browser{e: noRing, jar: map[string]string{noRing.rm.CookieName(): b.remember()}}
	if m, _ := d.whoami(); m.User != "" {
		t.Errorf("without the old key: signed in %q", m.User)
	}
	if len(noRing.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 0 || e.series(b.remember()) == nil {
		t.Error("a cookie spent under an old key was taken for theft")
	}
}

// TestConfig: New refuses what cannot work, saying what to do.
func TestConfig(t *testing.T) {
	clock := start()
	m, err := hallpass.New(hallpass.Config{Store: backends[0].open(t, clock), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for what, cfg := range map[string]remember.Config{
		"no manager":          {Key: testKey},
		"no key":              {Sessions: m},
		"short key":           {Sessions: m, Key: testKey[:31]},
		"short previous key":  {Sessions: m, Key: testKey, PreviousKeys: [][]byte{[]byte("short")}},
		"insecure __Host-":    {Sessions: m, Key: testKey, Insecure: true, CookieName: "__Host-x"},
		"bad name":            {Sessions: m, Key: testKey, CookieName: "a b"},
		"session cookie name": {Sessions: m, Key: testKey, CookieName: m.CookieName()},
		"lifetime > max":      {Sessions: m, Key: testKey, Lifetime: 2 * time.Hour, MaxLifetime: time.Hour},
		"negative grace":      {Sessions: m, Key: testKey, Grace: -time.Second},
	} {
		if _, err := remember.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", what)
		} else if what == "short key" && !strings.Contains(err.Error(), "/dev/urandom") {
			t.Errorf("short key: %v does not say how to make one", err)
		}
	}
	rm, err := remember.New(remember.Config{Sessions: m, Key: testKey, Insecure: true, Logger: quiet})
	if err != nil || rm.CookieName() != "hallpass-remember" {
		t.Errorf("Insecure: %v, name %q", err, rm.CookieName())
	}
}

// TestForgetOthers: "sign out other devices" ends the other browsers'
// series and keeps this one's.
func TestForgetOthers(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice, bob := user("alice"), user("bob")
		e, laptop := issued(t, open, nil, alice)
		phone, tablet, bobs := e.browser(), e.browser(), e.browser()
		phone.login(alice, true)
		tablet.login(alice, true)
		bobs.login(bob, true)

		if r := laptop.do("POST", "/others"); r.body != "2" {
			t.Fatalf("ForgetOthers ended %q series, want 2", r.body)
		}
		for _, br := range []*browser{phone, tablet} {
			if m, _ := comeBack(br).whoami(); m.User != "" {
				t.Error("another device's series survived ForgetOthers")
			}
		}
		if m, _ := comeBack(laptop).whoami(); m.User != alice {
			t.Error("this device's series ended with the others")
		}
		if m, _ := comeBack(bobs).whoami(); m.User != bob {
			t.Error("bob's series ended")
		}
	})
}

// TestForgetSession: revoking one device ends the series that device's
// session came from, and no other.
func TestForgetSession(t *testing.T) {
	eachStore(t, func(t *testing.T, open opener) {
		alice := user("alice")
		e, laptop := issued(t, open, nil, alice)
		phone := e.browser()
		phone.login(alice, true)
		back := comeBack(phone)
		m, _ := back.whoami() // signed in by the phone's series
		if m.User != alice || m.Series == "" {
			t.Fatalf("the phone did not come back through its series: %+v", m)
		}
		n, err := e.rm.ForgetSession(t.Context(), alice, m.Handle)
		if err != nil || n != 1 {
			t.Fatalf("ForgetSession = %d, %v; want 1", n, err)
		}
		if m, _ := comeBack(back).whoami(); m.User != "" {
			t.Error("the revoked device's series still signs in")
		}
		if m, _ := comeBack(laptop).whoami(); m.User != alice {
			t.Error("another device's series ended")
		}
		if n, err := e.rm.ForgetSession(t.Context(), alice, "no-such-session"); err != nil || n != 0 {
			t.Errorf("ForgetSession of an unknown handle = %d, %v; want 0", n, err)
		}
	})
}

// TestTheftWithSealedSessions: with sessions sealed in cookies there is no
// list of the user's sessions; theft still ends every session the series
// started, by handle.
func TestTheftWithSealedSessions(t *testing.T) {
	clock := start()
	store := memstore.New(&memstore.Options{Now: clock.Now})
	t.Cleanup(func() { store.Close() })
	rev, err := hallpass.NewRevocations(t.Context(), store, &hallpass.RevocationOptions{Now: clock.Now, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rev.Close() })
	key := make([]byte, cookiestore.KeySize)
	rand.Read(key)
	sealer, err := cookiestore.New(key)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, store, clock, func(c *remember.Config) { c.Store = store }, func(c *hallpass.Config) {
		c.Store, c.Sealer, c.Revocations = nil, sealer, rev
	})
	alice := user("alice")
	victim := e.browser()
	victim.login(alice, true)
	thief := comeBack(victim)
	if m, _ := thief.whoami(); m.User != alice {
		t.Fatalf("thief not signed in: %+v", m)
	}
	clock.Add(2 * time.Minute) // past the grace window
	late := comeBack(victim)
	if m, res := late.whoami(); res.code != http.StatusOK || m.User != "" {
		t.Fatalf("after grace: %d %+v, want a guest", res.code, m)
	}
	c := thief.clone()
	delete(c.jar, e.rm.CookieName())
	if m, _ := c.whoami(); m.User != "" {
		t.Error("the thief's sealed session survived the theft")
	}
	if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 1 {
		t.Error("no theft event")
	}
}
