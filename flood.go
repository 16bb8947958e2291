package hallpass

import (
	"sync"
	"time"
)

// floodWindow is the period over which bad cookies from one address are
// counted.
const floodWindow = time.Minute

// floodGuard counts bad session cookies (malformed, unknown, expired) per
// client address. Guessing tokens is hopeless at 256 bits, but a flood of
// them still means someone is trying: it is worth an alert, and
// optionally a 429. Memory is bounded: at most max addresses are tracked,
// and when the table is full the stalest entries make room.
type floodGuard struct {
	limit int
	max   int

	mu      sync.Mutex
	entries map[string]*floodEntry
}

type floodEntry struct {
	start    time.Time // of the current window
	count    int
	reported bool // an event was emitted for this window
}

func newFloodGuard(limit, max int) *floodGuard {
	return &floodGuard{limit: limit, max: max, entries: make(map[string]*floodEntry)}
}

// hit counts one bad cookie from ip at now. It reports whether ip is over
// the limit in the current window, and whether this hit is the first one
// over it (the one to raise an event for).
func (g *floodGuard) hit(ip string, now time.Time) (over, first bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entries[ip]
	if e == nil || now.Sub(e.start) >= floodWindow {
		if e == nil {
			g.makeRoomLocked(now)
			e = &floodEntry{}
			g.entries[ip] = e
		}
		*e = floodEntry{start: now}
	}
	e.count++
	if e.count <= g.limit {
		return false, false
	}
	first = !e.reported
	e.reported = true
	return true, first
}

// makeRoomLocked frees a slot when the table is full: first every entry
// whose window has passed, else the oldest one. Spraying addresses costs
// the attacker as much as it costs us: at most max entries.
func (g *floodGuard) makeRoomLocked(now time.Time) {
	if len(g.entries) < g.max {
		return
	}
	var oldest string
	var oldestStart time.Time
	for ip, e := range g.entries {
		if now.Sub(e.start) >= floodWindow {
			delete(g.entries, ip)
			continue
		}
		if oldest == "" || e.start.Before(oldestStart) {
			oldest, oldestStart = ip, e.start
		}
	}
	if len(g.entries) >= g.max {
		delete(g.entries, oldest)
	}
}
