package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestPullerNeverHoldsMoreThanItsRoom(t *testing.T) {
	t.Parallel()
	c, p := setup(t, queue.Spec{Partitions: 1})
	cl := newClient(t, c)
	ctx := context.Background()
	for range 100 {
		if _, err := cl.PublishAsync("order", "k", contract.Envelope{Event: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	held := make(chan *queue.Msg, 100)
	var mu sync.Mutex
	var seqs []uint64
	var puller *queue.Puller
	started := make(chan struct{})
	puller, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: 0, Batch: 3, MaxInFlight: 5, MaxWait: 200 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) {
			<-started
			if n := puller.InFlight(); n > 5 {
				t.Errorf("in flight %d > 5", n)
			}
			mu.Lock()
			seqs = append(seqs, m.Sequence)
			mu.Unlock()
			held <- m
		})
	if err != nil {
		t.Fatal(err)
	}
	close(started)
	_ = p
	// Hold five: the puller must wait for room, however long.
	var first []*queue.Msg
	for range 5 {
		first = append(first, natstest.Recv(t, held, natstest.Timeout, "one of the first five messages"))
	}
	select {
	case m := <-held:
		t.Fatalf("got message %d past the bound", m.Sequence)
	case <-time.After(300 * time.Millisecond): // a negative check: nothing may arrive
	}
	for _, m := range first {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if err := first[0].Ack(); err != queue.ErrAlreadyFinished {
		t.Fatalf("second ack: %v", err)
	}
	for i := range 95 {
		m := natstest.Recv(t, held, natstest.Timeout, fmt.Sprintf("message %d of the remaining 95", i+1))
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, natstest.Timeout)
	defer cancel()
	if err := puller.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if err := puller.Stop(sctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	natstest.Recv(t, puller.Stopped(), natstest.Timeout, "the puller to stop")
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("out of order: %v", seqs)
		}
	}
}

func TestPullerHardStop(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	cl := newClient(t, c)
	ctx := context.Background()
	if _, err := cl.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	puller, err := c.Pull(ctx, queue.PullConfig{Workflow: "order"}, func(ctx context.Context, m *queue.Msg) {
		close(entered)
		<-ctx.Done() // a handler stuck until the hard stop
		_ = m.Nak(0)
	})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, entered, natstest.Timeout, "the handler to get the event")
	stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := puller.Stop(stopCtx); err != context.DeadlineExceeded {
		t.Fatalf("stop: %v", err)
	}
	natstest.Recv(t, puller.Stopped(), natstest.Timeout, "the puller to stop after its hard stop")
}
