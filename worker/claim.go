package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// A job id is applied at most once per workflow within the dedupe window.
// The stream's own duplicate window is not enough (it is short, and a
// restarted server rebuilds it only from the messages still stored, which a
// work queue has deleted), so before it applies events the actor claims
// their job ids in the job bucket (see queue.Jobs): only the event that
// holds its id is applied. The worker, not the producer, is the authority,
// so events published with any NATS client get the guarantee too.

// jobClaimer claims job ids in the workflow's job bucket, a batch at a
// time; results come in the order of jobs. It also takes fired delayed
// events against their records (a cancel may have come first), and purges
// what fired from the schedules stream once it is in hand.
type jobClaimer interface {
	Claim(ctx context.Context, jobs []contract.Job) []queue.Claim
	TakeDelayed(ctx context.Context, id, key, event string, now time.Time) (cancelled bool, err error)
	ForgetFired(ctx context.Context, msgs []*queue.Msg) error
}

var _ jobClaimer = (*queue.Jobs)(nil)

// verdict is what the claim of an event's job id found. A short slice of
// them, searched in order, is cheaper than a map for a batch (at most
// GroupCommit events).
type verdict struct {
	seq       uint64 // the event's stream sequence
	outcome   contract.ClaimOutcome
	held      *contract.Job // the job holding the id, unless Claimed
	cancelled bool          // a delayed event cancelled before it was taken
}

func (a *actor) verdict(seq uint64) (verdict, bool) {
	for _, v := range a.verdicts {
		if v.seq == seq {
			return v, true
		}
	}
	return verdict{}, false
}

// claim claims, all at once, the job ids of the events of msgs that need a
// claim, and files each verdict in a.verdicts for apply. Timers, events
// without a job id or with one their producer made for them alone
// (contract.HeaderJobMade), events handled already and events apply will dead-letter
// as malformed or too large need none. A claim that can be neither made nor
// read (NATS away or slow, a full store) is tried again, with backoff, as a
// commit is: the events stay in hand, so that per-key order holds. false:
// ctx ended first, and no event of msgs may be applied.
func (a *actor) claim(ctx context.Context, msgs []*queue.Msg) bool {
	f := a.f
	var (
		want []contract.Job
		now  = f.w.cfg.Now().UTC()
	)
	if !a.takeDelayed(ctx, msgs, now) {
		return false
	}
	for _, m := range msgs {
		if m.ID == "" || m.Made || handled(&a.rec, m.Sequence) {
			continue
		}
		if _, ok := a.verdict(m.Sequence); ok {
			continue // claimed in an earlier round (it was deferred)
		}
		if _, _, isTimer := m.Timer(); isTimer || len(m.Data) > int(f.spec.MaxPayload) {
			continue
		}
		env, err := contract.DecodeEnvelope(m.Data)
		if err != nil {
			continue
		}
		want = append(want, contract.Job{ID: m.ID, Key: a.key, Event: env.Event, Sequence: m.Sequence, At: now})
	}
	if err := f.jobs.ForgetFired(ctx, msgs); err != nil {
		f.log.Warn().Err(err).Msg("cannot purge what fired from the schedules stream; trying again in 30s")
	}
	for wait := 50 * time.Millisecond; len(want) > 0; wait = min(2*wait, 2*time.Second) {
		res := f.jobs.Claim(ctx, want) // bounded by its own timeout
		var (
			failed []contract.Job
			err    error
		)
		for i, r := range res {
			if r.Err != nil {
				failed, err = append(failed, want[i]), r.Err
				continue
			}
			v := verdict{seq: want[i].Sequence, outcome: r.Outcome}
			if r.Outcome != contract.Claimed {
				v.held = &r.Held
			}
			a.verdicts = append(a.verdicts, v)
		}
		if want = failed; len(want) == 0 {
			f.commitWorked()
			break
		}
		// Part of committing: counted and shown (in /readyz) as a commit
		// that fails.
		f.commitFailed(err)
		f.storeFailed(err, a.key, "cannot claim job ids; retrying")
		if !f.waitRetry(ctx, wait) {
			return false
		}
	}
	return true
}

