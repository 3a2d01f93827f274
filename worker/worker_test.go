package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

func TestPerKeyOrder(t *testing.T) {
	t.Parallel()
	const keys, perKey, publishers = 1000, 20, 4
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	settled := countSettled(t, b.client, "tally", keys*perKey)

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			var pending []*client.PendingPublish
			// Each publisher owns a quarter of the keys and sends each key's
			// events in order, interleaved across its keys.
			for i := range perKey {
				for k := p; k < keys; k += publishers {
					pp, err := b.client.PublishAsync("tally", fmt.Sprintf("k%d", k), add(i))
					if err != nil {
						t.Error(err)
						return
					}
					pending = append(pending, pp)
				}
				ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
				for _, pp := range pending {
					if _, err := pp.Wait(ctx); err != nil {
						t.Error(err)
					}
				}
				cancel()
				pending = pending[:0]
			}
		})
	}
	// 20,000 events take 50s under -race on two loaded cores; alone on an
	// idle machine the whole test takes 20s. The worker package's other
	// tests (clusters among them) run beside it.
	natstest.Wait(t, &wg, 5*time.Minute, "the publishers to get every event stored")
	settled.wait(t, 3*time.Minute)

	want := make([]int, perKey)
	for i := range want {
		want[i] = i
	}
	for k := range keys {
		rec, d := readTally(t, b.client, fmt.Sprintf("k%d", k))
		if !slices.Equal(d.Seen, want) || rec.Version != perKey || rec.State != "open" {
			t.Fatalf("k%d: version %d state %s applied %v", k, rec.Version, rec.State, d.Seen)
		}
	}
}

func TestRejectionLeavesStateAndNextEventProceeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	for _, ev := range []contract.Envelope{
		add(1),
		{Event: "worked"},        // internal: clients may not send it
		{Event: "no_such_event"}, // unknown
		{Event: "add", Data: []byte(`{"n":"x"}`)}, // refused by Update
		add(2),
		{Event: "close"},
		add(3), // closed is terminal
	} {
		if _, err := b.client.Publish(ctx, "tally", "k", ev); err != nil {
			t.Fatal(err)
		}
	}
	wantCodes := []string{"", contract.CodeInternalEvent, contract.CodeUnknownEvent, contract.CodeInvalidData, "", "", contract.CodeInvalidTransition}
	for i, code := range wantCodes {
		s := natstest.Recv(t, statuses, natstest.Timeout, fmt.Sprintf("status %d", i))
		got := ""
		if s.Error != nil {
			got = s.Error.Code
		}
		if got != code || !s.Settled {
			t.Fatalf("status %d: %+v, want code %q", i, s, code)
		}
		if code != "" && s.From != s.To {
			t.Fatalf("rejection moved state: %+v", s)
		}
	}
	rec, d := readTally(t, b.client, "k")
	if rec.State != "closed" || rec.Version != 3 || !slices.Equal(d.Seen, []int{1, 2}) {
		t.Fatalf("state %+v data %v", rec, d)
	}
}

