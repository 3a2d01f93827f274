package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// scheduled picks the status announcing that job id is scheduled.
func scheduled(id string) func(contract.Status) bool {
	return func(st contract.Status) bool { return st.JobID == id && !st.ScheduledFor.IsZero() && st.Error == nil }
}

// TestDelayedEventsStatusShowsScheduled: a delayed event's statuses start
// with one that says it is scheduled (its job id, event and due time, not
// settled, the key as it was), before the one that applies it; a cancelled
// one ends with a settled status with error code cancelled.
func TestDelayedEventsStatusShowsScheduled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	statuses := subscribeKey(t, b.client, "k")

	// A key with no state yet: its initial state, version 0.
	first, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithDelay(2*time.Second), client.WithJobID("d-1"))
	if err != nil {
		t.Fatal(err)
	}
	st := nextStatus(t, statuses, "the first of d-1", func(st contract.Status) bool { return st.JobID == "d-1" })
	if st.ScheduledFor.IsZero() || !st.ScheduledFor.Equal(first.Due) || st.Event != "add" || st.Settled || st.Error != nil ||
		st.From != "open" || st.To != "open" || st.Version != 0 || st.Key != "k" || st.Workflow != "tally" {
		t.Fatalf("first status of d-1: %+v; want it scheduled for %s, the key as it was", st, first.Due)
	}
	if time.Until(first.Due) < 500*time.Millisecond {
		t.Errorf("scheduled status came %s before the event was due: not at once", time.Until(first.Due))
	}
	applied := nextStatus(t, statuses, "of d-1 applied", settledOK("d-1"))
	if !applied.ScheduledFor.IsZero() || applied.Version != 1 {
		t.Fatalf("d-1 applied: %+v", applied)
	}

	// A key with a state: its state and version, not bumped.
	later, err := b.client.Publish(ctx, "tally", "k", add(2), client.WithDelay(time.Hour), client.WithJobID("d-2"))
	if err != nil {
		t.Fatal(err)
	}
	st = nextStatus(t, statuses, "of d-2 scheduled", scheduled("d-2"))
	if !st.ScheduledFor.Equal(later.Due) || st.Version != 1 || st.From != "open" || st.To != "open" || st.Settled {
		t.Fatalf("d-2 scheduled: %+v", st)
	}
	if err := b.client.Cancel(ctx, "tally", "d-2"); err != nil {
		t.Fatal(err)
	}
	st = nextStatus(t, statuses, "of d-2 cancelled", func(st contract.Status) bool { return st.JobID == "d-2" })
	if st.Error == nil || st.Error.Code != contract.CodeCancelled || !st.Settled || !st.ScheduledFor.Equal(later.Due) ||
		st.Version != 1 || st.Event != "add" {
		t.Fatalf("d-2 cancelled: %+v", st)
	}
	// PublishAndWait follows a delayed event past its scheduled status,
	// which it reports as progress.
	var progress []contract.Status
	_, end, err := b.client.PublishAndWait(ctx, "tally", "k", add(3), client.WithDelay(time.Second), client.WithJobID("d-3"),
		client.WithProgress(func(st contract.Status) { progress = append(progress, st) }))
	if err != nil || end.Error != nil || end.Version != 2 {
		t.Fatalf("PublishAndWait of a delayed event: %+v %v", end, err)
	}
	if len(progress) == 0 || !scheduled("d-3")(progress[0]) {
		t.Fatalf("progress %+v: want the scheduled status first", progress)
	}
	rec, d := readTally(t, b.client, "k")
	if rec.Version != 2 || len(d.Seen) != 2 {
		t.Fatalf("version %d, applied %v: the announcements changed the key", rec.Version, d.Seen)
	}
}

// TestDelayedEventsStatusShowsScheduledAcrossRestarts: a delayed event
// stored while a worker runs is announced once, not again by the worker
// that follows a restart; one stored while no worker runs is announced by
// the next to start, once; each is then applied once.
func TestDelayedEventsStatusShowsScheduledAcrossRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.Provision(context.Background(), queue.Spec{Workflow: "tally"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	count := map[string]int{} // scheduled statuses by job id
	all := subscribeKey(t, b.client, "")
	w := startWorker(t, b.url, worker.Config{}, nil)
	if _, err := b.client.Publish(ctx, "tally", "a", add(1), client.WithDelay(4*time.Second), client.WithJobID("before")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, all, "of before scheduled", scheduled("before"))
	count["before"]++
	stopCtx, stop := context.WithTimeout(ctx, 10*time.Second)
	if err := w.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	stop()
	// Stored while no worker runs.
	if _, err := b.client.Publish(ctx, "tally", "b", add(2), client.WithDelay(4*time.Second), client.WithJobID("between")); err != nil {
		t.Fatal(err)
	}
	startWorker(t, b.url, worker.Config{}, nil)
	applied := map[string]int{}
	for applied["before"] == 0 || applied["between"] == 0 {
		st := nextStatus(t, all, "the delayed events applied", func(contract.Status) bool { return true })
		switch {
		case scheduled(st.JobID)(st):
			count[st.JobID]++
			if applied[st.JobID] > 0 {
				t.Errorf("%s announced after it was applied", st.JobID)
			}
		case st.Settled:
			applied[st.JobID]++
		}
	}
	// Whatever is still on its way.
	for {
		select {
		case st := <-all:
			if scheduled(st.JobID)(st) {
				count[st.JobID]++
			}
			continue
		case <-time.After(time.Second): // a negative check: nothing more comes
		}
		break
	}
	if count["before"] != 1 || count["between"] != 1 {
		t.Fatalf("scheduled statuses %v, want one of each", count)
	}
}

// TestDelayedEventsStatusNotForgedByARecord: a record of a delayed event
// written straight into the job bucket (as a producer may) with no
// schedule behind it is not announced; the worker goes on announcing real
// ones.
func TestDelayedEventsStatusNotForgedByARecord(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	statuses := subscribeKey(t, b.client, "k")
	forged, err := json.Marshal(contract.ScheduledJob{ID: "forged", Key: "k", Event: "add", Due: time.Now().Add(time.Hour), State: contract.JobScheduled})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$KV." + contract.JobsBucket("tally") + "." + contract.ScheduledJobKey("forged"))
	m.Data = forged
	if _, err := rawJS(t, b.url).PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithDelay(time.Hour), client.WithJobID("real")); err != nil {
		t.Fatal(err)
	}
	// Records are announced in the order written: the forged one was
	// looked at first.
	st := nextStatus(t, statuses, "of real scheduled", func(contract.Status) bool { return true })
	if st.JobID != "real" {
		t.Fatalf("first status %+v, want the real delayed event's", st)
	}
}
