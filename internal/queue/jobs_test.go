package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestIdempotencyKeyClaims: the job bucket as the worker uses it, and what
// producers then hear.
func TestIdempotencyKeyClaims(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	cl := newClient(t, c)
	ctx := context.Background()
	jobs, err := c.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("y", 200) + "." // stored under its hash
	res := jobs.Claim(ctx, []contract.Job{
		{ID: "job-x", Key: "k1", Event: "start_processing", Sequence: 7, At: at},
		{ID: long, Key: "k1", Event: "start_processing", Sequence: 8, At: at},
		{ID: "job-x", Key: "k1", Event: "start_processing", Sequence: 7, At: at}, // a redelivery
		{ID: "job-x", Key: "k1", Event: "start_processing", Sequence: 9, At: at}, // a duplicate
		{ID: "job-x", Key: "k2", Event: "start_processing", Sequence: 10, At: at},
		{ID: "job-x", Key: "k1", Event: "confirm_payment", Sequence: 11, At: at},
	})
	want := []contract.ClaimOutcome{contract.Claimed, contract.Claimed, contract.Claimed, contract.Duplicate, contract.Conflict, contract.Conflict}
	for i, r := range res {
		if r.Err != nil || r.Outcome != want[i] {
			t.Fatalf("claim %d: %+v, want outcome %d", i, r, want[i])
		}
		if i >= 2 && (r.Held.Key != "k1" || r.Held.Sequence != 7 || !r.Held.At.Equal(at)) {
			t.Fatalf("claim %d: held %+v, want k1's sequence 7", i, r.Held)
		}
	}
	j, err := cl.Job(ctx, "order", long)
	if err != nil || j.Sequence != 8 || j.Key != "k1" {
		t.Fatalf("job of the long id: %+v %v", j, err)
	}
	if _, err := cl.Job(ctx, "order", "nobody"); !errors.Is(err, client.ErrNoJob) {
		t.Fatalf("unknown id: %v", err)
	}

	// Producers: refused or told of the duplicate before anything is stored.
	start := contract.Envelope{Event: "start_processing"}
	dup, err := cl.Publish(ctx, "order", "k1", start, client.WithJobID("job-x"))
	if err != nil || !dup.Duplicate || !dup.Taken || dup.Key != "k1" || dup.Sequence != 7 || !dup.At.Equal(at) {
		t.Fatalf("duplicate: %+v %v", dup, err)
	}
	_, err = cl.Publish(ctx, "order", "k2", start, client.WithJobID("job-x"))
	var conflict *client.IDConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, client.ErrIDConflict) || conflict.Held.Key != "k1" || conflict.Stored {
		t.Fatalf("conflict: %v", err)
	}
	if info, err := c.Info(ctx, "order"); err != nil || info.Pending != 0 {
		t.Fatalf("stored %d events, want none: %v", info.Pending, err)
	}
	// PublishAsync does not wait for the look-up before sending: the event
	// is stored, and Wait says what the worker will find.
	p, err := cl.PublishAsync("order", "k2", start, client.WithJobID("job-x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.As(err, &conflict) || !conflict.Stored || !strings.Contains(err.Error(), "dead-lettered") {
		t.Fatalf("async conflict: %v", err)
	}
	if _, err := cl.Publish(ctx, "order", "k3", start, client.WithJobID("job-new")); err != nil {
		t.Fatalf("a new id: %v", err)
	}
}

func TestIdempotencyKeyWindowProvisioned(t *testing.T) {
	t.Parallel()
	c, p := setup(t, queue.Spec{Partitions: 1, DedupeWindow: 3 * time.Second})
	if p.Spec.DedupeWindow != 3*time.Second || p.Spec.DuplicateWindow != 3*time.Second {
		t.Fatalf("spec %+v: the stream's window must not outlast the dedupe window", p.Spec)
	}
	ctx := context.Background()
	if ttl := bucketTTL(t, c.ServerURL(), "orderly_jobs_order"); ttl != 3*time.Second {
		t.Fatalf("job bucket TTL %s, want 3s", ttl)
	}
	// A changed window updates the bucket.
	upd, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1, DedupeWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(upd.Updated, " "), "bucket orderly_jobs_order") {
		t.Fatalf("updated %v", upd.Updated)
	}
	if ttl := bucketTTL(t, c.ServerURL(), "orderly_jobs_order"); ttl != time.Hour {
		t.Fatalf("job bucket TTL %s, want 1h", ttl)
	}
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", DedupeWindow: time.Millisecond}); err == nil {
		t.Fatal("a 1ms dedupe window was accepted")
	}
	if got := (queue.Spec{}).WithDefaults().DedupeWindow; got != 24*time.Hour {
		t.Fatalf("default dedupe window %s", got)
	}
}

// bucketTTL reads a KV bucket's TTL (its stream's MaxAge) with a client of
// its own.
func bucketTTL(t *testing.T, url, bucket string) time.Duration {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.TTL()
}
