package worker

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// job is one action to run for a key, at its next attempt.
type job struct {
	f       *flow
	key     string
	p       contract.PendingWork
	ent     entity // the key's data as committed with the transition
	version uint64
	state   string
	attempt int // the attempt to run next, from 1
}

// actionPool runs actions outside the actors, at most Concurrency at once,
// on that many runner goroutines. A job waiting for a runner sits in a FIFO,
// and one waiting for its next attempt in a heap of due times served by one
// timer goroutine: neither holds a runner or a goroutine of its own, so a
// key backing off never delays another key's action.
//
// Submitting never blocks the actor. The FIFO and the heap hold only the
// pending actions of live actors: an actor with work pending is never
// passivated and takes no new event until that work is fed back, and the
// live actors are bounded by MaxActors. So together they hold at most
// MaxActors × the most actions one transition starts (one, in the order
// workflow), and a busy pool holds the partitions back through MaxActors.
type actionPool struct {
	w       *Worker
	running atomic.Int64

	mu     sync.Mutex
	ready  []job // FIFO: ready[head:] wait for a runner
	head   int
	later  laterHeap     // wait for their next attempt
	closed bool          // stop began: nothing more is taken, or accepted
	wake   chan struct{} // a job is ready (buffered: Concurrency)
	rewake chan struct{} // the earliest due time changed (buffered: 1)

	soft    chan struct{} // closed by stop: start no more actions
	runCtx  context.Context
	wg      sync.WaitGroup
	stopped atomic.Bool
}

func newActionPool(w *Worker) *actionPool {
	return &actionPool{
		w:      w,
		wake:   make(chan struct{}, w.cfg.Concurrency),
		rewake: make(chan struct{}, 1),
		soft:   make(chan struct{}),
	}
}

func (p *actionPool) start(ctx context.Context) {
	p.runCtx = ctx
	for range p.w.cfg.Concurrency {
		p.wg.Go(p.runner)
	}
	p.wg.Go(p.timers)
}

// submit queues a job, to run after delay; it never blocks. After stop the
// job is forgotten: its action stays pending in the key's durable state,
// with a wake-up due at once for whoever owns the key next.
func (p *actionPool) submit(j job, delay time.Duration) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.forget(j)
		return
	}
	if delay > 0 {
		j.f.actRetrying.Add(1)
		heap.Push(&p.later, delayed{due: time.Now().Add(delay), j: j})
		first := p.later[0].j.p.ID == j.p.ID
		p.mu.Unlock()
		if first {
			signal(p.rewake)
		}
		return
	}
	j.f.actQueued.Add(1)
	p.ready = append(p.ready, j)
	p.mu.Unlock()
	signal(p.wake)
}

// signal wakes one waiter on ch, or none if enough wake-ups are pending.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// take pops the oldest ready job.
func (p *actionPool) take() (job, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.head == len(p.ready) {
		return job{}, false
	}
	j := p.ready[p.head]
	p.ready[p.head] = job{}
	p.head++
	j.f.actQueued.Add(-1)
	switch {
	case p.head == len(p.ready):
		p.ready, p.head = p.ready[:0], 0
		if cap(p.ready) > 4096 {
			p.ready = nil // a burst is over: let its memory go
		}
	case p.head >= 1024 && 2*p.head >= len(p.ready):
		n := copy(p.ready, p.ready[p.head:])
		clear(p.ready[n:])
		p.ready, p.head = p.ready[:n], 0
	}
	return j, true
}

func (p *actionPool) runner() {
	for {
		j, ok := p.take()
		if !ok {
			select {
			case <-p.wake:
				continue
			case <-p.soft:
				return
			case <-p.runCtx.Done():
				return
			}
		}
		p.running.Add(1)
		j.f.actRunning.Add(1)
		p.attempt(j)
		j.f.actRunning.Add(-1)
		p.running.Add(-1)
	}
}

