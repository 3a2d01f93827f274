package queue

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
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
