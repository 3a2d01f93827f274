package worker

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/tracing"
	"github.com/orderly-dev/orderly/statemachine"
)

// actor is one live key. Its mailbox and flags are guarded by flow.mu; its
// state (rec, rev, ent) belongs to the one goroutine running it at a time.
type actor struct {
	key string
	f   *flow

	partition int // set by route, under f.mu

	// guarded by f.mu
	mailbox  []*queue.Msg
	internal []internalEvent
	recheck  bool // reconcile the key's inventory entries (inventory.go)
	running  bool
	room     chan struct{} // closed when the mailbox has room again
	elem     *list.Element // in f.idle while idle
	lastUsed time.Time

	// owned by the running goroutine
	loaded   bool
	rec      contract.StateRecord
	rev      uint64
	ent      entity
	verdicts []verdict // job id claims of the events in hand
	// checked is the latest takeover (flow.suspect) since which the key's
	// inventory entries were reconciled, so that a backlog handed over
	// is checked once per key, not once per batch.
	checked int64
	// verified: the key's inventory entries were reconciled since its
	// record was loaded. The commits since are this process's, whose
	// inventory writes are sent before the acks and repaired when they
	// fail; so a redelivery (an ack wait run out under load) no longer
	// suggests a commit cut off, and costs no further check.
	verified bool
}

// internalEvent is an action's outcome on its way back to its key, or,
// with retry set, a note that an attempt failed and another will follow.
type internalEvent struct {
	pendingID string
	event     statemachine.Event
	data      json.RawMessage
	failure   string // the last error, when the action failed for good
	retry     *retryNote

	parent trace.SpanContext // the span of the attempt that ended (tracing)
	span   trace.Span        // its outcome's span while it is applied (tracing)
}

// retryNote records a failed attempt in the pending entry, so that a
// restart keeps the retry budget and `enqueue status` shows it.
type retryNote struct {
	attempt int       // the next attempt
	at      time.Time // when it is due
	err     string    // the failed attempt's error
}

