package live_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallpass/hallpass/live"
)

func TestScript(t *testing.T) {
	srv := httptest.NewServer(live.Script())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/hallpass-live.js")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	js := string(b)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for h, want := range map[string]string{
		"Content-Type":           "text/javascript; charset=utf-8",
		"Cache-Control":          "no-cache",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	etag := res.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
		t.Errorf("ETag = %q, want a strong one", etag)
	}

	// What the package documentation promises, the script reads.
	for _, s := range []string{
		`"status-url"`, `"extend-url"`, `"events-url"`, `"login-url"`, `"warn-before"`, `"data-" + name`,
		`meta[name="csrf-token"]`, `"X-CSRF-Token"`, `"Hallpass-Background": "1"`,
		`new BroadcastChannel("hallpass")`, `"storage"`, `new EventSource(`, `"ended"`,
		`"dialog"`, `showModal()`, `"cancel"`, `"hallpass-dialog"`, `"hallpass-stay"`, `"hallpass-close"`,
		`"ended", reason`, `"next"`, `[data-hallpass-signout]`, `document.currentScript`,
		`"extend"`, `"signout"`, `"signin"`,
	} {
		if !strings.Contains(js, s) {
			t.Errorf("the script does not contain %s", s)
		}
	}
	// Nothing a strict CSP refuses, nothing that parses HTML.
	for _, s := range []string{"eval(", "new Function", "innerHTML", "setAttribute(\"style\"", ".style.", "document.write"} {
		if strings.Contains(js, s) {
			t.Errorf("the script contains %s", s)
		}
	}
	if strings.Count(js, "{") != strings.Count(js, "}") || strings.Count(js, "(") != strings.Count(js, ")") {
		t.Error("unbalanced braces or parentheses")
	}

	// Revalidation costs nothing until the script changes.
	req, _ := http.NewRequest("GET", srv.URL+"/hallpass-live.js", nil)
	req.Header.Set("If-None-Match", etag)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", res.StatusCode)
	}
	res, err = http.Post(srv.URL+"/hallpass-live.js", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", res.StatusCode)
	}
}

// TestScriptSyntax has node check the script's syntax where node is
// installed; browser tests run it for real.
func TestScriptSyntax(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	srv := httptest.NewServer(live.Script())
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	path := filepath.Join(t.TempDir(), "live.js")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(node, "--check", path).CombinedOutput(); err != nil {
		t.Errorf("node --check: %v\n%s", err, out)
	}
}
