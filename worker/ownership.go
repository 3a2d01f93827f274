package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// Partition ownership. Every worker heartbeats into the workflow's members
// bucket (entries expire after Queue.MemberTTL) and, from the sorted list of
// live members, takes the partitions the assignment below gives it: every
// worker computes the same assignment, spread within one of even. Beliefs
// can lag (a heartbeat not yet expired, a list read a moment ago), so the
// server fences: each partition's consumer delivers to one pinned client
// at a time. Compare-and-set on each key's state is the last net when both
// lag.

// assign returns the owner of each partition among members (sorted, at
// least one): rendezvous hashing with bounded loads. Each (partition,
// member) pair has a score; going through the pairs from the highest
// score down, a partition goes to the first member that still has room,
// and room is partitions/n for every member, one more for the first
// partitions%n members to fill up. So the spread is within one of even,
// and a member that leaves moves its own partitions and few others (a
// modulo split would move most of them, each move a handover that cuts
// off the slow work in hand).
func assign(members []string, partitions int) []string {
	n := len(members)
	owners := make([]string, partitions)
	if n == 0 {
		return owners
	}
	type pair struct {
		score uint64
		p, m  int
	}
	pairs := make([]pair, 0, n*partitions)
	for p := range partitions {
		for m, id := range members {
			pairs = append(pairs, pair{score(id, p), p, m})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		if a.p != b.p {
			return a.p - b.p
		}
		return a.m - b.m
	})
	base, extra := partitions/n, partitions%n
	load := make([]int, n)
	full := 0 // members holding base+1
	left := partitions
	for _, pr := range pairs {
		if left == 0 {
			break
		}
		if owners[pr.p] != "" {
			continue
		}
		switch l := load[pr.m]; {
		case l < base:
		case l == base && full < extra:
			full++
		default:
			continue
		}
		load[pr.m]++
		owners[pr.p] = members[pr.m]
		left--
	}
	return owners
}

// score is the rendezvous hash of member id and partition p: FNV-1a,
// finished with SplitMix64's mixer so that near ids spread well.
func score(id string, p int) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(id) {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	h ^= uint64(p) + 0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// assigned returns the partitions member id owns among members.
func assigned(members []string, id string, partitions int) []int {
	if !slices.Contains(members, id) {
		return nil
	}
	var ps []int
	for p, owner := range assign(members, partitions) {
		if owner == id {
			ps = append(ps, p)
		}
	}
	return ps
}

// membership is the workflow's group of live workers, kept by heartbeats
// that expire.
type membership interface {
	Heartbeat(ctx context.Context, workflow, id string) error
	// Members lists the live members, sorted.
	Members(ctx context.Context, workflow string) ([]string, error)
	Leave(ctx context.Context, workflow, id string) error
}

var _ membership = (*queue.Conn)(nil)

// own keeps this worker's share of partitions right as members come and go.
// Tickers drive it, so traffic cannot starve the heartbeat; the heartbeat
// has a loop of its own, so that a rebalance in progress (stopping a
// puller, a handover) never holds it up past MemberTTL.
func (f *flow) own(ctx context.Context) {
	// Stop ends a change of ownership in progress: leave (after this
	// returns) stops whatever it acquired.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(f.w.leavingCtx, cancel)()
	if !f.w.cfg.SharedConsumers {
		stop, err := f.w.conn.OnConsumerLeader(f.name, f.leaderElected)
		if err != nil {
			f.log.Warn().Err(err).Msg("cannot follow the partitions' consumer leaders; a partition rewinds only when its pulls fail")
		} else {
			defer stop()
		}
	}
	var hb sync.WaitGroup
	defer hb.Wait()
	defer cancel()
	hb.Go(func() { f.heartbeat(ctx) })
	if !f.w.cfg.SharedConsumers {
		hb.Go(func() { f.sweep(ctx) })
	}
	t := time.NewTicker(f.memberEvery())
	defer t.Stop()
	failures := ratelog.Limiter{Every: logEvery}
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.w.leaving:
			return
		case <-t.C:
			if err := f.rebalance(ctx); err != nil {
				f.logFailure(f.log, &failures, err, "membership: cannot rebalance; keeping the partitions held")
			}
		}
	}
}

