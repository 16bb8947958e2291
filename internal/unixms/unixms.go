// Package unixms turns times into unix milliseconds that every store and
// cookie can hold: time.UnixMilli wraps around long before time.Time
// ends, so a deadline of "forever" would come back in the past, and Lua
// (Redis scripts) and JSON readers hold integers exactly only up to 2^53.
package unixms

import "time"

// Max is the largest count From returns, in the year 287396; Min is its
// negative.
const (
	Max = 1<<53 - 1
	Min = -Max
)

var maxTime, minTime = time.UnixMilli(Max), time.UnixMilli(Min)

// From returns t in unix milliseconds, clamped to [Min, Max]. It does not
// treat the zero time specially: callers that store it as "unset" check
// for it first.
func From(t time.Time) int64 {
	switch {
	case t.After(maxTime):
		return Max
	case t.Before(minTime):
		return Min
	}
	return t.UnixMilli()
}
