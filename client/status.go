package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
)

// ErrWaitTimeout: the context ended before the job settled. The event may
// well be stored and be processed later; only the waiting ended.
var ErrWaitTimeout = errors.New("timed out waiting for the job to settle")

// WithProgress passes PublishAndWait's unsettled statuses of the job
// (progress, retries) to f, on the caller's goroutine, as they arrive.
func WithProgress(f func(contract.Status)) PublishOption {
	return func(o *publishOptions) { o.progress = f }
}

// PublishAndWait publishes ev like Publish and then follows the key's status
// subject until a status of this job (same JobID) is Settled, and returns it.
// It subscribes before publishing, so a fast status is not missed. Unsettled
// statuses of the job go to WithProgress; statuses of other jobs are dropped.
// A rejected event or failed work settles too: the status's Error says why.
//
// If ctx ends first the error wraps both ErrWaitTimeout and ctx.Err().
//
// A duplicate (the job id was taken before by the same key and event, within
// the dedupe window) follows the original, which has the same job id: while
// the original still waits in the queue, its statuses are awaited; once a
// worker has taken it, PublishAndWait returns PubAck.Duplicate and a
// synthetic settled Status made from the key's stored state (To, Version and
// At of the record; To empty if the key has no state, as when the original
// was rejected): the key's current state, which need not be the job's
// outcome if the key has changed since.
func (c *Client) PublishAndWait(ctx context.Context, workflow, key string, ev contract.Envelope, opts ...PublishOption) (PubAck, contract.Status, error) {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewJobID()
		opts = append(opts, WithJobID(o.id))
	}
	ch, stop, err := c.statuses(workflow, key, func(st contract.Status) bool { return st.JobID == o.id })
	if err != nil {
		return PubAck{}, contract.Status{}, err
	}
	defer stop()
	ack, err := c.Publish(ctx, workflow, key, ev, opts...)
	if err != nil {
		return PubAck{}, contract.Status{}, err
	}
	current := func() (PubAck, contract.Status, error) {
		st := contract.Status{Workflow: workflow, Key: key, JobID: o.id, Event: ev.Event, Settled: true}
		rec, err := c.State(ctx, workflow, key)
		switch {
		case err == nil:
			st.From, st.To, st.Version, st.At = rec.State, rec.State, rec.Version, rec.UpdatedAt
		case !errors.Is(err, ErrNoState):
			return ack, contract.Status{}, err
		}
		return ack, st, nil
	}
	if ack.Duplicate && (ack.Taken || ack.Key == "") {
		return current()
	}
	for {
		select {
		case st := <-ch:
			if st.Settled && st.Error != nil && st.Error.Code == contract.CodeDuplicate {
				// Stored while the original still waited in the queue,
				// past the stream's own window: the worker found the
				// original's claim and skipped this one.
				ack.Duplicate = true
				if held, err := c.Job(ctx, workflow, o.id); err == nil {
					ack.Sequence, ack.Key, ack.At, ack.Taken = held.Sequence, held.Key, held.At, true
				}
				return current()
			}
			if st.Settled {
				return ack, st, nil
			}
			if o.progress != nil {
				o.progress(st)
			}
		case <-ctx.Done():
			return ack, contract.Status{}, fmt.Errorf("client: job %s: %w: %w", o.id, ErrWaitTimeout, ctx.Err())
		}
	}
}

// WatchOption sets a per-call option of Watch.
type WatchOption func(*watchOptions)

type watchOptions struct{ ready func() }

// WatchReady calls f once the subscription is in place on the server: any
// status published after that reaches the handler.
func WatchReady(f func()) WatchOption { return func(o *watchOptions) { o.ready = f } }

// Watch calls h with each status change of key in workflow (every key when
// key is empty) until ctx ends, then returns nil. h runs on the caller's
// goroutine, one status at a time, and never after Watch has returned. An
// error means the subscription could not be made.
//
// Statuses are pub/sub: one published while nobody watches is not kept,
// and the key's state (State) is the durable record.
func (c *Client) Watch(ctx context.Context, workflow, key string, h func(contract.Status), opts ...WatchOption) error {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	ch, stop, err := c.statuses(workflow, key, nil)
	if err != nil {
		return err
	}
	defer stop()
	if o.ready != nil {
		o.ready()
	}
	for {
		select {
		case st := <-ch:
			h(st)
		case <-ctx.Done():
			return nil
		}
	}
}

// statuses subscribes to key's statuses (those keep accepts; all if nil) and
// delivers them on a bounded channel. A slow reader holds up the
// subscription's delivery, up to the client's pending limits, rather than
// grow a queue here. stop ends the subscription.
func (c *Client) statuses(workflow, key string, keep func(contract.Status) bool) (<-chan contract.Status, func(), error) {
	ch := make(chan contract.Status, 64)
	done := make(chan struct{})
	sub, err := c.Subscribe(workflow, key, func(st contract.Status) {
		if keep != nil && !keep(st) {
			return
		}
		select {
		case ch <- st:
		case <-done:
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return ch, func() { close(done); _ = sub.Unsubscribe() }, nil
}

// Subscription is a live status subscription (Subscribe).
type Subscription struct{ sub *nats.Subscription }

// Unsubscribe ends the subscription; the handler is not called afterwards.
func (s *Subscription) Unsubscribe() error { return s.sub.Unsubscribe() }

// Subscribe calls h with each status change of key in workflow, or of every
// key of the workflow when key is empty, until Unsubscribe. h runs on one
// goroutine of the connection's, in publish order; messages that are not a
// Status are skipped. It returns once the server knows of the
// subscription, so no status published afterwards is missed.
func (c *Client) Subscribe(workflow, key string, h func(contract.Status)) (*Subscription, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	if key != "" {
		if err := contract.ValidateKey(key); err != nil {
			return nil, err
		}
	}
	sub, err := c.nc.Subscribe(contract.StatusSubject(workflow, key), func(m *nats.Msg) {
		if st, err := contract.DecodeStatus(m.Data); err == nil {
			h(st)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("client: subscribe to statuses: %w", err)
	}
	ctx, cancel := c.withTimeout(context.Background())
	defer cancel()
	if err := c.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("client: subscribe to statuses: %w", err)
	}
	return &Subscription{sub: sub}, nil
}
