package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/internal/jsapi"
)

// Publish errors callers can test with errors.Is; the same values as
// package client's.
var (
	// ErrQueueFull: the stream holds its limit; nothing was stored.
	ErrQueueFull = jsapi.ErrQueueFull
	// ErrPayloadTooLarge: the message is larger than the stream accepts.
	ErrPayloadTooLarge = jsapi.ErrPayloadTooLarge
	// ErrNotProvisioned: the workflow's streams or buckets do not exist
	// yet; no worker has provisioned it, or the workflow name is wrong.
	ErrNotProvisioned = jsapi.ErrNotProvisioned
)

// publishError is jsapi.PublishError with this package's prefix.
func publishError(subject string, err error) error {
	return fmt.Errorf("queue: %w", jsapi.PublishError(subject, err))
}

// PublishRaw stores body on subject as it is, waiting for JetStream's
// acknowledgement: for tools and tests that must send what a careless
// producer would.
func (c *Conn) PublishRaw(subject string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.js.Publish(ctx, subject, body); err != nil {
		return publishError(subject, err)
	}
	return nil
}
