package contract

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Delayed events and recurring schedules are JetStream message schedules
// (nats-server 2.15: the Nats-Schedule header) stored in the workflow's
// schedules stream (SchedulesStream). The server fires them, with or
// without a worker running, onto subjects of the same stream, and the
// events stream sources those into the key's partition:
//
//	orderly.schedules.<workflow>.at.<key>.<jobkey>           a delayed event waiting ("@at <time>")
//	orderly.schedules.<workflow>.every.<name>                a recurring schedule ("@every <d>", cron)
//	orderly.schedules.<workflow>.fired.at.<key>              a delayed event fired
//	orderly.schedules.<workflow>.fired.every.<name>.<key>    a recurring schedule fired
//	orderly.events.<workflow>.<partition>.at.<key>           the first, as the events stream stores it
//	orderly.events.<workflow>.<partition>.every.<key>        the second, likewise
//
// <jobkey> is JobKey of the event's job id. A fired event is a client event
// like any other: the worker applies it to its key in order, refuses it if
// it names an internal event, and applies its job id once.

// SchedulesStream holds a workflow's delayed events and recurring schedules.
func SchedulesStream(workflow string) string { return "ORDERLY_SCHEDULES_" + strings.ToUpper(workflow) }

// SchedulesSubject is the prefix of every subject of the schedules stream:
// orderly.schedules.<workflow>.
func SchedulesSubject(workflow string) string { return Namespace + ".schedules." + workflow }

// DelayedSubject holds the schedule of the delayed event of key with job
// id: orderly.schedules.<workflow>.at.<key>.<JobKey(id)>. One per job id
// and key.
func DelayedSubject(workflow, key, id string) string {
	return SchedulesSubject(workflow) + ".at." + key + "." + JobKey(id)
}

// DelayedFilter matches the schedule of the delayed event with job id
// whatever its key: orderly.schedules.<workflow>.at.*.<JobKey(id)>.
func DelayedFilter(workflow, id string) string { return DelayedSubject(workflow, "*", id) }

// DelayedTarget is where delayed events of key fire to:
// orderly.schedules.<workflow>.fired.at.<key>.
func DelayedTarget(workflow, key string) string {
	return SchedulesSubject(workflow) + ".fired.at." + key
}

// RecurringSubject holds the recurring schedule name:
// orderly.schedules.<workflow>.every.<name>.
func RecurringSubject(workflow, name string) string {
	return SchedulesSubject(workflow) + ".every." + name
}

// RecurringTarget is where the recurring schedule name fires to, for key:
// orderly.schedules.<workflow>.fired.every.<name>.<key>.
func RecurringTarget(workflow, name, key string) string {
	return SchedulesSubject(workflow) + ".fired.every." + name + "." + key
}

// Headers of schedules. JetStream drops a schedule's Nats-Msg-Id when it
// fires, so the job id travels in a header of Orderly's own.
const (
	// HeaderDelayedJobID is the job id of a delayed event, on its schedule
	// and on what fires.
	HeaderDelayedJobID = "Orderly-Job-Id"
	// HeaderSchedule is a recurring schedule's pattern (what its
	// Nats-Schedule header says, which JetStream drops when it fires), and
	// HeaderScheduleZone its time zone: with them a worker finds the fire
	// time each firing is for, and so its job id (ScheduleJobID).
	HeaderSchedule     = "Orderly-Schedule"
	HeaderScheduleZone = "Orderly-Schedule-Zone"
	// HeaderScheduleName and HeaderScheduleTime name the schedule and the
	// fire time of a firing made by a test clock (orderlytest's Advance),
	// which carries no Nats-Scheduler: the server refuses that header from
	// a client. A worker reads them only on a firing without
	// Nats-Scheduler, which nothing but a client allowed to publish on
	// orderly.schedules.<workflow>.fired.> can store (neither the producer
	// nor the worker role is); every firing of the server has one.
	HeaderScheduleName = "Orderly-Schedule-Name"
	HeaderScheduleTime = "Orderly-Schedule-Time"
)

// ScheduleJobID is the job id of the firing of the recurring schedule name
// for the fire time at: "<name>@<at in RFC 3339, UTC>". A firing that
// comes twice (a server that fails over while it fires) has the same id and
// is applied once.
func ScheduleJobID(name string, at time.Time) string {
	return name + "@" + at.UTC().Format(time.RFC3339)
}

// MaxScheduleNameLen is the longest schedule name.
const MaxScheduleNameLen = 64

// ErrInvalidScheduleName is returned for a schedule name that breaks the
// rule of ValidateScheduleName.
var ErrInvalidScheduleName = errors.New("invalid schedule name")

// ValidateScheduleName checks a recurring schedule's name: 1-64 characters
// of A-Z a-z 0-9 - _ (a subject token, and part of each firing's job id).
func ValidateScheduleName(name string) error {
	const rule = "a schedule name is 1-64 characters of A-Z a-z 0-9 - _"
	if name == "" || len(name) > MaxScheduleNameLen {
		return fmt.Errorf("%w: %q (%s)", ErrInvalidScheduleName, name, rule)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q contains %q (%s)", ErrInvalidScheduleName, name, c, rule)
		}
	}
	return nil
}

// ScheduledJob is the record of a delayed event, kept in the job bucket
// (JobsBucket) under ScheduledJobKey(id) for the dedupe window. It is where
// a cancel and the worker that takes the fired event meet: each changes it
// only from JobScheduled (or from nothing), with compare-and-set, so
// exactly one of them wins, and a cancelled event is never applied.
type ScheduledJob struct {
	// ID is the job id. The bucket key is JobKey of it, which hashes an
	// id that is not a subject token; records written before it was
	// stored lack it.
	ID    string    `json:"id,omitempty"`
	Key   string    `json:"key"`   // The event's key.
	Event string    `json:"event"` // The event's name.
	Due   time.Time `json:"due"`   // When it is delivered.
	State string    `json:"state"` // JobScheduled, JobTaken or JobCancelled.
	At    time.Time `json:"at"`    // When State was set.
}

// States of a ScheduledJob.
const (
	JobScheduled = "scheduled" // waiting for its time, or fired and not yet taken
	JobTaken     = "taken"     // a worker took it to apply it
	JobCancelled = "cancelled" // cancelled: it is not applied
)

// ScheduledJobKey is the job bucket's key of the record of the delayed
// event with job id: "sched." and JobKey(id), apart from the claims (a
// JobKey holds no ".").
func ScheduledJobKey(id string) string { return ScheduledJobPrefix + JobKey(id) }

// ScheduledJobPrefix begins the job bucket's key of every record of a
// delayed event.
const ScheduledJobPrefix = "sched."
