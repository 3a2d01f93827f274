// Package natstest starts real NATS servers for Orderly's own tests.
package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Server starts an embedded server with JetStream on a free loopback port,
// its store in t.TempDir(), and shuts it down when the test ends.
func Server(t testing.TB) *embedded.Server {
	t.Helper()
	return ServerIn(t, t.TempDir())
}

// ServerIn is Server with its store in dir, so a test can restart a server
// on the same data.
func ServerIn(t testing.TB, dir string) *embedded.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Conn connects to url and closes the connection when the test ends.
func Conn(t testing.TB, url string) *queue.Conn {
	t.Helper()
	c, err := queue.Connect(context.Background(), queue.Config{URLs: []string{url}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Client is a producer client on a connection of its own to url, closed
// when the test ends.
func Client(t testing.TB, url string) *client.Client {
	t.Helper()
	c, err := client.Connect(url, client.Config{})
	if err != nil {
		t.Fatalf("connect client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// NATS dials url with Orderly's connection options (queue.Dial: it
// reconnects forever) and closes the connection when the test ends: a
// worker's connection.
func NATS(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{url}})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// LeakOptions are the goleak options every package's TestMain uses: they
// ignore the one nats-server goroutine that outlives a server shut down
// while a stream source is still being set up (it ends on its own timeout).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"),
	}
}
