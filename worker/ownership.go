package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/orderly-dev/orderly/queue"
)

// Partition ownership. Every worker heartbeats into the workflow's members
// bucket (entries expire after Queue.MemberTTL) and, from the sorted list of
// live members, takes partition p if it is member p mod n: every worker
// computes the same assignment, spread within one of even. Beliefs can lag
// (a heartbeat not yet expired, a list read a moment ago), so the server
// fences: each partition's consumer delivers to one pinned client at a
// time. Compare-and-set on each key's state is the last net when both lag.

// assigned returns the partitions member id owns among members.
func assigned(members []string, id string, partitions int) []int {
	i := slices.Index(members, id)
	if i < 0 {
		return nil
	}
	var ps []int
	for p := i; p < partitions; p += len(members) {
		ps = append(ps, p)
	}
	return ps
}

// own keeps this worker's share of partitions right as members come and go.
// A ticker drives it, so traffic cannot starve the heartbeat.
func (f *flow) own(ctx context.Context) {
	t := time.NewTicker(max(f.spec.MemberTTL/5, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.w.leaving:
			return
		case <-t.C:
			if err := f.rebalance(ctx); err != nil {
				f.log.Warn().Err(err).Msg("membership: cannot rebalance; keeping the partitions held")
			}
		}
	}
}

// rebalance heartbeats, reads the members and pulls exactly the partitions
// assigned to this worker.
func (f *flow) rebalance(ctx context.Context) error {
	want := make([]int, f.spec.Partitions)
	for p := range want {
		want[p] = p
	}
	var members []string
	if !f.w.cfg.SharedConsumers {
		if err := f.w.conn.Heartbeat(ctx, f.name, f.w.cfg.ID); err != nil {
			return err
		}
		var err error
		members, err = f.w.conn.Members(ctx, f.name)
		if err != nil {
			return err
		}
		if !slices.Contains(members, f.w.cfg.ID) {
			members = append(members, f.w.cfg.ID)
			slices.Sort(members)
		}
		want = assigned(members, f.w.cfg.ID, f.spec.Partitions)
	}
	f.pmu.Lock()
	defer f.pmu.Unlock()
	select {
	case <-f.w.leaving:
		return nil
	default:
	}
	var gone, come []int
	for p := range f.pullers {
		if !slices.Contains(want, p) {
			gone = append(gone, p)
		}
	}
	for _, p := range want {
		if f.pullers[p] == nil {
			come = append(come, p)
		}
	}
	var wg sync.WaitGroup
	for _, p := range gone {
		pl := f.pullers[p]
		delete(f.pullers, p)
		wg.Go(func() { f.release(ctx, p, pl) })
	}
	wg.Wait()
	for _, p := range come {
		pl, err := f.acquire(ctx, p, f.previousOwnerGone(p, members))
		if err != nil {
			return err
		}
		f.pullers[p] = pl
	}
	f.members = members
	if len(gone)+len(come) > 0 {
		owned := make([]int, 0, len(f.pullers))
		for p := range f.pullers {
			owned = append(owned, p)
		}
		slices.Sort(owned)
		f.log.Info().Ints("owned", owned).Ints("released", gone).Ints("acquired", come).Msg("partitions owned")
	}
	return nil
}

// previousOwnerGone reports whether the member that owned p before this
// change of members has left the group. On a worker's first assignment the
// previous split is taken to be the current members without it.
func (f *flow) previousOwnerGone(p int, members []string) bool {
	prev := f.members
	if len(prev) == 0 {
		prev = slices.DeleteFunc(slices.Clone(members), func(id string) bool { return id == f.w.cfg.ID })
	}
	if len(prev) == 0 {
		return true
	}
	return !slices.Contains(members, prev[p%len(prev)])
}

// acquire starts pulling partition p. A previous owner that is gone may
// still hold the pin: take it from it at once; a live one unpins the
// partition itself once it has let go, and until then the server keeps
// delivering to it alone. When the pin comes to this worker the puller
// rewinds the partition, so what the previous owner held unacknowledged
// comes again, in order, before anything newer.
func (f *flow) acquire(ctx context.Context, p int, unpin bool) (*queue.Puller, error) {
	if unpin && !f.w.cfg.SharedConsumers {
		if err := f.w.conn.Unpin(ctx, f.name, p); err != nil {
			f.log.Debug().Err(err).Int("partition", p).Msg("unpin before acquiring")
		}
	}
	cfg := f.w.cfg
	log := f.log.With().Int("partition", p).Logger()
	return f.w.conn.Pull(ctx, queue.PullConfig{
		Workflow:    f.name,
		Partition:   p,
		Batch:       cfg.Batch,
		MaxInFlight: cfg.MaxInFlight,
		// A pull request must end well within the ack wait: what it
		// delivers while a rewind waits for it is dropped, and must not be
		// delivered again inside the same request.
		MaxWait:  min(time.Second, f.spec.AckWait/3),
		Shared:   cfg.SharedConsumers,
		Handover: !unpin,
		OnError:  func(err error) { log.Warn().Err(err).Msg("pull failed; retrying (and rewinding the partition)") },
		OnPull: func(n int) {
			f.w.metrics.lastPull.Store(f.w.cfg.Now().UnixNano())
			f.w.metrics.pullBatch.WithLabelValues(f.name).Observe(float64(n))
		},
	}, f.route)
}

// release stops pulling p, hands back what waits in its keys' mailboxes and
// unpins it, so its next owner starts at once. Actors of p finish the batch
// in hand; their later outcomes are committed with compare-and-set.
func (f *flow) release(ctx context.Context, p int, pl *queue.Puller) {
	_ = pl.Stop(ctx)
	f.handBackPartition(p)
	if !f.w.cfg.SharedConsumers {
		if err := f.w.conn.Unpin(ctx, f.name, p); err != nil {
			f.log.Debug().Err(err).Int("partition", p).Msg("unpin after releasing")
		}
	}
}

// leave gives every partition up and leaves the group, so the others take
// them over at once instead of after MemberTTL.
func (f *flow) leave(ctx context.Context) {
	f.pmu.Lock()
	var wg sync.WaitGroup
	for p, pl := range f.pullers {
		delete(f.pullers, p)
		wg.Go(func() { _ = pl.Stop(ctx) })
	}
	f.pmu.Unlock()
	wg.Wait()
	if !f.w.cfg.SharedConsumers {
		// Leaving only speeds the others up: never wait long for it.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := f.w.conn.Leave(ctx, f.name, f.w.cfg.ID); err != nil {
			f.log.Warn().Err(err).Msg("cannot leave the group; its members will notice in MemberTTL")
		}
	}
}

// Partitions returns the partitions of each workflow this worker pulls now.
func (w *Worker) Partitions() map[string][]int {
	out := map[string][]int{}
	for _, f := range w.flows {
		f.pmu.Lock()
		ps := make([]int, 0, len(f.pullers))
		for p := range f.pullers {
			ps = append(ps, p)
		}
		f.pmu.Unlock()
		slices.Sort(ps)
		out[f.name] = ps
	}
	return out
}
