package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
)

// ErrNoState: the key has no stored state (no event was applied to it).
var ErrNoState = errors.New("no state stored for key")

// State returns the stored state of key in workflow; ErrNoState if the key
// has none yet, ErrNotProvisioned if the workflow has no state bucket.
func (c *Client) State(ctx context.Context, workflow, key string) (contract.StateRecord, error) {
	if c.isDone() {
		return contract.StateRecord{}, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return contract.StateRecord{}, err
	}
	if err := contract.ValidateKey(key); err != nil {
		return contract.StateRecord{}, err
	}
	kv, err := c.js.KeyValue(ctx, contract.StateBucket(workflow))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return contract.StateRecord{}, fmt.Errorf("client: state of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return contract.StateRecord{}, fmt.Errorf("client: state bucket of %s: %w", workflow, err)
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return contract.StateRecord{}, fmt.Errorf("client: state of %s: %w", key, ErrNoState)
	}
	if err != nil {
		return contract.StateRecord{}, fmt.Errorf("client: state of %s: %w", key, err)
	}
	rec, err := contract.DecodeState(e.Value())
	if err != nil {
		return contract.StateRecord{}, fmt.Errorf("client: state of %s: %w", key, err)
	}
	return rec, nil
}
