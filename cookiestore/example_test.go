package cookiestore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/cookiestore"
	"github.com/hallpass/hallpass/store/memstore"
)

// Sessions sealed in their cookies: the handler is the same as with a
// server-side store. The store here only holds the revocation list; with
// several instances, use the Redis or PostgreSQL store they share.
func Example() {
	ctx := context.Background()
	st := memstore.New(nil)
	defer st.Close()
	rev, err := hallpass.NewRevocations(ctx, st, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer rev.Close()

	key := make([]byte, cookiestore.KeySize) // in production: loaded from a secret store
	rand.Read(key)
	sealer, err := cookiestore.New(key)
	if err != nil {
		log.Fatal(err)
	}
	m, err := hallpass.New(hallpass.Config{Sealer: sealer, Revocations: rev})
	if err != nil {
		log.Fatal(err)
	}

	visits := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := hallpass.FromRequest(r)
		n, _ := hallpass.Get[int](s, "visits")
		s.Set("visits", n+1)
		fmt.Fprintf(w, "visit %d", n+1)
	}))

	var cookie *http.Cookie
	for range 3 {
		req := httptest.NewRequest("GET", "https://localhost/", nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		visits.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		fmt.Println(string(body))
		cookie = rec.Result().Cookies()[0]
	}
	fmt.Println("sessions on the server:", st.Len())
	// Output:
	// visit 1
	// visit 2
	// visit 3
	// sessions on the server: 0
}
