package queue

import (
	"fmt"

	"github.com/orderly-dev/orderly/contract"

	"github.com/nats-io/nats.go"
)

// PublishStatus broadcasts st on its key's status subject. Status is
// pub/sub: it is not stored, and a subscriber that is away misses it; the
// key's state in the bucket is the durable record.
func (c *Conn) PublishStatus(st *contract.Status) error {
	body, err := marshalStatus(st)
	if err != nil {
		return fmt.Errorf("queue: encode status: %w", err)
	}
	return c.nc.Publish(contract.StatusSubject(st.Workflow, st.Key), body)
}

// Subscription is a live status subscription.
type Subscription struct{ sub *nats.Subscription }

// Unsubscribe ends the subscription; the handler is not called afterwards.
func (s *Subscription) Unsubscribe() error { return s.sub.Unsubscribe() }

// SubscribeStatus calls h with each status change of key in workflow, or of
// every key of the workflow when key is empty. h runs on one goroutine, in
// publish order; messages that are not a Status are skipped.
func (c *Conn) SubscribeStatus(workflow, key string, h func(contract.Status)) (*Subscription, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	if key != "" {
		if err := contract.ValidateKey(key); err != nil {
			return nil, err
		}
	}
	sub, err := c.nc.Subscribe(contract.StatusSubject(workflow, key), func(m *nats.Msg) {
		var st contract.Status
		if unmarshalStatus(m.Data, &st) == nil {
			h(st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("queue: subscribe status: %w", err)
	}
	// The subscription must be known to the server before the caller
	// publishes, or a fast status could be missed.
	if err := c.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("queue: subscribe status: %w", err)
	}
	return &Subscription{sub: sub}, nil
}
