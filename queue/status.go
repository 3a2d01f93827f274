package queue

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Status is one state change (or rejection) of a key, published on
// orderly.status.<workflow>.<key>. Its JSON form is part of contract v1.
type Status struct {
	Workflow string `json:"workflow"` // The workflow's name.
	Key      string `json:"key"`      // The entity key.
	// JobID is the job whose event caused this status; for the outcome and
	// retries of slow work, the job that started it.
	JobID string `json:"job_id"`
	Event string `json:"event"` // The event applied or rejected (the action's name for a retry).
	From  string `json:"from"`  // The state before.
	To    string `json:"to"`    // The state after; equal to From for a rejection.
	// Version counts the key's committed changes.
	Version uint64    `json:"version"`
	At      time.Time `json:"at"` // When the change was committed.
	// Settled is true when no slow work is left for the key.
	Settled bool `json:"settled"`
	// Error is set when the event was rejected or slow work failed.
	Error *StatusError `json:"error,omitempty"`
	// Action names the slow work this status reports on, if any.
	Action string `json:"action,omitempty"`
	// Attempt is the attempt number of a retried action.
	Attempt int `json:"attempt,omitempty"`
}

// StatusError says why an event was rejected or work failed.
type StatusError struct {
	// Code is stable and machine-readable: invalid_transition, guard_refused,
	// unknown_event, internal_event, invalid_data, malformed, too_large,
	// action_failed, retrying, ...
	Code    string `json:"code"`
	Message string `json:"message"` // Says what went wrong, for people.
}

// Error makes a StatusError an error: "code: message".
func (e *StatusError) Error() string { return e.Code + ": " + e.Message }

// PublishStatus broadcasts st on its key's status subject. Status is
// pub/sub: it is not stored, and a subscriber that is away misses it; the
// key's state in the bucket is the durable record.
func (c *Conn) PublishStatus(st *Status) error {
	body, err := marshalStatus(st)
	if err != nil {
		return fmt.Errorf("queue: encode status: %w", err)
	}
	return c.nc.Publish(StatusSubject(st.Workflow, st.Key), body)
}

// Subscription is a live status subscription.
type Subscription struct{ sub *nats.Subscription }

// Unsubscribe ends the subscription; the handler is not called afterwards.
func (s *Subscription) Unsubscribe() error { return s.sub.Unsubscribe() }

// SubscribeStatus calls h with each status change of key in workflow, or of
// every key of the workflow when key is empty. h runs on one goroutine, in
// publish order; messages that are not a Status are skipped.
func (c *Conn) SubscribeStatus(workflow, key string, h func(Status)) (*Subscription, error) {
	if err := ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	if key != "" {
		if err := ValidateKey(key); err != nil {
			return nil, err
		}
	}
	sub, err := c.nc.Subscribe(StatusSubject(workflow, key), func(m *nats.Msg) {
		var st Status
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
