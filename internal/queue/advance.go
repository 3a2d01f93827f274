package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cron"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// delayedHeaders are what a delayed event's schedule carries besides its time.
var delayedHeaders = []string{headerScheduleTarget, contract.HeaderDelayedJobID}

// FireDueDelayed is FireDueTimers for delayed events (client.WithDelay,
// WithAt): their due time is taken from the producer's clock, which in a
// test runs behind the test clock after an Advance. Every delayed event of
// workflow due at now is moved to the next whole second of real time, on
// its own subject, so a cancel still finds it. It returns how many it
// moved. Production code has no use for it; orderlytest.Harness.Advance
// calls it.
func (c *Conn) FireDueDelayed(ctx context.Context, workflow string, now time.Time) (int, error) {
	// Every key and job id; fired ones (…fired.at.<key>) have another
	// fourth token.
	s, subjects, err := c.pendingSchedules(ctx, workflow, contract.SchedulesStream(workflow), contract.SchedulesSubject(workflow)+".at.*.*")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, subj := range subjects {
		due, err := c.fireIfDue(ctx, s, subj, now, delayedHeaders)
		if err != nil {
			return n, err
		}
		if due {
			n++
		}
	}
	return n, nil
}

// pendingSchedules returns workflow's stream of schedules and its subjects
// that match filter, sorted: what the test clock's Fire* functions walk.
func (c *Conn) pendingSchedules(ctx context.Context, workflow, stream, filter string) (jetstream.Stream, []string, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, nil, err
	}
	s, err := c.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, fmt.Errorf("queue: schedules of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("queue: schedules of %s: %w", workflow, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, nil, fmt.Errorf("queue: schedules of %s: %w", workflow, err)
	}
	return s, slices.Sorted(maps.Keys(info.State.Subjects)), nil
}

// maxAdvanceFirings bounds the firings of one recurring schedule that one
// FireDueRecurring makes, so that a long jump over a short interval does
// not flood the queue: the latest ones are fired.
const maxAdvanceFirings = 100

// FireDueRecurring is FireDueTimers for recurring schedules
// (client.AddSchedule), which the server fires by the real clock. Once a
// test has moved its clock from from to to, it fires, at once, every
// firing of every recurring schedule of workflow that falls in (from, to]:
// for "@every d", the time the schedule was stored plus whole intervals
// (as the server fires it while it runs); for a cron expression, its fire
// times in its zone. At most the latest 100 firings of each schedule fire
// in one call. Each firing has the job id the server's firing for that
// time would have (contract.ScheduleJobID, the interval counted from the
// stored time rounded to a second, as the server counts it), so a firing
// that both make is applied once. The schedules are not moved: the server
// goes on firing them by the real clock. It returns how many firings it
// made. Production code has no use for it; orderlytest.Harness.Advance
// calls it.
//
// A firing made here carries no Nats-Scheduler (the server refuses the
// header from a client): it names its schedule and fire time in
// contract.HeaderScheduleName and HeaderScheduleTime instead, which the
// worker reads only on a firing without Nats-Scheduler (recurringJobID).
// Storing it needs permission to publish on the schedules stream's
// fired.> subjects, which neither the producer nor the worker role has.
func (c *Conn) FireDueRecurring(ctx context.Context, workflow string, from, to time.Time) (int, error) {
	s, subjects, err := c.pendingSchedules(ctx, workflow, contract.SchedulesStream(workflow), contract.RecurringSubject(workflow, "*"))
	if err != nil {
		return 0, err
	}
	type firing struct {
		at  time.Time // the fire time, for the job id
		due time.Time // when it is due by the test clock
		m   *jetstream.RawStreamMsg
	}
	var due []firing
	for _, subj := range subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("queue: schedule %s: %w", subj, err)
		}
		for _, f := range recurringDue(m.Header, m.Time, from, to) {
			due = append(due, firing{at: f[0], due: f[1], m: m})
		}
	}
	// In the order they fall due, as the server would fire them.
	slices.SortStableFunc(due, func(a, b firing) int { return a.due.Compare(b.due) })
	for i, f := range due {
		name := contract.KeyOfSubject(f.m.Subject)
		target := f.m.Header.Get(headerScheduleTarget)
		if key := contract.KeyOfSubject(target); contract.ValidateKey(key) != nil || target != contract.RecurringTarget(workflow, name, key) {
			continue // not a schedule Orderly stored
		}
		m := nats.NewMsg(target)
		m.Data = f.m.Data
		for h, v := range f.m.Header {
			// What the server's firing keeps of the schedule's headers.
			if !strings.HasPrefix(h, "Nats-") {
				m.Header[h] = v
			}
		}
		m.Header.Set(contract.HeaderScheduleName, name)
		m.Header.Set(contract.HeaderScheduleTime, f.at.UTC().Format(time.RFC3339))
		if _, err := c.js.PublishMsg(ctx, m); err != nil {
			return i, fmt.Errorf("queue: fire schedule %s: %w", name, err)
		}
	}
	return len(due), nil
}

// recurringDue returns the firings of the recurring schedule with headers
// h, stored at stored, that fall due in (from, to], oldest first, at most
// maxAdvanceFirings (the latest): each as its fire time (what the job id
// says) and the time it is due by the test clock. They differ for
// "@every" only: the server counts intervals from the stored time rounded
// to a second, the test clock from the stored time, so that advancing by
// one interval right after storing always fires one.
func recurringDue(h nats.Header, stored, from, to time.Time) [][2]time.Time {
	spec, _, err := cron.Pattern(h.Get(headerSchedule), h.Get(jsapi.NatsScheduleTimeZone), from)
	if err != nil || !to.After(from) {
		return nil
	}
	var out [][2]time.Time
	switch spec.Kind {
	case cron.Every:
		d := spec.Every
		if to.Before(stored.Add(d)) {
			return nil
		}
		last := int64(to.Sub(stored) / d) // stored + last·d ≤ to
		first := int64(1)
		if !from.Before(stored.Add(d)) {
			first = int64(from.Sub(stored)/d) + 1 // stored + first·d > from
		}
		first = max(first, last-maxAdvanceFirings+1)
		base := stored.UTC().Round(time.Second)
		for k := first; k <= last; k++ {
			out = append(out, [2]time.Time{base.Add(time.Duration(k) * d), stored.Add(time.Duration(k) * d)})
		}
	case cron.Cron:
		// Back from to: a long jump over a frequent schedule costs no more
		// than the firings it makes.
		for t, ok := spec.Cron.Prev(to); ok && t.After(from) && len(out) < maxAdvanceFirings; t, ok = spec.Cron.Prev(t.Add(-time.Second)) {
			out = append(out, [2]time.Time{t, t})
		}
		slices.Reverse(out)
	}
	return out
}
