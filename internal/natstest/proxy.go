package natstest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a loopback listener of its own to a
// server, and can stall them: a server that keeps its connections open but
// answers nothing, as one paused, swapping or behind a congested link does.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu      sync.Mutex
	stalled bool
	resumed chan struct{} // closed by Resume
	trigger []byte        // stall once a client sends it
	hit     chan struct{} // closed when trigger stalls the proxy
	conns   map[net.Conn]bool
	closed  bool

	wg sync.WaitGroup // the accept loop and every copier
}

// NewProxy forwards to the server at serverURL (nats://host:port) and stops
// when the test ends.
func NewProxy(t testing.TB, serverURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &Proxy{t: t, ln: ln, target: u.Host, resumed: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// URL is where clients connect to reach the server through the proxy.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Stall stops forwarding, both ways, on every connection, until Resume:
// what was sent meanwhile is held, not lost.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

// StallOn stalls the proxy (as Stall) as soon as a client sends pattern,
// before the bytes holding it reach the server. The channel is closed then.
func (p *Proxy) StallOn(pattern string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = []byte(pattern)
	p.hit = make(chan struct{})
	return p.hit
}

// Resume forwards again, starting with what was held.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		p.stalled = false
		close(p.resumed)
		p.resumed = make(chan struct{})
	}
}

// Cut closes every connection made through the proxy so far, as a network
// failure would, and goes on accepting new ones: a client reconnects
// through it.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.copy(s, c, true) })
		p.wg.Go(func() { p.copy(c, s, false) })
	}
}

// copy forwards src to dst until either closes, waiting while stalled.
func (p *Proxy) copy(dst, src net.Conn, fromClient bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the last read, for a pattern split across reads
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient {
				tail = p.watch(tail, buf[:n])
			}
			if !p.open() {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.t.Logf("proxy: %v", err)
			}
			return
		}
	}
}

// watch stalls the proxy if the bytes read, with the tail of those before,
// hold the trigger; it returns the new tail.
func (p *Proxy) watch(tail, read []byte) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trigger == nil {
		return nil
	}
	seen := append(tail, read...)
	if bytes.Contains(seen, p.trigger) {
		p.trigger = nil
		p.stalled = true
		close(p.hit)
		return nil
	}
	if keep := len(p.trigger) - 1; len(seen) > keep {
		seen = seen[len(seen)-keep:]
	}
	return append([]byte(nil), seen...)
}

// open waits while the proxy is stalled; false once it is closed.
func (p *Proxy) open() bool {
	for {
		p.mu.Lock()
		stalled, resumed, closed := p.stalled, p.resumed, p.closed
		p.mu.Unlock()
		if closed {
			return false
		}
		if !stalled {
			return true
		}
		<-resumed
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.stalled {
		p.stalled = false
		close(p.resumed)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
