package main

import (
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
// count of guessed codes.
func accountKey(name string) string { return "a:" + strings.ToLower(name) }
func codeKey(name string) string    { return "c:" + strings.ToLower(name) }
func addrKey(ip string) string      { return "i:" + ip }
func signupKey(ip string) string    { return "s:" + ip }

// wait returns how long a password attempt must wait, or 0 if it may go
// ahead.
func (t *throttle) wait(account, ip string) time.Duration {
	return t.waitKey(accountKey(account), ip)
}

// fail records a failed password.
func (t *throttle) fail(account, ip string) { t.failKey(accountKey(account), ip) }

// succeed forgets the account's failed passwords: its owner got in. Its
// failed codes stay.
func (t *throttle) succeed(account string) { t.forget(accountKey(account)) }

// waitCode, failCode and succeedCode are wait, fail and succeed for
// two-step codes.
func (t *throttle) waitCode(account, ip string) time.Duration {
	return t.waitKey(codeKey(account), ip)
}
func (t *throttle) failCode(account, ip string) { t.failKey(codeKey(account), ip) }
func (t *throttle) succeedCode(account string)  { t.forget(codeKey(account)) }

// waitKey returns how long an attempt counted under the account key key
// and address ip must wait, or 0.
func (t *throttle) waitKey(key, ip string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	return max(t.waitLocked(key, maxFailAccount, now), t.waitLocked(addrKey(ip), maxFailAddr, now))
}

// waitLocked returns how long until key has fewer than limit attempts in
// the window.
func (t *throttle) waitLocked(key string, limit int, now time.Time) time.Duration {
	if fs := t.recent(key, now); len(fs) >= limit {
		return fs[len(fs)-limit].Add(failWindow).Sub(now)
	}
	return 0
}

// failKey records a failed attempt under the account key key and address
// ip.
func (t *throttle) failKey(key, ip string) { t.count(key, addrKey(ip)) }

// count records an attempt now under each key.
func (t *throttle) count(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.fails) >= throttleKeys {
		t.sweep(now)
	}
	for _, k := range keys {
		t.fails[k] = append(t.recent(k, now), now)
	}
}

// signup returns how long a signup from ip must wait, or 0 if it may go
// ahead, in which case it counts as one of the address's attempts.
func (t *throttle) signup(ip string) time.Duration {
	t.mu.Lock()
	wait := t.waitLocked(signupKey(ip), maxSignupAddr, t.now())
	t.mu.Unlock()
	if wait == 0 {
		t.count(signupKey(ip))
	}
	return wait
}

func (t *throttle) forget(key string) {
	t.mu.Lock()
	delete(t.fails, key)
	t.mu.Unlock()
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