// timers moves jobs whose next attempt is due to the FIFO.
func (p *actionPool) timers() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		moved := 0
		next := time.Duration(-1)
		p.mu.Lock()
		for !p.closed && len(p.later) > 0 && !p.later[0].due.After(now) {
			j := heap.Pop(&p.later).(delayed).j
			j.f.actRetrying.Add(-1)
			j.f.actQueued.Add(1)
			p.ready = append(p.ready, j)
			moved++
		}
		if !p.closed && len(p.later) > 0 {
			next = p.later[0].due.Sub(now)
		}
		p.mu.Unlock()
		for range min(moved, cap(p.wake)) {
			signal(p.wake)
		}
		if next >= 0 {
			t.Reset(next)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-p.rewake:
		case <-p.soft:
			return
		case <-p.runCtx.Done():
			return
		}
	}
}

// forget leaves a job's action pending in durable state, to be resumed by
// the next owner of its key: a wake-up is scheduled at once rather than
// waiting for the one armed when the action started.
func (p *actionPool) forget(j job) {
	j.f.mu.Lock()
	delete(j.f.inflight, j.p.ID)
	j.f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := j.f.armResume(ctx, j.key, j.version, j.f.resumeNow()); err != nil {
		j.f.log.Warn().Err(err).Str("key", j.key).Msg("cannot schedule resumption; the one armed at start stands")
	}
}

// forgetWindow bounds the wake-ups forgetAll has in flight at once.
const forgetWindow = 256

// forgetAll forgets jobs as forget does, with their wake-ups pipelined, so
// that a stop with many jobs queued ends quickly.
func (p *actionPool) forgetAll(jobs []job) {
	if len(jobs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed := 0
	var window []*queue.PendingSchedule
	wait := func(ps *queue.PendingSchedule) {
		if err := ps.Wait(ctx); err != nil {
			failed++
		}
	}
	for _, j := range jobs {
		j.f.mu.Lock()
		delete(j.f.inflight, j.p.ID)
		j.f.mu.Unlock()
		ps, err := p.w.conn.ScheduleAsync(j.f.name, j.key, contract.TimerResume, j.version, j.f.resumeNow(), resumeEnvelope)
		if err != nil {
			failed++
			continue
		}
		window = append(window, ps)
		if len(window) == forgetWindow {
			wait(window[0])
			window = slices.Delete(window, 0, 1)
		}
	}
	for _, ps := range window {
		wait(ps)
	}
	if failed > 0 {
		p.w.log.Warn().Int("jobs", failed).Msg("stopping: cannot schedule the resumption of some queued actions; the wake-ups armed at their start stand")
	}
	p.w.log.Info().Int("jobs", len(jobs)).Msg("stopping: left queued actions pending, to resume at once on the next owner")
}

// stop lets running actions finish within timeout (then cancels them) and
// leaves the others, queued or waiting for a retry, pending.
func (p *actionPool) stop(timeout time.Duration) {
	if p.stopped.Swap(true) {
		return
	}
	p.mu.Lock()
	p.closed = true
	left := slices.Clone(p.ready[p.head:])
	for _, j := range left {
		j.f.actQueued.Add(-1)
	}
	for _, d := range p.later {
		d.j.f.actRetrying.Add(-1)
		left = append(left, d.j)
	}
	p.ready, p.head, p.later = nil, 0, nil
	p.mu.Unlock()
	close(p.soft)
	forgot := make(chan struct{})
	go func() { p.forgetAll(left); close(forgot) }()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.w.cancel()
		<-done
	}
	<-forgot
}