// run processes the actor's work until it has none, then parks it. It takes
// mailbox events only while the key has no slow work pending: client events
// are applied to settled keys, so a quick sequence of events behaves like
// the seed's synchronous calls.
func (a *actor) run() {
	f := a.f
	defer f.runs.Done()
	ctx := f.w.ctx
	for {
		f.mu.Lock()
		internal := a.internal
		a.internal = nil
		recheck := a.recheck
		a.recheck = false
		var msgs, back []*queue.Msg
		var backFor time.Duration
		if !f.draining && (!a.loaded || len(a.rec.Pending) == 0) && len(a.mailbox) > 0 {
			back, backFor = f.holdBack(a)
			n := min(len(a.mailbox), f.w.cfg.GroupCommit)
			msgs = slices.Clone(a.mailbox[:n])
			a.mailbox = slices.Delete(a.mailbox, 0, n)
			if a.room != nil {
				close(a.room)
				a.room = nil
			}
		}
		if len(internal) == 0 && len(msgs) == 0 && len(back) == 0 && !recheck {
			f.parked(a)
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		for _, m := range back {
			// Before anything newer is applied: it comes again after the
			// older event of the key it waits for.
			_ = m.Nak(backFor)
		}
		if len(internal) == 0 && len(msgs) == 0 && !recheck {
			continue
		}

		leftover := a.process(ctx, internal, msgs, recheck)
		if len(leftover) > 0 {
			f.mu.Lock()
			draining := f.draining
			if !draining {
				a.mailbox = append(leftover, a.mailbox...)
			}
			f.mu.Unlock()
			if draining {
				for _, m := range leftover {
					_ = m.Nak(0)
				}
			}
		}
	}
}

// batch is the result of applying events to a copy of the actor's state.
type batch struct {
	rec      contract.StateRecord
	ent      entity
	changed  bool
	statuses []contract.Status
	ack      []*queue.Msg
	dead     []deadLetter
	starts   []contract.PendingWork
	leftover []*queue.Msg
	arm      *armed    // the state timeout to schedule with this commit
	ticks    *tickPlan // periodic schedules to arm with this commit and remove after it
	heal     []int     // slots of stale ticks: their schedules may be left over
	resume   bool      // schedule a wake-up for pending work with this commit
	// workEnded: the commit leaves no work pending where there was some;
	// the key's resume wake-up has nothing left to resume.
	workEnded bool

	// stored: when the stream stored each event the machine took, for the
	// publish→applied latency.
	stored []time.Time

	// Tracing (nil when the worker does not trace): span is that of the
	// event or outcome being applied; lead, that of the last transition
	// that armed a timer or started actions, the trace the batch's timers
	// carry.
	span, lead trace.Span
	// duplicates: an event applied already came again (see handled), or a
	// resume wake-up found no work pending: the key's inventory entries
	// are checked.
	duplicates bool
}

// deadLetter is an event that can never be processed, and why.
type deadLetter struct {
	m      *queue.Msg
	reason string
}

// armed is a state timeout to schedule: event fires after after, tagged with
// the visit (the version the key entered the state at).
type armed struct {
	event statemachine.Event
	after time.Duration
	visit uint64
}

// process applies events in order to a copy of the state, commits the copy
// once (compare-and-set on the revision it was loaded at; on conflict it
// reloads and applies again), and only then acknowledges, publishes and
// starts actions. It returns the mailbox events it deferred. With recheck,
// or when the batch may follow a commit cut off (a redelivered event, a
// conflict), it then reconciles the key's inventory entries.
func (a *actor) process(ctx context.Context, internal []internalEvent, msgs []*queue.Msg, recheck bool) (leftover []*queue.Msg) {
	f := a.f
	defer func() { a.keepVerdicts(leftover) }()
	if len(internal) == 0 && len(msgs) == 0 {
		if recheck && !a.loaded {
			if err := a.load(ctx); err != nil {
				f.indexFailed(a.key, err)
				return nil
			}
		}
		if recheck {
			a.reconcile(ctx)
		}
		return nil
	}
	for _, m := range msgs {
		recheck = recheck || a.suspected(m)
	}
	if f.w.tracer != nil {
		a.eventSpans(ctx, internal, msgs)
		defer func() { endSpans(internal, msgs, leftover) }()
	}
	claimed := len(msgs) == 0
	for attempt := 0; ; attempt++ {
		if !a.loaded {
			if err := a.load(ctx); err != nil {
				f.log.Error().Err(err).Str("key", a.key).Msg("cannot load state; events go back to the stream")
				f.giveBack(msgs, err)
				return nil
			}
		}
		if !claimed {
			// Once, after the load (an event handled already needs no
			// claim), not again after a conflict: verdicts stay true.
			claimed = true
			if !a.claim(ctx, msgs) {
				f.giveBack(msgs, ctx.Err()) // stopped while NATS was away
				return nil
			}
		}
		b := a.apply(internal, msgs)
		// An event applied already is here again: the commit that applied
		// it may have been cut off before its inventory purges, unless it
		// was made since the key's entries were last checked.
		recheck = recheck || b.duplicates && !a.verified
		var ix indexPlan
		if b.changed {
			ix = a.planIndex(&b)
			spans := a.commitSpans(ctx, &b, internal, msgs)
			rev, err := a.commit(ctx, &b, &ix)
			endCommit(spans, rev, err)
			if errors.Is(err, queue.ErrConflict) {
				// Another actor wrote this key: our copy is stale. Reload and
				// apply again; events it applied are now duplicates. The
				// entries sent for the lost commit are reconciled after.
				f.log.Warn().Str("key", a.key).Int("attempt", attempt).Msg("state conflict; reloading")
				a.loaded = false
				recheck = true
				continue
			}
			if err != nil {
				f.log.Error().Err(err).Str("key", a.key).Msg("cannot commit state; events go back to the stream")
				a.loaded = false
				f.giveBack(msgs, err)
				return nil
			}
			b.workEnded = len(a.rec.Pending) > 0 && len(b.rec.Pending) == 0
			a.rec, a.rev, a.ent = b.rec, rev, b.ent
			if f.w.crash != nil && f.w.crash(a.key, "after") {
				<-ctx.Done()
				return nil
			}
		} else if b.resume && !a.rearm(ctx, &b) {
			f.giveBack(msgs, ctx.Err()) // stopping: the next owner takes the wake-up
			return nil
		}
		a.finish(&b, &ix)
		if recheck {
			a.reconcile(ctx)
		}
		return b.leftover
	}
}

// rearm arms the next wake-up of a key whose work is still pending, retrying
// until it is stored or the worker stops (false). While work is pending a
// wake-up must stand, armed or fired and unacknowledged: the one in hand is
// acknowledged only after the next is armed, or a death of this worker
// before the work is done would leave nothing to resume it.
func (a *actor) rearm(ctx context.Context, b *batch) bool {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := a.schedule(ctx, b)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.f.log.Warn().Err(err).Str("key", a.key).Dur("retry_in", wait).Msg("cannot re-arm the wake-up of pending work; retrying")
		if !sleep(ctx, wait) {
			return false
		}
	}
}

