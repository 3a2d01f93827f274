package worker

import (
	"context"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Undeliverable events (see queue.DeadLetterStrays): published under a
// subject no partition delivers, they would hold places under the queue
// limit for good. The worker that owns partition 0 of a workflow sweeps them
// to the dead letters: at once when it takes the partition, then every
// straySweepEvery. Two workers sweeping at once (ownership changing hands)
// do no harm: a stray is dead-lettered under the same id by both.

// straySweepEvery is how often the owner of partition 0 looks for strays:
// one cheap look-up per workflow when there are none.
const straySweepEvery = time.Second

// strayBatch is the most strays moved by one look-up round; a sweep goes on
// while rounds come back full.
const strayBatch = 256

// sweepStrays runs for the life of the worker.
func (f *flow) sweepStrays(ctx context.Context) {
	t := time.NewTicker(straySweepEvery)
	defer t.Stop()
	for {
		if f.ownsPartition(0) {
			f.sweepOnce(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-f.w.leaving:
			return
		case <-t.C:
		}
	}
}

func (f *flow) ownsPartition(p int) bool {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	_, ok := f.pullers[p]
	return ok
}

// straySweeper moves events stored where no partition's consumer takes
// them to the dead letters, at most max at a time.
type straySweeper interface {
	DeadLetterStrays(ctx context.Context, workflow string, max int) ([]queue.Stray, error)
}

var _ straySweeper = (*queue.Conn)(nil)

// sweepOnce moves the strays there are now to the dead letters.
func (f *flow) sweepOnce(ctx context.Context) {
	for ctx.Err() == nil {
		moved, err := f.w.conn.DeadLetterStrays(ctx, f.name, strayBatch)
		for _, s := range moved {
			f.w.deadLettered.Add(1)
			f.w.metrics.deadLettered.WithLabelValues(f.name, contract.CodeUndeliverableSubject).Inc()
			f.log.Warn().Str("subject", s.Subject).Uint64("sequence", s.Sequence).Str("job_id", s.JobID).
				Str("reason", s.Reason).Msg("dead-lettered")
		}
		if err != nil {
			if ctx.Err() == nil {
				f.deadLetterFailed(err)
				f.log.Error().Err(err).Msg("cannot dead-letter undeliverable events; they stay in the stream and are tried again")
			}
			return
		}
		if len(moved) > 0 {
			f.deadLetterWorked()
		}
		if len(moved) < strayBatch {
			return
		}
	}
}
