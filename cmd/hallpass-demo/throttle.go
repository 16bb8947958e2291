package main

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Login throttling: after too many failed logins for one account, or from
// one address, within window, further attempts are refused until the
// oldest failure leaves the window. Counting per account stops password
// guessing against one user from many addresses; per address, one
// client trying many users. The account is the name typed, whether or
// not it exists, so the refusal tells nothing about which names exist.
const (
	failWindow     = 15 * time.Minute
	maxFailAccount = 5
	maxFailAddr    = 20
	// maxSignupAddr bounds the signups one address may try in the window.
	// Every attempt with a valid name and password counts, the name taken
	// or not: a signup form must say that a name is taken, so it must not
	// let one client ask about many names, nor create accounts in bulk,
	// nor keep the server hashing passwords.
	maxSignupAddr = 10
	// throttleKeys bounds the memory: past it the oldest entries go,
	// which only forgets failures, never blocks anyone wrongly.
	throttleKeys = 100_000
)

type throttle struct {
	mu    sync.Mutex
	fails map[string][]time.Time // "a:"+account, "c:"+account or "i:"+address → failure times, oldest first
	now   func() time.Time
}

func newThrottle(now func() time.Time) *throttle {
	if now == nil {
		now = time.Now
	}
	return &throttle{fails: make(map[string][]time.Time), now: now}
}

// accountKey counts an account's failed passwords; codeKey its failed
// two-step codes, apart, so that knowing the password does not reset the
// count of guessed codes. Addresses are counted by the address for IPv4
// and by the /64 for IPv6, which one client usually holds whole.
func accountKey(name string) string { return "a:" + strings.ToLower(name) }
func codeKey(name string) string    { return "c:" + strings.ToLower(name) }
func addrKey(ip string) string      { return "i:" + clientNet(ip) }
func signupKey(ip string) string    { return "s:" + clientNet(ip) }

// clientNet is the address ip, or its /64 for IPv6.
func clientNet(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// check is a password or code check in progress. It counts as a
// failure from the moment it begins, so that concurrent attempts cannot
// all pass the limit before any of them is counted; its outcome then
// keeps, moves or takes back that count.
type check struct {
	t         *throttle
	key, addr string
	at        time.Time
}

// beginPassword starts a password attempt for account from ip, or returns
// how long the client must wait.
func (t *throttle) beginPassword(account, ip string) (*check, time.Duration) {
	return t.begin(accountKey(account), ip)
}

// beginCode starts a two-step code attempt for account from ip, or
// returns how long the client must wait.
func (t *throttle) beginCode(account, ip string) (*check, time.Duration) {
	return t.begin(codeKey(account), ip)
}

func (t *throttle) begin(key, ip string) (*check, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	addr := addrKey(ip)
	if wait := max(t.waitLocked(key, maxFailAccount, now), t.waitLocked(addr, maxFailAddr, now)); wait > 0 {
		return nil, wait
	}
	t.countLocked(now, key, addr)
	return &check{t: t, key: key, addr: addr, at: now}, 0
}

// failed keeps the attempt counted, as a failure.
func (a *check) failed() {}

// succeeded forgets the failures of the attempt's account key (its owner
// got in; for a password, the account's failed codes stay) and takes the
// attempt back from its address.
func (a *check) succeeded() {
	a.t.mu.Lock()
	defer a.t.mu.Unlock()
	delete(a.t.fails, a.key)
	a.t.uncountLocked(a.addr, a.at)
}

// aborted takes the attempt back: it was neither right nor wrong (the
// check itself failed).
func (a *check) aborted() {
	a.t.mu.Lock()
	defer a.t.mu.Unlock()
	a.t.uncountLocked(a.key, a.at)
	a.t.uncountLocked(a.addr, a.at)
}

// waitLocked returns how long until key has fewer than limit attempts in
// the window.
func (t *throttle) waitLocked(key string, limit int, now time.Time) time.Duration {
	if fs := t.recent(key, now); len(fs) >= limit {
		return fs[len(fs)-limit].Add(failWindow).Sub(now)
	}
	return 0
}

// countLocked records an attempt at now under each key.
func (t *throttle) countLocked(now time.Time, keys ...string) {
	if len(t.fails) >= throttleKeys {
		t.sweep(now)
	}
	for _, k := range keys {
		t.fails[k] = append(t.recent(k, now), now)
	}
}

// uncountLocked removes one attempt made at at from key.
func (t *throttle) uncountLocked(key string, at time.Time) {
	fs := t.fails[key]
	for i := len(fs) - 1; i >= 0; i-- {
		if fs[i].Equal(at) {
			fs = append(fs[:i], fs[i+1:]...)
			break
		}
	}
	if len(fs) == 0 {
		delete(t.fails, key)
	} else {
		t.fails[key] = fs
	}
}

// signup returns how long a signup from ip must wait, or 0 if it may go
// ahead, in which case it counts as one of the address's attempts, in the
// same step, so that concurrent signups cannot all pass the check.
func (t *throttle) signup(ip string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	key := signupKey(ip)
	if wait := t.waitLocked(key, maxSignupAddr, now); wait > 0 {
		return wait
	}
	t.countLocked(now, key)
	return 0
}

// recent returns key's failures inside the window, dropping older ones.
func (t *throttle) recent(key string, now time.Time) []time.Time {
	fs := t.fails[key]
	i := 0
	for i < len(fs) && !fs[i].After(now.Add(-failWindow)) {
		i++
	}
	if i == len(fs) {
		delete(t.fails, key)
		return nil
	}
	fs = fs[i:]
	t.fails[key] = fs
	return fs
}

// sweep drops every key whose failures are all out of the window, and if
// that is not enough, half of the rest.
func (t *throttle) sweep(now time.Time) {
	for key := range t.fails {
		t.recent(key, now)
	}
	for key := range t.fails {
		if len(t.fails) < throttleKeys/2 {
			break
		}
		delete(t.fails, key)
	}
}
