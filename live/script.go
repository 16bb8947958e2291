package live

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"time"
)

//go:embed live.js
var script []byte

// scriptETag is a strong validator: it changes exactly when the script
// does.
var scriptETag = func() string {
	sum := sha256.Sum256(script)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}()

// Script returns a handler that serves the embedded script for GET and
// HEAD, as text/javascript. It is sent with "Cache-Control: no-cache" and
// a strong ETag: browsers keep it but ask each time whether it changed,
// and get 304 Not Modified until an upgrade of this package changes it,
// so the URL needs no version in it.
func Script() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("ETag", scriptETag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(script))
	})
}
