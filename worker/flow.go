package worker

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/ratelog"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// flow is one workflow at run time: its partitions' pullers and the actors
// of its live keys.
type flow struct {
	w      *Worker
	eng    engine
	name   string
	log    zerolog.Logger
	spec   queue.Spec
	bucket stateStore
	jobs   jobClaimer
	index  inventory // nil when Config.DisableInventory
	repair repairs   // keys whose inventory writes failed (inventory.go)
	// suspect holds, by partition, a time (unix nanoseconds): the keys of
	// events stored before it may have been cut off in a commit by a dead
	// owner, and have their inventory entries reconciled (inventory.go).
	suspect []atomic.Int64
	// backfill: this worker made the inventory, and enters the keys the
	// state bucket holds already.
	backfill bool
	// states are the workflow's states, in definition order: the labels
	// of orderly_keys.
	states []string

	// pullers are the partitions pulled. Only the goroutine that changes
	// ownership (Start's, then own's, then Stop's) writes the map; pmu
	// guards it for the others, and is held only to read or write it.
	pmu     sync.Mutex
	pullers map[int]puller
	owner   sync.WaitGroup // the ownership loop (own)

	// Owned by the goroutine that changes ownership.
	members []string // the group as of the last rebalance
	joined  bool     // a heartbeat went out: leave the group when stopping
	// reconnects is the connection's count of reconnects at the last
	// rebalance (see noteReconnects); only rebalance uses it.
	reconnects uint64
	// handedFrom names, for each partition taken over from a member alive
	// at the time, that member: if it leaves the group later, the work it
	// was doing for the partition's keys may have been cut off.
	handedFrom map[int]string
	// membersTrouble is when a request to the members bucket last failed
	// (unix nanoseconds; 0: never): see membersSteady.
	membersTrouble atomic.Int64

	emu          sync.Mutex // guards expediteWant and expediting
	expediteWant map[int]bool
	expediting   bool

	mu       sync.Mutex
	actors   map[string]*actor
	idle     list.List     // idle actors, most recently used at the front
	freed    chan struct{} // closed (and replaced) when an actor turns idle
	draining bool          // stopping: mailboxes are handed back, not taken
	// inflight holds the actions handed to the pool and not yet fed back,
	// by pending ID, with when their transition started them.
	inflight map[string]time.Time
	runs     sync.WaitGroup
	// handedBack holds, by key, the events handed back to the stream to
	// come again; the key's later events wait for them (see holdBack).
	handedBack map[string]*handedBack

	// pullFailures spaces the log lines of failed pulls, all partitions
	// together: a server going away fails every partition at once.
	pullFailures ratelog.Limiter

	trouble trouble // failures that keep events from ending (trouble.go)

	figures figures // the figures of /metrics read from the server (see probeLoop)
	// This workflow's actions in the pool, for /metrics: waiting for a
	// runner, running, waiting for their next attempt.
	actQueued, actRunning, actRetrying atomic.Int64
	applyLatency                       prometheus.Observer // see metrics.applyLatency
}

func newFlow(w *Worker, e engine) *flow {
	f := &flow{
		w: w, eng: e, name: e.name(),
		log:      w.log.With().Str("workflow", e.name()).Logger(),
		actors:   map[string]*actor{},
		freed:    make(chan struct{}),
		inflight: map[string]time.Time{},
		pullers:  map[int]puller{},

		handedFrom:   map[int]string{},
		handedBack:   map[string]*handedBack{},
		expediteWant: map[int]bool{},
		pullFailures: ratelog.Limiter{Every: logEvery},
	}
	f.trouble.storeLog.Every, f.trouble.recoveredLog.Every = logEvery, logEvery
	return f
}

// provisioner makes a workflow's streams, consumers and buckets, and opens
// its buckets.
type provisioner interface {
	Provision(ctx context.Context, spec queue.Spec) (queue.Provisioned, error)
	Bucket(ctx context.Context, workflow string) (*queue.Bucket, error)
	Jobs(ctx context.Context, workflow string) (*queue.Jobs, error)
	// Index opens the workflow's inventory for writing; PutWorkflow
	// describes the workflow in the workflows bucket.
	Index(workflow string, window int, failed func(key string)) *queue.Index
	PutWorkflow(ctx context.Context, info *contract.WorkflowInfo) (*contract.WorkflowInfo, error)
}

