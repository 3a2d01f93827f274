package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestPerKeyOrderWhenAPullRequestOutlivesARewind: a pull request the puller
// no longer reads can still be open on the server when the puller rewinds
// the consumer. Under load this happens by itself: nats.go gives a fetch up
// on its own timer (MaxWait + 1s without a message) and closes its channel
// before it unsubscribes, so the rewind can reach a server that still holds
// the request and delivers the rewound events to it. Those events are lost
// to the puller until the ack wait ends, and the puller must see that as a
// gap: the first delivery after a rewind is consumer sequence 1. Here the
// leftover request is made by hand, under the puller's own pin.
func TestPerKeyOrderWhenAPullRequestOutlivesARewind(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const stream, consumer = "ORDERLY_EVENTS_ORDER", "orderly_order_p0"
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	info := func() *jetstream.ConsumerInfo {
		t.Helper()
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ci
	}
	publish := func() {
		t.Helper()
		if _, err := cl.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
			t.Fatal(err)
		}
	}

	// Room for one event: while the test holds it the puller asks for
	// nothing, so the test decides which request the server sees first.
	_, got := pullInto(t, c, queue.PullConfig{Workflow: "order", Batch: 1, MaxInFlight: 1, MaxWait: 5 * time.Second})
	next := func(what string) *queue.Msg {
		t.Helper()
		return natstest.Recv(t, got, 20*time.Second, what)
	}

	publish() // seq 1
	first := next("seq 1")
	if first.Sequence != 1 {
		t.Fatalf("first event: seq %d", first.Sequence)
	}
	pin := ""
	if pg := info().PriorityGroups; len(pg) == 1 {
		pin = pg[0].PinnedClientID
	}
	if pin == "" {
		t.Fatalf("the partition is not pinned to the puller: %+v", info().PriorityGroups)
	}

	// A request for 3 under the puller's pin, that nobody reads.
	stale := make(chan *nats.Msg, 8)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, stale)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	req := fmt.Sprintf(`{"batch":3,"expires":%d,"group":%q,"id":%q}`, int64(time.Minute), queue.PriorityGroup, pin)
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, inbox, []byte(req)); err != nil {
		t.Fatal(err)
	}
	staleGets := func(seq uint64) {
		t.Helper()
		select {
		case m := <-stale:
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("leftover request got %q %q: %v", m.Header.Get("Status"), m.Header.Get("Description"), err)
			}
			if md.Sequence.Stream != seq {
				t.Fatalf("leftover request got seq %d, want %d", md.Sequence.Stream, seq)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the leftover request got nothing (waiting for seq %d)", seq)
		}
	}
	waitFor(t, 20*time.Second, "the leftover request to wait", func() bool { return info().NumWaiting == 1 })
	publish() // seq 2
	staleGets(2)

	// Room again: the puller asks, behind the leftover request.
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the ack of seq 1 and the puller's next request", func() bool {
		ci := info()
		return ci.AckFloor.Stream == 1 && ci.NumWaiting == 2
	})
	publish() // seq 3: the leftover request's second
	staleGets(3)
	publish() // seq 4: the puller's, a gap in its deliveries: it rewinds
	// After the rewind the leftover request takes seq 2 again, its last. The
	// puller must not hand seq 3 on before seq 2.
	var seen []uint64
	for len(seen) == 0 || seen[len(seen)-1] < 4 {
		m := next(fmt.Sprintf("seq 2..4, seen %v", seen))
		seen = append(seen, m.Sequence)
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		if len(seen) > 1 && seen[len(seen)-1] <= seen[len(seen)-2] || seen[0] != 2 {
			t.Fatalf("the handler got stream sequences %v after seq 1: a newer event before an older one", seen)
		}
	}
}

// waitFor polls cond, for conditions no event announces (a consumer's state).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
