package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// ErrStopped is returned by Start on a worker that was stopped.
var ErrStopped = errors.New("worker: stopped")

// Worker runs workflows: it pulls their events, applies them through one
// actor per live key, commits each key's state with compare-and-set, runs
// the slow work after the commit and publishes every change.
type Worker struct {
	cfg    Config
	conn   adapter
	log    zerolog.Logger
	tracer trace.Tracer // nil: no tracing (Config.TracerProvider)
	flows  []*flow
	pool   *actionPool

	// mu guards state, stopStart and stopErr's writer; it is never held
	// across a network call, so Stop can always get it.
	mu        sync.Mutex
	state     lifeState
	stopStart context.CancelCauseFunc // ends the start-up chain in progress
	stopErr   error                   // Stop's result, set before stopped is closed

	ready atomic.Bool
	// waiting says, while Start waits for the NATS cluster, what for (see
	// untilServed); nil otherwise.
	waiting atomic.Pointer[string]
	ctx     context.Context    // ends on a hard stop
	cancel  context.CancelFunc // hard stop of everything Start began
	unwatch func() bool        // stops the hard stop at the end of Start's ctx
	bg      sync.WaitGroup     // janitor, probe loop, stray sweeps, expedites
	stopped chan struct{}
	// leavingCtx ends when Stop begins (leave ends it): the ownership loops
	// stop changing what the worker owns. leaving is its Done channel.
	leavingCtx context.Context
	leaving    <-chan struct{}
	leave      context.CancelFunc

	httpOnce sync.Once
	http     http.Handler

	metrics      *metrics
	duplicates   atomic.Int64
	deadLettered atomic.Int64
	staleTimers  atomic.Int64
	// collapsedTicks counts periodic ticks dropped for a newer one.
	collapsedTicks atomic.Int64
	// The inventory's reconciliations: keys checked, keys repaired, keys
	// whose repair could not be made or queued.
	inventoryChecks, inventoryRepairs, inventoryFailures atomic.Int64
	// dropAck, set only by tests, loses the ack of the messages it picks, as
	// a connection that fails between commit and ack would.
	dropAck func(*queue.Msg) bool
	// crash, set only by tests, stops an actor dead, as a process killed
	// there would, when it returns true: at stage "before" a commit (its
	// inventory entries sent, its state not written) or "after" it (the
	// state written, nothing of what follows done). The actor then waits
	// for the hard stop.
	crash func(key, stage string) bool
}

// lifeState is where a Worker is in its life: new, then starting, then
// running, then stopping (Stop, or a failed Start, tears it down and closes
// stopped). It only goes forward.
type lifeState int

const (
	stateNew lifeState = iota
	stateStarting
	stateRunning
	stateStopping
)

// New returns a worker for the given workflows on nc. Nothing runs until
// Start.
//
// nc stays the caller's: the worker neither closes nor drains it, and sets
// none of its handlers; Stop releases what the worker made on it
// (subscriptions), and the caller closes nc after Stop. A worker with
// several workflows, or several workers, may share one connection. The
// worker uses nc's inbox prefix for its replies and pulls.
func New(nc *nats.Conn, cfg Config, workflows ...Workflow) (*Worker, error) {
	cfg, plan := cfg.Sized(len(workflows))
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, errors.New("worker: nil connection")
	}
	if len(workflows) == 0 {
		return nil, errors.New("worker: no workflow")
	}
	seen := map[string]bool{}
	for _, wf := range workflows {
		if wf.e == nil {
			return nil, errors.New("worker: zero Workflow (use NewWorkflow)")
		}
		if seen[wf.Name()] {
			return nil, fmt.Errorf("worker: workflow %s registered twice", wf.Name())
		}
		seen[wf.Name()] = true
	}
	conn, err := newAdapter(nc) // released by Stop (or a failed Start)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, conn: conn, log: *cfg.Logger, tracer: newTracer(cfg.TracerProvider), stopped: make(chan struct{})}
	w.leavingCtx, w.leave = context.WithCancel(context.Background())
	w.leaving = w.leavingCtx.Done()
	w.logMemoryPlan(plan)
	for _, wf := range workflows {
		w.flows = append(w.flows, newFlow(w, wf.e))
	}
	w.pool = newActionPool(w)
	w.metrics = newMetrics(w)
	return w, nil
}

// adapter is the JetStream adapter as the runtime holds it: through the
// small interfaces each part of the runtime declares where it uses it, and
// nothing more of it.
type adapter struct {
	provisioner     // flow.go
	partitionSource // ownership.go
	membership      // ownership.go
	timers          // flow.go
	periodicTimers  // periodic.go
	statusPublisher // actor.go
	deadLetterer    // flow.go
	straySweeper    // strays.go
	figureReader    // metrics.go
	announcer       // announce.go

	nc      *nats.Conn // the caller's
	release func()     // frees what the adapter made on nc
}