// attempt runs one attempt of a job's action and feeds its outcome back to
// the key; after a failure worth retrying it queues the job again for the
// next attempt, after the backoff, and notes the attempt in the key's state.
func (p *actionPool) attempt(j job) {
	cfg := p.w.cfg
	f := j.f
	def, _ := f.eng.action(j.p.Action)
	ctx, cancel := context.WithTimeout(p.runCtx, cfg.ActionTimeout)
	var span trace.Span
	if p.w.tracer != nil {
		ctx, span = p.actionSpan(ctx, &j)
	}
	began := time.Now()
	res, err := j.ent.runAction(ctx, actionCall{
		workflow: f.name, key: j.key, action: j.p.Action, jobID: j.p.JobID,
		idempotencyKey: j.p.ID, attempt: j.attempt,
	})
	cancel()
	final := err != nil && (IsPermanent(err) || j.attempt > cfg.ActionRetries)
	outcome := "ok"
	switch {
	case err == nil:
	case final:
		outcome = "failed"
	default:
		outcome = "retry"
		p.w.metrics.retries.WithLabelValues(f.name, j.p.Action).Inc()
	}
	p.w.metrics.actionTime.WithLabelValues(f.name, j.p.Action, outcome).Observe(time.Since(began).Seconds())
	var parent trace.SpanContext // of the outcome: this attempt
	if span != nil {
		if err != nil {
			tracing.Fail(span, err)
		}
		span.SetAttributes(tracing.Outcome.String(outcome))
		span.End()
		parent = span.SpanContext()
	}
	if err == nil {
		p.outcome(j, internalEvent{pendingID: j.p.ID, event: def.OnSuccess, data: res, parent: parent})
		return
	}
	log := f.log.With().Str("key", j.key).Str("action", j.p.Action).Str("job_id", j.p.JobID).Logger()
	if p.runCtx.Err() != nil {
		// Hard stop: the action stays pending in durable state.
		p.forget(j)
		return
	}
	if pe := (*PanicError)(nil); errors.As(err, &pe) {
		log.Error().Str("panic", fmt.Sprint(pe.Value)).Str("stack", string(pe.Stack)).Msg("the action panicked: it has failed for good")
	} else if final {
		log.Warn().Err(err).Int("attempt", j.attempt).Msg("action failed for good")
	}
	if final {
		data, _ := jsonError(err)
		p.outcome(j, internalEvent{pendingID: j.p.ID, event: def.OnFailure, data: data, failure: err.Error(), parent: parent})
		return
	}
	wait := backoff(cfg.RetryBackoff, j.attempt)
	var ra *retryAfterError
	if errors.As(err, &ra) {
		wait = ra.d
	}
	log.Warn().Err(err).Int("attempt", j.attempt).Dur("retry_in", wait).Msg("action failed; retrying")
	p.retrying(j, j.attempt, err)
	j.attempt++
	msg := err.Error()
	if len(msg) > contract.MaxLastError {
		msg = msg[:contract.MaxLastError]
	}
	f.deliver(j.key, internalEvent{pendingID: j.p.ID, retry: &retryNote{
		attempt: j.attempt, at: cfg.Now().Add(wait).UTC(), err: msg,
	}})
	p.submit(j, wait)
}

// delayed is a job waiting for its next attempt, due at due.
type delayed struct {
	due time.Time
	j   job
}

// laterHeap orders delayed jobs by due time, soonest first.
type laterHeap []delayed

func (h laterHeap) Len() int           { return len(h) }
func (h laterHeap) Less(i, k int) bool { return h[i].due.Before(h[k].due) }
func (h laterHeap) Swap(i, k int)      { h[i], h[k] = h[k], h[i] }
func (h *laterHeap) Push(x any)        { *h = append(*h, x.(delayed)) }
func (h *laterHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = delayed{}
	*h = old[:len(old)-1]
	return d
}

func (p *actionPool) outcome(j job, ev internalEvent) {
	j.f.mu.Lock()
	delete(j.f.inflight, j.p.ID)
	j.f.mu.Unlock()
	j.f.deliver(j.key, ev)
}

// retrying publishes that an attempt failed and another will follow, so
// that `enqueue --wait` and watchers see it.
func (p *actionPool) retrying(j job, attempt int, err error) {
	st := contract.Status{
		Workflow: j.f.name, Key: j.key, JobID: j.p.JobID, Event: j.p.Action,
		From: j.state, To: j.state, Version: j.version, At: p.w.cfg.Now().UTC(),
		Action: j.p.Action, Attempt: attempt,
		Error: &contract.StatusError{Code: contract.CodeRetrying, Message: "attempt " + strconv.Itoa(attempt) + ": " + err.Error()},
	}
	_ = p.w.conn.PublishStatus(&st)
}

// backoff doubles base each attempt up to 30×base, with full jitter in the
// upper half so retries of many keys spread out.
func backoff(base time.Duration, attempt int) time.Duration {
	d := min(base<<min(attempt-1, 20), 30*base)
	return d/2 + rand.N(d/2+1)
}

func jsonError(err error) ([]byte, error) {
	return json.Marshal(map[string]string{"error": err.Error()})
}
