package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cron"
	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// Delayed events: Publish with WithDelay or WithAt stores the event now, as
// a JetStream message schedule ("@at <time>") in the workflow's schedules
// stream, and the server delivers it to the key's queue at that time, with
// or without a worker running. The event keeps its job id. Cancel removes
// one that a worker has not taken yet.

var (
	// ErrInvalidSchedule: a delay, a time or a recurring schedule that the
	// server would refuse, or that Orderly does (a time in the past, a
	// delay and a time at once, an unknown time zone); nothing was stored.
	ErrInvalidSchedule = cron.ErrInvalid
	// ErrUnknownJob: Cancel or Scheduled found no delayed event with the
	// job id (never published with a delay, or longer ago than the dedupe
	// window).
	ErrUnknownJob = errors.New("no delayed event has this job id")
	// ErrAlreadyFired: Cancel came too late: a worker has taken the event
	// (it is applied or being applied).
	ErrAlreadyFired = errors.New("already fired")
	// ErrAlreadyCancelled: Cancel found the event cancelled before.
	ErrAlreadyCancelled = errors.New("already cancelled")
)

// atSlack: a time given with WithAt at most this far in the past is taken
// as "now" (the caller's clock and the server's differ a little).
const atSlack = time.Second

// maxDue is the latest time a schedule may name: the server reads it as
// RFC 3339, with four digits of year.
var maxDue = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// WithDelay has Publish store the event now and deliver it to the key's
// queue d from now (d > 0). See WithAt.
func WithDelay(d time.Duration) PublishOption {
	return func(o *publishOptions) { o.delay, o.delaySet = d, true }
}

// WithAt has Publish store the event now and deliver it to the key's queue
// at t. A t in the past is refused (ErrInvalidSchedule), unless it is
// within a second of now: then the event is delivered at once.
//
// A delayed event is applied like any other, with its job id: at most once
// per workflow within the dedupe window. Until a worker takes it, Scheduled
// reports it and Cancel removes it. The server delivers it at the time
// given (to within about 250 milliseconds), whether or not a worker runs;
// it then waits in the queue as events do. PublishAsync takes neither
// option.
func WithAt(t time.Time) PublishOption {
	return func(o *publishOptions) { o.at, o.atSet = t, true }
}

// delayed reports whether o asks for a delayed event.
func (o *publishOptions) delayed() bool { return o.delaySet || o.atSet }

// due is when a delayed event is to be delivered, given o, at time now.
func (o *publishOptions) due(now time.Time) (time.Time, error) {
	var due time.Time
	switch {
	case o.delaySet && o.atSet:
		return time.Time{}, fmt.Errorf("%w: give a delay or a time, not both", ErrInvalidSchedule)
	case o.delaySet && o.delay <= 0:
		return time.Time{}, fmt.Errorf("%w: delay %s: must be positive", ErrInvalidSchedule, o.delay)
	case o.delaySet:
		due = now.Add(o.delay)
	case o.at.IsZero():
		return time.Time{}, fmt.Errorf("%w: no time given", ErrInvalidSchedule)
	case o.at.Before(now.Add(-atSlack)):
		return time.Time{}, fmt.Errorf("%w: %s is in the past (now is %s)", ErrInvalidSchedule,
			o.at.Format(time.RFC3339), now.Format(time.RFC3339))
	default:
		due = o.at
		if due.Before(now) {
			due = now
		}
	}
	if due.After(maxDue) {
		return time.Time{}, fmt.Errorf("%w: %s is past %s, the latest time the server takes", ErrInvalidSchedule,
			due.UTC().Format(time.RFC3339), maxDue.Format(time.RFC3339))
	}
	return due.UTC(), nil
}