func TestPoisonGoesToDeadLettersAndStallsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{}, nil)
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	if err := rawPublish(b.conn, "tally", "k", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: "no_such_event"}); err != nil {
		t.Fatal(err)
	}
	// A key no state can be stored under, sent around the client's checks.
	if err := rawPublish(b.conn, "tally", "a:b", []byte(`{"event":"add","data":{"n":1}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "k", add(7)); err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{contract.CodeMalformed, contract.CodeUnknownEvent} {
		if s := natstest.Recv(t, statuses, natstest.Timeout, "the status "+code); s.Error == nil || s.Error.Code != code {
			t.Fatalf("status %+v, want %s", s, code)
		}
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the next event"); s.Error != nil || s.Version != 1 {
		t.Fatalf("the next event of the key: %+v", s)
	}
	waitFor(t, 10*time.Second, "three dead letters", func() bool { return w.Stats().DeadLettered == 3 })
	dead, err := b.client.DeadLetters(ctx, "tally", 0)
	if err != nil || len(dead) != 3 {
		t.Fatalf("%d dead letters: %v", len(dead), err)
	}
	reasons := map[string]string{}
	var malformed uint64
	for _, d := range dead {
		kind := strings.SplitN(d.Reason, ":", 2)[0]
		reasons[d.Key+" "+kind] = d.Reason
		if kind == contract.CodeMalformed {
			malformed = d.Sequence
		}
	}
	for _, want := range []string{"k malformed", "k unknown_event", "a:b invalid_key"} {
		if reasons[want] == "" {
			t.Errorf("no dead letter %q among %v", want, reasons)
		}
	}
	// Nothing is left in the stream to be redelivered.
	waitFor(t, 10*time.Second, "the stream to empty", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
	// Replay resubmits it: still malformed, it comes back to the dead letters.
	if _, err := b.client.Replay(ctx, "tally", malformed); err != nil {
		t.Fatal(err)
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the replay"); s.Error == nil || s.Error.Code != contract.CodeMalformed {
		t.Fatalf("replayed: %+v", s)
	}
	waitFor(t, 10*time.Second, "the replay to be dead-lettered again", func() bool { return w.Stats().DeadLettered == 4 })
}

func TestSlowWorkAfterAckAndOutcomeCarriesJobID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	calls := make(chan worker.ActionCall[tally], 4)
	startWorker(t, b.url, worker.Config{}, func(ctx context.Context, c worker.ActionCall[tally]) (any, error) {
		calls <- c
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	ack, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: "work"}, client.WithJobID("job-w"))
	if err != nil {
		t.Fatal(err)
	}
	// Sent while the work is pending: applied only once the key settles.
	if _, err := b.client.Publish(ctx, "tally", "k", add(1)); err != nil {
		t.Fatal(err)
	}
	c := natstest.Recv(t, calls, natstest.Timeout, "the action's call")
	if c.JobID != "job-w" || c.IdempotencyKey != "k/1/slow" || c.Attempt != 1 {
		t.Fatalf("call %+v", c)
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of work"); s.JobID != ack.ID || s.Settled || s.To != "open" {
		t.Fatalf("transition status %+v", s)
	}
	// A key waiting on slow work does not hold up other keys.
	other := subscribeKey(t, b.client, "other")
	if _, err := b.client.Publish(ctx, "tally", "other", add(5)); err != nil {
		t.Fatal(err)
	}
	if s := natstest.Recv(t, other, natstest.Timeout, "the other key's status"); s.Error != nil || s.Version != 1 {
		t.Fatalf("other key: %+v", s)
	}
	// The event is acknowledged before the slow work ends.
	waitFor(t, 5*time.Second, "work event acknowledged", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 1
	})
	close(release)
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of worked"); s.JobID != "job-w" || !s.Settled || s.Event != "worked" || s.Action != "slow" {
		t.Fatalf("outcome status %+v", s)
	}
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the deferred add"); s.Event != "add" || s.Version != 3 {
		t.Fatalf("deferred event status %+v", s)
	}
}

func TestActionRetriesThenFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{ActionRetries: 2, RetryBackoff: time.Millisecond}, func(context.Context, worker.ActionCall[tally]) (any, error) {
		return nil, fmt.Errorf("gateway down")
	})
	statuses := subscribeKey(t, b.client, "k")
	if _, err := b.client.Publish(context.Background(), "tally", "k", contract.Envelope{Event: "work"}, client.WithJobID("j")); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, statuses, natstest.Timeout, "the status of work")
	for attempt := 1; attempt <= 2; attempt++ {
		s := natstest.Recv(t, statuses, natstest.Timeout, "a retrying status")
		if s.Error == nil || s.Error.Code != contract.CodeRetrying || s.Attempt != attempt || s.JobID != "j" || s.Settled {
			t.Fatalf("retry status %+v", s)
		}
	}
	s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the failure")
	if s.Error == nil || s.Error.Code != contract.CodeActionFailed || s.To != "closed" || !s.Settled || s.JobID != "j" {
		t.Fatalf("final status %+v", s)
	}
}

func TestCompareAndSetWithTwoActorsForOneKey(t *testing.T) {
	t.Parallel()
	const events = 300
	b := setup(t)
	// Two workers on one partition share its consumer, so events of the
	// same key reach two actors at once: only compare-and-set keeps them
	// from overwriting each other.
	cfg := worker.Config{Queue: worker.QueueConfig{Partitions: 1}, Batch: 4, MaxInFlight: 8, GroupCommit: 2, SharedConsumers: true}
	startWorker(t, b.url, cfg, nil)
	startWorker(t, b.url, cfg, nil)
	settled := countSettled(t, b.client, "tally", events)
	ctx := context.Background()
	for i := range events {
		if _, err := b.client.PublishAsync("tally", "hot", add(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.conn.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	settled.wait(t, 60*time.Second)
	rec, d := readTally(t, b.client, "hot")
	seen := slices.Sorted(slices.Values(d.Seen))
	if rec.Version != events || len(seen) != events || slices.Compact(seen)[events-1] != events-1 {
		t.Fatalf("version %d, %d applied, want %d each exactly once", rec.Version, len(d.Seen), events)
	}
}

func TestBackpressureBoundsMemory(t *testing.T) {
	t.Parallel()
	const events = 10_000
	b := setup(t)
	gate := make(chan struct{})
	var closeGate sync.Once
	defer closeGate.Do(func() { close(gate) })
	cfg := worker.Config{Queue: worker.QueueConfig{Partitions: 2}, Batch: 16, MaxInFlight: 32, Mailbox: 8, Concurrency: 2}
	ctx := context.Background()
	// Fill the stream first, so 10,000 events wait while the worker runs.
	if _, err := b.conn.Provision(ctx, queue.Spec{Workflow: "tally", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var window []*client.PendingPublish
	for i := range events {
		ev := add(i)
		if i < 10 {
			ev = contract.Envelope{Event: "work"} // every key waits on slow work
		}
		p, err := b.client.PublishAsync("tally", fmt.Sprintf("k%d", i%10), ev)
		if err != nil {
			t.Fatal(err)
		}
		window = append(window, p)
		if len(window) == 1000 || i == events-1 { // stay within the client's async window
			wctx, cancel := context.WithTimeout(ctx, natstest.Timeout)
			for _, p := range window {
				if _, err := p.Wait(wctx); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			window = window[:0]
		}
	}
	w := startWorker(t, b.url, cfg, func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return nil, nil
	})
	// Work is pending on every key: the mailboxes fill and pulling stops.
	waitFor(t, 10*time.Second, "a mailbox to fill", func() bool { return w.Stats().Queued >= cfg.Mailbox })
	for range 20 {
		s := w.Stats()
		if s.InFlight > 2*cfg.MaxInFlight || s.Queued > 10*(cfg.Mailbox+cfg.GroupCommit) {
			t.Fatalf("held %d in flight, %d queued: past the bounds", s.InFlight, s.Queued)
		}
		time.Sleep(5 * time.Millisecond) // sampling, not synchronisation
	}
	info, err := b.conn.Info(ctx, "tally")
	if err != nil || info.Pending < events-2*uint64(cfg.MaxInFlight) {
		t.Fatalf("stream holds %d (%v): events were pulled past the bound", info.Pending, err)
	}
	closeGate.Do(func() { close(gate) })
	waitFor(t, 60*time.Second, "stream to drain", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
}

func TestEventsWaitingBehindSlowWorkOutliveTheirAckWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	// An ack wait short enough for the test to outlast several, long enough
	// that a loaded machine still sends the work-in-progress notices in time.
	cfg := worker.Config{Queue: worker.QueueConfig{AckWait: time.Second, MaxDeliver: 2}}
	w := startWorker(t, b.url, cfg, func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	if _, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: "work"}); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, statuses, natstest.Timeout, "the status of work")
	if _, err := b.client.Publish(ctx, "tally", "k", add(1)); err != nil {
		t.Fatal(err)
	}
	// Held five ack waits behind the slow work, past MaxDeliver had it been
	// redelivered each time.
	time.Sleep(5 * time.Second) // the scenario is the passing of time itself
	close(release)
	natstest.Recv(t, statuses, natstest.Timeout, "the status of worked")
	if s := natstest.Recv(t, statuses, natstest.Timeout, "the status of the waiting add"); s.Event != "add" || s.Error != nil {
		t.Fatalf("waiting event: %+v", s)
	}
	// Kept in hand, it was never delivered again.
	if s := w.Stats(); s.Duplicates != 0 || s.DeadLettered != 0 {
		t.Fatalf("%d redelivered, %d dead-lettered", s.Duplicates, s.DeadLettered)
	}
}

// A worker whose consumption has stalled (every partition blocked behind a
// full mailbox) reports itself unready once no pull has completed for 15 s
// of its clock, and ready again once pulls complete.
func TestReadinessReportsStalledConsumption(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ahead atomic.Int64 // how far the worker's clock runs ahead of the wall
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	cfg := worker.Config{
		Queue:   worker.QueueConfig{Partitions: 1},
		Mailbox: 1,
		Now:     func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) },
	}
	w := startWorker(t, b.url, cfg, func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	if !w.Ready() {
		t.Fatal("not ready after start")
	}
	ctx := context.Background()
	// Slow work holds the key; one event fills its mailbox, and the next
	// blocks the only partition's puller.
	for _, ev := range []contract.Envelope{{Event: "work"}, add(1), add(2)} {
		if _, err := b.client.Publish(ctx, "tally", "k", ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the puller to block on the full mailbox", func() bool {
		s := w.Stats()
		return s.Queued == 1 && s.InFlight == 2
	})
	ahead.Store(int64(16 * time.Second))
	if w.Ready() {
		t.Fatal("ready although no pull completed for 16 s")
	}
	releaseOnce.Do(func() { close(release) })
	waitFor(t, 10*time.Second, "readiness once pulls complete again", w.Ready)
	waitFor(t, 10*time.Second, "the waiting events to be applied", func() bool {
		rec, err := b.client.State(ctx, "tally", "k")
		return err == nil && rec.Version == 4
	})
}