func newAdapter(nc *nats.Conn) (adapter, error) {
	q, err := queue.New(nc)
	if err != nil {
		return adapter{}, fmt.Errorf("worker: %w", err)
	}
	return adapter{
		provisioner: q, partitionSource: q, membership: q, timers: q, periodicTimers: q,
		statusPublisher: q, deadLetterer: q, straySweeper: q, figureReader: q, announcer: q,
		nc: nc, release: q.Close,
	}, nil
}

// Connected reports whether the connection is up right now.
func (a adapter) Connected() bool { return a.nc.IsConnected() }

// Reconnects counts the times the connection was lost and made again.
func (a adapter) Reconnects() uint64 { return a.nc.Stats().Reconnects }

// Start runs the start-up chain, each step logged: provision every
// workflow's streams, consumers and bucket; start the action pool; start
// pulling. It returns once the worker is ready, or with the first step's
// error. The worker runs until Stop, or until ctx ends (a hard stop).
//
// Stop during Start ends the chain at once: Start then returns an error
// wrapping ErrStopped. A Start that fails, stopped or not, first stops
// everything it began (no goroutine of it is left) and leaves the worker
// stopped, as Stop does: Stopped is closed and another Start returns
// ErrStopped. To try again, make a new Worker with New.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	switch w.state {
	case stateNew:
	case stateStarting, stateRunning:
		w.mu.Unlock()
		return errors.New("worker: already started")
	default:
		w.mu.Unlock()
		return ErrStopped
	}
	w.state = stateStarting
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.ctx, w.cancel = runCtx, cancel
	// A hard stop when the caller's context ends.
	w.unwatch = context.AfterFunc(ctx, cancel)
	startCtx, stopStart := context.WithCancelCause(runCtx)
	w.stopStart = stopStart
	w.mu.Unlock()

	err := w.startUp(startCtx)
	stopStart(nil)
	w.mu.Lock()
	stopped := w.state == stateStopping // Stop came first
	if err == nil && !stopped {
		w.state = stateRunning
		w.mu.Unlock()
		w.metrics.lastPull.Store(w.cfg.Now().UnixNano())
		w.ready.Store(true)
		w.log.Info().Msg("start-up: ready")
		return nil
	}
	w.state = stateStopping
	w.mu.Unlock()
	if stopped {
		w.log.Info().Msg("start-up: stopped; stopping what it began")
	} else {
		w.log.Error().Err(err).Msg("start-up failed; stopping what it began")
	}
	_ = w.shutdown(runCtx) // a hard stop (Stop's context ending) cuts it short
	close(w.stopped)
	if stopped {
		if err == nil {
			return fmt.Errorf("%w during start-up", ErrStopped)
		}
		return fmt.Errorf("%w during start-up: %w", ErrStopped, err)
	}
	return err
}

// startUp is Start's chain. ctx ends the steps in progress (Stop, or the
// caller's context); what they start runs on w.ctx.
func (w *Worker) startUp(ctx context.Context) error {
	begun := time.Now()
	for _, f := range w.flows {
		w.log.Info().Str("workflow", f.name).Msg("start-up: provisioning streams, consumers and state bucket")
		if err := w.untilServed(ctx, begun, "provisioning workflow "+f.name, f.provision); err != nil {
			return err
		}
	}
	w.pool.start(w.ctx)
	w.bg.Go(func() { w.janitor(w.ctx) })
	w.bg.Go(func() { w.probeLoop(w.ctx) })
	for _, f := range w.flows {
		w.log.Info().Str("workflow", f.name).Int("partitions", f.spec.Partitions).Str("worker_id", w.cfg.ID).Msg("start-up: joining the group and pulling its share of partitions")
		if err := w.untilServed(ctx, begun, "joining the group of workflow "+f.name, f.rebalance); err != nil {
			return err
		}
		if !w.cfg.SharedConsumers {
			f.owner.Go(func() { f.own(w.ctx) })
		}
		w.bg.Go(func() { f.sweepStrays(w.ctx) })
		w.bg.Go(func() { f.announceDelayed(w.ctx) })
		w.bg.Go(func() { f.repairLoop(w.ctx) })
		if f.backfill && f.index != nil {
			w.bg.Go(func() { f.backfillInventory(w.ctx) })
		}
	}
	return ctx.Err()
}

