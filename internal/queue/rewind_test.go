package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestRewindDropsCopiesOfHeldEvents: a rewind while the puller holds an
// event does not wait for it. The copy the rewind delivers is not handed
// over again, and the held event's nak goes to the copy's delivery: the
// rewound consumer counts deliveries from 1 again and would ignore a nak
// of the held event's own (the 11th) delivery, and the event would come
// back only after the ack wait.
func TestRewindDropsCopiesOfHeldEvents(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1, AckWait: time.Minute})
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(c.NATS())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, contract.EventsStream("order"), "orderly_order_p0")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(key string) {
		t.Helper()
		if _, err := cl.Publish(ctx, "order", key, contract.Envelope{Event: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	p, got := pullInto(t, c, queue.PullConfig{Workflow: "order", Batch: 16, MaxInFlight: 16, MaxWait: time.Second})
	next := func(what string, within time.Duration) *queue.Msg {
		t.Helper()
		return natstest.Recv(t, got, within, what)
	}

	for range 10 {
		publish("a")
		if err := next("an event of a", 20*time.Second).Ack(); err != nil {
			t.Fatal(err)
		}
	}
	publish("held")
	held := next("the event held", 20*time.Second)
	if held.Sequence != 11 || held.Key != "held" {
		t.Fatalf("held seq %d of %s, want 11 of held", held.Sequence, held.Key)
	}

	p.Rewind()
	publish("b")
	if m := next("b's event, after the rewind", 20*time.Second); m.Key != "b" {
		t.Fatalf("after the rewind the handler got seq %d of %s again; want b's event (seq 12) alone", m.Sequence, m.Key)
	} else if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	settle := func(delivered uint64, unacked int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Delivered.Consumer == delivered && info.NumAckPending == unacked && info.NumPending == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("consumer delivered %d since the rewind, %d unacknowledged, %d pending; want %d, %d, 0",
					info.Delivered.Consumer, info.NumAckPending, info.NumPending, delivered, unacked)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The held event's copy and b's event; the held one unacknowledged.
	settle(2, 1)

	if err := held.Nak(0); err != nil {
		t.Fatal(err)
	}
	again := next("the held event, nak'ed", 10*time.Second)
	if again.Sequence != 11 {
		t.Fatalf("after the nak the handler got seq %d, want 11", again.Sequence)
	}
	if err := again.Ack(); err != nil {
		t.Fatal(err)
	}
	settle(3, 0)
}