// leaderElected rewinds partition p, if this worker pulls it, after its
// consumer elected a new leader: what the old leader delivered and nobody
// acknowledged comes again even if the new one does not know of it (see
// queue.Puller.Rewind).
func (f *flow) leaderElected(p int) {
	f.pmu.Lock()
	pl, ok := f.pullers[p]
	f.pmu.Unlock()
	if !ok {
		return
	}
	pl.Rewind()
	f.w.metrics.leaderRewinds.WithLabelValues(f.name).Inc()
	f.log.Info().Int("partition", p).Msg("the partition's consumer has a new leader: rewinding it")
}

// memberEvery is how often a worker heartbeats and reads the members:
// five times per MemberTTL, so that a few late heartbeats do not expire
// a live member.
func (f *flow) memberEvery() time.Duration { return max(f.spec.MemberTTL/5, 50*time.Millisecond) }

// memberTimeout bounds one heartbeat or read of the members. While the
// bucket has no leader (a NATS node lost) a request gets no answer: give
// up and ask again rather than wait out the client's 5s after the cluster
// is back; but not so soon that a loaded cluster, slow to answer, never
// lets a read of the group through (a heartbeat later than MemberTTL is
// of no use anyway).
func (f *flow) memberTimeout() time.Duration { return max(f.spec.MemberTTL, time.Second) }

// heartbeat renews this worker's entry in the members bucket every
// memberEvery until ctx ends.
func (f *flow) heartbeat(ctx context.Context) {
	t := time.NewTicker(f.memberEvery())
	defer t.Stop()
	failures := ratelog.Limiter{Every: logEvery}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, f.memberTimeout())
		began := time.Now()
		err := f.w.conn.Heartbeat(hctx, f.name, f.w.cfg.ID)
		took := time.Since(began)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil || took > f.memberEvery() {
			// A heartbeat that fails, or takes longer than the time
			// between two, says that the others' may be late too.
			f.membersFailed()
		}
		if err != nil {
			f.logFailure(f.log, &failures, err, "membership: heartbeat failed; retrying")
		}
	}
}

// membersFailed notes that the members bucket failed a request, or took
// longer than a heartbeat period to answer one (a cluster so loaded that
// heartbeats queue): for a while (see membersSteady), members missing from
// it are not taken for gone (see rebalance). Without it, a saturated cluster
// (seen in BenchmarkScaleOut) let live workers' entries expire, and
// partitions went back and forth between live workers, each move costing
// the events in flight the ack wait (30 s).
func (f *flow) membersFailed() { f.membersTrouble.Store(time.Now().UnixNano()) }

// noteReconnects counts a lost connection as trouble with the members
// bucket: this worker's own heartbeats may have been lost with it, and a
// read of the members made across the loss may have missed some (seen in
// TestNATSNodeLossKeysFinishWithin10s: a worker on the node lost read the
// group without the other worker just after it reconnected, took its
// partitions, and gave them back a second later). Only rebalance calls
// it.
func (f *flow) noteReconnects() {
	if n := f.w.conn.Reconnects(); n != f.reconnects || !f.w.conn.Connected() {
		f.reconnects = n
		f.membersFailed()
	}
}

// membersSteady reports whether the members bucket has answered every
// request, in time, for the last two MemberTTL. While it could not take
// heartbeats (its stream without a leader after a NATS node was lost, a
// connection down), every member's entry aged and may have expired, live
// or not: a member missing then is one that may not have had its chance
// to heartbeat since. One MemberTTL is each member's chance; the second is
// for a member that gets through later than this one, such as a worker
// whose connection was on the node lost and that sends what it held back
// when it is reconnected (seen in TestNATSNodeLossKeysFinishWithin10s: its
// partitions taken 2 s after the other worker's heartbeats worked again,
// and given back 2 s later).
func (f *flow) membersSteady() bool {
	last := f.membersTrouble.Load()
	return last == 0 || time.Since(time.Unix(0, last)) >= 2*f.spec.MemberTTL
}

