package remember_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// TestServerDown cuts the connection to a real Redis or PostgreSQL: a
// remember-me sign-in fails closed with 503, changes no cookie, and works
// again by itself once the server is reachable.
func TestServerDown(t *testing.T) {
	for _, c := range []struct {
		name, env string
		open      func(t *testing.T, url string, clock *storetest.Clock) hallpass.Store
	}{
		{"redisstore", "HALLPASS_TEST_REDIS_URL", openRedis},
		{"pgstore", "HALLPASS_TEST_POSTGRES_URL", openPostgres},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, err := url.Parse(storetest.ServiceURL(t, c.env))
			if err != nil {
				t.Fatal(err)
			}
			p := storetest.NewProxy(t, u.Host)
			u.Host = p.Addr()
			clock := start()
			e := newEnv(t, c.open(t, u.String(), clock), clock, nil)
			b := e.browser()
			alice := user("alice")
			b.login(alice, true)
			cookie := b.remember()

			p.Cut()
			for range 3 {
				d := comeBack(b)
				_, res := d.whoami()
				if res.code != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
					t.Fatalf("server cut: %d (Retry-After %q), want 503 with Retry-After", res.code, res.header.Get("Retry-After"))
				}
				if len(res.cookies) != 0 {
					t.Fatalf("server cut: cookies sent: %v", res.cookies)
				}
			}
			p.Restore()

			deadline := time.Now().Add(10 * time.Second)
			for {
				d := comeBack(b)
				d.setRemember(cookie)
				m, res := d.whoami()
				if m.User == alice {
					break
				}
				if res.code != http.StatusServiceUnavailable || time.Now().After(deadline) {
					t.Fatalf("after restore: %d %+v", res.code, m)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(e.find(hallpass.EventSuspicious, hallpass.ReasonRememberTheft)) != 0 {
				t.Error("the outage was taken for theft")
			}
		})
	}
}
