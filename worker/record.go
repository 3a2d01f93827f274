package worker

import (
	"encoding/json"
	"slices"
	"time"
)

// record is what the state bucket holds for a key. The first four fields are
// contract v1; the rest is the runtime's bookkeeping.
type record struct {
	State     string          `json:"state"`
	Version   uint64          `json:"version"`
	Data      json.RawMessage `json:"data"`
	UpdatedAt time.Time       `json:"updated_at"`

	// Applied holds the stream sequences of the most recent events handled
	// (applied or rejected), oldest first: a redelivered event found here was
	// handled already. A list, not a high-water mark, because while two
	// owners overlap during a handover events of one key can be applied out
	// of order, and an older event must not be taken for a handled one.
	Applied []uint64 `json:"applied,omitempty"`
	// Pending is slow work started and not yet fed back.
	Pending []pending `json:"pending,omitempty"`
	// Entered is the version at which the key entered its current state; a
	// timeout armed in an earlier visit carries another and is ignored.
	Entered uint64 `json:"entered"`
}

// pending is one action in flight: durable, so a restarted worker resumes it
// where it was (contract.PendingWork is its public reading).
type pending struct {
	// ID is the idempotency key handed to the action: key/version/action.
	ID     string `json:"id"`
	Action string `json:"action"`
	JobID  string `json:"job_id"`
	// Attempt is the attempt running or next to run, from 1 (0 in records
	// written before it was kept: read as 1). Kept so that a restart does not
	// reset the retry budget.
	Attempt int `json:"attempt"`
	// Since is when the action was started.
	Since time.Time `json:"since,omitzero"`
	// NextAttemptAt is when the next attempt is due after a failed one; a
	// resumed action waits for it.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// LastError is the last failed attempt's error, cut to maxLastError.
	LastError string `json:"last_error,omitempty"`
}

// maxLastError bounds the error kept in a pending entry: the record is
// written on every commit of its key.
const maxLastError = 256

// maxApplied bounds the dedup log. An event not in it is applied: a
// redelivery only follows a lost ack, within the ack wait, so its sequence
// is still among the key's most recent ones.
const maxApplied = 32

func (r *record) noteApplied(seq uint64) {
	if len(r.Applied) >= maxApplied {
		r.Applied = slices.Delete(r.Applied, 0, len(r.Applied)-maxApplied+1)
	}
	r.Applied = append(r.Applied, seq)
}

func (r *record) handled(seq uint64) bool { return slices.Contains(r.Applied, seq) }

func (r *record) pendingIndex(id string) int {
	return slices.IndexFunc(r.Pending, func(p pending) bool { return p.ID == id })
}

func (r *record) clone() record {
	c := *r
	c.Applied = slices.Clone(r.Applied)
	c.Pending = slices.Clone(r.Pending)
	return c
}
