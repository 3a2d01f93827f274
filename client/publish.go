package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/jsonx"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// Errors of publishing, for errors.Is. A key, workflow name or job id that
// breaks the contract's rules gives contract.ErrInvalidKey,
// contract.ErrInvalidWorkflow or contract.ErrInvalidJobID before anything
// reaches the server.
var (
	// ErrQueueFull: the workflow's events stream holds its limit of
	// unprocessed events (the worker's --queue-limit); nothing was stored.
	// Retry later or add workers.
	ErrQueueFull = jsapi.ErrQueueFull
	// ErrPayloadTooLarge: the event is larger than the stream accepts.
	ErrPayloadTooLarge = jsapi.ErrPayloadTooLarge
	// ErrNotProvisioned: no stream takes the workflow's events (or holds
	// its states or dead letters); no worker has provisioned it yet, or the
	// workflow name is wrong.
	ErrNotProvisioned = jsapi.ErrNotProvisioned
	// ErrInvalidEvent: the event name is empty or its data is not JSON.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrIDConflict: the job id is held by another key or another event
	// within the dedupe window (see IDConflictError).
	ErrIDConflict = errors.New("job id conflict")
	// ErrNoJob: no claim holds the job id (no worker has taken an event
	// with it, or it was taken longer ago than the dedupe window).
	ErrNoJob = jsapi.ErrNoJob
)

// IDConflictError says which key holds a job id that was sent for another
// key or event. errors.Is(err, ErrIDConflict) holds for it.
type IDConflictError struct {
	// ID is the job id.
	ID string
	// Held is the job holding the id. Held.Sequence is 0 and Held.At the
	// time it was stored when no worker has taken it yet.
	Held contract.Job
	// Key and Event are those of the refused event.
	Key, Event string
	// Stored says the refused event was stored before the conflict was
	// found (PublishAsync); the worker dead-letters it as id_conflict.
	Stored bool
}

// Error names the key and event that hold the id.
func (e *IDConflictError) Error() string {
	s := fmt.Sprintf("%v: job id %q is held by key %s (event %s), not %s (event %s)",
		ErrIDConflict, e.ID, e.Held.Key, e.Held.Event, e.Key, e.Event)
	if e.Stored {
		return s + "; the event was stored and will be dead-lettered as id_conflict"
	}
	return s + "; nothing stored, use another id"
}

// Unwrap makes errors.Is(err, ErrIDConflict) true.
func (e *IDConflictError) Unwrap() error { return ErrIDConflict }

// PubAck is JetStream's acknowledgement of a stored event.
type PubAck struct {
	// ID is the job id (the Nats-Msg-Id header).
	ID string
	// Sequence is the event's sequence in the events stream; for a
	// duplicate, the original's.
	Sequence uint64
	// Duplicate is true when an event of the same key and event name took
	// this job id before, within the dedupe window: it is applied once,
	// and this one was not stored again (or, after PublishAsync, is stored
	// and will be skipped by the worker).
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
	// Due is when a delayed event (WithDelay, WithAt) is delivered to the
	// key's queue; zero for an event published now. A delayed event is in
	// the schedules stream, not the events stream, so its Sequence is 0.
	Due time.Time
}

// PublishOption sets a per-call option of Publish, PublishAsync and
// PublishAndWait.
type PublishOption func(*publishOptions)

type publishOptions struct {
	id       string
	explicit bool                  // id given by the caller to publish again, not made for one publish
	made     bool                  // WithMadeJobID
	progress func(contract.Status) // PublishAndWait only

	delay           time.Duration // WithDelay
	at              time.Time     // WithAt
	delaySet, atSet bool

	trace context.Context // WithTraceContext; PublishAsync only
}

// WithJobID sets the job id, the event's idempotency key (the Nats-Msg-Id
// header); by default (or with "") a unique id is made for this publish
// alone, and marked so (contract.HeaderJobMade): the worker has no claim to
// write for it. To publish again safely after an error, make the id first
// (NewJobID) and give it each time. An id is applied
// at most once per workflow within the dedupe window (the worker's
// --dedupe-window, 24h by default): reusing it for the same key and event
// gives a Duplicate PubAck, for another key or event an IDConflictError.
// See contract.ValidateJobID for what an id may hold.
func WithJobID(id string) PublishOption { return func(o *publishOptions) { o.id, o.made = id, false } }

// WithMadeJobID gives the event an id the caller made (NewJobID) for this
// one publish and will never publish again, so that it knows the id before
// the publish ends, for its logs or its error messages. The id is marked
// as made (contract.HeaderJobMade), as one made by the client is: it is not
// looked up and the worker writes no claim for it. An id to publish again
// after an error belongs in WithJobID.
func WithMadeJobID(id string) PublishOption {
	return func(o *publishOptions) { o.id, o.made = id, true }
}

