package broadcast

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	for _, ok := range []string{
		`{"topic":"x"}`,
		`"` + strings.Repeat("ü", (MaxMessage-2)/2) + `"`,
		`1`,
	} {
		if err := Check([]byte(ok)); err != nil {
			t.Errorf("Check(%.20q): %v", ok, err)
		}
	}
	for name, bad := range map[string][]byte{
		"empty":        nil,
		"too long":     []byte(`"` + strings.Repeat("x", MaxMessage-1) + `"`),
		"NUL":          []byte("{\"a\":\"\x00\"}"),
		"invalid UTF8": []byte("\"\xff\""),
		"not JSON":     []byte("hello"),
	} {
		if err := Check(bad); !errors.Is(err, ErrMessage) {
			t.Errorf("Check of a %s message: %v, want ErrMessage", name, err)
		}
	}
}

// recorder is an fn that keeps what it gets and can be held.
type recorder struct {
	got     chan []byte
	entered chan struct{} // a call began
	hold    chan struct{}
}

func (r *recorder) fn(msg []byte) {
	r.entered <- struct{}{}
	<-r.hold
	r.got <- msg
}

// busy pushes msg and returns once fn holds it, so that what is pushed
// next waits in the queue.
func (r *recorder) busy(t *testing.T, s *Subscriber, msg string) {
	t.Helper()
	for len(r.entered) > 0 { // calls that have finished
		<-r.entered
	}
	r.hold = make(chan struct{})
	s.Push([]byte(msg))
	select {
	case <-r.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("fn was not called")
	}
}

func (r *recorder) take(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for range n {
		select {
		case m := <-r.got:
			out = append(out, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d calls", len(out), n)
		}
	}
	return out
}

func TestSubscriberOrderAndOverflow(t *testing.T) {
	r := &recorder{got: make(chan []byte, 100), entered: make(chan struct{}, 100)}
	s := NewSubscriber(r.fn, 3)
	defer s.Stop()
	r.busy(t, s, "a")
	s.Push([]byte("b"))
	s.Push([]byte("c"))
	close(r.hold)
	if got := r.take(t, 3); !slices.EqualFunc(got, [][]byte{[]byte("a"), []byte("b"), []byte("c")}, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("got %q", got)
	}

	r.busy(t, s, "held")
	for _, m := range []string{"1", "2", "3", "4"} { // one more than the queue holds
		s.Push([]byte(m))
	}
	s.Push([]byte("after"))
	close(r.hold)
	got := r.take(t, 3)
	if string(got[0]) != "held" || got[1] != nil || string(got[2]) != "after" {
		t.Fatalf("after an overflow got %q, want held, nil, after", got)
	}

	// A reload replaces what waits: it covers it.
	r.busy(t, s, "held")
	s.Push([]byte("x"))
	s.Push(nil)
	s.Push([]byte("y"))
	close(r.hold)
	got = r.take(t, 3)
	if string(got[0]) != "held" || got[1] != nil || string(got[2]) != "y" {
		t.Fatalf("after a reload got %q, want held, nil, y", got)
	}
}

func TestSubscriberStop(t *testing.T) {
	var s *Subscriber
	calls := make(chan []byte, 10)
	s = NewSubscriber(func(msg []byte) {
		calls <- msg
		s.Stop() // from fn itself
	}, 10)
	s.Push([]byte("a"))
	s.Push([]byte("b"))
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the goroutine did not end after Stop")
	}
	if len(calls) != 1 {
		t.Fatalf("%d calls after a Stop in the first, want 1", len(calls))
	}
	s.Push([]byte("c")) // after Stop: dropped, no panic
}
