package worker

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-dev/orderly/queue"
)

// job is one action to run for a key.
type job struct {
	f       *flow
	key     string
	p       pending
	ent     entity // the key's data as committed with the transition
	version uint64
	state   string
}

// actionPool runs actions outside the actors, at most Concurrency at once.
// Its queue is bounded too: an actor that cannot hand over an action waits,
// and so its mailbox fills and its partition stops pulling.
type actionPool struct {
	w       *Worker
	jobs    chan job
	running atomic.Int64

	soft    chan struct{} // closed by stop: start no more actions
	runCtx  context.Context
	wg      sync.WaitGroup
	stopped atomic.Bool
}

func newActionPool(w *Worker) *actionPool {
	return &actionPool{w: w, jobs: make(chan job, w.cfg.Concurrency), soft: make(chan struct{})}
}

func (p *actionPool) start(ctx context.Context) {
	p.runCtx = ctx
	for range p.w.cfg.Concurrency {
		p.wg.Go(p.loop)
	}
}

// submit queues a job; after stop it is dropped, and the action stays
// pending in the key's durable state for whoever activates it next.
func (p *actionPool) submit(j job) {
	select {
	case p.jobs <- j:
	case <-p.soft:
		p.forget(j)
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
	if err := j.f.armResume(ctx, j.key, j.version, p.w.cfg.Now()); err != nil {
		j.f.log.Warn().Err(err).Str("key", j.key).Msg("cannot schedule resumption; the one armed at start stands")
	}
}

// stop lets running actions finish within timeout (then cancels them) and
// leaves queued ones pending.
func (p *actionPool) stop(timeout time.Duration) {
	if p.stopped.Swap(true) {
		return
	}
	close(p.soft)
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
}

func (p *actionPool) loop() {
	for {
		select {
		case <-p.soft:
			return
		case <-p.runCtx.Done():
			return
		case j := <-p.jobs:
			select {
			case <-p.soft: // stopping: leave it pending
				p.forget(j)
				continue
			default:
			}
			p.running.Add(1)
			p.run(j)
			p.running.Add(-1)
		}
	}
}

// run tries the action with backoff and feeds its outcome back to the key.
func (p *actionPool) run(j job) {
	cfg := p.w.cfg
	f := j.f
	def, _ := f.eng.action(j.p.Action)
	log := f.log.With().Str("key", j.key).Str("action", j.p.Action).Str("job_id", j.p.JobID).Logger()
	var lastErr error
	for attempt := 1; attempt <= cfg.ActionRetries+1; attempt++ {
		ctx, cancel := context.WithTimeout(p.runCtx, cfg.ActionTimeout)
		began := time.Now()
		res, err := j.ent.runAction(ctx, actionCall{
			workflow: f.name, key: j.key, action: j.p.Action, jobID: j.p.JobID,
			idempotencyKey: j.p.ID, attempt: attempt,
		})
		cancel()
		outcome := "ok"
		switch {
		case err == nil:
		case IsPermanent(err) || attempt > cfg.ActionRetries:
			outcome = "failed"
		default:
			outcome = "retry"
			p.w.metrics.retries.WithLabelValues(f.name, j.p.Action).Inc()
		}
		p.w.metrics.actionTime.WithLabelValues(f.name, j.p.Action, outcome).Observe(time.Since(began).Seconds())
		if err == nil {
			p.outcome(j, internalEvent{pendingID: j.p.ID, event: def.OnSuccess, data: res})
			return
		}
		lastErr = err
		if p.runCtx.Err() != nil {
			// Hard stop: the action stays pending in durable state.
			p.forget(j)
			return
		}
		if IsPermanent(err) || attempt > cfg.ActionRetries {
			break
		}
		wait := backoff(cfg.RetryBackoff, attempt)
		var ra *retryAfterError
		if errors.As(err, &ra) {
			wait = ra.d
		}
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("action failed; retrying")
		p.retrying(j, attempt, err)
		if !sleep(p.runCtx, wait) {
			p.forget(j)
			return
		}
	}
	log.Warn().Err(lastErr).Msg("action failed for good")
	data, _ := jsonError(lastErr)
	p.outcome(j, internalEvent{pendingID: j.p.ID, event: def.OnFailure, data: data, failure: lastErr.Error()})
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
	st := queue.Status{
		Workflow: j.f.name, Key: j.key, JobID: j.p.JobID, Event: j.p.Action,
		From: j.state, To: j.state, Version: j.version, At: p.w.cfg.Now().UTC(),
		Action: j.p.Action, Attempt: attempt,
		Error: &queue.StatusError{Code: "retrying", Message: "attempt " + strconv.Itoa(attempt) + ": " + err.Error()},
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
