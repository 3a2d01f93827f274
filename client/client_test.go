package client_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

// startOrderWorker runs the reference order workflow on a worker of its own
// connection to url, with a fast simulated gateway, until the test ends.
func startOrderWorker(t *testing.T, url string) {
	t.Helper()
	wf, err := order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{Latency: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(natstest.NATS(t, url), worker.Config{Queue: worker.QueueConfig{Partitions: 2}, ShutdownTimeout: 5 * time.Second}, wf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop worker: %v", err)
		}
	})
}

// TestProducerClientFromOwnConn: a service's own *nats.Conn, made with
// nats.Connect, is all the client needs to publish, publish and wait, read
// a key's state, watch its statuses, be refused a reused job id, and list
// and replay a dead letter, against a worker running the order workflow.
func TestProducerClientFromOwnConn(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	startOrderWorker(t, srv.ClientURL())
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("my-service"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc, client.Config{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Watch every status of o1 from before its first event.
	var (
		mu      sync.Mutex
		watched []contract.Status
	)
	ready, watching := make(chan struct{}), make(chan error, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	go func() {
		watching <- c.Watch(wctx, "order", "o1", func(st contract.Status) {
			mu.Lock()
			watched = append(watched, st)
			mu.Unlock()
		}, client.WatchReady(func() { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-watching:
		t.Fatalf("watch ended before it was ready: %v", err)
	case <-time.After(natstest.Timeout):
		t.Fatalf("watch not ready within %s", natstest.Timeout)
	}

	// Publish: stored, the job id given.
	ack, err := c.Publish(ctx, "order", "o1", contract.Envelope{Event: string(order.StartProcessing)}, client.WithJobID("o1-start"))
	if err != nil || ack.ID != "o1-start" || ack.Duplicate || ack.Sequence == 0 {
		t.Fatalf("publish: %+v %v", ack, err)
	}
	// Publish and wait: followed to its settled status, progress on the way.
	var progress []contract.Status
	ack, st, err := c.PublishAndWait(ctx, "order", "o1", contract.Envelope{Event: string(order.RequestPayment)},
		client.WithJobID("o1-pay"), client.WithProgress(func(st contract.Status) { progress = append(progress, st) }))
	if err != nil || ack.ID != "o1-pay" || !st.Settled || st.JobID != "o1-pay" || st.To != string(order.AwaitingPayment) || st.Error != nil {
		t.Fatalf("publish and wait: ack %+v, status %+v, %v", ack, st, err)
	}
	if len(progress) == 0 || progress[0].JobID != "o1-pay" || progress[0].Settled {
		t.Fatalf("progress %+v, want the unsettled statuses of o1-pay", progress)
	}
	// State: the durable record.
	rec, err := c.State(ctx, "order", "o1")
	if err != nil || rec.State != string(order.AwaitingPayment) || rec.Version != st.Version || !strings.Contains(string(rec.Data), "payment_ref") {
		t.Fatalf("state %+v (%s), %v; want awaiting_payment at version %d", rec, rec.Data, err, st.Version)
	}
	if _, err := c.State(ctx, "order", "o-none"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("state of a key with none: %v, want ErrNoState", err)
	}
	// Job: the claim of an id a worker took.
	if j, err := c.Job(ctx, "order", "o1-start"); err != nil || j.Key != "o1" || j.Event != string(order.StartProcessing) || j.Sequence != 1 {
		t.Fatalf("job o1-start: %+v %v", j, err)
	}

	// A reused job id: the same key and event is a duplicate, applied once;
	// another key is refused, naming the holder, and nothing is stored.
	dup, err := c.Publish(ctx, "order", "o1", contract.Envelope{Event: string(order.StartProcessing)}, client.WithJobID("o1-start"))
	if err != nil || !dup.Duplicate || !dup.Taken || dup.Key != "o1" || dup.Sequence != 1 {
		t.Fatalf("duplicate: %+v %v", dup, err)
	}
	_, err = c.Publish(ctx, "order", "o2", contract.Envelope{Event: string(order.StartProcessing)}, client.WithJobID("o1-start"))
	var conflict *client.IDConflictError
	if !errors.Is(err, client.ErrIDConflict) || !errors.As(err, &conflict) || conflict.Held.Key != "o1" || conflict.Key != "o2" || conflict.Stored {
		t.Fatalf("a job id reused for another key: %v, want an IDConflictError held by o1", err)
	}
	if _, err := c.State(ctx, "order", "o2"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("o2 after the refused event: %v, want no state", err)
	}

	// What the watch saw: every status of o1, in order, ending with o1-pay's.
	stopWatch()
	select {
	case err := <-watching:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
	mu.Lock()
	seen := watched
	mu.Unlock()
	if len(seen) < 4 || seen[0].JobID != "o1-start" || seen[len(seen)-1].JobID != "o1-pay" || !seen[len(seen)-1].Settled {
		t.Fatalf("watched %+v", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Version < seen[i-1].Version {
			t.Fatalf("watched out of order: %+v", seen)
		}
	}

	// A dead letter: an event the workflow does not know. Listed with its
	// reason, then replayed under a new job id (and dead-lettered again,
	// since it is still unknown).
	_, st, err = c.PublishAndWait(ctx, "order", "o3", contract.Envelope{Event: "no_such_event"}, client.WithJobID("o3-bad"))
	if err != nil || st.Error == nil || st.Error.Code != contract.CodeUnknownEvent {
		t.Fatalf("unknown event: %+v %v", st, err)
	}
	dead := waitDeadLetters(t, ctx, c, func(ds []client.DeadLetter) bool { return len(ds) == 1 })
	d := dead[0]
	if d.Key != "o3" || d.JobID != "o3-bad" || !strings.HasPrefix(d.Reason, contract.CodeUnknownEvent+": ") || d.Workflow != "order" {
		t.Fatalf("dead letter %+v", d)
	}
	replayed, err := c.Replay(ctx, "order", d.Sequence)
	if err != nil || replayed.ID != "o3-bad.replay."+itoa(d.Sequence) {
		t.Fatalf("replay: %+v %v", replayed, err)
	}
	if _, err := c.Replay(ctx, "order", d.Sequence); !errors.Is(err, client.ErrNoDeadLetter) {
		t.Fatalf("second replay of %d: %v, want ErrNoDeadLetter", d.Sequence, err)
	}
	dead = waitDeadLetters(t, ctx, c, func(ds []client.DeadLetter) bool { return len(ds) == 1 && ds[0].Sequence != d.Sequence })
	if dead[0].JobID != replayed.ID || dead[0].Key != "o3" {
		t.Fatalf("the replayed event's dead letter %+v, want job %s", dead[0], replayed.ID)
	}
	if n, err := c.ReplayAll(ctx, "order"); n != 1 || err != nil {
		t.Fatalf("replay all: %d %v", n, err)
	}
	if !nc.IsConnected() {
		t.Fatal("the service's connection is down")
	}
}

// waitDeadLetters lists the dead letters of "order" until done accepts them.
func waitDeadLetters(t *testing.T, ctx context.Context, c *client.Client, done func([]client.DeadLetter) bool) []client.DeadLetter {
	t.Helper()
	for {
		ds, err := c.DeadLetters(ctx, "order", 0)
		if err != nil {
			t.Fatal(err)
		}
		if done(ds) {
			return ds
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dead letters %+v; the wait ended: %v", ds, ctx.Err())
		case <-time.After(50 * time.Millisecond): // dead-lettering follows the status
		}
	}
}

// TestProducerClientCloseLeavesConnOpen: a client made by New releases what
// it made on the caller's connection (its subscriptions) and leaves the
// connection open and usable; later calls fail with ErrClosed. One made by
// Connect closes its own.
func TestProducerClientCloseLeavesConnOpen(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	nc, err := nats.Connect(b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	before := nc.NumSubscriptions()
	c, err := client.New(nc, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Publishes that make the client subscribe: PublishAsync's
	// acknowledgements and its job id look-ups.
	p, err := c.PublishAsync("order", "k1", contract.Envelope{Event: "e"}, client.WithJobID("j1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if nc.NumSubscriptions() == before {
		t.Fatal("PublishAsync made no subscription: the test proves nothing")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !nc.IsConnected() || nc.IsClosed() {
		t.Fatalf("the caller's connection after Close: %s", nc.Status())
	}
	if n := nc.NumSubscriptions(); n != before {
		t.Fatalf("%d subscriptions left on the caller's connection, had %d", n, before)
	}
	if _, err := c.Publish(ctx, "order", "k1", contract.Envelope{Event: "e"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after Close: %v, want ErrClosed", err)
	}
	// The connection still works, for a new client too.
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := client.New(nc, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatal("Drain of a client made by New closed the caller's connection")
	}

	// Connect: the client's own connection, closed by Close or Drain.
	for _, end := range []func(*client.Client) error{
		func(c *client.Client) error { return c.Close() },
		func(c *client.Client) error { return c.Drain(ctx) },
	} {
		owned, err := client.Connect(b.url, client.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := owned.Publish(ctx, "order", "k2", contract.Envelope{Event: "e"}); err != nil {
			t.Fatal(err)
		}
		if err := end(owned); err != nil {
			t.Fatal(err)
		}
		if !owned.Conn().IsClosed() {
			t.Fatalf("the client's own connection after it ended: %s", owned.Conn().Status())
		}
	}

	if _, err := client.New(nil, client.Config{}); err == nil {
		t.Fatal("New(nil) made a client")
	}
	if _, err := client.New(nc, client.Config{Timeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("a negative Timeout: %v", err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
