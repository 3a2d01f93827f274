// Package faultnet is a TCP proxy that does to the connections through it
// what a bad network does: it delays, stalls, blackholes and cuts them. The
// tests put it between a client and a NATS server, and so does the soak,
// between each worker process and its node.
package faultnet

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections from a loopback listener of its own to a
// server: the first of its targets that accepts (the others when that one
// is down, as a client's server list would).
type Proxy struct {
	ln      net.Listener
	targets []string

	mu      sync.Mutex
	delay   time.Duration // added before forwarding each read
	stalled bool          // hold every byte until resumed
	drop    bool          // discard every byte
	refuse  bool          // close new connections at once
	resumed chan struct{} // closed when a stall ends
	trigger []byte        // stall once a client sends it
	hit     chan struct{} // closed when trigger stalls the proxy
	conns   map[net.Conn]bool
	closed  bool
	links   []Link

	wg sync.WaitGroup // the accept loop and every copier
}

// Link is a connection the proxy made to a target, from when it opened to
// when it closed (zero: still open).
type Link struct {
	Target   string
	From, To time.Time
}

// New listens on a free loopback port and forwards to targets (host:port),
// preferring the first. Close stops it.
func New(targets ...string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, targets: targets, resumed: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

// URL is where a NATS client connects to go through the proxy.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Links returns every connection the proxy made to a target.
func (p *Proxy) Links() []Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Link(nil), p.links...)
}

// Cut closes every connection now, as a network failure would; with
// refuse, new ones are closed at once too (the link is down) until
// Restore, else clients reconnect through the proxy.
func (p *Proxy) Cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
	for c := range p.conns {
		c.Close()
	}
}

// Stall holds every byte, both ways, until Restore: a server that keeps its
// connections open but answers nothing, as one paused, swapping or behind a
// congested link does. Nothing is lost unless the connections are cut.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

// StallOn stalls the proxy (as Stall) as soon as a client sends pattern,
// before the bytes holding it reach the server; the channel is closed then.
// It triggers once.
func (p *Proxy) StallOn(pattern string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = []byte(pattern)
	p.hit = make(chan struct{})
	return p.hit
}

// Drop discards every byte, both ways, until Restore, which then cuts the
// connections (what was dropped left their streams unusable).
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = true
}

// Delay adds d before each read is forwarded, until Restore.
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Restore ends every fault: forwarding resumes with what a stall held; a
// drop's connections are cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drop {
		for c := range p.conns {
			c.Close()
		}
	}
	p.delay, p.drop, p.refuse = 0, false, false
	if p.stalled {
		p.stalled = false
		close(p.resumed)
		p.resumed = make(chan struct{})
	}
}

// Close stops listening and closes every connection; it returns once every
// goroutine of the proxy has ended.
func (p *Proxy) Close() {
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

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		s := p.dial()
		if s == nil {
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
		link := len(p.links)
		p.links = append(p.links, Link{Target: s.RemoteAddr().String(), From: time.Now()})
		p.mu.Unlock()
		p.wg.Go(func() { p.copy(s, c, link, true) })
		p.wg.Go(func() { p.copy(c, s, link, false) })
	}
}

// dial connects to the first target that answers; nil if none does.
func (p *Proxy) dial() net.Conn {
	for _, t := range p.targets {
		s, err := net.DialTimeout("tcp", t, time.Second)
		if err == nil {
			return s
		}
	}
	return nil
}

// copy forwards src to dst until either closes, applying the faults.
func (p *Proxy) copy(dst, src net.Conn, link int, fromClient bool) {
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		if p.links[link].To.IsZero() {
			p.links[link].To = time.Now()
		}
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	var tail []byte // the end of the last read, for a pattern split across reads
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient {
				tail = p.watch(tail, buf[:n])
			}
			forward, ok := p.gate()
			if !ok {
				return
			}
			if forward {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		if err != nil {
			return // EOF, closed, or reset: either side's end
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

// gate waits out a stall and a delay; forward is false while dropping, ok
// false once the proxy is closed.
func (p *Proxy) gate() (forward, ok bool) {
	for {
		p.mu.Lock()
		stalled, resumed, closed, drop, delay := p.stalled, p.resumed, p.closed, p.drop, p.delay
		p.mu.Unlock()
		switch {
		case closed:
			return false, false
		case stalled:
			<-resumed
			continue
		case drop:
			return false, true
		case delay > 0:
			time.Sleep(delay) // the fault itself: a slow link
		}
		return true, true
	}
}
