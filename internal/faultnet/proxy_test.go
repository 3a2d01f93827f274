package faultnet

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// echoServer echoes each line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

// roundTrip sends line and reads it back within d; "" if nothing came.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, error) {
	t.Helper()
	if line != "" {
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			return "", err
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	s, err := r.ReadString('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", nil
	}
	return s, err
}

func dialProxy(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.URL()[len("nats://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// TestProxyFaults: each fault of the proxy does what a bad network does,
// and Restore ends it: a stall holds bytes and then delivers them, a drop
// loses them and cuts the connection, a cut closes connections and refuses
// new ones, a delay slows each read; a target that is down is passed over
// for the next.
func TestProxyFaults(t *testing.T) {
	t.Parallel()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close() // nothing listens there now
	p, err := New(downAddr, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const wait = 2 * time.Second
	c, r := dialProxy(t, p)
	if got, err := roundTrip(t, c, r, "a", wait); got != "a\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.Stall()
	if got, _ := roundTrip(t, c, r, "b", 300*time.Millisecond); got != "" {
		t.Fatalf("stalled, yet %q came back", got)
	}
	p.Restore()
	if got, err := roundTrip(t, c, r, "", wait); got != "b\n" {
		t.Fatalf("after the stall: %q, %v; want what it held", got, err)
	}

	p.Delay(200 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(t, c, r, "c", wait); got != "c\n" || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("delayed: %q, %v after %s; want it after two delays", got, err, time.Since(start))
	}
	p.Restore()

	p.Drop()
	if got, _ := roundTrip(t, c, r, "d", 300*time.Millisecond); got != "" {
		t.Fatalf("dropping, yet %q came back", got)
	}
	p.Restore()
	if got, err := roundTrip(t, c, r, "", wait); err == nil {
		t.Fatalf("after a drop the connection is still open (%q)", got)
	}

	c2, r2 := dialProxy(t, p)
	if got, err := roundTrip(t, c2, r2, "e", wait); got != "e\n" {
		t.Fatalf("a new connection: %q, %v", got, err)
	}
	p.Cut(true)
	if _, err := roundTrip(t, c2, r2, "", wait); err == nil {
		t.Fatal("cut, yet the connection is open")
	}
	c3, r3 := dialProxy(t, p)
	if _, err := roundTrip(t, c3, r3, "f", wait); err == nil {
		t.Fatal("link down, yet a new connection went through")
	}
	p.Restore()
	c4, r4 := dialProxy(t, p)
	if got, err := roundTrip(t, c4, r4, "g", wait); got != "g\n" {
		t.Fatalf("restored: %q, %v", got, err)
	}
}
