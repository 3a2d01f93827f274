package contract

import (
	"encoding/json"
	"time"
)

// StateRecord is what a workflow's state bucket holds for a key
// (docs/schemas/state.schema.json). State, Version, Data and UpdatedAt are
// contract v1; Pending is the key's slow work; Applied and Entered are the
// runtime's bookkeeping, stored with the rest so that one compare-and-set
// write commits them together.
type StateRecord struct {
	State     string          `json:"state"`      // The key's current state.
	Version   uint64          `json:"version"`    // Counts the key's committed changes.
	Data      json.RawMessage `json:"data"`       // The workflow's data for the key, as JSON.
	UpdatedAt time.Time       `json:"updated_at"` // When the state was last committed.

	// Applied holds the stream sequences of the most recent events handled
	// (applied or rejected), oldest first: a redelivered event found here was
	// handled already. A list, not a high-water mark, because while two
	// owners overlap during a handover events of one key can be applied out
	// of order, and an older event must not be taken for a handled one.
	Applied []uint64 `json:"applied,omitempty"`
	// Pending is the key's slow work started and not yet fed back; while
	// there is any, the key's client events wait.
	Pending []PendingWork `json:"pending,omitempty"`
	// Entered is the version at which the key entered its current state; a
	// timeout armed in an earlier visit carries another and is ignored.
	Entered uint64 `json:"entered"`
}

// PendingWork is one action of a key started and not yet fed back: durable,
// so a restarted worker resumes it where it was.
type PendingWork struct {
	// ID is the idempotency key handed to the action: key/version/action.
	ID string `json:"id"`
	// Action names the action.
	Action string `json:"action"`
	// JobID is the job whose event started the action.
	JobID string `json:"job_id"`
	// Attempt is the attempt running or next to run, from 1; 0 in records
	// written before attempts were kept (read as 1). Kept so that a restart
	// does not reset the retry budget.
	Attempt int `json:"attempt"`
	// Since is when the action was started (zero in older records).
	Since time.Time `json:"since,omitzero"`
	// NextAttemptAt is when the next attempt is due after a failed one; a
	// resumed action waits for it.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// LastError is the last failed attempt's error, cut to MaxLastError bytes.
	LastError string `json:"last_error,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the
	// transition that started the action (HeaderTraceParent,
	// HeaderTraceState), set when the worker traces: each attempt's span,
	// after a restart too, continues that trace.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// MaxLastError bounds PendingWork.LastError: the record is written on every
// commit of its key.
const MaxLastError = 256
