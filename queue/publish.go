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

	"github.com/orderly-dev/orderly/contract"
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

// PubAck is JetStream's acknowledgement of a stored event.
type PubAck struct {
	// ID is the job id (the Nats-Msg-Id header).
	ID string
	// Sequence is the event's sequence in the events stream; for a
	// duplicate, the original's.
	Sequence uint64
	// Duplicate is true when an event of the same key and event name took
	// this job id before, within the dedupe window (Spec.DedupeWindow): it
	// is applied once, and this one was not stored again (or, after
	// PublishAsync, is stored and will be skipped by the worker).
	Duplicate bool
	// Key is the key of the original of a duplicate (empty otherwise, and
	// when it is no longer known).
	Key string
	// At is when a worker took the original of a duplicate (Taken), or
	// else when it was stored.
	At time.Time
	// Taken says a worker has taken the original of a duplicate (it is
	// applied or being applied); false: it still waits in the queue.
	Taken bool
}

// PublishOption sets a per-call publishing option.
type PublishOption func(*publishOptions)

type publishOptions struct {
	id       string
	explicit bool                  // id given by the caller, not made here
	progress func(contract.Status) // PublishAndWait only
}

// WithID sets the job id and idempotency key; by default (or with "") a
// unique id is made. An id is applied at most once per workflow within the
// dedupe window: reusing it for another key or event fails with
// ErrIDConflict. See ValidateJobID for what an id may hold.
func WithID(id string) PublishOption { return func(o *publishOptions) { o.id = id } }

// NewJobID returns a new unique job id.
func NewJobID() string { return nuid.Next() }

func (c *Conn) eventMsg(workflow, key string, ev contract.Envelope, opts []PublishOption) (*nats.Msg, publishOptions, error) {
	var o publishOptions
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, o, err
	}
	if err := contract.ValidateKey(key); err != nil {
		return nil, o, err
	}
	if ev.Event == "" {
		return nil, o, fmt.Errorf("%w: the event name is empty", ErrInvalidEvent)
	}
	// jsonx.Valid answers as json.Valid does, faster, but refuses deep
	// nesting, which json.Valid then decides on.
	if len(ev.Data) > 0 && !jsonx.Valid(ev.Data) && !json.Valid(ev.Data) {
		return nil, o, fmt.Errorf("%w: data is not valid JSON", ErrInvalidEvent)
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.explicit = o.id != ""; o.explicit {
		if err := ValidateJobID(o.id); err != nil {
			return nil, o, err
		}
	} else {
		o.id = NewJobID()
	}
	body, err := marshalEnvelope(&ev)
	if err != nil {
		return nil, o, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	msg := nats.NewMsg(contract.EventSubject(workflow, key))
	msg.Data = body
	msg.Header.Set(contract.HeaderJobID, o.id)
	return msg, o, nil
}

// Publish stores one event for key and returns once JetStream has stored it
// (or found it a duplicate). A full queue fails at once with ErrQueueFull.
//
// A job id given with WithID is looked up first: one taken within the
// dedupe window by the same key and event gives a Duplicate PubAck naming
// the original, without storing anything; by another key or event, an
// IDConflictError (errors.Is(err, ErrIDConflict)).
func (c *Conn) Publish(ctx context.Context, workflow, key string, ev contract.Envelope, opts ...PublishOption) (PubAck, error) {
	msg, o, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return PubAck{}, err
	}
	if o.explicit {
		held, err := getJob(ctx, c.nc, workflow, o.id)
		switch {
		case err == nil:
			return heldAck(o.id, key, ev.Event, held)
		case !errors.Is(err, ErrNoJob):
			return PubAck{}, fmt.Errorf("queue: publish %s: %w", msg.Subject, err)
		}
	}
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return PubAck{}, publishError(msg.Subject, err)
	}
	if ack.Duplicate {
		return c.originalOf(ctx, workflow, key, ev.Event, o.id, ack.Sequence)
	}
	return PubAck{ID: o.id, Sequence: ack.Sequence}, nil
}

// PendingPublish is an event published without waiting for its acknowledgement.
type PendingPublish struct {
	id      string
	subject string
	f       jetstream.PubAckFuture

	c                    *Conn
	workflow, key, event string
	held                 <-chan muxReply // the look-up of an explicit id; nil for a made one
}

// ID is the job id of the event.
func (p *PendingPublish) ID() string { return p.id }

// Wait returns the event's acknowledgement, or why it was not stored.
func (p *PendingPublish) Wait(ctx context.Context) (PubAck, error) {
	var ack *jetstream.PubAck
	select {
	case ack = <-p.f.Ok():
	case err := <-p.f.Err():
		return PubAck{}, publishError(p.subject, err)
	case <-ctx.Done():
		return PubAck{}, fmt.Errorf("queue: publish %s: %w", p.subject, ctx.Err())
	}
	if ack.Duplicate {
		return p.c.originalOf(ctx, p.workflow, p.key, p.event, p.id, ack.Sequence)
	}
	if p.held != nil {
		return p.checkHeld(ctx, ack.Sequence)
	}
	return PubAck{ID: p.id, Sequence: ack.Sequence}, nil
}

// PublishAsync sends one event without waiting for JetStream's
// acknowledgement; Wait on the result gets it. The caller bounds how many are
// outstanding (at most 4096 per connection; past that PublishAsync blocks).
//
// A job id given with WithID is looked up while the event is on its way,
// not before, so that publishes stay pipelined: if a job of the same key and
// event took the id, Wait reports a Duplicate (the event is stored, and the
// worker skips it); if one of another key or event did, Wait returns an
// IDConflictError with Stored set (the worker dead-letters the event as
// id_conflict). Publish refuses both before storing anything.
func (c *Conn) PublishAsync(workflow, key string, ev contract.Envelope, opts ...PublishOption) (*PendingPublish, error) {
	msg, o, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return nil, err
	}
	f, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		return nil, publishError(msg.Subject, err)
	}
	p := &PendingPublish{id: o.id, subject: msg.Subject, f: f, c: c, workflow: workflow, key: key, event: ev.Event}
	if o.explicit {
		p.held = c.lookUpJob(workflow, o.id)
	}
	return p, nil
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