// rebalance heartbeats, reads the members and pulls exactly the partitions
// assigned to this worker. It runs on one goroutine at a time (Start's,
// then the ownership loop's), the only one that changes what the flow owns;
// f.pmu guards the map of pullers for readers (Stats, /metrics, /readyz)
// and is never held across a request, so they never wait for the server.
func (f *flow) rebalance(ctx context.Context) error {
	want := make([]int, f.spec.Partitions)
	for p := range want {
		want[p] = p
	}
	var members []string
	if !f.w.cfg.SharedConsumers {
		mctx, cancel := context.WithTimeout(ctx, f.memberTimeout())
		defer cancel()
		if !f.joined {
			// The first heartbeat; the heartbeat loop renews it.
			if err := f.w.conn.Heartbeat(mctx, f.name, f.w.cfg.ID); err != nil {
				return err
			}
			f.joined = true
		}
		f.noteReconnects()
		var err error
		members, err = f.w.conn.Members(mctx, f.name)
		if err != nil {
			f.membersFailed()
			return err
		}
		f.noteReconnects()
		if !slices.Contains(members, f.w.cfg.ID) {
			members = append(members, f.w.cfg.ID)
		}
		if !f.membersSteady() {
			// Keep the members of the last split until every live one has
			// had its chance to heartbeat again: a NATS node lost must not
			// move partitions between live workers.
			for _, m := range f.members {
				if !slices.Contains(members, m) {
					members = append(members, m)
				}
			}
		}
		slices.Sort(members)
		want = assigned(members, f.w.cfg.ID, f.spec.Partitions)
	}
	select {
	case <-f.w.leaving:
		return nil
	default:
	}
	var gone, come []int
	var released []puller
	f.pmu.Lock()
	for p, pl := range f.pullers {
		if !slices.Contains(want, p) {
			gone = append(gone, p)
			released = append(released, pl)
		}
	}
	for _, p := range want {
		if _, ok := f.pullers[p]; !ok {
			come = append(come, p)
		}
	}
	f.pmu.Unlock()
	var wg sync.WaitGroup
	for i, p := range gone {
		delete(f.handedFrom, p)
		wg.Go(func() { f.release(ctx, p, released[i]) })
	}
	wg.Wait()
	// Work the owner of a partition was doing is cut off when that owner
	// dies: expedite its keys' wake-ups (see expedite), for partitions taken
	// from a member gone, and for those handed over by a member alive then
	// and gone since (it may have died with their keys' work in hand).
	var orphaned []int
	for p, from := range f.handedFrom {
		if !slices.Contains(members, from) {
			orphaned = append(orphaned, p)
			delete(f.handedFrom, p)
		}
	}
	for _, p := range orphaned {
		f.suspectBefore(p)
	}
	// Acquire at once: a partition taken from a member gone waits for
	// nothing but its own requests.
	prevOwners := f.previousOwners(members)
	acquired := make([]puller, len(come))
	errs := make([]error, len(come))
	for i, p := range come {
		gone := prevOwners[p] == "" || !slices.Contains(members, prevOwners[p])
		if gone {
			f.suspectBefore(p)
		}
		wg.Go(func() { acquired[i], errs[i] = f.acquire(ctx, p, gone) })
	}
	wg.Wait()
	var failed error
	var got []int
	for i, p := range come {
		if errs[i] != nil {
			failed = cmp.Or(failed, errs[i])
			continue
		}
		got = append(got, p)
		f.pmu.Lock()
		f.pullers[p] = acquired[i]
		f.pmu.Unlock()
		switch prev := prevOwners[p]; {
		case prev == "" || !slices.Contains(members, prev):
			orphaned = append(orphaned, p)
		case prev != f.w.cfg.ID:
			f.handedFrom[p] = prev
		}
	}
	f.expediteLater(orphaned)
	if len(gone)+len(got) > 0 {
		f.log.Info().Ints("owned", f.owned()).Ints("released", gone).Ints("acquired", got).Msg("partitions owned")
	}
	if failed != nil {
		// The next round tries the rest again, against the same split.
		return failed
	}
	f.members = members
	return nil
}

