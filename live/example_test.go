package live_test

import (
	"fmt"
	"html/template"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/csrf"
	"github.com/hallpass/hallpass/live"
	"github.com/hallpass/hallpass/store/memstore"
)

// The page's <head>: the CSRF token for "stay signed in", and the script
// with its configuration. No inline code: script-src 'self' is enough.
var head = template.Must(template.New("head").Parse(`{{.CSRF}}
<script src="/hallpass-live.js" defer data-status-url="/session" data-extend-url="/session/extend" data-events-url="/session/events" data-login-url="/login" data-warn-before="120"></script>
`))

func Example() {
	store := memstore.New(nil)
	defer store.Close()
	bc, _ := hallpass.Store(store).(hallpass.Broadcaster) // nil: memstore serves one process
	hub := live.NewHub(bc, nil)
	defer hub.Close()
	m, err := hallpass.New(hallpass.Config{Store: store, Events: hallpass.Sinks{hallpass.SlogSink{}, hub}})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /hallpass-live.js", live.Script())
	mux.Handle("GET /session", m.StatusHandler())
	mux.Handle("POST /session/extend", m.ExtendHandler())
	mux.Handle("GET /session/events", hub.Handler(m))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// script-src for the script, connect-src for its fetch and EventSource.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'")
		head.Execute(w, struct{ CSRF template.HTML }{csrf.MetaTag(r)})
	})
	srv := httptest.NewServer(m.Handler(csrf.New(nil).Handler(mux)))
	defer srv.Close()

	res, err := http.Get(srv.URL + "/hallpass-live.js")
	if err != nil {
		log.Fatal(err)
	}
	res.Body.Close()
	fmt.Println(res.Status, res.Header.Get("Content-Type"))
	res, err = http.Get(srv.URL + "/session/events") // no session: refused
	if err != nil {
		log.Fatal(err)
	}
	res.Body.Close()
	fmt.Println(res.Status)
	// Output:
	// 200 OK text/javascript; charset=utf-8
	// 401 Unauthorized
}
