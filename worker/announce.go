package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// A delayed event (published with a delay or a time) shows in its key's
// statuses before it fires: a status says it is scheduled, with its job id
// and due time, and one says so if it is cancelled. A producer may not
// publish statuses, so the worker does, from the record each delayed event
// has in the job bucket (see queue.DelayedRecords): one worker at a time
// reads the records as they are written.
//
// What is announced is true: a scheduled status only for a record whose
// schedule is in the schedules stream with the record's event (a record a
// producer wrote with no schedule behind it is not announced), and a
// cancelled status for a record that says cancelled, which is what keeps
// the worker from ever applying the event. Neither changes the key: the
// status carries its current state and version.
//
// At least once: a record is acknowledged after its status is published,
// so one written while no worker runs is announced when one starts, and a
// worker that dies between publishing and acknowledging has it announced
// again (after the ack wait). A delayed event that fires and is cancelled
// or taken before its record is looked at is not announced as scheduled.

// announcer is what announcing delayed events needs of the broker.
type announcer interface {
	DelayedRecords(ctx context.Context, workflow string, shared bool) (*queue.DelayedRecords, error)
	DelayedSchedule(ctx context.Context, workflow, key, id string) (queue.DelayedSchedule, bool, error)
}

var _ announcer = (*queue.Conn)(nil)

// Bounds of the announcing loop: records asked for at once, how long one
// request waits, and how often a record whose status cannot be made is
// tried before it is given up.
const (
	announceBatch    = 64
	announceWait     = time.Second
	announceAttempts = 10
	announceTimeout  = 5 * time.Second // the look-ups for one record
)

// announceDelayed announces the records of the flow's delayed events until
// the worker stops. It runs on every worker; the consumer's pin gives the
// records to one at a time.
func (f *flow) announceDelayed(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(f.w.leavingCtx, cancel)()
	failures := ratelog.Limiter{Every: logEvery}
	var recs *queue.DelayedRecords
	defer func() {
		if recs != nil {
			// The next worker takes over at once.
			if err := recs.Release(context.WithoutCancel(ctx)); err != nil {
				f.log.Debug().Err(err).Msg("release the records of delayed events")
			}
		}
	}()
	for wait := 100 * time.Millisecond; ctx.Err() == nil; {
		var err error
		if recs == nil {
			recs, err = f.w.conn.DelayedRecords(ctx, f.name, f.w.cfg.SharedConsumers)
		}
		if err == nil {
			err = recs.Next(ctx, announceBatch, announceWait, func(r *queue.DelayedRecord) { f.announceOne(ctx, r) })
		}
		if err != nil {
			if ctx.Err() == nil {
				f.logFailure(f.log, &failures, err, "cannot read the records of delayed events to announce them; retrying")
			}
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		wait = 100 * time.Millisecond
	}
}

// announceOne announces r and acknowledges it, or hands it back to come
// again if its status could not be made.
func (f *flow) announceOne(ctx context.Context, r *queue.DelayedRecord) {
	err := f.announce(ctx, r)
	switch {
	case err == nil:
		_ = r.Ack()
	case r.Delivered >= announceAttempts:
		f.log.Warn().Err(err).Str("job_id", r.Job.ID).Str("key", r.Job.Key).Uint64("delivered", r.Delivered).
			Msg("cannot announce a delayed event; giving up on its status")
		_ = r.Ack()
	default:
		f.log.Debug().Err(err).Str("job_id", r.Job.ID).Msg("cannot announce a delayed event; trying again")
		_ = r.Nak(time.Second)
	}
}

// announce publishes the status of one write of a delayed event's record,
// if it calls for one; an error if it should be tried again.
func (f *flow) announce(ctx context.Context, r *queue.DelayedRecord) error {
	ctx, cancel := context.WithTimeout(ctx, announceTimeout)
	defer cancel()
	job := r.Job
	if contract.ValidateKey(job.Key) != nil || contract.ValidateJobID(job.ID) != nil {
		return nil // no status can name it
	}
	st := contract.Status{Workflow: f.name, Key: job.Key, JobID: job.ID, Event: job.Event}
	switch job.State {
	case contract.JobScheduled:
		s, ok, err := f.w.conn.DelayedSchedule(ctx, f.name, job.Key, job.ID)
		if err != nil {
			return err
		}
		if !ok || s.Event != job.Event {
			// Fired (or cancelled) already, or no schedule behind it.
			f.log.Debug().Str("job_id", job.ID).Str("key", job.Key).Msg("a delayed event's record names no schedule; not announced")
			return nil
		}
		st.ScheduledFor = s.Due
	case contract.JobCancelled:
		st.ScheduledFor = job.Due
		st.Settled = true // the job has ended
		st.Error = &contract.StatusError{Code: contract.CodeCancelled, Message: fmt.Sprintf(
			"delayed event cancelled at %s; it is not applied", job.At.UTC().Format(time.RFC3339))}
	default:
		return nil // taken: its statuses are the actor's
	}
	st.From, st.To = string(f.eng.initial()), string(f.eng.initial())
	val, _, err := f.bucket.Get(ctx, job.Key)
	switch {
	case errors.Is(err, queue.ErrNoState):
	case err != nil:
		return err
	default:
		rec, err := contract.DecodeState(val)
		if err != nil {
			// The actor reports it when the key takes an event.
			f.log.Debug().Err(err).Str("key", job.Key).Str("job_id", job.ID).Msg("a delayed event's key has a state that does not decode; not announced")
			return nil
		}
		st.From, st.To, st.Version = rec.State, rec.State, rec.Version
	}
	st.At = f.w.cfg.Now()
	return f.w.conn.PublishStatus(&st)
}
