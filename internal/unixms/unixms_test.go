package unixms

import (
	"testing"
	"time"
)

func TestFrom(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		in   time.Time
		want int64
	}{
		{now, now.UnixMilli()},
		{time.Unix(1<<62, 0), Max},
		{time.Unix(-1<<62, 0), Min},
		{time.UnixMilli(Max), Max},
		{time.UnixMilli(Max).Add(time.Millisecond), Max},
	} {
		if got := From(c.in); got != c.want {
			t.Errorf("From(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}