// publishDelayed is Publish of a delayed event: msg is the event as
// eventMsg made it, ctx bounded.
//
// It stores the schedule, then the record of the delayed event
// (contract.ScheduledJob), which a cancel and the worker that takes it
// change with compare-and-set. A schedule whose record could not be written
// (a crash in between) is still delivered and cancellable: both look for
// the schedule when there is no record.
func (c *Client) publishDelayed(ctx context.Context, workflow, key string, ev contract.Envelope, msg *nats.Msg, o publishOptions) (PubAck, error) {
	now := time.Now()
	due, err := o.due(now)
	if err != nil {
		return PubAck{}, err
	}
	id := o.id
	if o.explicit {
		held, err := jsapi.GetJob(ctx, c.nc, workflow, id)
		switch {
		case err == nil:
			return heldAck(id, key, ev.Event, 0, held)
		case !errors.Is(err, ErrNoJob):
			return PubAck{}, fmt.Errorf("client: publish %s: %w", msg.Subject, err)
		}
	}
	rec, rev, err := jsapi.GetScheduledJob(ctx, c.nc, workflow, id)
	switch {
	case err == nil:
		return delayedHeld(id, key, ev.Event, rec)
	case errors.Is(err, jsapi.ErrNotProvisioned):
		return PubAck{}, fmt.Errorf("client: publish %s: %w", msg.Subject, ErrNotProvisioned)
	case !errors.Is(err, jsapi.ErrNoRecord):
		return PubAck{}, fmt.Errorf("client: publish %s: %w", msg.Subject, err)
	}

	subject := contract.DelayedSubject(workflow, key, id)
	m := nats.NewMsg(subject)
	m.Data = msg.Data
	m.Header.Set(jsapi.NatsSchedule, "@at "+due.Format(time.RFC3339Nano))
	m.Header.Set(jsapi.NatsScheduleTarget, contract.DelayedTarget(workflow, key))
	m.Header.Set(contract.HeaderDelayedJobID, id)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0") // one schedule per key and job id
	// The server copies the schedule's headers to the event it delivers.
	tracing.Inject(ctx, m.Header)
	ack, err := c.js.PublishMsg(ctx, m)
	if isWrongLastSequence(err) {
		// Stored before (a retry): it is this one if it is the same event.
		return c.delayedStored(ctx, workflow, key, ev.Event, id)
	}
	if err != nil {
		return PubAck{}, scheduleError(subject, err)
	}
	rec = contract.ScheduledJob{ID: id, Key: key, Event: ev.Event, Due: due, State: contract.JobScheduled, At: now.UTC()}
	_, err = jsapi.PutScheduledJob(ctx, c.js, workflow, rec, rev)
	if errors.Is(err, jsapi.ErrStaleRecord) {
		// Another publish with this id (or a worker that took ours
		// already, or a cancel) wrote it first.
		if held, _, gerr := jsapi.GetScheduledJob(ctx, c.nc, workflow, id); gerr == nil && (held.Key != key || held.Event != ev.Event) {
			_ = jsapi.DeleteMsg(ctx, c.nc, contract.SchedulesStream(workflow), ack.Sequence)
			return delayedHeld(id, key, ev.Event, held)
		}
	}
	// Any other failure to write the record leaves a schedule that works
	// without it (see above): the event is stored.
	return PubAck{ID: id, Due: due}, nil
}

// delayedHeld is the answer to a delayed publish of key's event whose job
// id the delayed event rec holds already.
func delayedHeld(id, key, event string, rec contract.ScheduledJob) (PubAck, error) {
	held := contract.Job{ID: id, Key: rec.Key, Event: rec.Event, At: rec.At}
	if held.Outcome(key, event, 0) == contract.Conflict {
		return PubAck{}, &IDConflictError{ID: id, Held: held, Key: key, Event: event}
	}
	return PubAck{ID: id, Duplicate: true, Key: rec.Key, At: rec.At, Due: rec.Due, Taken: rec.State == contract.JobTaken}, nil
}