// owned lists the partitions the flow pulls, in order.
func (f *flow) owned() []int {
	f.pmu.Lock()
	ps := slices.Collect(maps.Keys(f.pullers))
	f.pmu.Unlock()
	slices.Sort(ps)
	return ps
}

// previousOwners returns the member that owned each partition before this
// change of members, "" if there was none; whether it has left the group
// says whether the partition is taken from a live owner or from a gone
// one. On a worker's first assignment the previous split is taken to be
// the current members without it.
func (f *flow) previousOwners(members []string) []string {
	prev := f.members
	if len(prev) == 0 {
		prev = slices.DeleteFunc(slices.Clone(members), func(id string) bool { return id == f.w.cfg.ID })
	}
	return assign(prev, f.spec.Partitions)
}

// partitionSource pulls the partitions of a workflow's events stream.
type partitionSource interface {
	Pull(ctx context.Context, cfg queue.PullConfig, h queue.Handler) (*queue.Puller, error)
	// Unpin releases a partition from the client it is pinned to, so that
	// the next to pull it takes it at once.
	Unpin(ctx context.Context, workflow string, partition int) error
	// OnConsumerLeader calls fn each time a partition's consumer elects a
	// new leader, until stop.
	OnConsumerLeader(workflow string, fn func(partition int)) (stop func(), err error)
}

var _ partitionSource = (*queue.Conn)(nil)

// puller is a partition the flow pulls.
type puller struct {
	*queue.Puller
	end context.CancelFunc // ends the puller's context; called once it has stopped
}

// stop stops the puller (hard if ctx ends first) and waits for it.
func (pl puller) stop(ctx context.Context) {
	_ = pl.Stop(ctx)
	pl.end()
}

// acquire starts pulling partition p. A previous owner that is gone may
// still hold the pin: take it from it at once; a live one unpins the
// partition itself once it has let go, and until then the server keeps
// delivering to it alone. When the pin comes to this worker the puller
// rewinds the partition, so what the previous owner held unacknowledged
// comes again, in order, before anything newer. ctx ends the requests it
// makes; the puller runs until it is stopped or the worker stops hard.
func (f *flow) acquire(ctx context.Context, p int, unpin bool) (puller, error) {
	if unpin && !f.w.cfg.SharedConsumers {
		if err := f.w.conn.Unpin(ctx, f.name, p); err != nil {
			f.log.Debug().Err(err).Int("partition", p).Msg("unpin before acquiring")
		}
	}
	cfg := f.w.cfg
	log := f.log.With().Int("partition", p).Logger()
	life, end := context.WithCancel(f.w.ctx)
	detach := context.AfterFunc(ctx, end) // until Pull has returned
	pl, err := f.w.conn.Pull(life, queue.PullConfig{
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
		OnError: func(err error) {
			f.logFailure(log, &f.pullFailures, err, "pull failed; retrying (and rewinding the partition)")
		},
		OnPull: func(n int) {
			f.w.metrics.lastPull.Store(f.w.cfg.Now().UnixNano())
			f.w.metrics.pullBatch.WithLabelValues(f.name).Observe(float64(n))
		},
	}, f.route)
	if !detach() && err == nil {
		err = context.Cause(ctx) // ctx ended as the puller started: it is stopped already
		_ = pl.Stop(life)
	}
	if err != nil {
		end()
		return puller{}, err
	}
	return puller{pl, end}, nil
}

