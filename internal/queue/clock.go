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

// Message-schedule headers of JetStream, as Schedule sets them.
const (
	headerSchedule       = "Nats-Schedule"
	headerScheduleTarget = "Nats-Schedule-Target"
)

// FireDueTimers is how a test clock makes time pass for the broker. Timers
// (Schedule) are due at a time taken from the worker's clock
// (worker.Config.Now), but JetStream fires them by the real clock. Once a
// test has moved its clock on, FireDueTimers finds every pending timer of
// workflow that is due at now (its time is not after now) and moves it to
// the next whole second of real time, so the server fires it within about a
// second, with its event, kind and visit unchanged. Timers not due yet are
// left alone. It returns how many due timers it found.
//
// A timer replaced or fired while FireDueTimers handles it is not brought
// back: each move is a compare-and-set on the timer's subject. Production
// code has no use for it; orderlytest.Harness.Advance calls it.
func (c *Conn) FireDueTimers(ctx context.Context, workflow string, now time.Time) (int, error) {
	// Pending schedules have five tokens; fired ones (…fired.<kind>.<key>)
	// have six, so the filter leaves them out.
	s, subjects, err := c.pendingSchedules(ctx, workflow, contract.TimersStream(workflow), scheduleSubject(workflow, "*", "*"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, subj := range subjects {
		due, err := c.fireIfDue(ctx, s, subj, now, timerHeaders)
		if err != nil {
			return n, err
		}
		if due {
			n++
		}
	}
	return n, nil
}

// timerHeaders are what a timer's schedule carries besides its time.
var timerHeaders = []string{headerScheduleTarget, contract.HeaderTimerKind, contract.HeaderTimerVisit}

// fireIfDue moves the schedule on subj to the next real second if it is due
// at now, with its data and the headers keep, and reports whether it was due.
func (c *Conn) fireIfDue(ctx context.Context, s jetstream.Stream, subj string, now time.Time, keep []string) (bool, error) {
	for {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil // fired meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("queue: timer %s: %w", subj, err)
		}
		at, ok := scheduledAt(m.Header)
		if !ok || at.After(now) {
			return false, nil
		}
		soon := time.Now().UTC().Truncate(time.Second).Add(time.Second)
		if !at.After(soon) {
			return true, nil // the server fires it by itself within a second
		}
		r := nats.NewMsg(subj)
		r.Data = m.Data
		for _, h := range keep {
			if v := m.Header.Get(h); v != "" {
				r.Header.Set(h, v)
			}
		}
		r.Header.Set(headerSchedule, "@at "+soon.Format(time.RFC3339))
		r.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(m.Sequence, 10))
		_, err = c.js.PublishMsg(ctx, r)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			continue // replaced or fired meanwhile: look again
		}
		if err != nil {
			return false, fmt.Errorf("queue: timer %s: %w", subj, err)
		}
		return true, nil
	}
}

// scheduledAt reads the time of a one-shot ("@at") schedule.
func scheduledAt(h nats.Header) (time.Time, bool) {
	v, ok := strings.CutPrefix(h.Get(headerSchedule), "@at ")
	if !ok {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339, v)
	return at, err == nil
}
