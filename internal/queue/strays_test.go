package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Events stored under a subject no partition delivers (a wildcard as the
// key, or a fired timer the sourcing transform could not map) are moved to
// the dead letters, every one of them, and nothing deliverable is touched.
func TestDeadLetterStrays(t *testing.T) {
	t.Parallel()
	s := natstest.Server(t)
	c := natstest.Conn(t, s.ClientURL())
	cl := newClient(t, c)
	ctx := context.Background()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	strays := map[string]int{
		"orderly.events.order.*": 5, "orderly.events.order.>": 5,
		"orderly.timers.order.fired.timeout.*": 1, "orderly.timers.order.fired.*.k1": 1,
	}
	for i := range 5 {
		for subj, n := range strays {
			if i < n {
				if err := c.PublishRaw(subj, []byte(`{"event":"start_processing"}`)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := cl.Publish(ctx, "order", "k"+itoa(uint64(i)), contract.Envelope{Event: "start_processing"}); err != nil {
			t.Fatal(err)
		}
	}
	// The fired timers come in through the stream's source.
	waitUntil(t, 10*time.Second, "the timers to be sourced", func() bool {
		info, err := c.Info(ctx, "order")
		return err == nil && info.Pending == 17
	})
	moved, err := c.DeadLetterStrays(ctx, "order", 8)
	if err != nil || len(moved) != 8 {
		t.Fatalf("first sweep: %d moved (%v), want 8", len(moved), err)
	}
	more, err := c.DeadLetterStrays(ctx, "order", 100)
	if err != nil || len(more) != 4 {
		t.Fatalf("second sweep: %d moved (%v), want 4", len(more), err)
	}
	if none, err := c.DeadLetterStrays(ctx, "order", 100); err != nil || len(none) != 0 {
		t.Fatalf("third sweep: %d moved (%v), want none", len(none), err)
	}
	info, err := c.Info(ctx, "order")
	if err != nil || info.Pending != 5 {
		t.Fatalf("%d events left (%v), want the 5 deliverable ones", info.Pending, err)
	}
	dead, err := cl.DeadLetters(ctx, "order", 0)
	if err != nil || len(dead) != 12 {
		t.Fatalf("%d dead letters (%v), want 12", len(dead), err)
	}
	for _, d := range dead {
		strays[d.Subject]--
		if !strings.HasPrefix(d.Reason, "undeliverable_subject: ") {
			t.Errorf("dead letter of %s: reason %q", d.Subject, d.Reason)
		}
		if _, err := cl.Replay(ctx, "order", d.Sequence); d.Key != "k1" && !errors.Is(err, contract.ErrInvalidKey) {
			t.Errorf("replay of %s (key %q): %v, want ErrInvalidKey", d.Subject, d.Key, err)
		}
	}
	for subj, n := range strays {
		if n != 0 {
			t.Errorf("%s: %d more or fewer dead letters than published", subj, n)
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
