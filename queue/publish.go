package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/orderly-dev/orderly/internal/jsonx"
)

// Publish errors callers can test with errors.Is.
var (
	// ErrQueueFull: the events stream holds its QueueLimit of unprocessed
	// events; nothing was stored. Retry later or add workers.
	ErrQueueFull = errors.New("queue full")
	// ErrPayloadTooLarge: the message is larger than the stream accepts.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrNotProvisioned: no stream takes the workflow's events; no worker has
	// provisioned it yet, or the workflow name is wrong.
	ErrNotProvisioned = errors.New("workflow not provisioned (no stream takes its events; has a worker started?)")
	// ErrInvalidEvent: the event name is empty or the data is not JSON.
	ErrInvalidEvent = errors.New("invalid event")
)

// HeaderMsgID is the job id and idempotency key of an event.
const HeaderMsgID = jetstream.MsgIDHeader

// Envelope is the JSON body of an event message: {"event": "...", "data": {...}}.
type Envelope struct {
	Event string          `json:"event"`          // The event's name.
	Data  json.RawMessage `json:"data,omitempty"` // The event's payload, any JSON; optional.
}

// PubAck is JetStream's acknowledgement of a stored event.
type PubAck struct {
	// ID is the job id (the Nats-Msg-Id header).
	ID string
	// Sequence is the event's sequence in the events stream.
	Sequence uint64
	// Duplicate is true when an event with the same id was stored within the
	// duplicate window; this one was not stored again.
	Duplicate bool
}

// PublishOption sets a per-call publishing option.
type PublishOption func(*publishOptions)

type publishOptions struct {
	id       string
	progress func(Status) // PublishAndWait only
}

// WithID sets the job id and idempotency key; by default a unique id is made.
func WithID(id string) PublishOption { return func(o *publishOptions) { o.id = id } }

// NewJobID returns a new unique job id.
func NewJobID() string { return nuid.Next() }

func (c *Conn) eventMsg(workflow, key string, ev Envelope, opts []PublishOption) (*nats.Msg, string, error) {
	if err := ValidateWorkflow(workflow); err != nil {
		return nil, "", err
	}
	if err := ValidateKey(key); err != nil {
		return nil, "", err
	}
	if ev.Event == "" {
		return nil, "", fmt.Errorf("%w: the event name is empty", ErrInvalidEvent)
	}
	// jsonx.Valid answers as json.Valid does, faster, but refuses deep
	// nesting, which json.Valid then decides on.
	if len(ev.Data) > 0 && !jsonx.Valid(ev.Data) && !json.Valid(ev.Data) {
		return nil, "", fmt.Errorf("%w: data is not valid JSON", ErrInvalidEvent)
	}
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewJobID()
	}
	body, err := marshalEnvelope(&ev)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	msg := nats.NewMsg(EventSubject(workflow, key))
	msg.Data = body
	msg.Header.Set(HeaderMsgID, o.id)
	return msg, o.id, nil
}

// Publish stores one event for key and returns once JetStream has stored it
// (or found it a duplicate). A full queue fails at once with ErrQueueFull.
func (c *Conn) Publish(ctx context.Context, workflow, key string, ev Envelope, opts ...PublishOption) (PubAck, error) {
	msg, id, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return PubAck{}, err
	}
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return PubAck{}, publishError(msg.Subject, err)
	}
	return PubAck{ID: id, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PendingPublish is an event published without waiting for its acknowledgement.
type PendingPublish struct {
	id      string
	subject string
	f       jetstream.PubAckFuture
}

// ID is the job id of the event.
func (p *PendingPublish) ID() string { return p.id }

// Wait returns the event's acknowledgement, or why it was not stored.
func (p *PendingPublish) Wait(ctx context.Context) (PubAck, error) {
	select {
	case ack := <-p.f.Ok():
		return PubAck{ID: p.id, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
	case err := <-p.f.Err():
		return PubAck{}, publishError(p.subject, err)
	case <-ctx.Done():
		return PubAck{}, fmt.Errorf("queue: publish %s: %w", p.subject, ctx.Err())
	}
}

// PublishAsync sends one event without waiting for JetStream's
// acknowledgement; Wait on the result gets it. The caller bounds how many are
// outstanding (at most 4096 per connection; past that PublishAsync blocks).
func (c *Conn) PublishAsync(workflow, key string, ev Envelope, opts ...PublishOption) (*PendingPublish, error) {
	msg, id, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return nil, err
	}
	f, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		return nil, publishError(msg.Subject, err)
	}
	return &PendingPublish{id: id, subject: msg.Subject, f: f}, nil
}

func publishError(subject string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages exceeded"),
		errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum bytes exceeded"):
		return fmt.Errorf("queue: publish %s: %w: the stream holds its limit of unprocessed events; retry later or add workers", subject, ErrQueueFull)
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "message size exceeds"),
		errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("queue: publish %s: %w: %v", subject, ErrPayloadTooLarge, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("queue: publish %s: %w", subject, ErrNotProvisioned)
	}
	return fmt.Errorf("queue: publish %s: %w", subject, err)
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
