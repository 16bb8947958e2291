package csrf_test

import (
	"fmt"
	"html/template"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/csrf"
	"github.com/hallpass/hallpass/store/memstore"
)

// The page template is parsed once; each request passes its own hidden
// field in the view data.
var commentPage = template.Must(template.New("comment").Parse(`<form method="post" action="/comment">
  {{.CSRFField}}
  <textarea name="text"></textarea>
  <button>Send</button>
</form>`))

type commentView struct {
	CSRFField template.HTML
}

func Example() {
	store := memstore.New(nil)
	defer store.Close()
	m, err := hallpass.New(hallpass.Config{Store: store})
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /comment", func(w http.ResponseWriter, r *http.Request) {
		// Field may write the session's first secret, so get it before
		// the template writes anything.
		view := commentView{CSRFField: csrf.Field(r)}
		if err := commentPage.Execute(w, view); err != nil {
			log.Print(err)
		}
	})
	mux.HandleFunc("POST /comment", func(w http.ResponseWriter, r *http.Request) {
		// Only requests with a valid token get here.
		fmt.Fprintf(w, "thanks for %q", r.PostFormValue("text"))
	})

	// The session middleware goes outside: the CSRF check reads the
	// session's secret.
	handler := m.Handler(csrf.New(nil).Handler(mux))

	// What a browser does: load the form, then post it.
	page := httptest.NewRecorder()
	handler.ServeHTTP(page, httptest.NewRequest("GET", "http://localhost/comment", nil))
	cookie := page.Result().Cookies()[0]
	token := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindStringSubmatch(page.Body.String())[1]

	post := func(form url.Values) {
		req := httptest.NewRequest("POST", "http://localhost/comment", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(cookie)
		res := httptest.NewRecorder()
		handler.ServeHTTP(res, req)
		fmt.Println(res.Code, res.Body.String())
	}
	post(url.Values{"csrf_token": {token}, "text": {"hello"}})
	post(url.Values{"text": {"forged"}})
	// Output:
	// 200 thanks for "hello"
	// 403 Forbidden: the request failed the CSRF check (missing_token). Reload the page and try again.
}
