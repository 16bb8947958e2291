package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// TestStores walks sign-up, logout and a replayed cookie with sessions in
// each store -store can name.
func TestStores(t *testing.T) {
	specs := map[string]func(t *testing.T) string{
		"memory":   func(*testing.T) string { return "memory" },
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "sessions.db") },
		"redis":    func(t *testing.T) string { return storetest.ServiceURL(t, "HALLPASS_TEST_REDIS_URL") },
		"postgres": func(t *testing.T) string { return storetest.ServiceURL(t, "HALLPASS_TEST_POSTGRES_URL") },
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			e := newEnvStore(t, spec(t))
			c := e.client()
			user := "u" + strings.ToLower(hallpass.NewHandle()[:12])
			user = strings.NewReplacer("-", "x", "_", "y").Replace(user)
			wantRedirectHome(t, c.signup(user, "correct horse"))
			wantBody(t, c.get("/"), "Signed in as "+user)
			old := c.sessionCookie()
			wantRedirectHome(t, c.post("/logout", nil))
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/", nil)
			req.Header.Set("Cookie", cookieName+"="+old)
			r := e.client().do(req)
			wantBody(t, r, "Guest")
			wantNoBody(t, r, "Signed in as")
		})
	}
}

func TestOpenStoreRejectsUnknownAndRedacts(t *testing.T) {
	_, err := openStore(t.Context(), "mysql://admin:hunter2@db.example/x", nil)
	if err == nil {
		t.Fatal("unknown store scheme accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error reveals the password: %v", err)
	}
	for spec, want := range map[string]string{
		"redis://:s3cret@127.0.0.1:6379/0":                 "127.0.0.1:6379/0",
		"postgres://h/db?password=secret":                  "postgres://h/db",
		"postgres://u:secret@h/db?sslmode=disable":         "sslmode=disable",
		"postgres://u@h/db?password=secret&sslmode=verify": "sslmode=verify",
		"postgres://u:sec%zzret@h/db?password=secret":      "h/db", // unparsable
	} {
		got := redact(spec)
		if strings.Contains(got, "secret") || strings.Contains(got, "s3cret") || strings.Contains(got, "sec") || !strings.Contains(got, want) {
			t.Errorf("redact(%q) = %q; want no password, with %q", spec, got, want)
		}
	}
	for _, spec := range []string{"", "memory", "/var/lib/sessions.db"} {
		if got := redact(spec); got != spec {
			t.Errorf("redact(%q) = %q; want it unchanged", spec, got)
		}
	}
}
