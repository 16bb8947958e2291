// Package secure enforces HTTPS for a hallpass application and decides,
// in one place, which client address and scheme a request really has.
//
// Its Handler redirects plain-HTTP requests to HTTPS and adds
// Strict-Transport-Security to HTTPS responses. X-Forwarded-For and
// X-Forwarded-Proto are honoured only from the proxies listed in
// Options.TrustedProxies, never by default: anyone can send those headers.
// Pass Policy.ClientIP as hallpass.Config.ClientIP so that sessions and
// events record the same address.
//
//	pol, err := secure.New(&secure.Options{TrustedProxies: []string{"10.0.0.0/8"}})
//	m, err := hallpass.New(hallpass.Config{Store: st, ClientIP: pol.ClientIP})
//	http.ListenAndServe(addr, pol.Handler(m.Handler(mux)))
//
// Requests to loopback hosts (localhost, 127.0.0.1, [::1]) are not
// redirected, so local development over http://localhost keeps working;
// browsers treat those hosts as secure contexts.
package secure

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hallpass/hallpass"
)

// DefaultHSTSMaxAge is two years, the value the HSTS preload list asks for.
const DefaultHSTSMaxAge = 2 * 365 * 24 * time.Hour

// Options configures a Policy. The zero value redirects to HTTPS, sends
// HSTS for two years, and trusts no proxy.
type Options struct {
	// HSTSMaxAge is the Strict-Transport-Security max-age. Default two
	// years. Negative disables HSTS.
	HSTSMaxAge time.Duration
	// HSTSIncludeSubdomains and HSTSPreload add those directives. Both
	// bind every subdomain for the whole max-age: opt in knowingly.
	HSTSIncludeSubdomains bool
	HSTSPreload           bool

	// AllowHTTP serves plain-HTTP requests instead of redirecting them:
	// for an app whose TLS ends at a proxy that is not in TrustedProxies.
	// Session cookies stay Secure, so this rarely does what you want.
	AllowHTTP bool
	// HTTPSPort is the port redirects point to. Default 443 (no port in
	// the URL).
	HTTPSPort int

	// TrustedProxies lists the addresses or CIDR prefixes of the reverse
	// proxies in front of the app ("10.0.0.7", "10.0.0.0/8", "::1/128").
	// Only requests arriving from them may set X-Forwarded-For and
	// X-Forwarded-Proto.
	TrustedProxies []string
}

// Policy is the compiled form of Options. It is safe for concurrent use.
type Policy struct {
	hsts      string
	allowHTTP bool
	port      string
	trusted   []netip.Prefix
}

// New checks opts and returns a Policy. A nil opts means the defaults.
func New(opts *Options) (*Policy, error) {
	if opts == nil {
		opts = &Options{}
	}
	p := &Policy{allowHTTP: opts.AllowHTTP}
	if opts.HTTPSPort < 0 || opts.HTTPSPort > 65535 {
		return nil, fmt.Errorf("secure: HTTPSPort %d is not a port", opts.HTTPSPort)
	}
	if opts.HTTPSPort != 0 && opts.HTTPSPort != 443 {
		p.port = strconv.Itoa(opts.HTTPSPort)
	}
	if age := opts.HSTSMaxAge; age >= 0 {
		if age == 0 {
			age = DefaultHSTSMaxAge
		}
		if opts.HSTSPreload && (age < 365*24*time.Hour || !opts.HSTSIncludeSubdomains) {
			return nil, errors.New("secure: HSTS preload needs a max-age of at least a year and HSTSIncludeSubdomains")
		}
		p.hsts = "max-age=" + strconv.FormatInt(int64(age/time.Second), 10)
		if opts.HSTSIncludeSubdomains {
			p.hsts += "; includeSubDomains"
		}
		if opts.HSTSPreload {
			p.hsts += "; preload"
		}
	}
	for _, s := range opts.TrustedProxies {
		pfx, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("secure: TrustedProxies: %q is neither an IP address nor a CIDR prefix", s)
		}
		p.trusted = append(p.trusted, pfx)
	}
	return p, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		return pfx.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Handler redirects plain-HTTP requests to HTTPS (308, so a POST stays a
// POST) and adds HSTS to responses sent over HTTPS.
func (p *Policy) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case p.IsHTTPS(r):
			if p.hsts != "" {
				w.Header().Set("Strict-Transport-Security", p.hsts)
			}
		case !p.allowHTTP && !hallpass.LoopbackHost(r.Host):
			p.redirect(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RedirectHandler answers every request with a redirect to HTTPS, for a
// plain listener that only redirects (":80").
func (p *Policy) RedirectHandler() http.Handler {
	return http.HandlerFunc(p.redirect)
}

func (p *Policy) redirect(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	// Anything that could end the authority part ("/", "?", "#", "\\")
	// or add credentials ("@") would let the Host header reshape the URL.
	if host == "" || strings.ContainsAny(host, "/\\@?# \t\r\n") {
		http.Error(w, "HTTPS required; the request names no valid host", http.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") { // IPv6 literal without its brackets
		host = "[" + strings.Trim(host, "[]") + "]"
	}
	if p.port != "" {
		host += ":" + p.port
	}
	target := "https://" + host + r.URL.RequestURI()
	w.Header().Set("Connection", "close")
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
}

// IsHTTPS reports whether the client's connection uses TLS: the request's
// own, or X-Forwarded-Proto when it comes from a trusted proxy.
func (p *Policy) IsHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if !p.fromTrusted(r) {
		return false
	}
	// Only the value the trusted proxy wrote counts: the last one. A
	// proxy that appends instead of overwriting leaves whatever the
	// client sent in front of it, so the first value can be forged.
	vals := r.Header.Values("X-Forwarded-Proto")
	if len(vals) == 0 {
		return false
	}
	proto := vals[len(vals)-1]
	if i := strings.LastIndexByte(proto, ','); i >= 0 {
		proto = proto[i+1:]
	}
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}

// ClientIP returns the client's address: the connection's peer, or, when
// that is a trusted proxy, the nearest address in X-Forwarded-For that is
// not a trusted proxy. Its signature fits hallpass.Config.ClientIP.
func (p *Policy) ClientIP(r *http.Request) string {
	peer, ok := remoteAddr(r)
	if !ok {
		return r.RemoteAddr
	}
	if !p.trustedAddr(peer) {
		return peer.String()
	}
	// Walk from the nearest hop outwards: entries left of an untrusted
	// hop were written by someone we cannot vouch for.
	hops := r.Header.Values("X-Forwarded-For")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		list := hops[i]
		for list != "" {
			var hop string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				hop, list = list[j+1:], list[:j]
			} else {
				hop, list = list, ""
			}
			a, ok := parseHop(hop)
			if !ok {
				return client.String()
			}
			client = a
			if !p.trustedAddr(a) {
				return a.String()
			}
		}
	}
	return client.String()
}

// parseHop reads one X-Forwarded-For entry: an address, possibly with a
// port, possibly bracketed.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func remoteAddr(r *http.Request) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(r.RemoteAddr)
	return a.Unmap(), err == nil
}

func (p *Policy) fromTrusted(r *http.Request) bool {
	a, ok := remoteAddr(r)
	return ok && p.trustedAddr(a)
}

func (p *Policy) trustedAddr(a netip.Addr) bool {
	for _, pfx := range p.trusted {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}
