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
	"github.com/orderly-dev/orderly/internal/tracing"
)

// Schedule has JetStream deliver ev to key at time at, as an event like any
// other, in the key's partition, even if no worker runs in between. There is
// one pending schedule per kind and key: scheduling again replaces it. kind
// must be a subject token other than "fired"; visit is handed back in
// HeaderTimerVisit. Delivery is at whole seconds, never early. A span in
// ctx goes with the timer, as its trace context, to the event it fires.
func (c *Conn) Schedule(ctx context.Context, workflow, key, kind string, visit uint64, at time.Time, ev contract.Envelope) error {
	m, err := scheduleMsg(workflow, key, kind, visit, at, ev)
	if err != nil {
		return err
	}
	tracing.Inject(ctx, m.Header)
	if _, err := c.publish(ctx, m); err != nil {
		return fmt.Errorf("queue: schedule %s for %s: %w", kind, key, err)
	}
	return nil
}

// PendingSchedule is a schedule sent without waiting for JetStream to store it.
type PendingSchedule struct {
	kind, key string
	f         jetstream.PubAckFuture
}

// Wait returns once the schedule is stored, or why it was not.
func (p *PendingSchedule) Wait(ctx context.Context) error {
	select {
	case <-p.f.Ok():
		return nil
	case err := <-p.f.Err():
		return fmt.Errorf("queue: schedule %s for %s: %w", p.kind, p.key, err)
	case <-ctx.Done():
		return fmt.Errorf("queue: schedule %s for %s: %w", p.kind, p.key, ctx.Err())
	}
}

// ScheduleAsync is Schedule without waiting, so that the schedules of many
// keys pipeline on one connection. The caller bounds how many are
// outstanding, as with PublishAsync.
func (c *Conn) ScheduleAsync(workflow, key, kind string, visit uint64, at time.Time, ev contract.Envelope) (*PendingSchedule, error) {
	m, err := scheduleMsg(workflow, key, kind, visit, at, ev)
	if err != nil {
		return nil, err
	}
	f, err := c.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("queue: schedule %s for %s: %w", kind, key, err)
	}
	return &PendingSchedule{kind: kind, key: key, f: f}, nil
}

func scheduleMsg(workflow, key, kind string, visit uint64, at time.Time, ev contract.Envelope) (*nats.Msg, error) {
	if err := contract.ValidateKey(key); err != nil {
		return nil, err
	}
	if kind == "" || kind == "fired" {
		return nil, fmt.Errorf("queue: schedule: bad kind %q", kind)
	}
	body, err := contract.MarshalEnvelope(&ev)
	if err != nil {
		return nil, fmt.Errorf("queue: schedule: %w", err)
	}
	// Round up: a timeout must not fire before its time.
	at = at.UTC().Truncate(time.Second)
	m := nats.NewMsg(scheduleSubject(workflow, kind, key))
	m.Data = body
	m.Header.Set("Nats-Schedule", "@at "+at.Add(time.Second).Format(time.RFC3339))
	m.Header.Set("Nats-Schedule-Target", firedSubject(workflow, kind, key))
	m.Header.Set(contract.HeaderTimerKind, kind)
	m.Header.Set(contract.HeaderTimerVisit, strconv.FormatUint(visit, 10))
	// The same schedule sent twice (a retried commit) is stored once.
	m.Header.Set(jetstream.MsgIDHeader, kind+"."+key+"."+strconv.FormatUint(visit, 10)+"."+strconv.FormatInt(at.Unix(), 10))
	return m, nil
}

// TimerKeys calls fn with the key of every pending schedule of kind in
// workflow, one call per key, in no particular order, until fn returns
// false or ctx ends. Schedules made meanwhile may or may not be seen. It
// reads headers only, through a short-lived consumer, so its memory does not
// grow with the number of schedules.
func (c *Conn) TimerKeys(ctx context.Context, workflow, kind string, fn func(key string) bool) error {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return err
	}
	stream := contract.TimersStream(workflow)
	cons, err := c.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     scheduleSubject(workflow, kind, "*"),
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute, // if we vanish before deleting it
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("queue: timers of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return fmt.Errorf("queue: timers of %s: %w", workflow, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = c.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	}()
	if cons.CachedInfo().NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("queue: timers of %s: %w", workflow, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("queue: timers of %s: %w", workflow, err)
		}
		if !fn(contract.KeyOfSubject(m.Subject())) {
			return nil
		}
		md, err := m.Metadata()
		if err != nil || md.NumPending == 0 {
			return nil // the last one there was when we began, or later
		}
	}
}

// Timer reports whether m is a fired timer, with its kind and visit. A timer
// is known by where the events stream stores it, which only the stream's
// source of the timers stream can write to, never by its headers: anyone who
// may publish an event may set those. A timer whose kind or visit header is
// missing or broken has kind "" and visit 0.
func (m *Msg) Timer() (kind string, visit uint64, ok bool) {
	if !m.timer {
		return "", 0, false
	}
	h := m.raw.Headers()
	visit, err := strconv.ParseUint(h.Get(contract.HeaderTimerVisit), 10, 64)
	if kind = h.Get(contract.HeaderTimerKind); kind == "" || err != nil {
		return "", 0, true
	}
	return kind, visit, true
}

// legacyTimer reports whether a message stored under a client subject is a
// timer fired before the events stream was switched to timerToken subjects:
// stored by then (until, the server's clock), sourced from the workflow's
// timers stream and fired by its scheduler. The server sets both headers
// and refuses them from clients (nats-server 2.14 and later); the time bound
// closes the door for good once the old timers are gone, whatever the
// server.
func legacyTimer(h nats.Header, workflow string, stored, until time.Time) bool {
	if stored.IsZero() || stored.After(until) || h.Get(headerScheduler) == "" {
		return false
	}
	origin, _, _ := strings.Cut(h.Get(headerStreamSource), " ")
	origin, _, _ = strings.Cut(origin, ":") // "name:hash" for a source in another domain
	return origin == contract.TimersStream(workflow)
}

// Headers the server sets on a fired timer and on a sourced message.
const (
	headerScheduler    = "Nats-Scheduler"
	headerStreamSource = "Nats-Stream-Source"
)
