package soak

import (
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections from a loopback listener of its own to a
// NATS node (the first of its targets that accepts; the others when that
// one is down, as a client's server list would), and does to them what a
// bad network does: it delays, stalls, blackholes and cuts them.
type Proxy struct {
	ln      net.Listener
	targets []string

	mu      sync.Mutex
	delay   time.Duration // added before forwarding each read
	stalled bool          // hold every byte until resumed
	drop    bool          // discard every byte
	refuse  bool          // close new connections at once
	resumed chan struct{} // closed when a stall ends
	conns   map[net.Conn]bool
	closed  bool
	links   []ProxyLink

	wg sync.WaitGroup // the accept loop and every copier
}

// ProxyLink is a connection the proxy made to a target, from when it
// opened to when it closed (zero: still open).
type ProxyLink struct {
	Target   string
	From, To time.Time
}

// Links returns every connection the proxy made to a target.
func (p *Proxy) Links() []ProxyLink {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyLink(nil), p.links...)
}

// NewProxy listens on a free loopback port and forwards to targets
// (host:port), preferring the first.
func NewProxy(targets ...string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, targets: targets, resumed: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

// URL is where a client connects to go through the proxy.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Cut closes every connection now; with refuse, new ones are closed at
// once too (the link is down) until Restore.
func (p *Proxy) Cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = refuse
	for c := range p.conns {
		c.Close()
	}
}

// Stall holds every byte, both ways, until Restore: nothing is lost.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
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
		p.links = append(p.links, ProxyLink{Target: s.RemoteAddr().String(), From: time.Now()})
		p.mu.Unlock()
		p.wg.Go(func() { p.copy(s, c, link) })
		p.wg.Go(func() { p.copy(c, s, link) })
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
func (p *Proxy) copy(dst, src net.Conn, link int) {
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
	for {
		n, err := src.Read(buf)
		if n > 0 {
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
