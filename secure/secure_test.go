package secure

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })

func mustNew(t *testing.T, o *Options) *Policy {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRedirectsPlainHTTP(t *testing.T) {
	p := mustNew(t, nil)
	cases := []struct {
		method, url, want string
	}{
		{"GET", "http://shop.example/cart?x=1", "https://shop.example/cart?x=1"},
		{"POST", "http://shop.example:8080/login", "https://shop.example/login"},
		{"GET", "http://[2001:db8::1]:80/a", "https://[2001:db8::1]/a"},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		p.Handler(ok).ServeHTTP(rec, httptest.NewRequest(c.method, c.url, nil))
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != c.want {
			t.Errorf("%s %s: %d to %q, want 308 to %q", c.method, c.url, rec.Code, rec.Header().Get("Location"), c.want)
		}
		if rec.Header().Get("Strict-Transport-Security") != "" {
			t.Errorf("HSTS sent over plain HTTP")
		}
	}
	p8443 := mustNew(t, &Options{HTTPSPort: 8443})
	rec := httptest.NewRecorder()
	p8443.RedirectHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://shop.example:8080/x", nil))
	if got := rec.Header().Get("Location"); got != "https://shop.example:8443/x" {
		t.Errorf("redirect with port: %q", got)
	}
	for _, host := range []string{"evil.example/@shop", "evil.example?shop", "evil.example#shop", "user@evil.example"} {
		bad := httptest.NewRequest("GET", "http://shop.example/", nil)
		bad.Host = host
		rec = httptest.NewRecorder()
		p.Handler(ok).ServeHTTP(rec, bad)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("Host %q: %d to %q, want 400", host, rec.Code, rec.Header().Get("Location"))
		}
	}
}

func TestLoopbackIsNotRedirected(t *testing.T) {
	p := mustNew(t, nil)
	for _, host := range []string{"localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost", "LOCALHOST."} {
		req := httptest.NewRequest("GET", "http://x/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		p.Handler(ok).ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Errorf("%s: %d, want served", host, rec.Code)
		}
	}
}

func TestHSTS(t *testing.T) {
	req := httptest.NewRequest("GET", "https://shop.example/", nil)
	req.TLS = &tls.ConnectionState{}
	for _, c := range []struct {
		o    *Options
		want string
	}{
		{nil, "max-age=63072000"},
		{&Options{HSTSMaxAge: time.Hour, HSTSIncludeSubdomains: true}, "max-age=3600; includeSubDomains"},
		{&Options{HSTSIncludeSubdomains: true, HSTSPreload: true}, "max-age=63072000; includeSubDomains; preload"},
		{&Options{HSTSMaxAge: -1}, ""},
	} {
		rec := httptest.NewRecorder()
		mustNew(t, c.o).Handler(ok).ServeHTTP(rec, req)
		if got := rec.Header().Get("Strict-Transport-Security"); got != c.want || rec.Code != 200 {
			t.Errorf("%+v: HSTS %q, want %q", c.o, got, c.want)
		}
	}
	if _, err := New(&Options{HSTSPreload: true}); err == nil {
		t.Error("preload without includeSubDomains accepted")
	}
}

