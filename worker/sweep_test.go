package worker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// TestSweepRearmsAWakeUpThatNeverCame: keys' work was cut off by a crash
// and their durable wake-ups are an hour away, as good as a schedule the
// server never fires (the soak saw one left in flight after a failed
// firing), or gone altogether (the soak saw a firing stored in the timers
// stream that never reached the events stream, and the schedule purged
// after it). The worker that takes their partition over takes it from a
// member still in the group (its heartbeats go on: a worker cut off from
// its work but not from the members bucket), so nothing tells it the work
// was cut off. Its sweep (every two ResumeAfter) finds the keys with work
// pending that none of its jobs holds, among the pending wake-ups and the
// inventory's work entries, arms their wake-ups again, and the work resumes
// within seconds.
func TestSweepRearmsAWakeUpThatNeverCame(t *testing.T) {
	t.Parallel()
	t.Run("far off", func(t *testing.T) { t.Parallel(); sweepResumes(t, false) })
	t.Run("gone", func(t *testing.T) { t.Parallel(); sweepResumes(t, true) })
}

// sweepResumes is TestSweepRearmsAWakeUpThatNeverCame; with gone, the
// keys' wake-ups are removed from the timers stream once the work is cut
// off.
func sweepResumes(t *testing.T, gone bool) {
	b := setup(t)
	spec := worker.QueueConfig{Partitions: 2, MemberTTL: time.Second, PinnedTTL: time.Second}
	done := watchWorked(t, b.client)
	hang := func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var keys []string
	for i := range 6 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}

	a := startReplica(t, b.url, worker.Config{ID: "a", Queue: spec, ResumeAfter: time.Hour}, hang)
	publishWork(t, b.client, keys)
	waitFor(t, 10*time.Second, "the keys' work to start on a", func() bool { return a.w.Stats().ActionsRunning == len(keys) })
	a.crash()
	if gone {
		js, err := jetstream.New(natstest.NATS(t, b.url))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		timers, err := js.Stream(ctx, contract.TimersStream("tally"))
		if err != nil {
			t.Fatal(err)
		}
		if err := timers.Purge(ctx, jetstream.WithPurgeSubject(queue.PendingTimers("tally", contract.TimerResume))); err != nil {
			t.Fatal(err)
		}
	}
	// a stays in the group: its heartbeats go on without it.
	ctx, cancel := context.WithCancel(context.Background())
	var beats sync.WaitGroup
	defer beats.Wait()
	defer cancel()
	beats.Go(func() {
		for ctx.Err() == nil {
			hctx, hcancel := context.WithTimeout(ctx, time.Second)
			_ = b.conn.Heartbeat(hctx, "tally", "a")
			hcancel()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond): // a heartbeat period
			}
		}
	})

	c := startReplica(t, b.url, worker.Config{ID: "c", Queue: spec, ResumeAfter: 2 * time.Second},
		func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil })
	waitFor(t, 20*time.Second, "c to pull one partition", func() bool { return len(c.w.Partitions()["tally"]) == 1 })
	p := c.w.Partitions()["tally"][0]
	var mine []string
	for _, k := range keys {
		if contract.PartitionOf(k, spec.Partitions) == p {
			mine = append(mine, k)
		}
	}
	if len(mine) == 0 {
		t.Fatalf("none of %v in c's partition %d", keys, p)
	}
	done.waitAll(t, mine, time.Now().Add(30*time.Second))
	for _, k := range mine {
		if rec, _ := readTally(t, b.client, k); len(rec.Pending) != 0 {
			t.Errorf("%s: pending %v; want none", k, rec.Pending)
		}
	}
}
