package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestPublishRefusesBadKeyBeforeBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	for _, key := range []string{"a b", "a.b", "*", ">", strings.Repeat("x", 200)} {
		_, err := b.client.Publish(context.Background(), "order", key, contract.Envelope{Event: "start_processing"})
		if !errors.Is(err, contract.ErrInvalidKey) {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	if n := b.pending(t); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestPublishDuplicateID(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	ctx := context.Background()
	ev := contract.Envelope{Event: "start_processing"}
	first, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil || first.Duplicate || first.ID != "job-1" {
		t.Fatalf("first: %+v %v", first, err)
	}
	second, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("second: %+v %v", second, err)
	}
	if n := b.pending(t); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestPublishQueueFull(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{QueueLimit: 10})
	ctx := context.Background()
	for i := range 10 {
		if _, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	_, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"})
	if !errors.Is(err, client.ErrQueueFull) {
		t.Fatalf("11th publish: %v", err)
	}
	p, err := b.client.PublishAsync("order", "k", contract.Envelope{Event: "e"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, client.ErrQueueFull) {
		t.Fatalf("async 11th publish: %v", err)
	}
}

// TestProducerClientBadInput: each bad input gets its own clear error, before the
// broker where it can be told there, and nothing else is lost: a good event
// still goes in afterwards.
func TestProducerClientBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{MaxPayload: 1024})
	ctx := context.Background()
	for _, c := range []struct {
		name          string
		workflow, key string
		ev            contract.Envelope
		opts          []client.PublishOption
		want          error
		says          string
	}{
		{"bad key", "order", "a.b", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidKey, "A-Z a-z 0-9 - _ ="},
		{"empty key", "order", "", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidKey, "empty"},
		{"bad workflow", "Order!", "k", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidWorkflow, "a-z 0-9 - _"},
		{"empty event", "order", "k", contract.Envelope{}, nil, client.ErrInvalidEvent, "event name is empty"},
		{"data not JSON", "order", "k", contract.Envelope{Event: "e", Data: []byte("{nope")}, nil, client.ErrInvalidEvent, "not valid JSON"},
		{"bad job id", "order", "k", contract.Envelope{Event: "e"}, []client.PublishOption{client.WithJobID("a\nb")}, contract.ErrInvalidJobID, "control character"},
		{"too large", "order", "k", contract.Envelope{Event: "e", Data: []byte(`"` + strings.Repeat("x", 2000) + `"`)}, nil, client.ErrPayloadTooLarge, "payload too large"},
		{"not provisioned", "nosuch", "k", contract.Envelope{Event: "e"}, nil, client.ErrNotProvisioned, "has a worker started?"},
	} {
		_, err := b.client.Publish(ctx, c.workflow, c.key, c.ev, c.opts...)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
		if _, _, err := b.client.PublishAndWait(ctx, c.workflow, c.key, c.ev, c.opts...); !errors.Is(err, c.want) {
			t.Errorf("%s, and wait: %v, want %v", c.name, err, c.want)
		}
		if c.want == client.ErrPayloadTooLarge || c.want == client.ErrNotProvisioned {
			continue // found by the server, when the event is sent
		}
		if _, err := b.client.PublishAsync(c.workflow, c.key, c.ev, c.opts...); !errors.Is(err, c.want) {
			t.Errorf("%s, async: %v, want %v", c.name, err, c.want)
		}
	}
	if n := b.pending(t); n != 0 {
		t.Fatalf("%d events stored from bad input", n)
	}
	if _, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
}

// TestIdempotencyKeyConflictWhileQueued: no worker has taken the first
// event yet, so only the stream knows the id; a second use is still judged
// by the original's key and event, not reported a plain duplicate.
func TestIdempotencyKeyConflictWhileQueued(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	start := contract.Envelope{Event: "start_processing"}
	first, err := b.client.Publish(ctx, "order", "k1", start, client.WithJobID("job-x"))
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	dup, err := b.client.Publish(ctx, "order", "k1", start, client.WithJobID("job-x"))
	if err != nil || !dup.Duplicate || dup.Key != "k1" || dup.Sequence != first.Sequence || dup.Taken || dup.At.IsZero() {
		t.Fatalf("same key and event: %+v %v, want a duplicate of sequence %d, queued", dup, err, first.Sequence)
	}
	for _, tc := range []struct{ key, event string }{{"k2", "start_processing"}, {"k1", "confirm_payment"}} {
		_, err := b.client.Publish(ctx, "order", tc.key, contract.Envelope{Event: tc.event}, client.WithJobID("job-x"))
		var conflict *client.IDConflictError
		if !errors.Is(err, client.ErrIDConflict) || !errors.As(err, &conflict) || conflict.Held.Key != "k1" || conflict.Held.Event != "start_processing" {
			t.Fatalf("%s %s: %v, want a conflict with k1", tc.key, tc.event, err)
		}
		if !strings.Contains(err.Error(), "held by key k1 (event start_processing)") {
			t.Fatalf("message %q does not name the key", err)
		}
		p, err := b.client.PublishAsync("order", tc.key, contract.Envelope{Event: tc.event}, client.WithJobID("job-x"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); !errors.Is(err, client.ErrIDConflict) {
			t.Fatalf("async %s %s: %v, want a conflict", tc.key, tc.event, err)
		}
	}
	if n := b.pending(t); n != 1 {
		t.Fatalf("stored %d events, want 1", n)
	}
}
