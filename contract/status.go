package contract

import "time"

// Status is one state change (or rejection) of a key, published on
// orderly.status.<workflow>.<key> (docs/schemas/status.schema.json).
type Status struct {
	Workflow string `json:"workflow"` // The workflow's name.
	Key      string `json:"key"`      // The entity key.
	// JobID is the job whose event caused this status; for the outcome and
	// retries of slow work, the job that started it.
	JobID string `json:"job_id"`
	Event string `json:"event"` // The event applied or rejected (the action's name for a retry).
	From  string `json:"from"`  // The state before.
	To    string `json:"to"`    // The state after; equal to From for a rejection.
	// Version counts the key's committed changes.
	Version uint64    `json:"version"`
	At      time.Time `json:"at"` // When the change was committed.
	// Settled is true when no slow work is left for the key.
	Settled bool `json:"settled"`
	// Error is set when the event was rejected, slow work failed, or a
	// delayed event was cancelled.
	Error *StatusError `json:"error,omitempty"`
	// Action names the slow work this status reports on, if any.
	Action string `json:"action,omitempty"`
	// Attempt is the attempt number of a retried action.
	Attempt int `json:"attempt,omitempty"`
	// ScheduledFor is set on the statuses of a delayed event (one published
	// with a delay or a time) before it is applied: when it is due. Its
	// first status, published once it is stored, says it is scheduled
	// (Settled false: the job has not ended); a cancel ends the job with
	// a settled status whose Error has CodeCancelled. Neither changes the
	// key: From, To and Version are the key's as they were.
	ScheduledFor time.Time `json:"scheduled_for,omitzero"`
}

// StatusError says why an event was rejected or work failed.
type StatusError struct {
	Code    string `json:"code"`    // One of the Code constants: stable, machine-readable.
	Message string `json:"message"` // Says what went wrong, for people.
}

// Error makes a StatusError an error: "code: message".
func (e *StatusError) Error() string { return e.Code + ": " + e.Message }

// Error codes, in statuses (StatusError.Code) and dead letters (the reason's
// first word). They are stable: match on them.
const (
	// An event no transition of the current state accepts.
	CodeInvalidTransition = "invalid_transition"
	// A transition's guard refused the event.
	CodeGuardRefused = "guard_refused"
	// The workflow declares no such event.
	CodeUnknownEvent = "unknown_event"
	// A client sent an event only the workflow's actions and timers may send.
	CodeInternalEvent = "internal_event"
	// A transition refused the event's data.
	CodeInvalidData = "invalid_data"
	// The stored state is not one the workflow declares (another version wrote it).
	CodeUnknownState = "unknown_state"
	// The body is not an Envelope: not JSON, an unknown or repeated field.
	CodeMalformed = "malformed"
	// The event's data is larger than the workflow accepts.
	CodeTooLarge = "too_large"
	// The job id is held by another key or event within the dedupe window.
	CodeIDConflict = "id_conflict"
	// The job id was applied before: this event is acknowledged, not applied.
	CodeDuplicate = "duplicate"
	// Slow work failed for good; its failure event was fed back.
	CodeActionFailed = "action_failed"
	// An attempt of slow work failed and another is due.
	CodeRetrying = "retrying"
	// A delayed event was cancelled before it was applied: it never will be.
	CodeCancelled = "cancelled"
	// A message stored where no partition delivers it (dead letters only).
	CodeUndeliverableSubject = "undeliverable_subject"
	// An event whose key breaks the key rule, published around the
	// contract's checks (dead letters only).
	CodeInvalidKey = "invalid_key"
	// An event whose key's state could not be loaded or committed in time
	// (dead letters only).
	CodeMaxDeliveries = "max_deliveries"
	// The workflow's own code panicked applying the event (a bug): the
	// event is dead-lettered, to be replayed once the code is fixed.
	CodePanicked = "panicked"
)

// Codes lists every error code, for docs and tests.
func Codes() []string {
	return []string{
		CodeInvalidTransition, CodeGuardRefused, CodeUnknownEvent, CodeInternalEvent,
		CodeInvalidData, CodeUnknownState, CodeMalformed, CodeTooLarge, CodeIDConflict,
		CodeDuplicate, CodeActionFailed, CodeRetrying, CodeCancelled, CodeUndeliverableSubject, CodeInvalidKey,
		CodeMaxDeliveries, CodePanicked,
	}
}
