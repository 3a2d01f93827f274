package worker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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
	f.trouble.commits = failing{}
	f.trouble.commitsFailing.Store(false)
	f.trouble.mu.Unlock()
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
// right now (a full store, say), one line each; none when all is well.
// /readyz shows them under its answer.
func (w *Worker) Problems() []string {
	var out []string
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
