package hallpass

import (
	"errors"
	"net/http"
	"strings"
	"time"
)

// Cookie sets the session cookie. The zero value is the hardened default:
// HttpOnly, Secure, SameSite=Lax, Path=/, no Domain, named
// "__Host-hallpass". Browsers accept Secure and __Host- cookies from
// http://localhost and http://127.0.0.1, so the default works in local
// development too. Each weakening is a field of its own, off by default.
type Cookie struct {
	// Name defaults to "__Host-hallpass"; to "__Secure-hallpass" when
	// Domain or Path is set (the __Host- prefix forbids them); to
	// "hallpass" when Insecure is set.
	Name string
	// Domain shares the cookie with subdomains. Default: none (host-only).
	Domain string
	// Path defaults to "/".
	Path string
	// SameSite defaults to http.SameSiteLaxMode.
	SameSite http.SameSite
	// Insecure omits the Secure attribute, for apps served over plain
	// HTTP on a host other than localhost. Anyone on the network path can
	// then read the cookie. New logs a warning when it is set.
	Insecure bool
	// ScriptVisible omits HttpOnly, letting page scripts read the token.
	// Almost never what you want: an XSS bug then leaks every session.
	ScriptVisible bool
}

// maxCookieAge is the longest Max-Age browsers honour (RFC 6265bis).
const maxCookieAge = 400 * 24 * time.Hour

func (c Cookie) resolve() (Cookie, error) {
	if c.Path == "" {
		c.Path = "/"
	}
	if c.SameSite == 0 || c.SameSite == http.SameSiteDefaultMode {
		c.SameSite = http.SameSiteLaxMode
	}
	if c.Name == "" {
		switch {
		case c.Insecure:
			c.Name = "hallpass"
		case c.Domain != "" || c.Path != "/":
			c.Name = "__Secure-hallpass"
		default:
			c.Name = "__Host-hallpass"
		}
	}
	if !validCookieName(c.Name) {
		return c, errors.New("hallpass: Cookie.Name must be a non-empty HTTP token (letters, digits, and !#$%&'*+-.^_`|~)")
	}
	lower := strings.ToLower(c.Name)
	switch {
	case strings.HasPrefix(lower, "__host-") && (c.Domain != "" || c.Path != "/" || c.Insecure):
		return c, errors.New("hallpass: a __Host- cookie needs Secure, Path=/ and no Domain; rename the cookie or drop Domain/Path/Insecure")
	case strings.HasPrefix(lower, "__secure-") && c.Insecure:
		return c, errors.New("hallpass: a __Secure- cookie needs Secure; rename the cookie or drop Insecure")
	case c.SameSite == http.SameSiteNoneMode && c.Insecure:
		return c, errors.New("hallpass: SameSite=None needs Secure; drop Insecure")
	}
	return c, nil
}

func validCookieName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// ReadCookie returns the value of the first cookie called name in h and
// how many cookies had that name, so that a caller can refuse duplicates
// (cookie tossing). It walks the header in place: r.Cookies allocates
// every cookie of the request and silently drops values it finds
// invalid, where a garbled cookie must be seen to be dropped.
func ReadCookie(h http.Header, name string) (value string, n int) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || strings.TrimSpace(k) != name {
				continue
			}
			if n++; n == 1 {
				value = v
			}
		}
	}
	return value, n
}

// setCookie writes the session cookie with token. A persistent session's
// cookie lives until expires (capped at what browsers honour); any other
// lasts the browser session.
func (m *Manager) setCookie(w http.ResponseWriter, token string, persistent bool, expires, now time.Time) {
	c := m.baseCookie()
	c.Value = token
	if persistent {
		age := min(expires.Sub(now), maxCookieAge)
		secs := int((age + time.Second - 1) / time.Second)
		if secs <= 0 {
			m.clearCookie(w)
			return
		}
		c.MaxAge = secs
	}
	http.SetCookie(w, &c)
}

// clearCookie tells the browser to drop the session cookie.
func (m *Manager) clearCookie(w http.ResponseWriter) {
	c := m.baseCookie()
	c.MaxAge = -1
	http.SetCookie(w, &c)
}

func (m *Manager) baseCookie() http.Cookie {
	return http.Cookie{
		Name:     m.cookie.Name,
		Path:     m.cookie.Path,
		Domain:   m.cookie.Domain,
		Secure:   !m.cookie.Insecure,
		HttpOnly: !m.cookie.ScriptVisible,
		SameSite: m.cookie.SameSite,
	}
}
