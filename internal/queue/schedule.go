package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cron"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// Delayed events and recurring schedules (contract's schedule.go): the
// workflow's schedules stream holds them as JetStream message schedules,
// which the server fires, worker or not, onto subjects of the same stream;
// the events stream sources those into the key's partition, under subjects
// of their own (delayedToken, recurringToken) that no client can publish
// into the events stream, as fired timers are. What fires is a client event
// with the job id the producer gave it (a delayed event) or one derived
// from the schedule's name and the fire time (a recurring schedule).

// The tokens after the partition under which the events stream stores a
// fired delayed event and a firing of a recurring schedule:
// orderly.events.<workflow>.<partition>.at.<key> and .every.<key>.
const (
	delayedToken   = "at"
	recurringToken = "every"
)

// schedulesStreamConfig holds delayed events and recurring schedules. As
// for timers, message schedules allow only discard-old, so the stream has
// no limit of its own: at one JetStream would drop the oldest events that
// producers were told were stored. What fires stays in it until a worker
// forgets it (Jobs.ForgetFired). Its messages are a little smaller than the
// events stream's: a firing gains headers (Nats-Scheduler, the source's
// Nats-Stream-Source), and one that the events stream refused as too large
// would stop the source, and every firing after it, for good.
func schedulesStreamConfig(s Spec) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              contract.SchedulesStream(s.Workflow),
		Description:       "Orderly delayed events and schedules of workflow " + s.Workflow,
		Subjects:          []string{contract.SchedulesSubject(s.Workflow) + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld, // message schedules allow no other
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        ScheduleMaxMsgSize(s.MaxPayload),
		Duplicates:        s.DuplicateWindow,
		AllowMsgSchedules: true,
		AllowRollup:       true, // the server rolls up a schedule's subject when it stores one
		Replicas:          s.Replicas,
	}
}

// scheduleHeaderRoom is what a firing's headers may add to its schedule's
// size on the way into the events stream.
const scheduleHeaderRoom = 1 << 10

// ScheduleMaxMsgSize is the largest message the schedules stream takes
// when events may be maxPayload bytes.
func ScheduleMaxMsgSize(maxPayload int32) int32 {
	return max(maxPayload-scheduleHeaderRoom, maxPayload/2)
}

// schedulesSource brings what fires in the schedules stream into the events
// stream, into the partition of its key (hashed as the events transform
// hashes a client's key).
func schedulesSource(s Spec) *jetstream.StreamSource {
	pre := contract.Namespace + ".events." + s.Workflow + ".{{partition(" + strconv.Itoa(s.Partitions) + ","
	return &jetstream.StreamSource{
		Name: contract.SchedulesStream(s.Workflow),
		SubjectTransforms: []jetstream.SubjectTransformConfig{
			{Source: contract.DelayedTarget(s.Workflow, "*"), Destination: pre + "1)}}." + delayedToken + ".{{wildcard(1)}}"},
			{Source: contract.RecurringTarget(s.Workflow, "*", "*"), Destination: pre + "2)}}." + recurringToken + ".{{wildcard(2)}}"},
		},
	}
}

// storedToken returns the token between the partition and the key of a
// subject of workflow's events stream: "" for a client event, timerToken,
// delayedToken or recurringToken.
func storedToken(workflow, subject string) string {
	rest, ok := strings.CutPrefix(subject, contract.Namespace+".events."+workflow+".")
	if !ok {
		return ""
	}
	_, rest, _ = strings.Cut(rest, ".") // the partition
	tok, key, ok := strings.Cut(rest, ".")
	if !ok || key == "" || strings.Contains(key, ".") {
		return ""
	}
	return tok
}

// markScheduled recognizes a fired delayed event or a firing of a
// recurring schedule by its subject and gives it its job id; false: m is
// neither.
func (p *Puller) markScheduled(m *Msg) bool {
	switch storedToken(p.cfg.Workflow, m.raw.Subject()) {
	case delayedToken:
		m.delayed = true
		m.ID = m.raw.Headers().Get(contract.HeaderDelayedJobID)
	case recurringToken:
		m.ID = recurringJobID(m.raw.Headers())
	default:
		return false
	}
	m.firedSeq = firedSeq(p.cfg.Workflow, m.raw.Headers().Get(headerStreamSource))
	return true
}

// firedSeq is the sequence in workflow's schedules stream of the message
// the source header src (Nats-Stream-Source: "<stream>[:<hash>] <seq> ...")
// says a message came from; 0 if it came from elsewhere.
func firedSeq(workflow, src string) uint64 {
	fields := strings.Fields(src)
	if len(fields) < 2 {
		return 0
	}
	if name, _, _ := strings.Cut(fields[0], ":"); name != contract.SchedulesStream(workflow) {
		return 0
	}
	seq, _ := strconv.ParseUint(fields[1], 10, 64)
	return seq
}

// forgetEvery is the least time between two purges of what has fired (a
// variable for tests).
var forgetEvery = 30 * time.Second

