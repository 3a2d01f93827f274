package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestFireDueTimersFiresOnlyDueTimersWithinSeconds(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	now := time.Now()
	// A test clock two hours ahead: the first timer is due by it, the
	// second is not.
	if err := c.Schedule(ctx, "order", "k1", "timeout", 7, now.Add(time.Hour), contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Schedule(ctx, "order", "k2", "timeout", 1, now.Add(3*time.Hour), contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.FireDueTimers(ctx, "order", now); err != nil || n != 0 {
		t.Fatalf("nothing due yet: fired %d, %v", n, err)
	}
	got := make(chan *queue.Msg, 4)
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
		got <- m
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pl.Stop(ctx) }()

	start := time.Now()
	if n, err := c.FireDueTimers(ctx, "order", now.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want 1", n, err)
	}
	select {
	case m := <-got:
		kind, visit, ok := m.Timer()
		if !ok || kind != "timeout" || visit != 7 || m.Key != "k1" {
			t.Fatalf("fired %s kind %q visit %d ok %v", m.Key, kind, visit, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the due timer did not fire")
	}
	t.Logf("fired after %s of real time", time.Since(start).Round(time.Millisecond))
	// Fired once: nothing is due any more; k2 still waits for its time.
	if n, err := c.FireDueTimers(ctx, "order", now.Add(2*time.Hour)); err != nil || n != 0 {
		t.Fatalf("fired again: %d, %v", n, err)
	}
}

func TestFireDueTimersNotProvisioned(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{})
	if _, err := c.FireDueTimers(context.Background(), "nosuch", time.Now()); !errors.Is(err, queue.ErrNotProvisioned) {
		t.Fatalf("err %v", err)
	}
}
