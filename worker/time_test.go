package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

func TestTimeoutArmedBeforeRestartFiresOnceAfterIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()

	first, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: "wait"}); err != nil {
		t.Fatal(err)
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of wait"); s.To != "waiting" {
		t.Fatalf("status %+v", s)
	}
	// The worker goes away before the timeout is due; the timer is in
	// JetStream, not in the worker.
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// It fires while no worker runs: the event waits in the stream.
	waitFor(t, 10*time.Second, "the timeout to fire", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 1
	})
	startWorker(t, b.url, worker.Config{}, nil)
	s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the timeout")
	if s.Event != "expired" || s.From != "waiting" || s.To != "closed" || s.Version != 2 {
		t.Fatalf("timeout status %+v", s)
	}
	natstest.NoRecv(t, statuses, 1500*time.Millisecond, "a second status: the timeout fired twice")
	if rec, _ := readTally(t, b.client, "k"); rec.Version != 2 || rec.State != "closed" {
		t.Fatalf("state %+v", rec)
	}
}

func TestTimeoutOfAnEarlierVisitNeverFires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{}, nil)
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	for _, ev := range []string{"wait", "back"} {
		if _, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: ev}); err != nil {
			t.Fatal(err)
		}
		natstest.Recv(t, statuses, natstest.Timeout, "the status of "+ev)
	}
	// The timer armed on entering "waiting" still fires, and is ignored.
	waitFor(t, 10*time.Second, "the stale timer", func() bool { return w.Stats().StaleTimers == 1 })
	if rec, _ := readTally(t, b.client, "k"); rec.State != "open" || rec.Version != 2 {
		t.Fatalf("state %+v", rec)
	}
	select {
	case s := <-statuses:
		t.Fatalf("stale timer changed something: %+v", s)
	default:
	}
}

func TestActionSucceedsAfterRetries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	startWorker(t, b.url, worker.Config{RetryBackoff: time.Millisecond}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		if calls.Add(1) <= 2 {
			return nil, context.DeadlineExceeded // a transient failure
		}
		return nil, nil
	})
	statuses := subscribeKey(t, b.client, "k")
	if _, err := b.client.Publish(context.Background(), "tally", "k", contract.Envelope{Event: "work"}, client.WithJobID("j")); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, statuses, natstest.Timeout, "the status of work")
	for attempt := 1; attempt <= 2; attempt++ {
		if s := natstest.Recv(t, statuses, natstest.Timeout, "a retrying status"); s.Error == nil || s.Error.Code != contract.CodeRetrying || s.Attempt != attempt {
			t.Fatalf("retry status %+v", s)
		}
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of worked"); s.Error != nil || s.Event != "worked" || !s.Settled || s.JobID != "j" {
		t.Fatalf("final status %+v", s)
	}
}

func TestPassivation(t *testing.T) {
	t.Parallel()
	const keys = 200
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{MaxActors: 20, ActorIdle: 200 * time.Millisecond}, nil)
	settled := countSettled(t, b.client, "tally", keys)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := int64(w.Stats().Actors); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for k := range keys {
		if _, err := b.client.PublishAsync("tally", "p"+itoa(k), add(k)); err != nil {
			t.Fatal(err)
		}
	}
	settled.wait(t, 30*time.Second)
	close(stop)
	natstest.Recv(t, sampled, natstest.Timeout, "the sampler to stop")
	if p := peak.Load(); p > 20 {
		t.Fatalf("%d actors live at once, cap 20", p)
	}
	// Idle actors leave memory: a key with nothing pending holds nothing.
	waitFor(t, 10*time.Second, "idle actors to passivate", func() bool { return w.Stats().Actors == 0 })
}