// stateStore is a workflow's state bucket: each key's record and its
// revision, written with compare-and-set on that revision.
type stateStore interface {
	// Get returns the key's value and revision; queue.ErrNoState if it
	// has none.
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	// Put writes value if the key is still at revision rev (0: it has no
	// value) and returns the new revision; queue.ErrConflict otherwise.
	Put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

var _ stateStore = (*queue.Bucket)(nil)

// load activates the actor from the bucket (the seed's handle_continue:
// nothing is applied before it) and resumes any slow work left pending.
func (a *actor) load(ctx context.Context) error {
	f := a.f
	var (
		val []byte
		rev uint64
		err error
	)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		val, rev, err = f.bucket.Get(ctx, a.key)
		if err == nil || errors.Is(err, queue.ErrNoState) || ctx.Err() != nil {
			break
		}
		f.storeFailed(err, a.key, "load failed; retrying")
		if !f.waitRetry(ctx, wait) {
			break
		}
	}
	var rec contract.StateRecord
	switch {
	case errors.Is(err, queue.ErrNoState):
		rec = contract.StateRecord{State: string(f.eng.initial())}
		rev = 0
	case err != nil:
		return err
	default:
		if rec, err = contract.DecodeState(val); err != nil {
			return err
		}
	}
	ent, err := f.eng.newEntity(rec.Data)
	if err != nil {
		return err
	}
	a.rec, a.rev, a.ent, a.loaded, a.verified = rec, rev, ent, true, false
	if len(rec.Pending) > 0 {
		f.log.Info().Str("key", a.key).Int("actions", len(rec.Pending)).Msg("resuming pending actions")
		a.submit(rec.Pending)
	}
	return nil
}