// untilServed runs step until it works, trying again with backoff while
// it fails because the NATS cluster cannot serve yet (queue.Unavailable),
// until StartTimeout after begun. Meanwhile Problems says what it waits
// for, and the log says so at most once per logEvery.
func (w *Worker) untilServed(ctx context.Context, begun time.Time, what string, step func(context.Context) error) error {
	defer w.waiting.Store(nil)
	var logged ratelog.Limiter
	logged.Every = logEvery
	sctx := ctx
	if w.cfg.StartTimeout > 0 {
		// Cancelled at the deadline rather than given one: a request of
		// the step whose context has no deadline gets the client's own
		// timeout (5s), so a request that gets no answer is tried again.
		var cancel context.CancelFunc
		sctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer time.AfterFunc(time.Until(begun.Add(w.cfg.StartTimeout)), cancel).Stop()
	}
	var last error // the last attempt's error that says why
	gaveUp := func(attempt int) error {
		return fmt.Errorf("worker: %s: the NATS cluster could not serve within %s (%d attempts): %w",
			what, w.cfg.StartTimeout.Round(100*time.Millisecond), attempt, last)
	}
	for attempt := 1; ; attempt++ {
		err := step(sctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if sctx.Err() != nil {
			if last == nil {
				last = err
			}
			return gaveUp(attempt)
		}
		if !queue.Unavailable(err) {
			return err
		}
		last = err
		wait := min(250*time.Millisecond<<min(attempt-1, 5), 5*time.Second)
		wait = wait/2 + rand.N(wait/2+1)
		until := "until stopped"
		if w.cfg.StartTimeout > 0 {
			deadline := begun.Add(w.cfg.StartTimeout)
			if time.Now().Add(wait).After(deadline) {
				return gaveUp(attempt)
			}
			until = "until " + deadline.UTC().Format(time.RFC3339)
		}
		msg := fmt.Sprintf("start-up: waiting for the NATS cluster: %s failed (attempt %d: %v); trying again %s", what, attempt, err, until)
		w.waiting.Store(&msg)
		if ok, held := logged.Allow(time.Now()); ok {
			w.log.Warn().Err(err).Str("step", what).Int("attempt", attempt).Int("failures_not_logged", held).
				Msg("start-up: the NATS cluster cannot serve yet (no JetStream leader, too few nodes, or no answer); trying again")
		}
		if !sleep(sctx, wait) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return gaveUp(attempt)
		}
	}
}

// stallAfter is how long without a completed pull request makes a worker
// that owns partitions unready: a pull completes at least every second,
// with or without events.
const stallAfter = 15 * time.Second

// Ready reports whether the worker has started, is connected to NATS, has
// not stalled (a pull completed within stallAfter, if it owns partitions)
// and is not stopping: what /readyz answers.
func (w *Worker) Ready() bool {
	if !w.ready.Load() || !w.conn.Connected() {
		return false
	}
	last := time.Unix(0, w.metrics.lastPull.Load())
	return w.cfg.Now().Sub(last) < stallAfter || !w.ownsPartitions()
}

// Stop stops the worker gently: it stops pulling, lets actors commit what
// they hold and publish its status, hands events not yet started back to
// JetStream for another worker, and gives running actions until
// Config.ShutdownTimeout to finish; actions not finished stay pending in
// durable state, and whichever worker next activates the key resumes them.
// If ctx ends first, everything still running is cancelled. During Start it
// ends the start-up chain, and returns once what Start began has stopped.
// Stop is safe to call twice and before Start; it returns once the worker
// has stopped.
func (w *Worker) Stop(ctx context.Context) error {
	w.ready.Store(false)
	w.mu.Lock()
	was, cancel, stopStart := w.state, w.cancel, w.stopStart
	w.state = stateStopping
	w.mu.Unlock()
	switch was {
	case stateNew:
		w.leave()
		w.conn.release()
		close(w.stopped)
		return nil
	case stateRunning:
		w.stopErr = w.shutdown(ctx)
		close(w.stopped)
		return w.stopErr
	case stateStarting:
		// Start sees the state, stops what it began and closes stopped.
		stopStart(ErrStopped)
	}
	// Another call stops the worker: wait for it, cutting it short if ctx
	// ends first.
	select {
	case <-w.stopped:
		return w.stopErr
	case <-ctx.Done():
		if cancel != nil {
			cancel()
		}
		<-w.stopped
		return ctx.Err()
	}
}

// Stopped is closed when the worker has stopped.
func (w *Worker) Stopped() <-chan struct{} { return w.stopped }