// release stops pulling p, hands back what waits in its keys' mailboxes and
// unpins it, so its next owner starts at once. Actors of p finish the batch
// in hand; their later outcomes are committed with compare-and-set.
func (f *flow) release(ctx context.Context, p int, pl puller) {
	pl.stop(ctx)
	f.pmu.Lock()
	delete(f.pullers, p)
	f.pmu.Unlock()
	f.handBackPartition(p)
	if !f.w.cfg.SharedConsumers {
		if err := f.w.conn.Unpin(ctx, f.name, p); err != nil {
			f.log.Debug().Err(err).Int("partition", p).Msg("unpin after releasing")
		}
	}
}

// leave gives every partition up and leaves the group, so the others take
// them over at once instead of after MemberTTL. It runs once the ownership
// loop has returned: nothing changes what the flow owns any more.
func (f *flow) leave(ctx context.Context) {
	f.pmu.Lock()
	pullers := slices.Collect(maps.Values(f.pullers))
	clear(f.pullers)
	f.pmu.Unlock()
	var wg sync.WaitGroup
	for _, pl := range pullers {
		wg.Go(func() { pl.stop(ctx) })
	}
	wg.Wait()
	if !f.w.cfg.SharedConsumers && f.joined {
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
		out[f.name] = f.owned()
	}
	return out
}

// expediteParallel bounds the keys expedite handles at once.
const expediteParallel = 16

// expediteLater runs expedite for ps in the background, after acquiring.
// One run at a time per flow; partitions that come meanwhile wait for the
// next. Stopping the worker ends it.
func (f *flow) expediteLater(ps []int) {
	if len(ps) == 0 {
		return
	}
	f.emu.Lock()
	defer f.emu.Unlock()
	for _, p := range ps {
		f.expediteWant[p] = true
	}
	if f.expediting {
		return
	}
	f.expediting = true
	ctx := f.w.ctx
	f.w.bg.Go(func() {
		for {
			f.emu.Lock()
			ps := slices.Sorted(maps.Keys(f.expediteWant))
			clear(f.expediteWant)
			if len(ps) == 0 || ctx.Err() != nil {
				f.expediting = false
				f.emu.Unlock()
				return
			}
			f.emu.Unlock()
			n, err := f.expedite(ctx, ps)
			if err != nil && ctx.Err() == nil {
				f.log.Warn().Err(err).Ints("partitions", ps).Int("keys", n).Msg("cannot expedite every wake-up of work cut off; the others come when armed")
				continue
			}
			if n > 0 {
				f.log.Info().Ints("partitions", ps).Int("keys", n).Msg("work cut off by a previous owner: wake-ups expedited")
			}
		}
	})
}

// expedite brings the durable wake-ups of the keys of partitions ps that
// have work pending forward to now, so that work cut off by the death of
// the partition's previous owner resumes at once rather than ResumeAfter
// after it began. It finds the keys among the pending resume schedules (one
// per key); the pending list in each key's state decides, so a key whose
// work finished gets no wake-up. A live owner that gets a wake-up for an
// action it is running ignores it (f.inflight). Each of those keys also
// has its inventory entries reconciled (see inventory.go). It returns how
// many keys it woke.
func (f *flow) expedite(ctx context.Context, ps []int) (int, error) {
	return f.expediteKeys(ctx, ps, false)
}

