package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// fakeWorker pulls the single partition of "order" and, for each event,
// publishes the statuses reply returns for it: a real round trip through
// the broker.
func fakeWorker(t *testing.T, c *queue.Conn, reply func(m *queue.Msg) []contract.Status) {
	t.Helper()
	p, err := c.Pull(context.Background(), queue.PullConfig{Workflow: "order", MaxWait: 100 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) {
			_ = m.Ack()
			for _, st := range reply(m) {
				if err := c.PublishStatus(&st); err != nil {
					t.Error(err)
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
}

func TestPublishAndWait(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{Partitions: 1})
	fakeWorker(t, b.conn, func(m *queue.Msg) []contract.Status {
		st := contract.Status{Workflow: "order", Key: m.Key, Event: "start_processing", From: "idle", To: "processing", Version: 1}
		other, progress, final := st, st, st
		other.JobID = "someone-else"
		other.Settled = true
		progress.JobID = m.ID
		progress.Attempt = 1
		progress.Error = &contract.StatusError{Code: contract.CodeRetrying, Message: "gateway busy"}
		final.JobID, final.Settled, final.To, final.Version = m.ID, true, "awaiting_payment", 2
		return []contract.Status{other, progress, final}
	})
	var progress []contract.Status
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, st, err := b.client.PublishAndWait(ctx, "order", "k1", contract.Envelope{Event: "start_processing"},
		client.WithJobID("job-1"), client.WithProgress(func(s contract.Status) { progress = append(progress, s) }))
	if err != nil {
		t.Fatal(err)
	}
	if ack.ID != "job-1" || ack.Duplicate || st.JobID != "job-1" || !st.Settled || st.To != "awaiting_payment" {
		t.Fatalf("ack %+v, status %+v", ack, st)
	}
	if len(progress) != 1 || progress[0].Error == nil || progress[0].Error.Code != contract.CodeRetrying {
		t.Fatalf("progress %+v", progress)
	}
}

func TestPublishAndWaitTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ack, _, err := b.client.PublishAndWait(ctx, "order", "k1", contract.Envelope{Event: "e"})
	if !errors.Is(err, client.ErrWaitTimeout) || !errors.Is(err, context.DeadlineExceeded) || ack.ID == "" {
		t.Fatalf("ack %+v, err %v", ack, err)
	}
}

func TestPublishAndWaitDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	c := b.conn
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := contract.Envelope{Event: "start_processing"}
	if _, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1")); err != nil {
		t.Fatal(err)
	}
	// The original still waits in the queue: its own status is awaited
	// (statuses carry the job id, the same). A worker's, sent here until
	// the waiting ends.
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = c.PublishStatus(&contract.Status{Workflow: "order", Key: "k1", JobID: "job-1", Event: "start_processing",
				From: "idle", To: "processing", Version: 1, Settled: true})
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	ack, st, err := b.client.PublishAndWait(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	close(stop)
	natstest.Recv(t, sent, natstest.Timeout, "the status sender to stop")
	if err != nil || !ack.Duplicate || ack.Taken || ack.Key != "k1" || ack.Sequence != 1 {
		t.Fatalf("queued original: ack %+v, err %v", ack, err)
	}
	if !st.Settled || st.From != "idle" || st.To != "processing" || st.JobID != "job-1" {
		t.Fatalf("queued original: status %+v", st)
	}

	// Taken by a worker, applied, and no status of it in the key's
	// history (its worker stopped between its commit and the publish): the
	// key's state as it is now.
	jobs, err := c.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if r := jobs.Claim(ctx, []contract.Job{{ID: "job-2", Key: "k1", Event: "start_processing", Sequence: 5, At: time.Now()}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	bucket, err := c.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Put(ctx, "k1", []byte(`{"state":"processing","version":1,"data":{"a":1},"applied":[5]}`), 0); err != nil {
		t.Fatal(err)
	}
	ack, st, err = b.client.PublishAndWait(ctx, "order", "k1", ev, client.WithJobID("job-2"))
	if err != nil || !ack.Duplicate || !ack.Taken || ack.Sequence != 5 {
		t.Fatalf("taken original: ack %+v, err %v", ack, err)
	}
	if !st.Settled || st.To != "processing" || st.Version != 1 || st.JobID != "job-2" {
		t.Fatalf("taken original: status %+v", st)
	}
}

func TestPublishAndWaitBadKey(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	if _, _, err := b.client.PublishAndWait(context.Background(), "order", "a.b", contract.Envelope{Event: "e"}); !errors.Is(err, contract.ErrInvalidKey) {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	// Bounds the test: Watch returns when ctx ends, with what it saw.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ready := make(chan struct{})
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- b.client.Watch(ctx, "order", "", func(st contract.Status) {
			if got = append(got, st.Key); len(got) == 2 {
				cancel()
			}
		}, client.WatchReady(func() { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("watch ended before it was ready: %v", err)
	case <-time.After(natstest.Timeout):
		t.Fatalf("watch not ready within %s", natstest.Timeout)
	}
	for _, k := range []string{"k1", "k2"} {
		if err := b.conn.PublishStatus(&contract.Status{Workflow: "order", Key: k, To: "processing"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := natstest.Recv(t, done, natstest.Timeout, "the watch to end after two statuses"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "k1" || got[1] != "k2" {
		t.Fatalf("watched %v, want k1 and k2", got)
	}
}