// WithTraceContext gives PublishAsync, which takes no context, the caller's
// span: the event's trace continues it (see Config.TracerProvider).
// Publish and PublishAndWait take it from their context and ignore this.
func WithTraceContext(ctx context.Context) PublishOption {
	return func(o *publishOptions) { o.trace = ctx }
}

// NewJobID returns a new unique job id.
func NewJobID() string { return nuid.Next() }

// eventMsg checks an event and makes its message.
func (c *Client) eventMsg(workflow, key string, ev contract.Envelope, opts []PublishOption) (*nats.Msg, publishOptions, error) {
	var o publishOptions
	if c.isDone() {
		return nil, o, ErrClosed
	}
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
	if o.id != "" {
		if err := contract.ValidateJobID(o.id); err != nil {
			return nil, o, err
		}
		o.explicit = !o.made
	} else {
		o.id = NewJobID()
	}
	body, err := contract.MarshalEnvelope(&ev)
	if err != nil {
		return nil, o, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	msg := nats.NewMsg(contract.EventSubject(workflow, key))
	msg.Data = body
	msg.Header.Set(contract.HeaderJobID, o.id)
	if !o.explicit {
		// Made here for this publish alone: the worker need not claim it.
		msg.Header.Set(contract.HeaderJobMade, "true")
	}
	return msg, o, nil
}

// Publish stores one event for key of workflow and returns once JetStream
// has stored it (or found it a duplicate). A full queue fails at once with
// ErrQueueFull.
//
// A job id given with WithJobID is looked up first: one taken within the
// dedupe window by the same key and event gives a Duplicate PubAck naming
// the original, without storing anything; by another key or event, an
// IDConflictError (errors.Is(err, ErrIDConflict)).
func (c *Client) Publish(ctx context.Context, workflow, key string, ev contract.Envelope, opts ...PublishOption) (PubAck, error) {
	msg, o, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return PubAck{}, err
	}
	ctx, span := c.traced(ctx, workflow, key, ev.Event, msg, o)
	ack, err := c.publish(ctx, workflow, key, ev, msg, o)
	if span != nil {
		endPublish(span, &ack, err)
	}
	return ack, err
}