// delayedStored answers a delayed publish whose schedule was stored before.
func (c *Client) delayedStored(ctx context.Context, workflow, key, event, id string) (PubAck, error) {
	s, err := jsapi.GetLastMsg(ctx, c.nc, contract.SchedulesStream(workflow), contract.DelayedSubject(workflow, key, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return PubAck{}, fmt.Errorf("client: publish delayed job %s: stored and gone meanwhile; try again", id)
	}
	if err != nil {
		return PubAck{}, fmt.Errorf("client: publish delayed job %s: %w", id, err)
	}
	d, _ := delayedOf(workflow, s)
	return delayedHeld(id, key, event, contract.ScheduledJob{Key: d.Key, Event: d.Event, Due: d.Due, State: contract.JobScheduled, At: s.Time})
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// scheduleError says why storing a schedule on subject failed.
func scheduleError(subject string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "schedule"):
		// The server's own check (ours agree with it, so rarely seen).
		return fmt.Errorf("client: publish %s: %w: the server says: %s", subject, ErrInvalidSchedule, apiErr.Description)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("client: publish %s: %w (no schedules stream: has a worker of this version started?)", subject, ErrNotProvisioned)
	}
	return publishError(subject, err)
}

// DelayedEvent is a delayed event that no worker has taken yet.
type DelayedEvent struct {
	ID    string          // The job id.
	Key   string          // The key.
	Event string          // The event's name.
	Data  json.RawMessage // The event's data.
	Due   time.Time       // When it is (or was) to be delivered.
	// Fired says the server delivered it to the key's queue; no worker
	// has taken it yet.
	Fired bool
}

