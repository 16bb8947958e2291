package remember_test

import (
	"encoding/base64"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/remember"
	"github.com/hallpass/hallpass/store/memstore"
)

func Example() {
	store := memstore.New(nil)
	defer store.Close()
	m, err := hallpass.New(hallpass.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}
	// The key comes from the app's secrets: 32 random bytes, base64, the
	// same on every instance (head -c 32 /dev/urandom | base64).
	key, err := base64.StdEncoding.DecodeString(os.Getenv("REMEMBER_KEY"))
	if err != nil || len(key) == 0 {
		key = []byte("example key, never use a fixed one!") // for this example only
	}
	rm, err := remember.New(remember.Config{Sessions: m, Key: key})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		// ... check the password first ...
		keep := r.FormValue("remember") == "on"
		if err := hallpass.FromRequest(r).Login("alice", hallpass.LoginOptions{Persistent: keep}); err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		if keep {
			if err := rm.Issue(w, r); err != nil {
				log.Print(err) // signed in all the same, just not remembered
			}
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := rm.Forget(w, r); err != nil {
			log.Print(err) // the cookie is gone; the series will expire
		}
		if err := hallpass.FromRequest(r).Logout(); err != nil {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		a := hallpass.FromRequest(r).Auth()
		fmt.Fprintf(w, "user %q, level %s", a.UserID, a.Level)
	})
	// Remember's Handler runs inside the Manager's: it signs in requests
	// whose session has no user.
	handler := m.Handler(rm.Handler(mux))

	// Sign in with the box ticked, and keep only the remember-me cookie,
	// as a browser does after a restart.
	login := httptest.NewRecorder()
	handler.ServeHTTP(login, httptest.NewRequest("POST", "https://localhost/login?remember=on", nil))
	var remembered *http.Cookie
	for _, c := range login.Result().Cookies() {
		if c.Name == rm.CookieName() {
			remembered = c
		}
	}

	later := httptest.NewRequest("GET", "https://localhost/", nil)
	later.AddCookie(remembered)
	page := httptest.NewRecorder()
	handler.ServeHTTP(page, later)
	fmt.Println(page.Body.String())
	// Output:
	// user "alice", level remembered
}
