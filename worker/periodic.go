package worker

import (
	"context"
	"slices"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/statemachine"
)

// Periodic events (statemachine.Every) are JetStream "@every" schedules, one
// per periodic event of the key's state (slot i: timer kind
// contract.TimerEvery(i)), tagged with the visit (the version the key
// entered the state at), as timeouts are:
//
//   - a batch that enters a state arms its periodic events before the
//     commit, each replacing whatever schedule held its slot, so a crash
//     after the commit loses none;
//   - after the commit it removes the schedules of the slots the state it
//     left had and the new one has not;
//   - a tick of another visit, or of a slot or event the key's state does
//     not have, is stale and ignored, as a leftover schedule (a crash before
//     the removal, a definition changed since) is removed when its tick
//     comes;
//   - ticks missed while nobody took them collapse into one: each expires
//     from the events stream after an interval, and of those a worker holds
//     at once (in a mailbox, in a batch) only the newest is applied.

// periodicTimers arms and removes the schedules of periodic events: one
// per kind and key, replaced by the next.
type periodicTimers interface {
	SchedulePeriodic(ctx context.Context, workflow, key, kind string, visit uint64, interval time.Duration, armed time.Time, ev contract.Envelope) error
	Unschedule(ctx context.Context, workflow, key, kind string) error
}

var _ periodicTimers = (*queue.Conn)(nil)

// tickPlan is what a batch changes in its key's periodic schedules.
type tickPlan struct {
	arm   []statemachine.Periodic // the entered state's, as slots 0..n-1
	visit uint64                  // the version the key entered it at
	drop  []int                   // slots the left state had and the entered one has not
}

// planTicks returns the periodic schedules to arm and remove for b, nil if
// the batch enters no state. A key's first commit enters its state too, so
// that periodic events of the initial state run.
func (a *actor) planTicks(b *batch) *tickPlan {
	created := a.rec.Version == 0 && b.rec.Version > 0
	if b.rec.Entered == a.rec.Entered && !created {
		return nil
	}
	to := a.f.eng.statePeriodic(statemachine.State(b.rec.State))
	var from []statemachine.Periodic
	if a.rec.Version > 0 {
		from = a.f.eng.statePeriodic(statemachine.State(a.rec.State))
	}
	if len(to) == 0 && len(from) == 0 {
		return nil
	}
	p := &tickPlan{arm: to, visit: b.rec.Entered}
	for slot := len(to); slot < len(from); slot++ {
		p.drop = append(p.drop, slot)
	}
	return p
}

// liveTick reports whether a tick of slot, armed at visit, for event, is
// one the key's state (as b has it now) runs.
func (a *actor) liveTick(b *batch, slot int, visit uint64, event string) bool {
	every := a.f.eng.statePeriodic(statemachine.State(b.rec.State))
	return visit == b.rec.Entered && slot < len(every) && string(every[slot].Event) == event
}

// newerTick reports whether rest holds another tick of kind from visit.
func newerTick(rest []*queue.Msg, kind string, visit uint64) bool {
	for _, m := range rest {
		if k, v, ok := m.Timer(); ok && k == kind && v == visit {
			return true
		}
	}
	return false
}

// isTick reports whether m is the tick of a periodic event. Nothing waits
// for a tick that goes back to the stream: it expires after an interval, and
// the next one does as well.
func isTick(m *queue.Msg) bool {
	kind, _, ok := m.Timer()
	_, periodic := contract.EverySlot(kind)
	return ok && periodic
}

// replaceTick puts m in its key's mailbox in place of a tick of the same
// periodic event and visit, and returns that tick; nil if m is no tick, or
// has none to replace, and is to be enqueued as any event.
func (f *flow) replaceTick(m *queue.Msg) *queue.Msg {
	if !isTick(m) {
		return nil
	}
	kind, visit, _ := m.Timer()
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.actors[m.Key]
	if f.draining || a == nil {
		return nil
	}
	for i, old := range a.mailbox {
		if k, v, ok := old.Timer(); ok && k == kind && v == visit {
			a.mailbox = append(slices.Delete(a.mailbox, i, i+1), m)
			a.partition = m.Partition
			f.schedule(a)
			return old
		}
	}
	return nil
}

// armTicks arms the periodic events of the state b enters, before its
// commit. now, the worker's clock, is the cadence's anchor for a test clock.
func (a *actor) armTicks(ctx context.Context, b *batch, now time.Time) error {
	p := b.ticks
	if p == nil || p.visit != b.rec.Entered {
		return nil
	}
	for slot, e := range p.arm {
		ev := contract.Envelope{Event: string(e.Event)}
		if err := a.f.w.conn.SchedulePeriodic(ctx, a.f.name, a.key, contract.TimerEvery(slot), p.visit, e.Interval, now, ev); err != nil {
			return err
		}
	}
	return nil
}

// removeTicks removes, once b is committed, the periodic schedules the
// key's state no longer has: those of the state it left, and those whose
// stale ticks came in slots its state has not. A failure is logged only: a
// schedule left over is removed when its next tick comes.
func (a *actor) removeTicks(b *batch) {
	var slots []int
	if b.ticks != nil {
		slots = b.ticks.drop
	}
	if len(b.heal) > 0 {
		have := len(a.f.eng.statePeriodic(statemachine.State(a.rec.State)))
		for _, slot := range b.heal {
			if slot >= have && !slices.Contains(slots, slot) {
				slots = append(slots, slot)
			}
		}
	}
	if len(slots) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.f.w.ctx, 5*time.Second)
	defer cancel()
	for _, slot := range slots {
		if err := a.f.w.conn.Unschedule(ctx, a.f.name, a.key, contract.TimerEvery(slot)); err != nil {
			a.f.log.Warn().Err(err).Str("key", a.key).Int("slot", slot).Msg("cannot remove a periodic schedule; its next tick will")
		}
	}
}
