package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// PublishAndWait publishes ev like Publish and then follows the key's
// statuses until a status of this job (same JobID) is Settled, and returns
// it. It starts following before publishing, so a fast status is not
// missed. Unsettled statuses of the job go to WithProgress; statuses of
// other jobs are dropped. A rejected event or failed work settles too: the
// status's Error says why.
//
// Where the workflow keeps a status history (contract.HistoryStream), the
// statuses are followed there, so that a lost connection (a restarted
// server) loses none of them; otherwise on the status subject.
//
// If ctx ends first the error wraps both ErrWaitTimeout and ctx.Err().
//
// A duplicate (the job id was taken before by the same key and event, within
// the dedupe window) follows the original, which has the same job id: its
// statuses stored in the key's history come first, so that an original
// already settled gives its own settled status (with its Error, if it was
// rejected or failed), and one still running is awaited. Where the history
// no longer holds the original's statuses (or there is none), PublishAndWait
// returns PubAck.Duplicate and a synthetic settled Status made from the
// key's stored state (To, Version and At of the record; To empty if the key
// has no state, as when the original was rejected): the key's current
// state, which need not be the job's outcome if the key has changed since.
func (c *Client) PublishAndWait(ctx context.Context, workflow, key string, ev contract.Envelope, opts ...PublishOption) (PubAck, contract.Status, error) {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewJobID()
		opts = append(opts, WithJobID(o.id))
	}
	if c.isDone() {
		return PubAck{}, contract.Status{}, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return PubAck{}, contract.Status{}, err
	}
	if err := contract.ValidateKey(key); err != nil {
		return PubAck{}, contract.Status{}, err
	}
	keep := func(st contract.Status) bool { return st.JobID == o.id }
	var (
		ch   <-chan contract.Status
		stop func()
	)
	hctx, cancel := c.withTimeout(ctx)
	hist, err := c.history(hctx, workflow)
	if err == nil {
		// From the statuses stored after the end seen: those before, the
		// key's history holds.
		var f *follower
		f, err = c.follow(hctx, workflow, key, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: hist.end + 1,
		}, keep)
		if err == nil {
			ch, stop = f.c, f.stop
		}
	}
	cancel()
	histOn := err == nil
	if errors.Is(err, ErrNoHistory) {
		ch, stop, err = c.statuses(workflow, key, keep)
	}
	if err != nil {
		return PubAck{}, contract.Status{}, fmt.Errorf("client: job %s: %w", o.id, err)
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
	// original looks for the outcome of the original of a duplicate
	// (stored as seq, taken at taken; zero: unknown) in the history: done
	// says it answers, with the original's settled status, or with the
	// key's current state where the history cannot tell; otherwise the
	// original's statuses are still to come.
	original := func(seq uint64, taken time.Time) (done bool, r PubAck, st contract.Status, err error) {
		if !histOn {
			r, st, err = current()
			return true, r, st, err
		}
		st, found, covered, err := c.jobOutcome(ctx, workflow, key, o.id, hist, taken)
		switch {
		case err != nil:
			return true, ack, contract.Status{}, fmt.Errorf("client: job %s: %w", o.id, err)
		case found && st.Settled:
			return true, ack, st, nil
		case found:
			if o.progress != nil {
				o.progress(st)
			}
			return false, ack, st, nil
		case covered && c.stillToCome(ctx, workflow, key, o.id, seq):
			return false, ack, st, nil
		}
		r, st, err = current()
		return true, r, st, err
	}
	if ack.Duplicate && (ack.Taken || ack.Key == "") {
		taken := ack.At
		if !ack.Taken {
			taken = time.Time{}
		}
		if done, r, st, err := original(ack.Sequence, taken); done {
			return r, st, err
		}
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
				if done, r, st, err := original(ack.Sequence, ack.At); done {
					return r, st, err
				}
				continue
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

type watchOptions struct {
	ready func()
	since time.Duration
	all   bool
}

// WatchReady calls f once the watch is in place on the server: any status
// published after that reaches the handler.
func WatchReady(f func()) WatchOption { return func(o *watchOptions) { o.ready = f } }

// WatchSince makes Watch replay the statuses stored in the last d (by the
// time the server stored them, against this machine's clock) before it
// follows new ones. It needs the workflow's status history (ErrNoHistory
// otherwise); d must not be negative (ErrInvalidWatch), and 0 replays
// nothing.
func WatchSince(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.since = d }
}

// WatchAll makes Watch replay every stored status before it follows new
// ones; it wins over WatchSince. It needs the workflow's status history
// (ErrNoHistory otherwise).
func WatchAll() WatchOption { return func(o *watchOptions) { o.all = true } }

// Watch calls h with each status change of key in workflow (every key when
// key is empty) until ctx ends, then returns nil. h runs on the caller's
// goroutine, one status at a time, and never after Watch has returned.
//
// Where the workflow keeps a status history (contract.HistoryStream),
// Watch reads it: WatchSince and WatchAll replay what it stores first,
// then Watch follows new statuses as they are stored, from one source, so
// there is no gap and no repeat between the two; and a watch whose
// connection is lost (a restarted server, say) resumes after the last
// status it delivered once the connection is back. Statuses of one key
// come in the order of their versions. Without a history, Watch follows
// the status subject: a status published while the connection is down is
// missed, and the key's state (State) is the durable record.
//
// An error means the watch could not be made, or ended because the
// connection was closed.
func (c *Client) Watch(ctx context.Context, workflow, key string, h func(contract.Status), opts ...WatchOption) error {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	if c.isDone() {
		return ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return err
	}
	if key != "" {
		if err := contract.ValidateKey(key); err != nil {
			return err
		}
	}
	if o.since < 0 {
		return fmt.Errorf("client: %w: WatchSince(%s): must not be negative", ErrInvalidWatch, o.since)
	}
	replay := o.all || o.since > 0
	cfg := jetstream.OrderedConsumerConfig{}
	rctx, cancel := c.withTimeout(ctx)
	defer cancel()
	switch {
	case o.all:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case o.since > 0:
		from := time.Now().Add(-o.since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	default:
		// From the end as it is now, as a sequence rather than "new": a
		// consumer made again after a lost connection, before it delivered
		// anything, starts there too, not at the new end.
		hist, err := c.history(rctx, workflow)
		if errors.Is(err, ErrNoHistory) {
			return c.watchLive(ctx, workflow, key, h, o)
		}
		if err != nil {
			return fmt.Errorf("client: watch: %w", err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, hist.end+1
	}
	f, err := c.follow(rctx, workflow, key, cfg, nil)
	if errors.Is(err, ErrNoHistory) && !replay {
		return c.watchLive(ctx, workflow, key, h, o) // deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("client: watch: %w", err)
	}
	defer f.stop()
	if o.ready != nil {
		o.ready()
	}
	for {
		select {
		case st := <-f.c:
			h(st)
		case <-f.done:
			for len(f.c) > 0 {
				h(<-f.c)
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client: watch: %w", f.err)
		case <-ctx.Done():
			return nil
		}
	}
}

// watchLive is Watch on the status subject, for a workflow without a
// status history.
func (c *Client) watchLive(ctx context.Context, workflow, key string, h func(contract.Status), o watchOptions) error {
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