var _ provisioner = (*queue.Conn)(nil)

func (f *flow) provision(ctx context.Context) error {
	spec := f.w.cfg.Queue.spec(f.name, f.w.cfg.SharedConsumers)
	spec.NoIndex = f.w.cfg.DisableInventory
	p, err := f.w.conn.Provision(ctx, spec)
	if err != nil {
		return err
	}
	for _, c := range p.Created {
		f.log.Info().Str("resource", c).Msg("created")
		// A new inventory: the keys already in the state bucket are
		// entered by this worker (backfillInventory).
		f.backfill = f.backfill || c == "stream "+contract.IndexStream(f.name)
	}
	for _, c := range p.Updated {
		f.log.Info().Str("resource", c).Msg("updated")
	}
	for _, c := range p.Deleted {
		f.log.Info().Str("resource", c).Msg("deleted (no status history)")
	}
	f.spec = p.Spec
	jobs, err := f.w.conn.Jobs(ctx, f.name)
	if err != nil {
		return err
	}
	bucket, err := f.w.conn.Bucket(ctx, f.name)
	if err != nil {
		return err
	}
	f.jobs, f.bucket = jobs, bucket
	f.suspect = make([]atomic.Int64, f.spec.Partitions)
	info := f.eng.info()
	info.Inventory = !f.w.cfg.DisableInventory
	f.states = info.StateNames()
	prev, err := f.w.conn.PutWorkflow(ctx, &info)
	if err != nil {
		return err
	}
	// Turned on again after running without: the entries are stale.
	f.backfill = f.backfill || prev != nil && !prev.Inventory && info.Inventory
	f.openInventory()
	return nil
}

// route hands a pulled event to its key's actor. It blocks while the key's
// mailbox is full, or while MaxActors are busy, so the partition stops
// pulling: backpressure instead of memory.
func (f *flow) route(ctx context.Context, m *queue.Msg) {
	f.w.metrics.received.WithLabelValues(f.name).Inc()
	if err := contract.ValidateKey(m.Key); err != nil {
		// Published around the contract's checks (plain NATS): it can never
		// be stored as state, so it must not hold up its partition.
		f.deadLetter(m, contract.CodeInvalidKey+": "+err.Error())
		return
	}
	if old := f.replaceTick(m); old != nil {
		// m took the place of an older tick of its periodic event in the
		// mailbox, so a key that cannot take events holds one of each.
		_ = old.Ack()
		f.w.collapsedTicks.Add(1)
		return
	}
	if !f.enqueue(ctx, m) {
		_ = m.Nak(0) // stopping: the partition's next owner takes it
	}
}

// enqueue puts m in its key's mailbox, waiting for room; false if the flow
// is draining or ctx ended first, and m must go back to the stream.
func (f *flow) enqueue(ctx context.Context, m *queue.Msg) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		if f.draining {
			return false
		}
		a := f.actors[m.Key]
		if a == nil && len(f.actors) >= f.w.cfg.MaxActors && !f.evictLRU() {
			if !f.wait(ctx, f.freed) {
				return false
			}
			continue
		}
		if a == nil {
			a = &actor{key: m.Key, f: f}
			f.actors[m.Key] = a
		}
		a.partition = m.Partition
		if len(a.mailbox) >= f.w.cfg.Mailbox {
			if a.room == nil {
				a.room = make(chan struct{})
			}
			if !f.wait(ctx, a.room) {
				return false
			}
			continue
		}
		a.mailbox = append(a.mailbox, m)
		f.schedule(a)
		return true
	}
}

