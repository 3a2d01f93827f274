package worker_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// TestBrokerAdapterWorkerOnTheCallersConnection: worker.New takes the
// caller's *nats.Conn and leaves it the caller's: the caller's handlers
// still run when the server goes away and comes back (the worker sets
// none), readiness follows the connection's state, and Stop leaves the
// connection open with nothing of the worker's on it.
func TestBrokerAdapterWorkerOnTheCallersConnection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown() }()
	url := srv.ClientURL()
	var disconnects, reconnects atomic.Int32
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { disconnects.Add(1) }),
		nats.ReconnectHandler(func(*nats.Conn) { reconnects.Add(1) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The connection's own request machinery (one subscription, made by
	// its first request) is there whoever asks: count from there.
	if _, err := nc.Request("$JS.API.INFO", nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := nc.NumSubscriptions()
	w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 2}}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = w.Stop(sctx)
		}
	}()
	if !w.Ready() {
		t.Fatal("not ready after Start")
	}
	// Work with a job id (claimed through a reply subscription the worker
	// makes on the connection) and a timer (scheduled on it).
	producer := natstest.Client(t, url)
	statuses := subscribeKey(t, producer, "k")
	if _, err := producer.Publish(ctx, "tally", "k", add(1), client.WithJobID("job-1")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "job-1 applied", settledOK("job-1"))
	if _, err := producer.Publish(ctx, "tally", "k", contract.Envelope{Event: "wait"}, client.WithJobID("job-2")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "job-2 applied", settledOK("job-2"))

	// The server goes away: the worker is not ready, and the caller's
	// handler hears of it.
	srv.Shutdown()
	waitFor(t, 10*time.Second, "the worker unready with its connection down", func() bool { return !w.Ready() })
	waitFor(t, 10*time.Second, "the caller's disconnect handler", func() bool { return disconnects.Load() > 0 })
	srv, err = embedded.Start(embedded.Config{Listen: strings.TrimPrefix(url, "nats://"), DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the caller's reconnect handler", func() bool { return reconnects.Load() > 0 })
	waitFor(t, 30*time.Second, "the worker ready again", w.Ready)

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stopped = true
	if err := w.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatalf("the caller's connection is %v after the worker's Stop, want connected", nc.Status())
	}
	if n := nc.NumSubscriptions(); n != before {
		t.Errorf("%d subscriptions on the caller's connection after the worker's Stop, %d before New", n, before)
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("the caller's connection after Stop: %v", err)
	}
}