func (a *actor) apply(internal []internalEvent, msgs []*queue.Msg) batch {
	f := a.f
	b := batch{rec: cloneRecord(&a.rec), ent: a.ent.snapshot()}
	now := f.w.cfg.Now().UTC()
	for _, ev := range internal {
		i := pendingIndex(&b.rec, ev.pendingID)
		if i < 0 {
			continue // fed back already (a retry raced a reload)
		}
		if r := ev.retry; r != nil {
			if p := &b.rec.Pending[i]; r.attempt > p.Attempt {
				p.Attempt, p.NextAttemptAt, p.LastError = r.attempt, r.at, r.err
				b.changed = true
			}
			continue
		}
		p := b.rec.Pending[i]
		b.rec.Pending = slices.Delete(b.rec.Pending, i, i+1)
		b.changed = true
		b.span = ev.span
		st := a.step(&b, p.JobID, statemachine.Input{Event: ev.event, Data: ev.data, Source: statemachine.SourceAction}, now)
		st.Action = p.Action
		if ev.failure != "" && st.Error == nil {
			st.Error = &contract.StatusError{Code: contract.CodeActionFailed, Message: p.Action + ": " + ev.failure}
		}
		if b.span != nil {
			b.span.SetAttributes(tracing.Action.String(p.Action))
			tracing.Status(b.span, &st)
		}
		b.statuses = append(b.statuses, st)
	}
	for i, m := range msgs {
		if handled(&b.rec, m.Sequence) {
			b.ack = append(b.ack, m) // redelivered after it was applied
			b.duplicates = true
			a.f.w.duplicates.Add(1)
			a.f.w.metrics.duplicates.WithLabelValues(a.f.name).Inc()
			continue
		}
		if a.refused(&b, m, now) {
			continue
		}
		kind, visit, isTimer := m.Timer()
		if isTimer && kind == contract.TimerResume {
			// Not an event of the machine: a wake-up, so that work left
			// pending (by a crash) is resumed even if nothing else comes.
			b.ack = append(b.ack, m)
			b.resume = len(b.rec.Pending) > 0
			// Nothing pending: the work ended, maybe in a commit whose
			// inventory purges a dead worker never sent.
			b.duplicates = b.duplicates || !b.resume
			continue
		}
		if len(b.rec.Pending) > 0 {
			b.leftover = msgs[i:]
			break
		}
		if max := int(f.spec.MaxPayload); len(m.Data) > max {
			b.poison(a.status(&b.rec, m.ID, "", now), m, contract.CodeTooLarge, fmt.Sprintf("%d bytes, the limit is %d", len(m.Data), max))
			continue
		}
		env, err := contract.DecodeEnvelope(m.Data)
		if err != nil {
			b.poison(a.status(&b.rec, m.ID, "", now), m, contract.CodeMalformed, err.Error())
			continue
		}
		src := statemachine.SourceClient
		if slot, periodic := contract.EverySlot(kind); isTimer && periodic {
			if !a.liveTick(&b, slot, visit, env.Event) {
				b.ack = append(b.ack, m)
				b.heal = append(b.heal, slot)
				a.f.w.staleTimers.Add(1)
				continue
			}
			if newerTick(msgs[i+1:], kind, visit) {
				// Ticks missed while nobody took them: apply the newest only.
				b.ack = append(b.ack, m)
				a.f.w.collapsedTicks.Add(1)
				continue
			}
			src = statemachine.SourceTimer
		} else if isTimer {
			if kind != contract.TimerTimeout || visit != b.rec.Entered {
				// Armed in an earlier visit of the state: it must not fire.
				b.ack = append(b.ack, m)
				a.f.w.staleTimers.Add(1)
				continue
			}
			src = statemachine.SourceTimer
		}
		b.span = m.Span
		st := a.step(&b, m.ID, statemachine.Input{Event: statemachine.Event(env.Event), Data: env.Data, Source: src}, now)
		if b.span != nil {
			tracing.Status(b.span, &st)
		}
		if st.Error != nil && (st.Error.Code == contract.CodeUnknownEvent || st.Error.Code == contract.CodePanicked) {
			// No version of the workflow can ever apply it; or this one has
			// a bug, and the event waits among the dead letters for a fix.
			b.poison(st, m, st.Error.Code, st.Error.Message)
			continue
		}
		noteApplied(&b.rec, m.Sequence)
		if st.Error == nil {
			b.changed = true
		}
		b.statuses = append(b.statuses, st)
		b.ack = append(b.ack, m)
		if !m.Stored.IsZero() {
			if b.stored == nil {
				b.stored = make([]time.Time, 0, len(msgs)-i) // one allocation a batch
			}
			b.stored = append(b.stored, m.Stored)
		}
	}
	if b.changed {
		b.rec.UpdatedAt = now
	}
	b.ticks = a.planTicks(&b)
	return b
}

// poison reports an event that can never be processed and sends it to the
// dead letters; its key goes on with the next event.
func (b *batch) poison(st contract.Status, m *queue.Msg, code, msg string) {
	st.Error = &contract.StatusError{Code: code, Message: msg}
	if m.Span != nil {
		tracing.Status(m.Span, &st)
	}
	b.statuses = append(b.statuses, st)
	b.dead = append(b.dead, deadLetter{m, code + ": " + msg})
}

// step applies one event to the batch's copy and returns its status.
func (a *actor) step(b *batch, jobID string, in statemachine.Input, now time.Time) contract.Status {
	st := a.status(&b.rec, jobID, string(in.Event), now)
	out, err := b.ent.apply(statemachine.State(b.rec.State), in)
	if err != nil {
		if pe := (*PanicError)(nil); errors.As(err, &pe) {
			a.f.log.Error().Str("key", a.key).Str("event", string(in.Event)).Str("job_id", jobID).
				Str("panic", fmt.Sprint(pe.Value)).Str("stack", string(pe.Stack)).Msg("the workflow's code panicked; the event goes to the dead letters")
		}
		st.Error = &contract.StatusError{Code: statemachine.Code(err), Message: err.Error()}
		st.Settled = len(b.rec.Pending) == 0
		return st
	}
	b.rec.Version++
	if string(out.to) != b.rec.State {
		b.rec.Entered = b.rec.Version
	}
	b.rec.State = string(out.to)
	if out.arm != nil {
		b.arm = &armed{event: out.arm.Event, after: out.arm.After, visit: b.rec.Entered}
	}
	if b.span != nil && (out.arm != nil || len(out.actions) > 0) {
		b.lead = b.span
	}
	for _, act := range out.actions {
		p := contract.PendingWork{
			ID:      a.key + "/" + strconv.FormatUint(b.rec.Version, 10) + "/" + act.Name,
			Action:  act.Name,
			JobID:   jobID,
			Attempt: 1,
			Since:   now,
		}
		if b.span != nil {
			// The action's attempts continue this transition's trace.
			p.TraceParent, p.TraceState = tracing.Parent(b.span.SpanContext())
		}
		b.rec.Pending = append(b.rec.Pending, p)
		b.starts = append(b.starts, p)
	}
	st.To = b.rec.State
	st.Version = b.rec.Version
	st.Settled = len(b.rec.Pending) == 0
	return st
}

