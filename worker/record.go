package worker

import (
	"slices"

	"github.com/orderly-dev/orderly/contract"
)

// The state bucket holds a contract.StateRecord per key; these are the
// runtime's operations on its bookkeeping fields.

// maxApplied bounds the dedup log. An event not in it is applied: a
// redelivery only follows a lost ack, within the ack wait, so its sequence
// is still among the key's most recent ones.
const maxApplied = 32

// noteApplied adds seq to r's log of handled events, dropping the oldest
// beyond maxApplied.
func noteApplied(r *contract.StateRecord, seq uint64) {
	if len(r.Applied) >= maxApplied {
		r.Applied = slices.Delete(r.Applied, 0, len(r.Applied)-maxApplied+1)
	}
	r.Applied = append(r.Applied, seq)
}

// handled reports whether the event stored as seq was handled already.
func handled(r *contract.StateRecord, seq uint64) bool { return slices.Contains(r.Applied, seq) }

// pendingIndex returns the index of the pending work with id, or -1.
func pendingIndex(r *contract.StateRecord, id string) int {
	return slices.IndexFunc(r.Pending, func(p contract.PendingWork) bool { return p.ID == id })
}

// cloneRecord copies r, its lists included, so that a batch can change the
// copy and drop it if the commit fails.
func cloneRecord(r *contract.StateRecord) contract.StateRecord {
	c := *r
	c.Applied = slices.Clone(r.Applied)
	c.Pending = slices.Clone(r.Pending)
	return c
}