// expediteKeys is expedite; with orphans (the sweep), it wakes only the
// keys whose pending work no job of this worker holds, reconciles nothing,
// and, where the inventory is kept, also looks for keys among its work
// entries: a wake-up that fired and never reached the events stream leaves
// no schedule behind (the soak, seed 21: a firing stored in the timers
// stream that no partition ever delivered, across node kills), and the
// key's work would wait for good. A key found twice is looked at twice;
// its second arming in the same second is dropped by the timers stream.
// The takeover's expedite does not walk them: the wake-ups it brings
// forward are schedules, and the sweep finds the rest.
func (f *flow) expediteKeys(ctx context.Context, ps []int, orphans bool) (int, error) {
	want := make([]bool, f.spec.Partitions)
	for _, p := range ps {
		want[p] = true
	}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, expediteParallel)
		n    atomic.Int64
		errs = make(chan error, 1)
	)
	visit := func(key string) bool {
		if !want[contract.PartitionOf(key, f.spec.Partitions)] {
			return true
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if !orphans {
				// The work of the key may have ended in a commit whose
				// inventory purges the dead owner never sent.
				f.requestReconcile(ctx, key)
			}
			woke, err := f.expediteKeyIf(ctx, key, orphans)
			if woke {
				n.Add(1)
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
		return true
	}
	err := f.w.conn.TimerKeys(ctx, f.name, contract.TimerResume, visit)
	if err == nil && orphans && f.index != nil {
		err = f.index.WorkKeys(ctx, visit)
	}
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return int(n.Load()), err
}

// sweep re-arms, every two ResumeAfter, the wake-ups of the keys of the
// partitions this worker pulls whose work is pending and held by none of
// its jobs. A wake-up armed is one the server should fire, but the soak saw
// one never fire: the server marks a schedule in flight while it stores
// the firing, and a firing that is not stored (a node's store full, a
// leader change on the way) leaves the mark, so that the schedule waits
// until its stream's leader changes or its subject gets a new schedule;
// its key stayed busy for good. The sweep gives it that new schedule.
func (f *flow) sweep(ctx context.Context) {
	t := time.NewTicker(2 * f.w.cfg.ResumeAfter)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := f.expediteKeys(ctx, f.owned(), true)
		switch {
		case err != nil && ctx.Err() == nil:
			f.log.Warn().Err(err).Int("keys", n).Msg("cannot sweep every key with work pending and nobody on it; the next sweep tries again")
		case n > 0:
			f.log.Info().Int("keys", n).Msg("work pending that no runner held: wake-ups armed again")
		}
	}
}

// expediteKey schedules key's wake-up at once if its state has work pending.
func (f *flow) expediteKey(ctx context.Context, key string) (bool, error) {
	return f.expediteKeyIf(ctx, key, false)
}

// expediteKeyIf is expediteKey; with orphans, only if none of the key's
// pending work is held by a job of this worker.
func (f *flow) expediteKeyIf(ctx context.Context, key string, orphans bool) (bool, error) {
	val, _, err := f.bucket.Get(ctx, key)
	if errors.Is(err, queue.ErrNoState) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rec, err := contract.DecodeState(val)
	if err != nil {
		return false, fmt.Errorf("state of %s: %w", key, err)
	}
	if len(rec.Pending) == 0 {
		return false, nil
	}
	if orphans {
		f.mu.Lock()
		held := false
		for _, p := range rec.Pending {
			if _, ok := f.inflight[p.ID]; ok {
				held = true
			}
		}
		f.mu.Unlock()
		if held {
			return false, nil
		}
	}
	return true, f.armResume(ctx, key, rec.Version, f.resumeNow())
}

// logEvery is the least time between two log lines about the same
// repeating failure of a loop (a pull, the membership heartbeat).
const logEvery = 15 * time.Second

// logFailure logs a failure of a loop that retries on its own. While the
// connection is down every loop fails, and the connection already says so
// (at most once per 15s): those failures go to debug. Otherwise the first
// failure is a warning, then at most one line per logEvery.
func (f *flow) logFailure(log zerolog.Logger, l *ratelog.Limiter, err error, msg string) {
	if !f.w.conn.Connected() {
		log.Debug().Err(err).Msg(msg)
		return
	}
	if ok, held := l.Allow(time.Now()); ok {
		log.Warn().Err(err).Int("failures_not_logged", held).Msg(msg)
	}
}
