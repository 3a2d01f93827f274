package queue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestLifecycleDrainWaits checks that Drain returns once the connection has
// drained: every message delivered to a slow handler handled, then the
// connection closed; and that a context ending first closes it at once,
// with the context's error.
func TestLifecycleDrainWaits(t *testing.T) {
	srv := natstest.Server(t)
	pub := natstest.Conn(t, srv.ClientURL())

	t.Run("drained", func(t *testing.T) {
		c := natstest.Conn(t, srv.ClientURL())
		const n = 50
		var handled atomic.Int64
		release := make(chan struct{})
		if _, err := c.NATS().Subscribe("drain.test", func(*nats.Msg) {
			<-release
			time.Sleep(2 * time.Millisecond) // slow work, not synchronisation
			handled.Add(1)
		}); err != nil {
			t.Fatal(err)
		}
		publishTo(t, pub, c, n)

		drained := make(chan error, 1)
		go func() { drained <- c.Drain(context.Background()) }()
		close(release)
		select {
		case err := <-drained:
			if err != nil {
				t.Errorf("Drain: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("Drain did not return within 20s; %d of %d messages handled", handled.Load(), n)
		}
		if got := handled.Load(); got != n {
			t.Errorf("Drain returned with %d of %d delivered messages handled", got, n)
		}
		if !c.NATS().IsClosed() {
			t.Error("Drain returned before the connection closed")
		}
	})

	t.Run("context ends first", func(t *testing.T) {
		c := natstest.Conn(t, srv.ClientURL())
		release := make(chan struct{})
		defer close(release) // lets the handler end
		if _, err := c.NATS().Subscribe("drain.test", func(*nats.Msg) { <-release }); err != nil {
			t.Fatal(err)
		}
		publishTo(t, pub, c, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- c.Drain(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Drain: %v, want an error wrapping context.DeadlineExceeded", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Drain did not return within 10s of its context's end")
		}
		if !c.NATS().IsClosed() {
			t.Error("Drain returned with the connection still open")
		}
	})
}

// publishTo publishes n messages on drain.test from pub and returns once
// sub's connection has received them all.
func publishTo(t *testing.T, pub, sub *queue.Conn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The server knows sub's subscription once sub's flush returns: before
	// that, what pub publishes may reach nobody (seen: 48 of 50).
	if err := sub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := pub.NATS().Publish("drain.test", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// The server has routed the messages once pub's flush returns; sub's
	// flush returns after they have reached sub (they come before its PONG).
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
