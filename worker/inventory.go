package worker

import (
	"context"
	"sync"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// The inventory: each workflow's keys by state (contract's index.go), kept
// as transitions commit so that enqueue stats, keys and stuck answer from
// an index instead of a scan.
//
// A commit that moves a key into a state (a new key, or another state)
// publishes the key's entry there before its compare-and-set write, in the
// same pipeline on the same connection: if the write reached the server,
// so did the entry. After the commit, and before the events are
// acknowledged, the entry of the state left is purged. A key's work entry
// is published likewise when its slow work begins and purged when none is
// left. Nothing is written for a self-loop, a rejected event or an
// unchanged key, and nothing waits for an answer: the writes go out with
// the commit's and their answers are read by the inventory's own goroutine.
//
// What can leave the index stale, and what repairs it (reconcile, which
// reads the key's entries and makes them what its committed state record
// says, through the key's actor so that it never races a commit here):
//   - a commit that fails after its entries went out (a conflict with
//     another owner): the actor reconciles after its retry;
//   - a worker that dies between its commit and its purges, or before its
//     commit landed: the batch's events were not acknowledged (the purges
//     go out before the acks), so they come again to the partition's next
//     owner, and a batch with an event applied already reconciles its key;
//     the rewind that hands a dead owner's partition over resets delivery
//     counts, so a partition taken from a member gone is suspect, and the
//     keys of its events stored until then are reconciled at their next
//     batch;
//   - an action's outcome has no event to come again, but its key's
//     resume wake-up stands until the outcome's commit has sent its purges
//     (the removal goes out after them, on the same connection: dropResume):
//     the worker that takes partitions over from a member gone reconciles
//     every key with a wake-up pending there (expedite), and a wake-up that
//     finds no work pending when it fires (ResumeAfter after the work
//     began) reconciles its key too;
//   - a write the server refused or did not answer within its timeout: the
//     key is queued for repair (repairs, below);
//   - keys committed while no worker kept the inventory (a version
//     without it, or DisableInventory): the worker that makes the
//     inventory, or turns it on again, enters every key (backfill).

// indexWindow bounds the inventory writes of a workflow awaiting their
// answer: past it, a commit waits for room.
const indexWindow = 4096

// maxRepairs bounds the keys queued for repair after a failed write; past
// it a key is dropped, counted (Stats.InventoryFailures) and logged.
const maxRepairs = 100_000

// inventory is a workflow's inventory as the runtime writes it.
type inventory interface {
	// Enter writes e, the key's entry in its state; Leave removes the
	// key's entry in state; WorkBegan and WorkEnded write and remove its
	// work entry. None waits for its answer.
	Enter(ctx context.Context, e *contract.IndexEntry) error
	Leave(ctx context.Context, key, state string) error
	WorkBegan(ctx context.Context, e *contract.WorkEntry) error
	WorkEnded(ctx context.Context, key string) error
	// Entries reads key's entries; Delete removes the one at seq; Restore
	// and RestoreWork write an entry unless the key has one there.
	Entries(ctx context.Context, key string) (queue.KeyEntries, error)
	Delete(ctx context.Context, seq uint64) error
	Restore(ctx context.Context, e *contract.IndexEntry, replace bool) error
	RestoreWork(ctx context.Context, e *contract.WorkEntry) error
	// WorkKeys calls fn with the key of each work entry until fn returns
	// false.
	WorkKeys(ctx context.Context, fn func(key string) bool) error
	// Close waits for the writes in flight and stops.
	Close(ctx context.Context) error
}

var _ inventory = (*queue.Index)(nil)

// indexPlan is what a commit changes in its key's entries.
type indexPlan struct {
	enter     *contract.IndexEntry // written before the commit
	work      *contract.WorkEntry  // written before the commit
	leave     string               // the state whose entry is removed after it
	workEnded bool                 // the work entry is removed after it
}

// planIndex compares the actor's committed record with the batch's.
func (a *actor) planIndex(b *batch) indexPlan {
	var p indexPlan
	if a.f.index == nil {
		return p
	}
	old, nw := &a.rec, &b.rec
	if a.rev == 0 || nw.State != old.State || nw.Entered != old.Entered {
		p.enter = &contract.IndexEntry{Workflow: a.f.name, Key: a.key, State: nw.State, Version: nw.Entered, Since: nw.UpdatedAt}
		if a.rev != 0 && nw.State != old.State {
			p.leave = old.State
		}
	}
	switch {
	case len(old.Pending) == 0 && len(nw.Pending) > 0:
		w := nw.Pending[0]
		p.work = &contract.WorkEntry{Workflow: a.f.name, Key: a.key, Action: w.Action, JobID: w.JobID, Attempt: max(w.Attempt, 1), Since: w.Since}
		if p.work.Since.IsZero() {
			p.work.Since = nw.UpdatedAt
		}
	case len(old.Pending) > 0 && len(nw.Pending) == 0 && a.rev != 0:
		p.workEnded = true
	}
	return p
}

// indexBefore sends the entries a commit makes true, ahead of it.
func (a *actor) indexBefore(ctx context.Context, p *indexPlan) {
	f := a.f
	if p.enter != nil {
		if err := f.index.Enter(ctx, p.enter); err != nil {
			f.indexFailed(a.key, err)
		}
	}
	if p.work != nil {
		if err := f.index.WorkBegan(ctx, p.work); err != nil {
			f.indexFailed(a.key, err)
		}
	}
}

// indexAfter removes the entries a commit made stale; it runs before the
// batch's events are acknowledged.
func (a *actor) indexAfter(ctx context.Context, p *indexPlan) {
	f := a.f
	if p.leave != "" {
		if err := f.index.Leave(ctx, a.key, p.leave); err != nil {
			f.indexFailed(a.key, err)
		}
	}
	if p.workEnded {
		if err := f.index.WorkEnded(ctx, a.key); err != nil {
			f.indexFailed(a.key, err)
		}
	}
}

// reconcile makes the key's entries what its committed record says: one
// entry in its state, entered at its version, and a work entry if and only
// if it has work pending. An entry missing is written only if the key has
// none there (one written meanwhile is newer); one too many is deleted by
// its sequence, so that an entry written meanwhile stays. A restored
// entry's since is the key's last commit: no later than the truth by the
// time the key has spent in self-loops.
func (a *actor) reconcile(ctx context.Context) {
	f := a.f
	if f.index == nil || !a.loaded {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var takeover int64
	if p := contract.PartitionOf(a.key, len(f.suspect)); p < len(f.suspect) {
		takeover = f.suspect[p].Load()
	}
	es, err := f.index.Entries(ctx, a.key)
	if err != nil {
		f.indexFailed(a.key, err)
		return
	}
	rec, exists := &a.rec, a.rev != 0
	fixed := 0
	kept := false
	for _, e := range es.States {
		if exists && !kept && e.Entry.State == rec.State && e.Entry.Version == rec.Entered {
			kept = true
			continue
		}
		if err := f.index.Delete(ctx, e.Sequence); err != nil {
			f.indexFailed(a.key, err)
			return
		}
		fixed++
	}
	if exists && !kept {
		e := contract.IndexEntry{Workflow: f.name, Key: a.key, State: rec.State, Version: rec.Entered, Since: rec.UpdatedAt}
		if err := f.index.Restore(ctx, &e, false); err != nil {
			f.indexFailed(a.key, err)
			return
		}
		fixed++
	}
	switch {
	case len(rec.Pending) > 0 && es.Work == nil:
		w := rec.Pending[0]
		e := contract.WorkEntry{Workflow: f.name, Key: a.key, Action: w.Action, JobID: w.JobID, Attempt: max(w.Attempt, 1), Since: w.Since}
		if e.Since.IsZero() {
			e.Since = rec.UpdatedAt
		}
		if err := f.index.RestoreWork(ctx, &e); err != nil {
			f.indexFailed(a.key, err)
			return
		}
		fixed++
	case len(rec.Pending) == 0 && es.Work != nil:
		if err := f.index.Delete(ctx, es.Work.Sequence); err != nil {
			f.indexFailed(a.key, err)
			return
		}
		fixed++
	}
	a.checked = max(a.checked, takeover)
	a.verified = true
	f.w.inventoryChecks.Add(1)
	if fixed > 0 {
		f.w.inventoryRepairs.Add(1)
		f.log.Info().Str("key", a.key).Int("entries", fixed).Msg("inventory: repaired the key's entries")
	}
}

// suspectBefore marks partition p as taken over from an owner that may have
// died in a commit: the keys of its events stored until now are reconciled
// at their next batch, since the rewind that hands those events over
// resets their delivery counts (a redelivery looks like a first delivery).
// An event the dead owner held was stored before it died, at least
// MemberTTL before now: a difference between the server's clock (which
// stamps the events) and ours smaller than that changes nothing.
func (f *flow) suspectBefore(p int) {
	if f.index == nil || p >= len(f.suspect) {
		return
	}
	f.suspect[p].Store(time.Now().UnixNano())
}

// suspected reports whether m may have been in the hands of a dead owner
// when it died, and the key's entries are not checked since: a redelivery
// to an actor that has not checked them since it loaded the key (verified),
// or an event of a partition taken over from a dead owner, stored before
// the takeover. An actor checks its key once per takeover (checked), not
// at every batch of a backlog.
func (a *actor) suspected(m *queue.Msg) bool {
	f := a.f
	if f.index == nil || m.Partition >= len(f.suspect) {
		return false
	}
	if m.Delivered > 1 {
		return !a.loaded || !a.verified
	}
	since := f.suspect[m.Partition].Load()
	return since > a.checked && !m.Stored.IsZero() && m.Stored.UnixNano() <= since
}

// repairs queues the keys whose inventory writes failed, for the repair
// loop to reconcile through their actors.
type repairs struct {
	mu      sync.Mutex
	keys    map[string]bool
	wake    chan struct{} // a token when keys were added
	dropped ratelog.Limiter
}

// indexFailed notes that a write or read of key's entries failed: the key
// is queued for repair.
func (f *flow) indexFailed(key string, err error) {
	if err != nil && f.w.ctx.Err() == nil {
		if ok, held := f.repair.dropped.Allow(time.Now()); ok {
			f.log.Warn().Err(err).Str("key", key).Int("failures_not_logged", held).Msg("inventory: a write failed; the key is queued for repair")
		}
	}
	f.queueRepair(key)
}

// queueRepair queues key for repair (the Index's answers come here).
func (f *flow) queueRepair(key string) {
	r := &f.repair
	r.mu.Lock()
	full := len(r.keys) >= maxRepairs && !r.keys[key]
	if !full {
		r.keys[key] = true
	}
	r.mu.Unlock()
	if full {
		f.w.inventoryFailures.Add(1)
		if ok, held := r.dropped.Allow(time.Now()); ok {
			f.log.Error().Str("key", key).Int("failures_not_logged", held).Int("queued", maxRepairs).
				Msg("inventory: too many keys queued for repair; this one's entries stay as they are until its next change")
		}
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// repairLoop reconciles the keys queued for repair, through their actors
// (so a repair never races a commit of the same key here), until ctx ends.
func (f *flow) repairLoop(ctx context.Context) {
	r := &f.repair
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		keys := r.keys
		r.keys = map[string]bool{}
		r.mu.Unlock()
		for key := range keys {
			if !f.requestReconcile(ctx, key) {
				return
			}
		}
	}
}

// requestReconcile has key's actor reconcile its entries, activating it if
// need be; it waits for room as an event does (MaxActors). False if the
// flow is stopping or ctx ended first.
func (f *flow) requestReconcile(ctx context.Context, key string) bool {
	if f.index == nil {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.draining {
			return false
		}
		a := f.actors[key]
		if a == nil && len(f.actors) >= f.w.cfg.MaxActors && !f.evictLRU() {
			if !f.wait(ctx, f.freed) {
				return false
			}
			continue
		}
		if a == nil {
			a = &actor{key: key, f: f, partition: contract.PartitionOf(key, f.spec.Partitions)}
			f.actors[key] = a
		}
		a.recheck = true
		f.schedule(a)
		return true
	}
}

// backfillInventory enters every key of the state bucket in the
// inventory, through the keys' actors (a reconcile each): the worker that
// makes a workflow's inventory does it, for the keys of a deployment that
// ran without one. Keys whose partitions other workers own are entered too;
// a key another worker changes at that very moment may keep the entry of
// the state it left (docs/operations.md, Inventory).
func (f *flow) backfillInventory(ctx context.Context) {
	bucket, ok := f.bucket.(keyLister)
	if !ok {
		return
	}
	f.log.Info().Msg("inventory: new; entering the keys the state bucket holds")
	n := 0
	err := bucket.Keys(ctx, func(key string) bool {
		n++
		return f.requestReconcile(ctx, key)
	})
	if err != nil && ctx.Err() == nil {
		f.log.Error().Err(err).Int("keys", n).Msg("inventory: cannot list the state bucket's keys; those not entered are entered as they change")
		return
	}
	f.log.Info().Int("keys", n).Msg("inventory: keys of the state bucket handed to their actors to be entered")
}

// keyLister lists a state bucket's keys.
type keyLister interface {
	Keys(ctx context.Context, fn func(key string) bool) error
}

var _ keyLister = (*queue.Bucket)(nil)

// openInventory opens the flow's inventory, unless it is turned off.
func (f *flow) openInventory() {
	f.repair.keys = map[string]bool{}
	f.repair.wake = make(chan struct{}, 1)
	f.repair.dropped = ratelog.Limiter{Every: logEvery}
	if f.w.cfg.DisableInventory {
		return
	}
	f.index = f.w.conn.Index(f.name, indexWindow, f.queueRepair)
}

// closeInventory waits, until ctx ends, for the inventory's writes in
// flight.
func (f *flow) closeInventory(ctx context.Context) {
	if f.index == nil {
		return
	}
	if err := f.index.Close(ctx); err != nil {
		f.log.Warn().Err(err).Msg("stopping: inventory writes unanswered; their keys are repaired when next redelivered or woken")
	}
}
