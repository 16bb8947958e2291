package sqlvalue

import (
	"math"
	"testing"
	"time"
)

func TestMillis(t *testing.T) {
	if Millis(time.Time{}) != nil {
		t.Fatal("zero time is not NULL")
	}
	now := time.UnixMilli(1_700_000_000_123)
	if got := Millis(now); got != int64(1_700_000_000_123) || !FromMillis(got.(int64), true).Equal(now) {
		t.Fatalf("round trip: %v", got)
	}
	if got := Millis(time.Date(300000000, 1, 1, 0, 0, 0, 0, time.UTC)); got != int64(math.MaxInt64) {
		t.Fatalf("far future not clamped: %v", got)
	}
	if got := Millis(time.Date(-300000000, 1, 1, 0, 0, 0, 0, time.UTC)); got != int64(math.MinInt64) {
		t.Fatalf("far past not clamped: %v", got)
	}
	if !FromMillis(5, false).IsZero() {
		t.Fatal("NULL is not the zero time")
	}
}

func TestNullStringAndValidKey(t *testing.T) {
	if NullString("") != nil || NullString("u") != "u" {
		t.Fatal("NullString")
	}
	if ValidKey("ключ") != "ключ" || ValidKey("a\xffb") != "a\uFFFDb" {
		t.Fatalf("ValidKey: %q", ValidKey("a\xffb"))
	}
}
