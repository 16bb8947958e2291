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
