package hallpass

import (
	"strconv"
	"testing"
	"time"
)

func TestFloodGuardWindowAndBound(t *testing.T) {
	g := newFloodGuard(3, 100)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var firsts int
	for i := 1; i <= 6; i++ {
		over, first := g.hit("198.51.100.1", t0.Add(time.Duration(i)*time.Second))
		if over != (i > 3) {
			t.Fatalf("hit %d: over=%v", i, over)
		}
		if first {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d first-over reports in one window, want 1", firsts)
	}
	if over, _ := g.hit("198.51.100.1", t0.Add(floodWindow+2*time.Second)); over {
		t.Fatal("count did not reset with a new window")
	}
	// Spraying addresses cannot grow the table past its bound.
	for i := range 1000 {
		g.hit("10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256), t0.Add(time.Minute+4*time.Second))
	}
	if n := len(g.entries); n > 100 {
		t.Fatalf("table grew to %d entries, bound 100", n)
	}
}

func TestBrowserFamily(t *testing.T) {
	for ua, want := range map[string]string{
		"Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0":                                                    "firefox",
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36":                         "chrome",
		"Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36 Edg/128.0":                 "edge",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15":        "safari",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/128.0 Mobile/15E148": "chrome",
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0 Safari/537.36 OPR/112.0":               "opera",
		"curl/8.5.0": "curl",
		"":           "",
	} {
		if got := BrowserFamily(ua); got != want {
			t.Errorf("BrowserFamily(%q) = %q, want %q", ua, got, want)
		}
	}
}
