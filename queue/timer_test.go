package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/queue"
)

func TestScheduleDeliversIntoTheKeysPartitionOnce(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 4})
	ctx := context.Background()
	// The key's own events and its timer must share a partition.
	if _, err := c.Publish(ctx, "order", "k1", queue.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Second)
	if err := c.Schedule(ctx, "order", "k1", "timeout", 1, at, queue.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	// Scheduling again replaces the first: only visit 2 fires.
	if err := c.Schedule(ctx, "order", "k1", "timeout", 2, at, queue.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *queue.Msg, 8)
	var pullers []*queue.Puller
	for p := range 4 {
		pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: p, MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
			got <- m
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		pullers = append(pullers, pl)
	}
	defer func() {
		for _, pl := range pullers {
			_ = pl.Stop(ctx)
		}
	}()
	first := <-got
	if _, _, ok := first.Timer(); ok {
		t.Fatal("the plain event looks like a timer")
	}
	fired := <-got
	kind, visit, ok := fired.Timer()
	if !ok || kind != "timeout" || visit != 2 || fired.Partition != first.Partition || fired.Key != "k1" {
		t.Fatalf("fired %q visit %d ok %v, partition %d (event in %d)", kind, visit, ok, fired.Partition, first.Partition)
	}
	if time.Now().Before(at) {
		t.Fatal("fired early")
	}
	select {
	case m := <-got:
		kind, visit, _ := m.Timer()
		t.Fatalf("a second delivery: %s %d", kind, visit)
	case <-time.After(1500 * time.Millisecond): // a negative check: the replaced schedule must not fire
	}
}
