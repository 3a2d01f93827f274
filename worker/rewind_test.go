package worker_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// TestRewindGoesOnWhileEventsWaitBehindSlowWork: a partition's rewind (here
// for its consumer's new leader; a lost connection or delivery does the
// same) does not wait for the events the worker holds. k1's events wait
// behind its slow work, which does not end until the test lets it; k2's
// events, in the same partition, are applied meanwhile. The copies of k1's
// events that the rewind delivers again are not applied: once the work
// ends, each of k1's events is applied once, in order, and nothing is left
// in the stream to come back after the ack wait.
func TestRewindGoesOnWhileEventsWaitBehindSlowWork(t *testing.T) {
	t.Parallel()
	cluster := natstest.StartCluster(t, 3)
	gate := make(chan struct{})
	opened := false
	openGate := func() {
		if !opened {
			opened = true
			close(gate)
		}
	}
	defer openGate()
	began := make(chan struct{}, 1)
	slow := func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		select {
		case began <- struct{}{}:
		default:
		}
		select {
		case <-gate:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	w := startWorker(t, cluster.URL(), worker.Config{ID: "a", Queue: worker.QueueConfig{Partitions: 1, Replicas: 3}}, slow)
	nc := natstest.NATS(t, cluster.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	producer := natstest.Client(t, cluster.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(key string, env contract.Envelope) {
		t.Helper()
		if _, err := producer.Publish(ctx, "tally", key, env); err != nil {
			t.Fatal(err)
		}
	}
	consumer := func() *jetstream.ConsumerInfo {
		t.Helper()
		cons, err := js.Consumer(ctx, contract.EventsStream("tally"), "orderly_tally_p0")
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}

	publish("k1", contract.Envelope{Event: "work"})
	natstest.Recv(t, began, 30*time.Second, "k1's slow work to begin")
	publish("k1", add(1))
	publish("k1", add(2))
	// The work event is acknowledged once committed; the two adds wait,
	// delivered and unacknowledged, behind the work.
	waitFor(t, 20*time.Second, "k1's two events delivered and held", func() bool {
		info := consumer()
		return info.NumAckPending == 2 && info.NumPending == 0
	})

	if _, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.LEADER.STEPDOWN."+contract.EventsStream("tally")+".orderly_tally_p0", nil); err != nil {
		t.Fatalf("step down the consumer's leader: %v", err)
	}
	waitFor(t, 20*time.Second, "the worker to rewind the partition", func() bool { return leaderRewinds(t, w) >= 1 })

	for i := 1; i <= 5; i++ {
		publish("k2", add(i))
	}
	waitFor(t, 20*time.Second, "k2's events applied while k1's wait behind its work", func() bool {
		_, err := producer.State(ctx, "tally", "k2")
		if errors.Is(err, client.ErrNoState) {
			return false
		}
		_, d := readTally(t, producer, "k2")
		return len(d.Seen) == 5
	})
	if rec, d := readTally(t, producer, "k1"); len(d.Seen) != 0 || rec.Version != 1 {
		t.Fatalf("k1 at version %d applied %v before its work ended", rec.Version, d.Seen)
	}

	openGate()
	waitFor(t, 20*time.Second, "k1's events applied after its work", func() bool {
		_, d := readTally(t, producer, "k1")
		return len(d.Seen) >= 2
	})
	waitFor(t, 20*time.Second, "nothing left pending in the partition", func() bool {
		info := consumer()
		return info.NumAckPending == 0 && info.NumPending == 0
	})
	rec, d := readTally(t, producer, "k1")
	// work, worked, add 1, add 2.
	if !slices.Equal(d.Seen, []int{1, 2}) || rec.Version != 4 {
		t.Errorf("k1 at version %d saw %v; want each of 1, 2 once, in order, at version 4", rec.Version, d.Seen)
	}
	if _, d := readTally(t, producer, "k2"); !slices.Equal(d.Seen, []int{1, 2, 3, 4, 5}) {
		t.Errorf("k2 saw %v; want 1..5 once, in order", d.Seen)
	}
}
