package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderly-dev/orderly/contract"
)

// Headers of JetStream message schedules and TTLs that periodic schedules use.
const (
	headerScheduleTTL = "Nats-Schedule-TTL" // the TTL each fired message gets
	headerTTL         = "Nats-TTL"
)

// SchedulePeriodic has JetStream deliver ev to key every interval, as an
// event like any other in the key's partition, whether or not a worker
// runs, until Unschedule removes it or another schedule of the same kind
// and key replaces it. kind is a periodic kind (contract.TimerEvery); visit
// is handed back in HeaderTimerVisit and armed, the caller's clock now, in
// HeaderTimerArmed.
//
// It is JetStream's "@every" schedule, with what the server gives: interval
// is at least a second and a whole number of seconds; the first tick comes
// interval after the schedule is stored (rounded to a whole second), the
// next ones a whole interval apart, however late a tick was; while the
// server is down nothing fires, and after it restarts the cadence starts
// again an interval later. Each tick expires from the events stream after
// interval (Nats-Schedule-TTL), so ticks that nobody took while no worker
// ran do not pile up: at most the newest is waiting, and the worker takes
// one of any it holds at once (see worker).
func (c *Conn) SchedulePeriodic(ctx context.Context, workflow, key, kind string, visit uint64, interval time.Duration, armed time.Time, ev contract.Envelope) error {
	m, err := periodicMsg(workflow, key, kind, visit, interval, armed, ev)
	if err != nil {
		return err
	}
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue: schedule %s for %s: %w", kind, key, err)
	}
	return nil
}

func periodicMsg(workflow, key, kind string, visit uint64, interval time.Duration, armed time.Time, ev contract.Envelope) (*nats.Msg, error) {
	if err := contract.ValidateKey(key); err != nil {
		return nil, err
	}
	if _, ok := contract.EverySlot(kind); !ok {
		return nil, fmt.Errorf("queue: schedule: %q is not a periodic kind", kind)
	}
	if interval < time.Second || interval%time.Second != 0 {
		return nil, fmt.Errorf("queue: schedule %s for %s: interval %v is not a whole number of seconds", kind, key, interval)
	}
	body, err := contract.MarshalEnvelope(&ev)
	if err != nil {
		return nil, fmt.Errorf("queue: schedule: %w", err)
	}
	secs := strconv.FormatInt(int64(interval/time.Second), 10)
	m := nats.NewMsg(scheduleSubject(workflow, kind, key))
	m.Data = body
	m.Header.Set(headerSchedule, "@every "+secs+"s")
	m.Header.Set(headerScheduleTarget, firedSubject(workflow, kind, key))
	m.Header.Set(headerScheduleTTL, secs)
	m.Header.Set(contract.HeaderTimerKind, kind)
	m.Header.Set(contract.HeaderTimerVisit, strconv.FormatUint(visit, 10))
	m.Header.Set(contract.HeaderTimerArmed, armed.UTC().Format(time.RFC3339Nano))
	// The same schedule sent twice (a retried commit) is stored once, so
	// its cadence keeps the first one's anchor.
	m.Header.Set(jetstream.MsgIDHeader, kind+"."+key+"."+strconv.FormatUint(visit, 10))
	return m, nil
}

// Unschedule removes the pending schedule of kind for key, if there is one:
// a message without a schedule takes its place (the timers stream keeps one
// message per subject) and expires a second later. A tick already fired
// stays in the events stream.
func (c *Conn) Unschedule(ctx context.Context, workflow, key, kind string) error {
	m, err := unscheduleMsg(workflow, key, kind)
	if err != nil {
		return err
	}
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue: unschedule %s for %s: %w", kind, key, err)
	}
	return nil
}

// UnscheduleNoWait is Unschedule sent without asking JetStream to
// acknowledge it: for a schedule whose firing would be harmless, so that
// removing it costs the sender no more than a publish. If the server does
// not store it, the schedule fires as if it had not been sent.
func (c *Conn) UnscheduleNoWait(workflow, key, kind string) error {
	m, err := unscheduleMsg(workflow, key, kind)
	if err != nil {
		return err
	}
	if err := c.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("queue: unschedule %s for %s: %w", kind, key, err)
	}
	return nil
}

func unscheduleMsg(workflow, key, kind string) (*nats.Msg, error) {
	if err := contract.ValidateKey(key); err != nil {
		return nil, err
	}
	if kind == "" || kind == "fired" || strings.ContainsAny(kind, ".*> ") {
		return nil, fmt.Errorf("queue: unschedule: bad kind %q", kind)
	}
	m := nats.NewMsg(scheduleSubject(workflow, kind, key))
	m.Header.Set(headerTTL, "1")
	return m, nil
}

// FireDueTicks is FireDueTimers for periodic schedules (SchedulePeriodic).
// Their ticks are due every interval from when they were armed, by the
// clock of the worker that armed them (worker.Config.Now), while JetStream
// fires them by the real clock. Once a test has moved its clock from from
// to to, FireDueTicks fires, at once, one tick of every periodic schedule of
// workflow that had a tick due in (from, to]: one, however many intervals
// the jump spans, as when ticks were missed while no worker ran. It does not
// move the schedules: JetStream goes on firing them by the real clock. It
// returns how many ticks it fired. Production code has no use for it;
// orderlytest.Harness.Advance calls it.
func (c *Conn) FireDueTicks(ctx context.Context, workflow string, from, to time.Time) (int, error) {
	s, subjects, err := c.pendingSchedules(ctx, workflow, contract.TimersStream(workflow), scheduleSubject(workflow, "*", "*"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, subj := range subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return n, fmt.Errorf("queue: timer %s: %w", subj, err)
		}
		if !tickDue(m.Header, from, to) {
			continue
		}
		kind := m.Header.Get(contract.HeaderTimerKind)
		tick := nats.NewMsg(firedSubject(workflow, kind, contract.KeyOfSubject(subj)))
		tick.Data = m.Data
		for _, h := range []string{contract.HeaderTimerKind, contract.HeaderTimerVisit, contract.HeaderTimerArmed} {
			tick.Header.Set(h, m.Header.Get(h))
		}
		tick.Header.Set(headerTTL, m.Header.Get(headerScheduleTTL))
		if _, err := c.js.PublishMsg(ctx, tick); err != nil {
			return n, fmt.Errorf("queue: tick %s: %w", subj, err)
		}
		n++
	}
	return n, nil
}

// tickDue reports whether the periodic schedule with headers h has a tick
// due in (from, to], by the clock that armed it.
func tickDue(h nats.Header, from, to time.Time) bool {
	v, ok := strings.CutPrefix(h.Get(headerSchedule), "@every ")
	if !ok {
		return false
	}
	if _, ok := contract.EverySlot(h.Get(contract.HeaderTimerKind)); !ok {
		return false
	}
	interval, err := time.ParseDuration(v)
	if err != nil || interval <= 0 {
		return false
	}
	armed, err := time.Parse(time.RFC3339Nano, h.Get(contract.HeaderTimerArmed))
	if err != nil {
		return false
	}
	// Ticks are due at armed + k·interval, k ≥ 1.
	ticks := func(t time.Time) int64 {
		if !t.After(armed) {
			return 0
		}
		return int64(t.Sub(armed) / interval)
	}
	return ticks(to) > ticks(from)
}