// ForgetFired deletes from the schedules stream what has fired and is in
// the events stream already, at most once per 30s: everything fired and
// stored there before the latest firing msgs holds, since a source brings
// messages over in order. Without it the schedules stream would keep a copy
// of every delayed event and every firing. (A TTL on what fires would
// apply in the events stream too, and expire events waiting there.)
func (j *Jobs) ForgetFired(ctx context.Context, msgs []*Msg) error {
	var top uint64
	for _, m := range msgs {
		top = max(top, m.firedSeq)
	}
	now := time.Now().UnixNano()
	last := j.forgotAt.Load()
	if top <= j.forgotBelow.Load() || now-last < int64(forgetEvery) || !j.forgotAt.CompareAndSwap(last, now) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	stream := contract.SchedulesStream(j.workflow)
	req := []byte(`{"filter":"` + contract.SchedulesSubject(j.workflow) + `.fired.>","seq":` + strconv.FormatUint(top, 10) + `}`)
	resp, err := j.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+stream, req)
	if err == nil {
		var r struct {
			Error   *jetstream.APIError `json:"error"`
			Success bool                `json:"success"`
		}
		if err = json.Unmarshal(resp.Data, &r); err == nil && r.Error != nil {
			err = r.Error
		}
	}
	if err != nil {
		return fmt.Errorf("queue: forget what fired in %s: %w", stream, err)
	}
	j.forgotBelow.Store(top)
	return nil
}

// Delayed reports whether m is a delayed event (one published with a
// delay or a time) that its schedule fired. Before applying it, a worker
// must take it with Jobs.TakeDelayed: it may have been cancelled.
func (m *Msg) Delayed() bool { return m.delayed }

// recurringJobID is the job id of a firing of a recurring schedule: its
// name (the schedule's subject, which the server puts in Nats-Scheduler)
// and the fire time, which is the one before the next fire time the server
// put in Nats-Schedule-Next. "" (no job id) if the headers do not say.
//
// A firing without Nats-Scheduler is a test clock's (FireDueRecurring):
// it names the schedule and the fire time in Orderly's own headers. Only
// such a firing is read that way: the server puts Nats-Scheduler on every
// firing it makes, whatever headers the schedule carries, and nobody but
// the server may write a firing where the events stream takes it from
// (neither the producer nor the worker role may publish on
// orderly.schedules.<workflow>.fired.>), so a producer cannot choose the
// job id of a firing.
func recurringJobID(h nats.Header) string {
	if h.Get(jsapi.NatsScheduler) == "" {
		name := h.Get(contract.HeaderScheduleName)
		at, err := time.Parse(time.RFC3339, h.Get(contract.HeaderScheduleTime))
		if contract.ValidateScheduleName(name) != nil || err != nil {
			return ""
		}
		return contract.ScheduleJobID(name, at)
	}
	name := contract.KeyOfSubject(h.Get(jsapi.NatsScheduler))
	next, err := time.Parse(time.RFC3339Nano, h.Get(jsapi.NatsScheduleNext))
	if name == "" || err != nil {
		return ""
	}
	spec, _, err := cron.Pattern(h.Get(contract.HeaderSchedule), h.Get(contract.HeaderScheduleZone), next)
	if err != nil {
		return ""
	}
	switch spec.Kind {
	case cron.Every:
		return contract.ScheduleJobID(name, next.Add(-spec.Every))
	case cron.Cron:
		if at, ok := spec.Cron.Prev(next.Add(-time.Second)); ok {
			return contract.ScheduleJobID(name, at)
		}
	}
	return ""
}

// TakeDelayed records that a worker takes the fired delayed event with job
// id (of key and event) to apply it, unless a producer cancelled it first:
// then cancelled is true and the event must not be applied. The record
// (contract.ScheduledJob) is changed with compare-and-set, so a cancel and
// a worker cannot both win. Taking an event taken already (a redelivery)
// is no error. Bounded by ctx's deadline or, without one, by 5s.
func (j *Jobs) TakeDelayed(ctx context.Context, id, key, event string, now time.Time) (cancelled bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jobTimeout)
		defer cancel()
	}
	for range 8 {
		rec, rev, err := jsapi.GetScheduledJob(ctx, j.nc, j.workflow, id)
		switch {
		case errors.Is(err, jsapi.ErrNoRecord):
			// Its producer did not get to write it, or it expired (a delay
			// longer than the dedupe window).
			rec = contract.ScheduledJob{ID: id, Key: key, Event: event}
		case err != nil:
			return false, fmt.Errorf("queue: take delayed job %s: %w", id, err)
		case rec.State == contract.JobCancelled:
			return true, nil
		case rec.State == contract.JobTaken:
			return false, nil
		}
		rec.State, rec.At = contract.JobTaken, now.UTC()
		_, err = jsapi.PutScheduledJob(ctx, j.js, j.workflow, rec, rev)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, jsapi.ErrStaleRecord) {
			return false, fmt.Errorf("queue: take delayed job %s: %w", id, err)
		}
	}
	return false, fmt.Errorf("queue: take delayed job %s: its record kept changing", id)
}