// traced starts the span of a publish (with a tracer) and puts the trace
// context of ctx, so the span's or the caller's, into msg's headers.
func (c *Client) traced(ctx context.Context, workflow, key, event string, msg *nats.Msg, o publishOptions) (context.Context, trace.Span) {
	if c.tracer == nil {
		tracing.Inject(ctx, msg.Header)
		return ctx, nil
	}
	attrs := []attribute.KeyValue{tracing.NATS, tracing.MessagingDestination.String(msg.Subject),
		tracing.Workflow.String(workflow), tracing.Key.String(key), tracing.Event.String(event), tracing.JobID.String(o.id)}
	ctx, span := c.tracer.Start(ctx, tracing.SpanPublish, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	tracing.Inject(ctx, msg.Header)
	return ctx, span
}

// endPublish ends a publish's span with its result (ack nil: not known).
func endPublish(span trace.Span, ack *PubAck, err error) {
	if err != nil {
		tracing.Fail(span, err)
	} else if ack != nil {
		span.SetAttributes(tracing.Sequence.Int64(int64(ack.Sequence)), tracing.Duplicate.Bool(ack.Duplicate))
		if !ack.Due.IsZero() {
			span.SetAttributes(tracing.Due.String(ack.Due.Format(time.RFC3339Nano)))
		}
	}
	span.End()
}

func (c *Client) publish(ctx context.Context, workflow, key string, ev contract.Envelope, msg *nats.Msg, o publishOptions) (PubAck, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if o.delayed() {
		return c.publishDelayed(ctx, workflow, key, ev, msg, o)
	}
	if o.explicit {
		held, err := jsapi.GetJob(ctx, c.nc, workflow, o.id)
		switch {
		case err == nil:
			return heldAck(o.id, key, ev.Event, 0, held)
		case !errors.Is(err, ErrNoJob):
			return PubAck{}, fmt.Errorf("client: publish %s: %w", msg.Subject, err)
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

// PendingPublish is an event sent with PublishAsync, its acknowledgement
// not yet awaited.
type PendingPublish struct {
	id      string
	subject string
	f       jetstream.PubAckFuture

	c                    *Client
	workflow, key, event string
	look                 *lookupBatch // the look-up of an explicit id; nil for a made one
	lookSubject          string       // the id's claim subject, in look's answer
}

// ID is the job id of the event.
func (p *PendingPublish) ID() string { return p.id }

// Wait returns the event's acknowledgement, or why it was not stored.
func (p *PendingPublish) Wait(ctx context.Context) (PubAck, error) {
	if p.look != nil {
		p.c.flushLookup(p.look) // while the acknowledgement comes
	}
	var ack *jetstream.PubAck
	select {
	case ack = <-p.f.Ok():
	case err := <-p.f.Err():
		return PubAck{}, publishError(p.subject, err)
	case <-ctx.Done():
		return PubAck{}, fmt.Errorf("client: publish %s: %w", p.subject, ctx.Err())
	}
	if ack.Duplicate {
		ctx, cancel := p.c.withTimeout(ctx)
		defer cancel()
		return p.c.originalOf(ctx, p.workflow, p.key, p.event, p.id, ack.Sequence)
	}
	if p.look != nil {
		return p.checkHeld(ctx, ack.Sequence)
	}
	return PubAck{ID: p.id, Sequence: ack.Sequence}, nil
}

// PublishAsync sends one event without waiting for JetStream's
// acknowledgement; Wait on the result gets it. At most
// Config.MaxAsyncPending may be awaited at once; past that PublishAsync
// waits for room, up to Config.Timeout.
//
// A job id given with WithJobID is looked up while the event is on its
// way, not before, so that publishes stay pipelined, together with the ids
// of the workflow's other events published close together (one request for
// up to 256 ids, sent when that many are gathered, when a PublishAsync comes
// a millisecond or more after the first, or when a Wait needs the answer):
// if a job of the same key and event took the id, Wait reports a Duplicate
// (the event is stored, and the worker skips it); if one of another key or
// event did, Wait returns an IDConflictError with Stored set (the worker
// dead-letters the event as id_conflict). Publish refuses both before
// storing anything. Where the server refuses this connection the batch (a
// producer on the permissions of before batches), Wait looks the id up
// alone. Without an answer to the look-up within Config.Timeout, Wait
// reports the event stored, as if no claim held the id (the worker checks
// it again).
func (c *Client) PublishAsync(workflow, key string, ev contract.Envelope, opts ...PublishOption) (*PendingPublish, error) {
	msg, o, err := c.eventMsg(workflow, key, ev, opts)
	if err != nil {
		return nil, err
	}
	if o.delayed() {
		return nil, fmt.Errorf("%w: PublishAsync takes no WithDelay or WithAt; use Publish", ErrInvalidSchedule)
	}
	tctx := o.trace
	if tctx == nil {
		tctx = context.Background()
	}
	// The span of an asynchronous publish is that of sending it: whether
	// Wait is ever called is the caller's affair.
	_, span := c.traced(tctx, workflow, key, ev.Event, msg, o)
	f, err := c.js.PublishMsgAsync(msg, jetstream.WithStallWait(c.cfg.Timeout))
	if span != nil {
		endPublish(span, nil, err)
	}
	if err != nil {
		return nil, publishError(msg.Subject, err)
	}
	p := &PendingPublish{id: o.id, subject: msg.Subject, f: f, c: c, workflow: workflow, key: key, event: ev.Event}
	if o.explicit {
		p.look, p.lookSubject = c.lookUpJob(workflow, o.id)
	}
	return p, nil
}

func publishError(subject string, err error) error {
	return fmt.Errorf("client: %w", jsapi.PublishError(subject, err))
}

// Job returns the claim of job id in workflow: which event took it, and
// when; ErrNoJob if none holds it.
func (c *Client) Job(ctx context.Context, workflow, id string) (contract.Job, error) {
	if c.isDone() {
		return contract.Job{}, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return contract.Job{}, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	j, err := jsapi.GetJob(ctx, c.nc, workflow, id)
	if err != nil {
		return contract.Job{}, fmt.Errorf("client: %w", err)
	}
	return j, nil
}

// heldAck is the answer to a publish of an event (key, event, stored at seq;
// 0: not stored) whose job id held already holds.
func heldAck(id, key, event string, seq uint64, held contract.Job) (PubAck, error) {
	switch held.Outcome(key, event, seq) {
	case contract.Claimed:
		return PubAck{ID: id, Sequence: seq}, nil
	case contract.Duplicate:
		return PubAck{ID: id, Sequence: held.Sequence, Duplicate: true, Key: held.Key, At: held.At, Taken: true}, nil
	}
	return PubAck{}, &IDConflictError{ID: id, Held: held, Key: key, Event: event, Stored: seq != 0}
}

// originalOf finds what a publish that JetStream found a duplicate (within
// the stream's duplicate window) duplicates: seq is the original's sequence.
// While the original waits in the stream, its subject and body say; once a
// worker has taken it (and it is gone from the work queue), its claim does.
func (c *Client) originalOf(ctx context.Context, workflow, key, event, id string, seq uint64) (PubAck, error) {
	dup := PubAck{ID: id, Sequence: seq, Duplicate: true}
	subject, body, at, err := c.storedEvent(ctx, workflow, seq)
	switch {
	case err == nil:
		var env contract.Envelope
		_ = json.Unmarshal(body, &env) // a malformed original has no event name
		held := contract.Job{ID: id, Key: contract.KeyOfSubject(subject), Event: env.Event, At: at}
		if held.Outcome(key, event, 0) == contract.Conflict {
			return PubAck{}, &IDConflictError{ID: id, Held: held, Key: key, Event: event}
		}
		dup.Key, dup.At = held.Key, held.At
		return dup, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return PubAck{}, fmt.Errorf("client: original of duplicate job %s: %w", id, err)
	}
	held, err := jsapi.GetJob(ctx, c.nc, workflow, id)
	switch {
	case err == nil:
		return heldAck(id, key, event, 0, held)
	case errors.Is(err, ErrNoJob):
		// Gone and never claimed: dead-lettered before it could be (it
		// was malformed, say). Nothing more is known of it.
		return dup, nil
	}
	return PubAck{}, fmt.Errorf("client: original of duplicate job %s: %w", id, err)
}

// checkHeld is Wait's answer for an explicit id whose event JetStream
// stored as new (at seq): a claim of another event makes it a duplicate or
// a conflict after all, which the worker will find too.
func (p *PendingPublish) checkHeld(ctx context.Context, seq uint64) (PubAck, error) {
	select {
	case <-p.look.done:
	default:
		// An answer lost with the connection would never come: wait no
		// longer than a look-up may take, then take what came.
		t := time.NewTimer(p.c.cfg.Timeout)
		defer t.Stop()
		select {
		case <-p.look.done:
		case <-t.C:
			// The batch was sent when this Wait began, if not before:
			// what has not come by now is lost, for its other events too.
			p.look.deliver(nil)
		case <-ctx.Done():
			return PubAck{}, fmt.Errorf("client: publish %s: job id look-up: %w", p.subject, ctx.Err())
		}
	}
	if p.look.wasRefused() {
		return p.checkAlone(ctx, seq)
	}
	m := p.look.claim(p.lookSubject)
	if m == nil {
		// No claim (or none could be read: the worker checks again).
		return PubAck{ID: p.id, Sequence: seq}, nil
	}
	held, err := jsapi.ParseJob(p.id, m, nil)
	if err != nil {
		return PubAck{ID: p.id, Sequence: seq}, nil
	}
	return heldAck(p.id, p.key, p.event, seq, held)
}

// checkAlone looks the id's claim up on its own: the server refused the
// batch it was in. If it refuses this too, after Config.Timeout, the
// workflow's ids are no longer looked up; the event is reported stored,
// as for a look-up lost (the worker checks the id again).
func (p *PendingPublish) checkAlone(ctx context.Context, seq uint64) (PubAck, error) {
	if p.c.look.modeOf(p.workflow) == lookupNone {
		return PubAck{ID: p.id, Sequence: seq}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, p.c.cfg.Timeout)
	defer cancel()
	held, err := jsapi.GetJob(lctx, p.c.nc, p.workflow, p.id)
	switch {
	case err == nil:
		return heldAck(p.id, p.key, p.event, seq, held)
	case ctx.Err() != nil:
		return PubAck{}, fmt.Errorf("client: publish %s: job id look-up: %w", p.subject, ctx.Err())
	case errors.Is(lctx.Err(), context.DeadlineExceeded) && deniedPublish(p.c.nc.LastError(), jsapi.JobGetSubject(p.workflow, p.id)):
		p.c.look.setMode(p.workflow, lookupNone)
	}
	return PubAck{ID: p.id, Sequence: seq}, nil
}

// storedEvent reads the message at seq of workflow's events stream: one
// request, which a producer's permissions allow (no stream info first).
func (c *Client) storedEvent(ctx context.Context, workflow string, seq uint64) (subject string, body []byte, at time.Time, err error) {
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+contract.EventsStream(workflow), []byte(`{"seq":`+strconv.FormatUint(seq, 10)+`}`))
	if err != nil {
		return "", nil, time.Time{}, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return "", nil, time.Time{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return "", nil, time.Time{}, jetstream.ErrMsgNotFound
	case r.Error != nil:
		return "", nil, time.Time{}, r.Error
	case r.Message == nil:
		return "", nil, time.Time{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	return r.Message.Subject, r.Message.Data, r.Message.Time, nil
}
