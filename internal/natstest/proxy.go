package natstest

import (
	"net/url"
	"testing"

	"github.com/orderly-dev/orderly/internal/faultnet"
)

// Proxy is a faultnet.Proxy in front of one server for a test's life.
type Proxy struct{ *faultnet.Proxy }

// NewProxy forwards to the server at serverURL (nats://host:port) and stops
// when the test ends.
func NewProxy(t testing.TB, serverURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p, err := faultnet.New(u.Host)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return &Proxy{p}
}

// Cut closes every connection made through the proxy so far, as a network
// failure would; clients reconnect through it.
func (p *Proxy) Cut() { p.Proxy.Cut(false) }

// Resume forwards again, starting with what a stall held.
func (p *Proxy) Resume() { p.Restore() }
