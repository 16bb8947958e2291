package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallpass/hallpass/store/storetest"
)

// TestThrottleConcurrent: attempts that run at the same time are counted
// as they begin, so no more than the limit get through however they
// interleave, for passwords per account and for signups per address.
func TestThrottleConcurrent(t *testing.T) {
	th := newThrottle(nil)
	var passed atomic.Int32
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if c, wait := th.beginPassword("alice", fmt.Sprintf("192.0.2.%d", i)); wait == 0 {
				passed.Add(1)
				time.Sleep(10 * time.Millisecond) // the hash takes a while
				c.failed()
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != maxFailAccount {
		t.Errorf("%d concurrent password attempts for one account got through, want %d", n, maxFailAccount)
	}

	passed.Store(0)
	for range 50 {
		wg.Go(func() {
			if th.signup("198.51.100.7") == 0 {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != maxSignupAddr {
		t.Errorf("%d concurrent signups from one address got through, want %d", n, maxSignupAddr)
	}
}

// TestThrottleOutcomes: a right password clears the account's count and
// gives the address its attempt back; an attempt whose check broke counts
// for nothing; a wrong one counts.
func TestThrottleOutcomes(t *testing.T) {
	clock := storetest.NewClock(time.Now())
	th := newThrottle(clock.Now)
	for range maxFailAccount - 1 {
		c, _ := th.beginPassword("alice", "192.0.2.1")
		c.failed()
		clock.Add(time.Millisecond)
	}
	c, wait := th.beginPassword("alice", "192.0.2.1")
	if wait != 0 {
		t.Fatal("the last allowed attempt waits")
	}
	c.aborted()
	clock.Add(time.Millisecond)
	if c, wait = th.beginPassword("alice", "192.0.2.1"); wait != 0 {
		t.Fatal("an aborted attempt was counted")
	}
	c.succeeded()
	if n := len(th.fails[accountKey("alice")]); n != 0 {
		t.Errorf("after a right password the account has %d failures", n)
	}
	if n := len(th.fails[addrKey("192.0.2.1")]); n != maxFailAccount-1 {
		t.Errorf("the address has %d failures, want the %d wrong ones", n, maxFailAccount-1)
	}
}

// TestThrottleIPv6: one client's /64 is one address.
func TestThrottleIPv6(t *testing.T) {
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"192.0.2.1", "192.0.2.1"},
	} {
		if addrKey(c.a) != addrKey(c.b) || signupKey(c.a) != signupKey(c.b) {
			t.Errorf("%s and %s counted apart", c.a, c.b)
		}
	}
	for _, c := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "192.0.2.2"},
		{"::ffff:192.0.2.1", "::ffff:192.0.2.2"},
	} {
		if addrKey(c.a) == addrKey(c.b) {
			t.Errorf("%s and %s counted together", c.a, c.b)
		}
	}
}
