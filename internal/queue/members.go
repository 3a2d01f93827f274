package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderly-dev/orderly/contract"
)

// Heartbeat records worker id as a live member of the workflow's group for
// Spec.MemberTTL; a worker calls it well within that period.
func (c *Conn) Heartbeat(ctx context.Context, workflow, id string) error {
	// The put a KV handle makes, on the bucket's subject, without looking
	// the bucket up first: one request, not two, five times per MemberTTL.
	if _, err := c.js.Publish(ctx, "$KV."+contract.MembersBucket(workflow)+"."+id, []byte("alive")); err != nil {
		return fmt.Errorf("queue: heartbeat of %s: %w", id, err)
	}
	return nil
}

// Members lists the live workers of the workflow's group, sorted.
func (c *Conn) Members(ctx context.Context, workflow string) ([]string, error) {
	kv, err := c.js.KeyValue(ctx, contract.MembersBucket(workflow))
	if err != nil {
		return nil, fmt.Errorf("queue: members of %s: %w", workflow, err)
	}
	ids, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: members of %s: %w", workflow, err)
	}
	slices.Sort(ids)
	return ids, nil
}

// Leave removes worker id from the group at once, so the others take its
// partitions without waiting for its heartbeat to expire.
func (c *Conn) Leave(ctx context.Context, workflow, id string) error {
	kv, err := c.js.KeyValue(ctx, contract.MembersBucket(workflow))
	if err != nil {
		return fmt.Errorf("queue: members of %s: %w", workflow, err)
	}
	if err := kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("queue: leave %s: %w", id, err)
	}
	return nil
}
