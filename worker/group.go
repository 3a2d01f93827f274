package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// ErrNotStarted: the worker has not finished starting, so it does not yet
// know its workflows' queues.
var ErrNotStarted = errors.New("worker: not started")

// Member is one worker of a workflow's group and the partitions it is
// assigned.
type Member struct {
	// ID is the worker's id (Config.ID).
	ID string
	// Partitions are the partitions the group's rule assigns it, from the
	// member list as read now; the worker itself may take a moment (up to
	// Queue.MemberTTL) to follow a change.
	Partitions []int
	// Self is true for the worker that answers.
	Self bool
}

// ID is the worker's id in its groups (Config.ID, or the default made
// from the host name).
func (w *Worker) ID() string { return w.cfg.ID }

// Group reads the live members of workflow's group and the partitions each
// one is assigned by the rule every member follows (see ownership.go).
// With Config.SharedConsumers there is no group: the answer is this worker
// alone, with the partitions it pulls. ErrNotStarted before the worker is
// ready.
func (w *Worker) Group(ctx context.Context, workflow string) ([]Member, error) {
	if !w.Ready() {
		return nil, ErrNotStarted
	}
	i := slices.IndexFunc(w.flows, func(f *flow) bool { return f.name == workflow })
	if i < 0 {
		return nil, fmt.Errorf("worker: no workflow %q", workflow)
	}
	f := w.flows[i]
	if w.cfg.SharedConsumers {
		return []Member{{ID: w.cfg.ID, Partitions: f.owned(), Self: true}}, nil
	}
	ids, err := w.conn.Members(ctx, workflow)
	if err != nil {
		return nil, fmt.Errorf("worker: group of %s: %w", workflow, err)
	}
	if !slices.Contains(ids, w.cfg.ID) {
		// Not (or no longer) in the list: the members it computes its own
		// share from include it (rebalance).
		ids = append(ids, w.cfg.ID)
		slices.Sort(ids)
	}
	out := make([]Member, 0, len(ids))
	for _, id := range ids {
		out = append(out, Member{ID: id, Partitions: assigned(ids, id, f.spec.Partitions), Self: id == w.cfg.ID})
	}
	return out, nil
}