// wait releases f.mu until ch is closed, and takes it again; false if ctx
// ended first.
func (f *flow) wait(ctx context.Context, ch chan struct{}) bool {
	f.mu.Unlock()
	defer f.mu.Lock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// deliver hands an action's outcome to its key's actor, activating it if it
// was passivated. Outcomes are bounded by the actions in flight, so they
// never wait for room.
func (f *flow) deliver(key string, ev internalEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.actors[key]
	if a == nil {
		a = &actor{key: key, f: f}
		f.actors[key] = a
	}
	a.internal = append(a.internal, ev)
	f.schedule(a)
}

// schedule starts a goroutine for a that runs while it has work. f.mu held.
func (f *flow) schedule(a *actor) {
	if a.running {
		return
	}
	if a.elem != nil {
		f.idle.Remove(a.elem)
		a.elem = nil
	}
	a.running = true
	f.runs.Add(1)
	go a.run()
}

// parked files a that has just stopped running: idle (evictable) if it holds
// nothing, else it waits for an outcome to wake it. f.mu held.
func (f *flow) parked(a *actor) {
	a.running = false
	a.lastUsed = f.w.cfg.Now()
	if len(a.mailbox) == 0 && len(a.internal) == 0 && len(a.rec.Pending) == 0 {
		a.elem = f.idle.PushFront(a)
		close(f.freed)
		f.freed = make(chan struct{})
	}
}

// evictLRU passivates the least recently used idle actor. f.mu held.
func (f *flow) evictLRU() bool {
	e := f.idle.Back()
	if e == nil {
		return false
	}
	f.passivate(e.Value.(*actor))
	return true
}

func (f *flow) passivate(a *actor) {
	f.idle.Remove(a.elem)
	a.elem = nil
	delete(f.actors, a.key)
}

// passivateIdle drops actors unused since before cutoff: their state is in
// the bucket, and the next event reloads it.
func (f *flow) passivateIdle(cutoff time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for e := f.idle.Back(); e != nil; e = f.idle.Back() {
		a := e.Value.(*actor)
		if a.lastUsed.After(cutoff) {
			return
		}
		f.passivate(a)
	}
}

// handBack stops actors from taking more events and naks every event still
// waiting in a mailbox, so another worker can take it at once.
func (f *flow) handBack() {
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
	f.handBackPartition(-1)
}

// handBackPartition naks the events waiting in the mailboxes of partition p's
// keys (every key's for -1): the partition's next owner gets them again.
func (f *flow) handBackPartition(p int) {
	var back []*queue.Msg
	f.mu.Lock()
	f.forgetHandedBack(p)
	for _, a := range f.actors {
		if p >= 0 && a.partition != p {
			continue
		}
		back = append(back, a.mailbox...)
		a.mailbox = nil
		if a.room != nil {
			close(a.room)
			a.room = nil
		}
		if a.elem != nil && p >= 0 {
			// Idle, and its key has a new owner now: its cached state would
			// only be stale if the partition came back.
			f.passivate(a)
		}
	}
	f.mu.Unlock()
	for _, m := range back {
		_ = m.Nak(0)
	}
	if len(back) > 0 {
		f.log.Info().Int("events", len(back)).Int("partition", p).Msg("handed back unstarted events")
	}
}

func (f *flow) stats(s *Stats) {
	f.mu.Lock()
	s.Actors += len(f.actors)
	for _, a := range f.actors {
		if a.running {
			s.Running++
		}
		s.Queued += len(a.mailbox)
	}
	f.mu.Unlock()
	f.pmu.Lock()
	for _, p := range f.pullers {
		s.InFlight += p.InFlight()
	}
	s.Partitions += len(f.pullers)
	f.pmu.Unlock()
	s.ActionsQueued += int(f.actQueued.Load())
	s.ActionsAwaitingRetry += int(f.actRetrying.Load())
	s.OldestAction = max(s.OldestAction, f.oldestPending())
}

// oldestPending is the age of the oldest action of f in the pool, 0 if
// there is none.
func (f *flow) oldestPending() time.Duration {
	var oldest time.Time
	f.mu.Lock()
	for _, since := range f.inflight {
		if oldest.IsZero() || since.Before(oldest) {
			oldest = since
		}
	}
	f.mu.Unlock()
	if oldest.IsZero() {
		return 0
	}
	return max(f.w.cfg.Now().Sub(oldest), 0)
}

// pulls reports whether f pulls partition p now.
func (f *flow) pulls(p int) bool {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	_, ok := f.pullers[p]
	return ok
}

// timers arms durable timers: events JetStream delivers to a key's
// partition at a time, even with no worker running then. One per kind and
// key is pending; arming again replaces it.
type timers interface {
	Schedule(ctx context.Context, workflow, key, kind string, visit uint64, at time.Time, ev contract.Envelope) error
	// ScheduleAsync is Schedule without waiting for JetStream to store it.
	ScheduleAsync(workflow, key, kind string, visit uint64, at time.Time, ev contract.Envelope) (*queue.PendingSchedule, error)
	// TimerKeys calls fn with the key of each pending timer of kind.
	TimerKeys(ctx context.Context, workflow, kind string, fn func(key string) bool) error
	// UnscheduleNoWait removes the pending timer of kind for key, without
	// waiting for JetStream to store the removal.
	UnscheduleNoWait(workflow, key, kind string) error
}

var _ timers = (*queue.Conn)(nil)

// armResume schedules a wake-up event for key: when it comes, whichever
// worker owns the key then resumes the actions still pending.
func (f *flow) armResume(ctx context.Context, key string, version uint64, at time.Time) error {
	return f.w.conn.Schedule(ctx, f.name, key, contract.TimerResume, version, at, resumeEnvelope)
}

// resumeNow is the time to arm a wake-up that is due at once. Schedule
// rounds up to the next whole second; one a second in the past fires on the
// server's next scheduling round (a quarter of a second) instead.
func (f *flow) resumeNow() time.Time { return f.w.cfg.Now().Add(-time.Second) }

// resumeEnvelope is the body of a resume wake-up; no machine sees it.
var resumeEnvelope = contract.Envelope{Event: contract.ResumeEvent}

// giveBack returns events whose key's state could not be loaded or
// committed (cause) to the stream, to be delivered again. The state layer
// retries the broker's failures itself, so cause is either the worker
// stopping (the next owner takes the events at once) or a fault of the
// stored or new data, which no retry cures: an event delivered
// Spec.MaxDeliver times then goes to the dead letters.
func (f *flow) giveBack(msgs []*queue.Msg, cause error) {
	for _, m := range msgs {
		switch {
		case f.w.ctx.Err() != nil:
			_ = m.Nak(0)
		case m.Delivered >= uint64(f.spec.MaxDeliver):
			f.deadLetter(m, fmt.Sprintf("%s: delivered %d times; the key's state could not be loaded or committed: %v", contract.CodeMaxDeliveries, m.Delivered, cause))
		default:
			delay := retryDelay(m.Delivered)
			f.noteHandedBack(m, delay)
			_ = m.Nak(delay)
		}
	}
}

// deadLetterer stores a copy of an event, with the reason, among the
// workflow's dead letters.
type deadLetterer interface {
	DeadLetter(ctx context.Context, workflow string, m *queue.Msg, reason string) error
}

var _ deadLetterer = (*queue.Conn)(nil)

// deadLetter copies m to the dead-letter stream, then terminates it. If the
// copy fails (a full store or dead-letter stream), m goes back to the stream
// instead, to come again after a delay that grows with each delivery: it is
// never dropped, and never parked, since the consumers redeliver without
// limit.
func (f *flow) deadLetter(m *queue.Msg, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var span trace.Span
	if f.w.tracer != nil {
		ctx, span = f.deadLetterSpan(ctx, m, reason)
		defer span.End()
	}
	if err := f.w.conn.DeadLetter(ctx, f.name, m, reason); err != nil {
		if span != nil {
			tracing.Fail(span, err)
		}
		delay := retryDelay(m.Delivered)
		f.deadLetterFailed(err)
		f.log.Error().Err(err).Str("key", m.Key).Str("job_id", m.ID).Str("reason", reason).Uint64("delivered", m.Delivered).
			Dur("retry_in", delay).Msg("cannot dead-letter; the event goes back to the stream")
		_ = m.Nak(delay)
		return
	}
	f.deadLetterWorked()
	f.w.deadLettered.Add(1)
	f.w.metrics.deadLettered.WithLabelValues(f.name, reasonCode(reason)).Inc()
	f.log.Warn().Str("key", m.Key).Str("job_id", m.ID).Str("reason", reason).Msg("dead-lettered")
	_ = m.Term(reason)
}

// touchWaiting resets the ack timers of the events waiting in mailboxes.
// An event an actor takes meanwhile may get one reset after its ack, which
// the server ignores.
func (f *flow) touchWaiting() {
	var waiting []*queue.Msg
	f.mu.Lock()
	for _, a := range f.actors {
		waiting = append(waiting, a.mailbox...)
	}
	f.mu.Unlock()
	for _, m := range waiting {
		_ = m.InProgress()
	}
}