// shutdown stops everything Start began, gently unless ctx ends (or ended).
// It runs once: from Stop, or from a Start that failed.
func (w *Worker) shutdown(ctx context.Context) error {
	hard := context.AfterFunc(ctx, w.cancel)
	defer hard()
	w.log.Info().Msg("stopping: no more pulls")
	w.leave() // the ownership loops stop changing what we own
	for _, f := range w.flows {
		f.owner.Wait()
	}
	var wg sync.WaitGroup
	for _, f := range w.flows {
		wg.Go(func() { f.leave(ctx) })
	}
	wg.Wait()
	for _, f := range w.flows {
		f.handBack()
	}
	w.log.Info().Dur("timeout", w.cfg.ShutdownTimeout).Msg("stopping: waiting for running actions")
	w.pool.stop(w.cfg.ShutdownTimeout)
	for _, f := range w.flows {
		f.runs.Wait()
	}
	// The inventory's purges went out before the acks; wait for their
	// answers, so that a clean stop leaves nothing to repair.
	invCtx, invCancel := context.WithTimeout(ctx, 5*time.Second)
	for _, f := range w.flows {
		f.closeInventory(invCtx)
	}
	invCancel()
	w.cancel()
	w.unwatch()
	w.bg.Wait()
	w.conn.release() // what the worker made on the caller's connection
	w.log.Info().Msg("stopped")
	return ctx.Err()
}

// janitor passivates actors idle for longer than ActorIdle and keeps the
// events waiting in mailboxes from being redelivered. It runs on its
// own ticker, so traffic cannot starve it.
func (w *Worker) janitor(ctx context.Context) {
	every := min(max(w.cfg.ActorIdle/4, 10*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	// Events waiting in a mailbox behind slow work would run out their ack
	// wait and be delivered again, and again, until JetStream gave up on
	// them: tell it they are in hand.
	touch := time.NewTicker(max(w.cfg.Queue.AckWait/3, 10*time.Millisecond))
	defer touch.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, f := range w.flows {
				f.passivateIdle(w.cfg.Now().Add(-w.cfg.ActorIdle))
				f.expireHandedBack()
			}
		case <-touch.C:
			for _, f := range w.flows {
				f.touchWaiting()
			}
		}
	}
}

// Stats is a snapshot of the runtime's bounded resources.
type Stats struct {
	// Actors is the number of keys with an actor in memory.
	Actors int
	// Running is the number of actors processing events right now.
	Running int
	// Queued is the number of events waiting in actors' mailboxes.
	Queued int
	// InFlight is the number of events pulled and not yet acknowledged.
	InFlight int
	// Partitions is the number of partitions this worker pulls now.
	Partitions int
	// ActionsRunning is the number of actions running now.
	ActionsRunning int
	// ActionsQueued is the number of actions waiting for a runner, and
	// ActionsAwaitingRetry those waiting for their next attempt after a
	// failed one (orderly_actions_queued, orderly_actions_awaiting_retry).
	ActionsQueued, ActionsAwaitingRetry int
	// OldestAction is the age of the oldest action pending (queued, running
	// or awaiting a retry), 0 when none (orderly_actions_oldest_age_seconds).
	OldestAction time.Duration
	// Duplicates counts events acknowledged without being applied, since
	// start: redeliveries of events applied already, and events whose job id
	// an earlier event of the same key and event took (within the dedupe
	// window).
	Duplicates int64
	// StaleTimers counts timeouts and periodic ticks that arrived after
	// their key had left the state visit that armed them, and were ignored,
	// since start.
	StaleTimers int64
	// CollapsedTicks counts periodic ticks dropped, since start, because a
	// newer tick of the same periodic event was in hand: ticks missed while
	// the key could not take them collapse into one.
	CollapsedTicks int64
	// DeadLettered counts events sent to the dead letters since start.
	DeadLettered int64
	// InventoryChecks counts keys whose inventory entries were checked
	// against their state (after a redelivery, a conflict, a failed write
	// or a takeover from a member gone) since start; InventoryRepairs
	// those of them whose entries were wrong and were repaired.
	InventoryChecks, InventoryRepairs int64
	// InventoryFailures counts keys whose entries could not be checked or
	// repaired (the inventory's stream unavailable past the retries), since
	// start: their counts may be off until their next change.
	InventoryFailures int64
}

// Stats returns a snapshot of the runtime's bounded resources.
func (w *Worker) Stats() Stats {
	var s Stats
	for _, f := range w.flows {
		f.stats(&s)
	}
	s.ActionsRunning = int(w.pool.running.Load())
	s.Duplicates = w.duplicates.Load()
	s.StaleTimers = w.staleTimers.Load()
	s.CollapsedTicks = w.collapsedTicks.Load()
	s.DeadLettered = w.deadLettered.Load()
	s.InventoryChecks = w.inventoryChecks.Load()
	s.InventoryRepairs = w.inventoryRepairs.Load()
	s.InventoryFailures = w.inventoryFailures.Load()
	return s
}

// ownsPartitions reports whether the worker pulls any partition, without
// walking its actors as Stats does: /readyz is probed often.
func (w *Worker) ownsPartitions() bool {
	for _, f := range w.flows {
		f.pmu.Lock()
		n := len(f.pullers)
		f.pmu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}