// Scheduled returns the delayed event with job id while no worker has
// taken it: ErrUnknownJob if there is none, ErrAlreadyFired or
// ErrAlreadyCancelled if it was taken or cancelled.
func (c *Client) Scheduled(ctx context.Context, workflow, id string) (DelayedEvent, error) {
	if err := c.checkJob(workflow, id); err != nil {
		return DelayedEvent{}, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	rec, _, err := jsapi.GetScheduledJob(ctx, c.nc, workflow, id)
	switch {
	case err == nil && rec.State == contract.JobCancelled:
		return DelayedEvent{}, fmt.Errorf("client: job %s: %w at %s", id, ErrAlreadyCancelled, rec.At.Format(time.RFC3339))
	case err == nil && rec.State == contract.JobTaken:
		return DelayedEvent{}, fmt.Errorf("client: job %s: %w: a worker took it at %s", id, ErrAlreadyFired, rec.At.Format(time.RFC3339))
	case err != nil && !errors.Is(err, jsapi.ErrNoRecord):
		return DelayedEvent{}, fmt.Errorf("client: job %s: %w", id, err)
	}
	s, serr := jsapi.GetLastMsg(ctx, c.nc, contract.SchedulesStream(workflow), contract.DelayedFilter(workflow, id))
	switch {
	case serr == nil:
		return delayedOf(workflow, s)
	case !errors.Is(serr, jetstream.ErrMsgNotFound):
		return DelayedEvent{}, fmt.Errorf("client: job %s: %w", id, serr)
	case err == nil: // a record, and no schedule: fired, not taken yet
		return DelayedEvent{ID: id, Key: rec.Key, Event: rec.Event, Due: rec.Due, Fired: true}, nil
	}
	return DelayedEvent{}, fmt.Errorf("client: %w", c.notDelayed(ctx, workflow, id))
}

// notDelayed says why there is neither a schedule nor a record of job id.
func (c *Client) notDelayed(ctx context.Context, workflow, id string) error {
	if held, err := jsapi.GetJob(ctx, c.nc, workflow, id); err == nil {
		return fmt.Errorf("job %s: %w: not a delayed event waiting; a worker took it at %s (key %s, event %s)",
			id, ErrAlreadyFired, held.At.Format(time.RFC3339), held.Key, held.Event)
	}
	return fmt.Errorf("job %s: %w", id, ErrUnknownJob)
}

// delayedOf reads the schedule s of a delayed event.
func delayedOf(workflow string, s jsapi.StoredMsg) (DelayedEvent, error) {
	rest := strings.TrimPrefix(s.Subject, contract.SchedulesSubject(workflow)+".at.")
	key, _, _ := strings.Cut(rest, ".")
	var env contract.Envelope
	if err := json.Unmarshal(s.Data, &env); err != nil {
		return DelayedEvent{}, fmt.Errorf("client: delayed event %s: %w", s.Subject, err)
	}
	d := DelayedEvent{ID: s.Header.Get(contract.HeaderDelayedJobID), Key: key, Event: env.Event, Data: env.Data}
	if at, ok := strings.CutPrefix(s.Header.Get(jsapi.NatsSchedule), "@at "); ok {
		d.Due, _ = time.Parse(time.RFC3339Nano, at)
	}
	return d, nil
}

// Cancel cancels the delayed event with job id (published with WithDelay or
// WithAt) if no worker has taken it yet: it will not be applied. Usually
// that is until it fires; if it fired while no worker ran, until a worker
// takes it from the queue. Errors: ErrAlreadyFired (a worker took it),
// ErrAlreadyCancelled, ErrUnknownJob.
//
// A cancel and the worker that takes the event change its record with
// compare-and-set, so exactly one of them wins: a cancelled event is never
// applied, even if it fires while Cancel runs. Cancel then deletes its
// schedule, so it does not fire at all.
func (c *Client) Cancel(ctx context.Context, workflow, id string) error {
	if err := c.checkJob(workflow, id); err != nil {
		return err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	stream := contract.SchedulesStream(workflow)
	for range 8 {
		rec, rev, err := jsapi.GetScheduledJob(ctx, c.nc, workflow, id)
		var sched jsapi.StoredMsg
		switch {
		case err == nil && rec.State == contract.JobCancelled:
			return fmt.Errorf("client: cancel job %s: %w at %s", id, ErrAlreadyCancelled, rec.At.Format(time.RFC3339))
		case err == nil && rec.State == contract.JobTaken:
			return fmt.Errorf("client: cancel job %s: %w: a worker took it at %s (key %s, event %s)",
				id, ErrAlreadyFired, rec.At.Format(time.RFC3339), rec.Key, rec.Event)
		case err == nil:
			sched, err = jsapi.GetLastMsg(ctx, c.nc, stream, contract.DelayedSubject(workflow, rec.Key, id))
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("client: cancel job %s: %w", id, err)
			}
		case errors.Is(err, jsapi.ErrNoRecord):
			// No record (not written, or expired): the schedule says.
			sched, err = jsapi.GetLastMsg(ctx, c.nc, stream, contract.DelayedFilter(workflow, id))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("client: cancel %w", c.notDelayed(ctx, workflow, id))
			}
			if err != nil {
				return fmt.Errorf("client: cancel job %s: %w", id, err)
			}
			d, err := delayedOf(workflow, sched)
			if err != nil {
				return err
			}
			rec = contract.ScheduledJob{ID: id, Key: d.Key, Event: d.Event, Due: d.Due}
		default:
			return fmt.Errorf("client: cancel job %s: %w", id, err)
		}
		rec.State, rec.At = contract.JobCancelled, time.Now().UTC()
		if _, err := jsapi.PutScheduledJob(ctx, c.js, workflow, rec, rev); errors.Is(err, jsapi.ErrStaleRecord) {
			continue // a worker (or another cancel) came first: look again
		} else if err != nil {
			return fmt.Errorf("client: cancel job %s: %w", id, err)
		}
		if sched.Sequence != 0 {
			// Won: the event will not be applied. Removing the schedule
			// saves its firing; if it fired meanwhile, the worker drops it.
			if err := jsapi.DeleteMsg(ctx, c.nc, stream, sched.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("client: cancel job %s: cancelled, but its schedule is left to fire (the worker will drop it): %w", id, err)
			}
		}
		return nil
	}
	return fmt.Errorf("client: cancel job %s: its record kept changing; try again", id)
}

func (c *Client) checkJob(workflow, id string) error {
	if c.isDone() {
		return ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return err
	}
	return contract.ValidateJobID(id)
}

// DelayedEvents returns the delayed events of key that have not fired yet,
// in no particular order.
func (c *Client) DelayedEvents(ctx context.Context, workflow, key string) ([]DelayedEvent, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	if err := contract.ValidateKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var out []DelayedEvent
	err := c.lastPerSubject(ctx, contract.SchedulesStream(workflow), contract.SchedulesSubject(workflow)+".at."+key+".*", func(m jsapi.StoredMsg) {
		if d, err := delayedOf(workflow, m); err == nil {
			out = append(out, d)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("client: delayed events of %s: %w", key, err)
	}
	return out, nil
}
