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

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// What the worker announces of delayed events before they fire: that one
// is scheduled, and that one was cancelled. A producer may not publish a
// status, so it writes only the record of its delayed event
// (contract.ScheduledJob, in the job bucket), which it writes anyway for a
// cancel and the worker to meet at; a durable consumer of those records
// brings each write to the worker, which publishes the status. The record
// is written once the schedule is stored, only if no other job holds its
// id (compare-and-set), and it is what decides that a cancelled event is
// never applied, so a status made from it says what really happens.

// jobsStream is the stream behind workflow's job bucket.
func jobsStream(workflow string) string { return "KV_" + contract.JobsBucket(workflow) }

// announceConsumerName is the durable consumer of the records of
// workflow's delayed events.
func announceConsumerName(workflow string) string { return "orderly_" + workflow + "_delayed" }

// delayedRecordsFilter matches every record of a delayed event in
// workflow's job bucket.
func delayedRecordsFilter(workflow string) string {
	return "$KV." + contract.JobsBucket(workflow) + "." + contract.ScheduledJobPrefix + "*"
}

// announceConsumerConfig: new records only (a worker that first provisions
// it does not announce what was scheduled before), delivered to one worker
// at a time (the pinned priority group, as a partition is), so that a
// job's scheduled and cancelled come in the order written. MaxDeliver is
// the worker's to decide, as for events.
func announceConsumerConfig(s Spec) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       announceConsumerName(s.Workflow),
		Description:   "Orderly workflow " + s.Workflow + ", delayed events to announce",
		FilterSubject: delayedRecordsFilter(s.Workflow),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: announceMaxPending,
		MaxWaiting:    512,
		Replicas:      0, // the stream's
	}
	if !s.Unpinned {
		c.PriorityPolicy = jetstream.PriorityPolicyPinned
		c.PriorityGroups = []string{PriorityGroup}
		c.PinnedTTL = s.PinnedTTL
	}
	return c
}

// announceMaxPending bounds the records delivered and not yet
// acknowledged: what a worker holds while it announces them.
const announceMaxPending = 256

// DelayedRecord is one write of the record of a delayed event. Exactly one
// of Ack and Nak must be called for it.
type DelayedRecord struct {
	// Job is the record as written; its ID is empty if neither the record
	// nor its key says it (a record of an older producer, for an id that
	// is not a subject token).
	Job contract.ScheduledJob
	// Delivered counts deliveries of this write, 1 on the first.
	Delivered uint64

	raw jetstream.Msg
}

// Ack says the write is handled.
func (r *DelayedRecord) Ack() error { return r.raw.Ack() }

// Nak hands the write back, to come again after delay.
func (r *DelayedRecord) Nak(delay time.Duration) error { return r.raw.NakWithDelay(delay) }

// DelayedRecords reads the writes of the records of workflow's delayed
// events, as they come (see Next).
type DelayedRecords struct {
	js       jetstream.JetStream
	cons     jetstream.Consumer
	workflow string
	shared   bool
	pinned   bool // a pin came with a record: this client held the consumer
}

// DelayedRecords opens the consumer of the records of workflow's delayed
// events (provisioned by Provision). shared: the consumer was provisioned
// with Spec.Unpinned, and every client takes its share.
func (c *Conn) DelayedRecords(ctx context.Context, workflow string, shared bool) (*DelayedRecords, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	cons, err := c.js.Consumer(ctx, jobsStream(workflow), announceConsumerName(workflow))
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("queue: delayed records of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: delayed records of %s: %w", workflow, err)
	}
	return &DelayedRecords{js: c.js, cons: cons, workflow: workflow, shared: shared}, nil
}

// Next waits up to wait (or until ctx ends) for writes of records, at
// most max, and hands each to h as it comes, in the order written. A write
// that is no record (a deletion, a body that does not decode) is
// acknowledged here and not handed on. While another client holds the
// consumer's pin, nothing comes.
func (d *DelayedRecords) Next(ctx context.Context, max int, wait time.Duration, h func(*DelayedRecord)) error {
	rctx, cancel := context.WithTimeout(ctx, wait+min(wait/9, time.Second))
	defer cancel()
	opts := []jetstream.FetchOpt{jetstream.FetchContext(rctx)}
	if !d.shared {
		opts = append(opts, jetstream.FetchPriorityGroup(PriorityGroup))
	}
	batch, err := d.cons.Fetch(max, opts...)
	if err != nil {
		return fmt.Errorf("queue: delayed records of %s: %w", d.workflow, err)
	}
	for m := range batch.Messages() {
		r, ok := d.decode(m)
		if !ok {
			_ = m.Ack()
			continue
		}
		h(r)
	}
	err = batch.Error()
	if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil // the request expired
	}
	if err != nil {
		return fmt.Errorf("queue: delayed records of %s: %w", d.workflow, err)
	}
	return nil
}

func (d *DelayedRecords) decode(m jetstream.Msg) (*DelayedRecord, bool) {
	if op := m.Headers().Get("KV-Operation"); op != "" {
		return nil, false // DEL or PURGE
	}
	d.pinned = d.pinned || m.Headers().Get("Nats-Pin-Id") != ""
	r := &DelayedRecord{raw: m}
	if err := json.Unmarshal(m.Data(), &r.Job); err != nil {
		return nil, false
	}
	if r.Job.ID == "" {
		// The key is the id itself when the id is a subject token (JobKey).
		if k, ok := strings.CutPrefix(m.Subject(), "$KV."+contract.JobsBucket(d.workflow)+"."+contract.ScheduledJobPrefix); ok && contract.JobKey(k) == k {
			r.Job.ID = k
		}
	}
	if md, err := m.Metadata(); err == nil {
		r.Delivered = md.NumDelivered
	}
	return r, true
}

// Release lets another client take the records at once, rather than
// after Spec.PinnedTTL, if this one held them: call it once done with
// Next.
func (d *DelayedRecords) Release(ctx context.Context) error {
	if d.shared || !d.pinned {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := d.js.Stream(ctx, jobsStream(d.workflow))
	if err == nil {
		err = s.UnpinConsumer(ctx, announceConsumerName(d.workflow), PriorityGroup)
	}
	if err != nil {
		return fmt.Errorf("queue: release the delayed records of %s: %w", d.workflow, err)
	}
	return nil
}

// DelayedSchedule is what the schedule of a delayed event holds.
type DelayedSchedule struct {
	Event string    // the event's name
	Due   time.Time // when it fires
}

// DelayedSchedule returns the schedule of the delayed event of key with
// job id, as stored in workflow's schedules stream; false if there is none
// (it fired, it was cancelled, or it was never stored).
func (c *Conn) DelayedSchedule(ctx context.Context, workflow, key, id string) (DelayedSchedule, bool, error) {
	if err := contract.ValidateKey(key); err != nil {
		return DelayedSchedule{}, false, err
	}
	m, err := jsapi.GetLastMsg(ctx, c.nc, contract.SchedulesStream(workflow), contract.DelayedSubject(workflow, key, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DelayedSchedule{}, false, nil
	}
	if err != nil {
		return DelayedSchedule{}, false, fmt.Errorf("queue: schedule of delayed job %s: %w", id, err)
	}
	due, ok := scheduledAt(m.Header)
	if !ok || m.Header.Get(contract.HeaderDelayedJobID) != id {
		return DelayedSchedule{}, false, nil // not a delayed event's schedule
	}
	env, err := contract.DecodeEnvelope(m.Data)
	if err != nil {
		return DelayedSchedule{}, false, nil
	}
	return DelayedSchedule{Event: env.Event, Due: due}, true, nil
}
