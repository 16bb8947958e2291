package storetest

import (
	"net"
	"sync"
	"testing"
)

// Proxy is a loopback TCP proxy in front of a store's server, for fault
// tests: Cut makes the server unreachable (connections reset, new ones
// refused at once), Stall makes it hang (connections stay open but no byte
// passes), Restore brings it back. Clients connect to Addr.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	state   proxyState
	conns   map[net.Conn]struct{}
	resume  chan struct{} // closed when a Stall ends
	stopped bool
}

type proxyState int

const (
	proxyUp proxyState = iota
	proxyCut
	proxyStalled
)

// NewProxy starts a proxy on 127.0.0.1 to target ("host:port") and stops
// it when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("storetest: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{}), resume: make(chan struct{})}
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

// Addr is the address clients should dial instead of the server's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every open connection and refuses new ones until Restore.
func (p *Proxy) Cut() { p.set(proxyCut) }

// Stall keeps connections open but passes no data until Restore, like a
// server that stopped answering or a network that drops packets.
func (p *Proxy) Stall() { p.set(proxyStalled) }

// Restore lets traffic through again.
func (p *Proxy) Restore() { p.set(proxyUp) }

func (p *Proxy) set(s proxyState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == proxyStalled && s != proxyStalled {
		close(p.resume)
		p.resume = make(chan struct{})
	}
	p.state = s
	if s == proxyCut {
		p.closeConnsLocked()
	}
}

func (p *Proxy) closeConnsLocked() {
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *Proxy) stop() {
	p.mu.Lock()
	p.stopped = true
	p.closeConnsLocked()
	if p.state == proxyStalled {
		close(p.resume)
		p.state = proxyUp
	}
	p.mu.Unlock()
	p.ln.Close()
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.stopped || p.state == proxyCut {
			p.mu.Unlock()
			client.Close()
			continue
		}
		p.mu.Unlock()
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.stopped || p.state == proxyCut {
			p.mu.Unlock()
			client.Close()
			server.Close()
			continue
		}
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(client, server)
		go p.pipe(server, client)
	}
}

// pipe copies src to dst in chunks, waiting out stalls between chunks.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				state, resume := p.state, p.resume
				p.mu.Unlock()
				if state != proxyStalled {
					break
				}
				<-resume
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