func TestForwardedProtoOnlyFromTrustedProxies(t *testing.T) {
	p := mustNew(t, &Options{TrustedProxies: []string{"10.0.0.0/8"}})
	req := func(remote string) *http.Request {
		r := httptest.NewRequest("GET", "http://shop.example/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-Proto", "https")
		return r
	}
	if !p.IsHTTPS(req("10.1.2.3:5555")) {
		t.Error("trusted proxy's X-Forwarded-Proto ignored")
	}
	if p.IsHTTPS(req("203.0.113.5:5555")) {
		t.Error("X-Forwarded-Proto honoured from an untrusted peer")
	}
	if mustNew(t, nil).IsHTTPS(req("10.1.2.3:5555")) {
		t.Error("X-Forwarded-Proto honoured with no trusted proxies")
	}
	rec := httptest.NewRecorder()
	p.Handler(ok).ServeHTTP(rec, req("203.0.113.5:5555"))
	if rec.Code != http.StatusPermanentRedirect {
		t.Error("spoofed X-Forwarded-Proto avoided the redirect")
	}
	// A trusted proxy that appends: the client's own value comes first and
	// must not count; only the proxy's (the last) does.
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{[]string{"https, http"}, false},
		{[]string{"https", "http"}, false},
		{[]string{"http, https"}, true},
		{[]string{"http", "https"}, true},
	} {
		r := req("10.1.2.3:5555")
		r.Header["X-Forwarded-Proto"] = tc.header
		if got := p.IsHTTPS(r); got != tc.want {
			t.Errorf("X-Forwarded-Proto %q through an appending proxy: IsHTTPS = %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestClientIP(t *testing.T) {
	p := mustNew(t, &Options{TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.1"}})
	cases := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"no header", "198.51.100.7:1234", nil, "198.51.100.7"},
		{"untrusted peer ignores header", "198.51.100.7:1234", []string{"1.2.3.4"}, "198.51.100.7"},
		{"one proxy", "10.0.0.5:1234", []string{"203.0.113.9"}, "203.0.113.9"},
		{"spoofed left entries", "10.0.0.5:1234", []string{"6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"chain of proxies", "10.0.0.5:1234", []string{"203.0.113.9, 10.9.9.9, 192.0.2.1"}, "203.0.113.9"},
		{"several header lines", "10.0.0.5:1234", []string{"6.6.6.6", "203.0.113.9, 10.1.1.1"}, "203.0.113.9"},
		{"all trusted", "10.0.0.5:1234", []string{"10.2.2.2"}, "10.2.2.2"},
		{"ipv6 with port", "[2001:db8:ffff::1]:443", []string{"[2001:db8::7]:5555"}, "2001:db8::7"},
		{"mapped ipv4 peer", "[::ffff:10.0.0.5]:1234", []string{"203.0.113.9"}, "203.0.113.9"},
		{"garbage stops the walk", "10.0.0.5:1234", []string{"203.0.113.9, garbage, 10.1.1.1"}, "10.1.1.1"},
		{"empty entry", "10.0.0.5:1234", []string{""}, "10.0.0.5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := p.ClientIP(r); got != c.want {
				t.Fatalf("ClientIP = %q, want %q", got, c.want)
			}
		})
	}
	if _, err := New(&Options{TrustedProxies: []string{"not-an-ip"}}); err == nil || !strings.Contains(err.Error(), "not-an-ip") {
		t.Fatalf("bad proxy: %v", err)
	}
}

// FuzzClientIP checks that any X-Forwarded-For neither panics nor yields
// anything but the peer or an address the header names, and that without
// trusted proxies the header is never believed.
func FuzzClientIP(f *testing.F) {
	f.Add("203.0.113.9")
	f.Add("6.6.6.6, 203.0.113.9, 10.1.1.1")
	f.Add("[2001:db8::7]:5555,,, ,")
	f.Add("fe80::1%eth0, 10.0.0.1")
	trusting := mustNewF(f, &Options{TrustedProxies: []string{"10.0.0.0/8"}})
	trustless := mustNewF(f, nil)
	f.Fuzz(func(t *testing.T, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.0.0.5:1234"
		r.Header.Set("X-Forwarded-For", xff)
		if got := trustless.ClientIP(r); got != "10.0.0.5" {
			t.Fatalf("header believed without trusted proxies: %q", got)
		}
		got := trusting.ClientIP(r)
		if got == "10.0.0.5" {
			return
		}
		for _, hop := range strings.Split(xff, ",") {
			if h, ok := parseHop(hop); ok && h.String() == got {
				return
			}
		}
		t.Fatalf("ClientIP %q is neither the peer nor an entry of %q", got, xff)
	})
}

func mustNewF(f *testing.F, o *Options) *Policy {
	p, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	return p
}
