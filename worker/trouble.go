package worker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-dev/orderly/internal/ratelog"
)

// Failures that keep events from ending, applied or dead-lettered: a full or
// unreachable store. The events stay deliverable meanwhile (held and
// retried, or handed back to JetStream with a growing delay), and the worker
// says so: in its log, in orderly_dead_letter_failures_total and
// orderly_commit_failures_total, and as a line in the body of /readyz, which
// stays until the next attempt of the same kind works.

// trouble is a flow's current failures.
type trouble struct {
	commitsFailing atomic.Bool // commits.since is set: what a commit checks

	mu          sync.Mutex
	deadLetters failing
	commits     failing
	// recovered is closed by the first commit that works after one failed:
	// every key waiting to try again (see waitRetry) tries at once, rather
	// than each at the end of its own backoff.
	recovered chan struct{}

	// storeLog spaces the log lines of commits, claims and loads that
	// fail, all keys together: a store away fails every key at once;
	// recoveredLog those that say commits work again.
	storeLog, recoveredLog ratelog.Limiter
}

// failing is one kind of failure, since its first occurrence after the last
// success.
type failing struct {
	since time.Time // zero: not failing
	n     int64     // attempts failed since
	err   error     // the last one's error
}

func (s *failing) fail(now time.Time, err error) {
	if s.since.IsZero() {
		s.since = now
	}
	s.n++
	s.err = err
}

func (s *failing) describe(what, workflow, then string) string {
	return fmt.Sprintf("%s of workflow %s failing since %s (%d attempts; last error: %v): %s",
		what, workflow, s.since.UTC().Format(time.RFC3339), s.n, s.err, then)
}

func (f *flow) deadLetterFailed(err error) {
	f.w.metrics.deadLetterFailures.WithLabelValues(f.name).Inc()
	f.trouble.mu.Lock()
	f.trouble.deadLetters.fail(f.w.cfg.Now(), err)
	f.trouble.mu.Unlock()
}

func (f *flow) deadLetterWorked() {
	f.trouble.mu.Lock()
	f.trouble.deadLetters = failing{}
	f.trouble.mu.Unlock()
}

func (f *flow) commitFailed(err error) {
	f.w.metrics.commitFailures.WithLabelValues(f.name).Inc()
	f.trouble.mu.Lock()
	f.trouble.commits.fail(f.w.cfg.Now(), err)
	f.trouble.commitsFailing.Store(true)
	f.trouble.mu.Unlock()
}

// commitWorked is called after every commit: without a lock while all is well.
func (f *flow) commitWorked() {
	if !f.trouble.commitsFailing.Load() {
		return
	}
	f.trouble.mu.Lock()
	was := f.trouble.commits
	f.trouble.commits = failing{}
	f.trouble.commitsFailing.Store(false)
	if f.trouble.recovered != nil {
		close(f.trouble.recovered)
		f.trouble.recovered = nil
	}
	f.trouble.mu.Unlock()
	if was.since.IsZero() {
		return
	}
	if ok, _ := f.trouble.recoveredLog.Allow(time.Now()); ok {
		f.log.Info().Time("failing_since", was.since).Int64("failed_attempts", was.n).Msg("state commits work again")
	}
}

// waitRetry waits d before a key tries its commit, claim or load again,
// or less if another key's commit works meanwhile (the store is back);
// false if ctx ended first.
func (f *flow) waitRetry(ctx context.Context, d time.Duration) bool {
	f.trouble.mu.Lock()
	if f.trouble.recovered == nil {
		f.trouble.recovered = make(chan struct{})
	}
	recovered := f.trouble.recovered
	f.trouble.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-recovered:
	case <-ctx.Done():
		return false
	}
	return true
}

// storeFailed logs a failed commit, claim or load of key that is retried:
// the first of a streak as a warning, then at most one line per logEvery
// for all keys, with the number held back (while the connection is down,
// the connection says so, and these go to debug).
func (f *flow) storeFailed(err error, key, msg string) {
	f.logFailure(f.log.With().Str("key", key).Logger(), &f.trouble.storeLog, err, msg)
}

// problems describes the flow's current failures, one line each.
func (f *flow) problems() []string {
	f.trouble.mu.Lock()
	defer f.trouble.mu.Unlock()
	var out []string
	if !f.trouble.deadLetters.since.IsZero() {
		out = append(out, f.trouble.deadLetters.describe("dead-lettering", f.name,
			"the events stay in the stream and are tried again"))
	}
	if !f.trouble.commits.since.IsZero() {
		out = append(out, f.trouble.commits.describe("state commits", f.name,
			"the events stay unacknowledged and are tried again"))
	}
	return out
}

// Problems describes what keeps events from being applied or dead-lettered
// right now (a full store, say), and during Start what the start-up waits
// for (a NATS cluster that cannot serve yet), one line each; none when all
// is well. /readyz shows them under its answer.
func (w *Worker) Problems() []string {
	var out []string
	if msg := w.waiting.Load(); msg != nil {
		out = append(out, *msg)
	}
	for _, f := range w.flows {
		out = append(out, f.problems()...)
	}
	return out
}

// retryDelay is how long an event waits before JetStream delivers it again
// after an attempt that failed for want of the store: a second after its
// first delivery, doubling with each delivery, at most 30s.
func retryDelay(delivered uint64) time.Duration {
	const most = 30 * time.Second
	if delivered > 5 {
		return most
	}
	return min(time.Second<<max(delivered, 1)>>1, most)
}