func (a *actor) status(rec *contract.StateRecord, jobID, event string, now time.Time) contract.Status {
	return contract.Status{
		Workflow: a.f.name, Key: a.key, JobID: jobID, Event: event,
		From: rec.State, To: rec.State, Version: rec.Version, At: now,
		Settled: len(rec.Pending) == 0,
	}
}

// commit schedules the batch's timers, then writes its state. Failures of
// the broker (NATS away, a full store) are retried until they pass, the
// events held unacknowledged meanwhile, so the key keeps its order and
// nothing is lost if we never get through; only a fault of the data, or the
// worker stopping, returns an error. The inventory entries the commit makes
// true go out first, on the same connection (see inventory.go).
func (a *actor) commit(ctx context.Context, b *batch, ix *indexPlan) (uint64, error) {
	data, err := b.ent.encode()
	if err != nil {
		return 0, err
	}
	b.rec.Data = data
	val, err := contract.MarshalState(&b.rec)
	if err != nil {
		return 0, err
	}
	a.indexBefore(ctx, ix)
	if a.f.w.crash != nil && a.f.w.crash(a.key, "before") {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	unsure := false // a write failed in a way that may have stored it
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		err := a.schedule(ctx, b)
		var rev uint64
		if err == nil {
			rev, err = a.f.bucket.Put(ctx, a.key, val, a.rev)
			if errors.Is(err, queue.ErrConflict) && unsure {
				rev, err = a.ownWrite(ctx, val)
			}
			if err == nil || errors.Is(err, queue.ErrConflict) {
				a.f.commitWorked()
				return rev, err
			}
			// A timeout, or a connection lost with the request sent: the
			// store may have it, and the answer be what was lost.
			unsure = true
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		a.f.commitFailed(err)
		a.f.storeFailed(err, a.key, "commit failed; retrying")
		if !a.f.waitRetry(ctx, wait) {
			return 0, ctx.Err()
		}
	}
}

// ownWrite tells, after a conflict that followed a write whose answer was
// lost, whether that write was stored after all: the key then holds
// exactly val (the record carries its commit time and the stream sequences
// of its events, so no other writer's value is the same), and its revision
// is returned. Taking it for another writer's would reload the key, find
// the events applied, and acknowledge them without announcing them. Any
// other value is a conflict.
//
// A read of a replicated bucket may be answered by a replica that has not
// seen the latest write yet: a value still at the revision the write
// expected (or none, for a first write) is such a stale answer, since the
// conflict says the key has moved on, and is read again, for about a
// second at most; then it is taken for a conflict, as before.
func (a *actor) ownWrite(ctx context.Context, val []byte) (uint64, error) {
	for wait := 20 * time.Millisecond; ; wait *= 2 {
		cur, rev, err := a.f.bucket.Get(ctx, a.key)
		stale := err == nil && rev == a.rev || errors.Is(err, queue.ErrNoState) && a.rev == 0
		switch {
		case stale:
			if wait > time.Second {
				return 0, queue.ErrConflict
			}
			if !sleep(ctx, wait) {
				return 0, ctx.Err()
			}
			continue
		case errors.Is(err, queue.ErrNoState):
			return 0, queue.ErrConflict
		case err != nil:
			return 0, err
		case !bytes.Equal(cur, val):
			return 0, queue.ErrConflict
		}
		a.f.log.Info().Str("key", a.key).Uint64("revision", rev).Msg("a state write whose answer was lost was stored: committed")
		return rev, nil
	}
}

// schedule arms the batch's timers before its commit, so that a crash right
// after the commit cannot lose them. A timer whose commit then fails fires
// for a visit that never happened, and is ignored.
func (a *actor) schedule(ctx context.Context, b *batch) error {
	f := a.f
	ctx = b.traceCtx(ctx)
	now := f.w.cfg.Now()
	if b.arm != nil && b.arm.visit == b.rec.Entered {
		ev := contract.Envelope{Event: string(b.arm.event)}
		if err := f.w.conn.Schedule(ctx, f.name, a.key, contract.TimerTimeout, b.arm.visit, now.Add(b.arm.after), ev); err != nil {
			return err
		}
	}
	if err := a.armTicks(ctx, b, now); err != nil {
		return err
	}
	if (len(b.starts) > 0 || b.resume) && len(b.rec.Pending) > 0 {
		return f.armResume(ctx, a.key, b.rec.Version, now.Add(f.w.cfg.ResumeAfter))
	}
	return nil
}

// statusPublisher announces a key's status changes (pub/sub; the history
// stream, if any, stores them).
type statusPublisher interface {
	PublishStatus(st *contract.Status) error
}

var _ statusPublisher = (*queue.Conn)(nil)

// finish does what follows a commit: remove the inventory entries it made
// stale, acknowledge, publish, start actions, remove the periodic schedules
// the key no longer runs. The removals go out before the acks: an event
// acknowledged had its batch's removals sent ahead of it, and one that was
// not comes again, redelivered, and has its key reconciled.
func (a *actor) finish(b *batch, ix *indexPlan) {
	f := a.f
	a.indexAfter(f.w.ctx, ix)
	if b.workEnded {
		a.dropResume()
	}
	for _, m := range b.ack {
		if f.w.dropAck != nil && f.w.dropAck(m) {
			m.LoseAck()
			continue
		}
		_ = m.Ack()
	}
	for _, d := range b.dead {
		f.deadLetter(d.m, d.reason)
	}
	f.w.metrics.observe(f.name, b.statuses)
	if len(b.stored) > 0 {
		// The server's clock, not the worker's Now (a test clock may jump).
		now := time.Now()
		for _, at := range b.stored {
			f.applyLatency.Observe(max(now.Sub(at), 0).Seconds())
		}
	}
	for i := range b.statuses {
		if err := f.w.conn.PublishStatus(&b.statuses[i]); err != nil {
			f.log.Warn().Err(err).Str("key", a.key).Msg("cannot publish status")
		}
	}
	starts := b.starts
	if b.resume {
		starts = a.rec.Pending
	}
	a.submit(starts)
	a.removeTicks(b)
}

// dropResume removes the key's resume wake-up once its work has ended.
// Left, it would fire ResumeAfter after the work began as one more event
// to store, deliver and check for every action; a wake-up still fires if
// the removal is lost, and finds nothing to do, as before. It is sent
// after the commit's inventory purges, on the same connection: while the
// wake-up stands it also repairs the entries of a worker that died before
// sending them (inventory.go), and once it is gone they were sent.
func (a *actor) dropResume() {
	if err := a.f.w.conn.UnscheduleNoWait(a.f.name, a.key, contract.TimerResume); err != nil {
		a.f.log.Debug().Err(err).Str("key", a.key).Msg("cannot remove the resume wake-up of ended work; it will fire and find nothing to do")
	}
}

// submit hands actions to the pool, except those already running here.
func (a *actor) submit(ps []contract.PendingWork) {
	f := a.f
	var todo []contract.PendingWork
	now := f.w.cfg.Now()
	f.mu.Lock()
	for _, p := range ps {
		if _, ok := f.inflight[p.ID]; !ok {
			since := p.Since
			if since.IsZero() {
				since = now // a record written before Since was kept
			}
			f.inflight[p.ID] = since
			todo = append(todo, p)
		}
	}
	f.mu.Unlock()
	for _, p := range todo {
		// A resumed action waits for the attempt its failed one asked for.
		var delay time.Duration
		if !p.NextAttemptAt.IsZero() {
			delay = p.NextAttemptAt.Sub(now)
		}
		f.w.pool.submit(job{
			f: f, key: a.key, p: p, ent: a.ent.snapshot(), version: a.rec.Version, state: a.rec.State,
			attempt: max(p.Attempt, 1),
		}, delay)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