// keepVerdicts forgets the verdicts of every event but those of keep (the
// events deferred to the next round): a verdict stays true, but the memory
// is the batch's.
func (a *actor) keepVerdicts(keep []*queue.Msg) {
	if len(a.verdicts) == 0 {
		return
	}
	if len(keep) == 0 {
		a.verdicts = nil
		return
	}
	kept := a.verdicts[:0]
	for _, v := range a.verdicts {
		if slices.ContainsFunc(keep, func(m *queue.Msg) bool { return m.Sequence == v.seq }) {
			kept = append(kept, v)
		}
	}
	a.verdicts = kept
}

// refused reports whether another event holds m's job id, and if so deals
// with m without applying it: a duplicate (same key and event) is
// acknowledged and reported with error code duplicate; a conflict
// (another key or event) is dead-lettered as id_conflict.
func (a *actor) refused(b *batch, m *queue.Msg, now time.Time) bool {
	v, ok := a.verdict(m.Sequence)
	if ok && v.cancelled {
		// Cancelled by its producer: it never happened.
		a.f.log.Debug().Str("key", a.key).Str("job_id", m.ID).Msg("a cancelled delayed event fired; not applied")
		b.ack = append(b.ack, m)
		return true
	}
	if !ok || v.outcome == contract.Claimed {
		return false
	}
	env, _ := contract.DecodeEnvelope(m.Data)
	st := a.status(&b.rec, m.ID, env.Event, now)
	h := *v.held
	if v.outcome == contract.Conflict {
		b.poison(st, m, contract.CodeIDConflict, fmt.Sprintf("job id %s is held by key %s (event %s)", m.ID, h.Key, h.Event))
		return true
	}
	st.Error = &contract.StatusError{Code: contract.CodeDuplicate, Message: fmt.Sprintf(
		"job %s was taken at %s by key %s, sequence %d; not applied again",
		m.ID, h.At.Format(time.RFC3339), h.Key, h.Sequence)}
	if m.Span != nil {
		tracing.Status(m.Span, &st)
	}
	b.statuses = append(b.statuses, st)
	b.ack = append(b.ack, m)
	a.f.w.duplicates.Add(1)
	a.f.w.metrics.duplicates.WithLabelValues(a.f.name).Inc()
	return true
}

// takeDelayed takes, one by one, the fired delayed events of msgs (see
// queue.Jobs.TakeDelayed) before their job ids are claimed, and files a
// verdict for each one its producer cancelled first. They are rare next to
// other events, so they are not pipelined. A record that can be neither
// read nor written is tried again, with backoff, as a claim is. false: ctx
// ended first.
func (a *actor) takeDelayed(ctx context.Context, msgs []*queue.Msg, now time.Time) bool {
	f := a.f
	for _, m := range msgs {
		if !m.Delayed() || m.ID == "" || handled(&a.rec, m.Sequence) || len(m.Data) > int(f.spec.MaxPayload) {
			continue
		}
		if _, ok := a.verdict(m.Sequence); ok {
			continue
		}
		env, err := contract.DecodeEnvelope(m.Data)
		if err != nil || env.Event == "" {
			continue // dead-lettered as malformed
		}
		for wait, failed := 50*time.Millisecond, false; ; wait, failed = min(2*wait, 2*time.Second), true {
			cancelled, err := f.jobs.TakeDelayed(ctx, m.ID, a.key, env.Event, now)
			if err == nil {
				if failed {
					f.commitWorked()
				}
				if cancelled {
					a.verdicts = append(a.verdicts, verdict{seq: m.Sequence, cancelled: true})
				}
				break
			}
			f.commitFailed(err)
			f.log.Warn().Err(err).Str("key", a.key).Str("job_id", m.ID).Msg("cannot take a delayed event; retrying")
			if !sleep(ctx, wait) {
				return false
			}
		}
	}
	return true
}
