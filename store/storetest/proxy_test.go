package storetest

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestProxy(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	if err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("up: %v", err)
	}
	p.Cut()
	if err := roundTrip(p.Addr(), time.Second); err == nil {
		t.Fatal("cut proxy passed traffic")
	}
	p.Restore()
	if err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("restored: %v", err)
	}
	p.Stall()
	start := time.Now()
	err := roundTrip(p.Addr(), 200*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("stalled proxy: %v after %v, want a timeout", err, time.Since(start))
	}
	p.Restore()
	if err := roundTrip(p.Addr(), time.Second); err != nil {
		t.Fatalf("restored after stall: %v", err)
	}
}
