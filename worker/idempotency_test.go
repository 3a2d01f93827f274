package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// rawJS is a plain NATS client, as a producer in another language would use:
// no Orderly code between it and the stream.
func rawJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// rawPublishID publishes body for key with job id id, as "nats pub" with a
// Nats-Msg-Id header does.
func rawPublishID(t *testing.T, js jetstream.JetStream, key, id, body string) *jetstream.PubAck {
	t.Helper()
	m := nats.NewMsg(contract.EventSubject("tally", key))
	m.Data = []byte(body)
	m.Header.Set(jetstream.MsgIDHeader, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("raw publish %s to %s: %v", id, key, err)
	}
	return ack
}

// rawPublishStored publishes like rawPublishID until the stream stores the
// event rather than drop it as a duplicate: its short duplicate window
// (queue.Spec.DuplicateWindow) has no event to wait on.
func rawPublishStored(t *testing.T, js jetstream.JetStream, key, id, body string) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ack := rawPublishID(t, js, key, id, body)
		if !ack.Duplicate {
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream still drops job %s as a duplicate after 20s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextStatus returns the next status of ch that pick accepts.
func nextStatus(t *testing.T, ch <-chan contract.Status, what string, pick func(contract.Status) bool) contract.Status {
	t.Helper()
	timeout := time.After(20 * time.Second)
	var seen []contract.Status
	for {
		select {
		case st := <-ch:
			if pick(st) {
				return st
			}
			seen = append(seen, st)
		case <-timeout:
			t.Fatalf("no status %s within 20s; saw %+v", what, seen)
		}
	}
}

func settledOK(id string) func(contract.Status) bool {
	return func(st contract.Status) bool { return st.JobID == id && st.Settled && st.Error == nil }
}

func errorCode(id, code string) func(contract.Status) bool {
	return func(st contract.Status) bool { return st.JobID == id && st.Error != nil && st.Error.Code == code }
}

// TestIdempotencyKeySurvivesServerRestart: a restarted server has forgotten
// the stream's duplicate window (a work queue keeps no acknowledged
// message to rebuild it from), yet a job id applied before the restart is
// not applied again, whether it comes back through the client or raw.
func TestIdempotencyKeySurvivesServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.ServerIn(t, dir)
	conn := natstest.Client(t, srv.ClientURL())
	cfg := worker.Config{Queue: worker.QueueConfig{Partitions: 2}}
	w := startWorker(t, srv.ClientURL(), cfg, nil)
	statuses := subscribeKey(t, conn, "k")
	ctx := context.Background()
	first, err := conn.Publish(ctx, "tally", "k", add(1), client.WithJobID("job-x"))
	if err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-x applied", settledOK("job-x"))
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()

	srv = natstest.ServerIn(t, dir)
	conn = natstest.Client(t, srv.ClientURL())
	w = startWorker(t, srv.ClientURL(), cfg, nil)
	statuses = subscribeKey(t, conn, "k")
	ack, err := conn.Publish(ctx, "tally", "k", add(1), client.WithJobID("job-x"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || !ack.Taken || ack.Key != "k" || ack.Sequence != first.Sequence || ack.At.IsZero() {
		t.Fatalf("republished through the client after a restart: %+v, want a duplicate of sequence %d", ack, first.Sequence)
	}
	// Raw: the stream stores it (its window is gone), the worker skips it.
	raw := rawPublishID(t, rawJS(t, srv.ClientURL()), "k", "job-x", `{"event":"add","data":{"n":1}}`)
	if raw.Duplicate {
		t.Fatal("the restarted stream still knew job-x: the test proves nothing")
	}
	st := nextStatus(t, statuses, "duplicate of job-x", errorCode("job-x", contract.CodeDuplicate))
	if st.Version != 1 || st.From != st.To || !strings.Contains(st.Error.Message, fmt.Sprintf("sequence %d", first.Sequence)) {
		t.Fatalf("duplicate status %+v, want version 1 naming sequence %d", st, first.Sequence)
	}
	if _, err := conn.Publish(ctx, "tally", "k", add(2), client.WithJobID("job-y")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-y applied", settledOK("job-y"))
	rec, d := readTally(t, conn, "k")
	if rec.Version != 2 || !slices.Equal(d.Seen, []int{1, 2}) {
		t.Fatalf("version %d, applied %v: want job-x once, then job-y", rec.Version, d.Seen)
	}
	if n := w.Stats().Duplicates; n != 1 {
		t.Fatalf("%d duplicates counted, want 1", n)
	}
}

// TestIdempotencyKeyConflict: an id reused for another key is refused, the
// other key is untouched, and a raw publish of it is dead-lettered.
func TestIdempotencyKeyConflict(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{Partitions: 2, DuplicateWindow: 100 * time.Millisecond}}, nil)
	statuses := subscribeKey(t, b.client, "")
	ctx := context.Background()
	if _, err := b.client.Publish(ctx, "tally", "k1", add(1), client.WithJobID("job-x")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-x applied", settledOK("job-x"))

	for _, ev := range []struct {
		key string
		env contract.Envelope
	}{{"k2", add(1)}, {"k1", contract.Envelope{Event: "close"}}} {
		_, err := b.client.Publish(ctx, "tally", ev.key, ev.env, client.WithJobID("job-x"))
		var conflict *client.IDConflictError
		if !errors.Is(err, client.ErrIDConflict) || !errors.As(err, &conflict) || conflict.Held.Key != "k1" || conflict.Held.Event != "add" {
			t.Fatalf("%s %s with job-x: %v, want ErrIDConflict naming k1", ev.key, ev.env.Event, err)
		}
	}
	if _, err := b.client.State(ctx, "tally", "k2"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("k2 was touched: %v", err)
	}

	// Around the client: the worker is the authority.
	rawPublishStored(t, rawJS(t, b.url), "k2", "job-x", `{"event":"add","data":{"n":2}}`)
	st := nextStatus(t, statuses, "id_conflict of k2", func(st contract.Status) bool {
		return st.Key == "k2" && st.Error != nil && st.Error.Code == contract.CodeIDConflict
	})
	if !strings.Contains(st.Error.Message, "held by key k1 (event add)") {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, 20*time.Second, "the dead letter", func() bool { return w.Stats().DeadLettered == 1 })
	dead, err := b.client.DeadLetters(ctx, "tally", 0)
	if err != nil || len(dead) != 1 {
		t.Fatalf("%d dead letters: %v", len(dead), err)
	}
	if d := dead[0]; d.Key != "k2" || d.JobID != "job-x" || d.Reason != "id_conflict: job id job-x is held by key k1 (event add)" {
		t.Fatalf("dead letter %+v", d)
	}
	if _, err := b.client.State(ctx, "tally", "k2"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("k2 was touched: %v", err)
	}
	if rec, d := readTally(t, b.client, "k1"); rec.Version != 1 || !slices.Equal(d.Seen, []int{1}) {
		t.Fatalf("k1: version %d, applied %v", rec.Version, d.Seen)
	}
}

// TestIdempotencyKeyDuplicate: the same id for the same key and event is a
// duplicate that names the original, however it comes.
func TestIdempotencyKeyDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{Partitions: 2, DuplicateWindow: 100 * time.Millisecond}}, nil)
	statuses := subscribeKey(t, b.client, "k1")
	ctx := context.Background()
	first, err := b.client.Publish(ctx, "tally", "k1", add(1), client.WithJobID("job-x"))
	if err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-x applied", settledOK("job-x"))

	ack, err := b.client.Publish(ctx, "tally", "k1", add(1), client.WithJobID("job-x"))
	if err != nil || !ack.Duplicate || !ack.Taken || ack.Key != "k1" || ack.Sequence != first.Sequence || ack.At.IsZero() {
		t.Fatalf("duplicate: %+v %v, want sequence %d named", ack, err, first.Sequence)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ack, st, err := b.client.PublishAndWait(wctx, "tally", "k1", add(1), client.WithJobID("job-x"))
	if err != nil || !ack.Duplicate || st.To != "open" || st.Version != 1 || !st.Settled {
		t.Fatalf("duplicate, waited: %+v %+v %v", ack, st, err)
	}
	p, err := b.client.PublishAsync("tally", "k1", add(1), client.WithJobID("job-x"))
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := p.Wait(wctx); err != nil || !ack.Duplicate || ack.Key != "k1" {
		t.Fatalf("async duplicate: %+v %v", ack, err)
	}

	rawPublishStored(t, rawJS(t, b.url), "k1", "job-x", `{"event":"add","data":{"n":1}}`)
	dup := nextStatus(t, statuses, "duplicate of job-x", errorCode("job-x", contract.CodeDuplicate))
	if dup.Version != 1 || !dup.Settled || !strings.Contains(dup.Error.Message, fmt.Sprintf("by key k1, sequence %d", first.Sequence)) {
		t.Fatalf("duplicate status %+v", dup)
	}
	if _, err := b.client.Publish(ctx, "tally", "k1", add(2), client.WithJobID("job-y")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-y applied", settledOK("job-y"))
	if rec, d := readTally(t, b.client, "k1"); rec.Version != 2 || !slices.Equal(d.Seen, []int{1, 2}) {
		t.Fatalf("version %d, applied %v", rec.Version, d.Seen)
	}
	// The raw publish was stored and skipped; the async one too, unless it
	// came within the stream's 100ms window, which dropped it.
	if s := w.Stats(); s.Duplicates < 1 || s.Duplicates > 2 || s.DeadLettered != 0 {
		t.Fatalf("stats %+v, want 1 or 2 duplicates", s)
	}
}

// TestIdempotencyKeyAcrossReplicas: two workers pulling the same partitions
// at once get three stored copies of each job id (the stream's short window
// let them in); each id is applied once.
func TestIdempotencyKeyAcrossReplicas(t *testing.T) {
	t.Parallel()
	const keys, copies = 20, 3
	b := setup(t)
	cfg := worker.Config{SharedConsumers: true, Queue: worker.QueueConfig{Partitions: 2, DuplicateWindow: 100 * time.Millisecond}}
	// Provisioned first, so the copies are stored before any worker runs.
	if _, err := b.conn.Provision(context.Background(), worker.QueueSpec(cfg, "tally")); err != nil {
		t.Fatal(err)
	}
	js := rawJS(t, b.url)
	for c := range copies {
		for k := range keys {
			rawPublishStored(t, js, "k"+itoa(k), "job-"+itoa(k), fmt.Sprintf(`{"event":"add","data":{"n":%d}}`, c))
		}
	}
	var (
		mu      sync.Mutex
		applied = map[string]int{}
		dups    = map[string]int{}
		done    = make(chan struct{})
		closed  bool
	)
	sub, err := b.client.Subscribe("tally", "", func(st contract.Status) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case st.Error == nil:
			applied[st.Key]++
		case st.Error.Code == contract.CodeDuplicate:
			dups[st.Key]++
		}
		n := 0
		for _, d := range dups {
			n += d
		}
		if len(applied) == keys && n == keys*(copies-1) && !closed {
			closed = true
			close(done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	w1 := startWorker(t, b.url, cfg, nil)
	w2 := startWorker(t, b.url, cfg, nil)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("within 30s: applied %v, duplicates %v", applied, dups)
	}
	for k := range keys {
		rec, d := readTally(t, b.client, "k"+itoa(k))
		if rec.Version != 1 || len(d.Seen) != 1 {
			t.Fatalf("k%d: version %d, applied %v: want one of its copies applied once", k, rec.Version, d.Seen)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range applied {
		if n != 1 {
			t.Fatalf("%s applied %d times", k, n)
		}
	}
	if n := w1.Stats().Duplicates + w2.Stats().Duplicates; n != keys*(copies-1) {
		t.Fatalf("%d duplicates counted, want %d", n, keys*(copies-1))
	}
}

// TestIdempotencyKeyWindowExpires: the job bucket keeps a claim for the
// dedupe window (its TTL), and after it the id is accepted again.
func TestIdempotencyKeyWindowExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{Partitions: 2, DedupeWindow: 2 * time.Second}}, nil)
	kv, err := rawJS(t, b.url).KeyValue(context.Background(), "orderly_jobs_tally")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if st, err := kv.Status(ctx); err != nil || st.TTL() != 2*time.Second {
		t.Fatalf("job bucket status %+v: %v, want TTL 2s", st, err)
	}
	statuses := subscribeKey(t, b.client, "")
	if _, err := b.client.Publish(ctx, "tally", "k1", add(1), client.WithJobID("job-x")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-x applied", settledOK("job-x"))
	if _, err := b.client.Publish(ctx, "tally", "k2", add(1), client.WithJobID("job-x")); !errors.Is(err, client.ErrIDConflict) {
		t.Fatalf("within the window: %v, want ErrIDConflict", err)
	}
	waitFor(t, 20*time.Second, "the claim of job-x to expire", func() bool {
		_, err := b.client.Job(ctx, "tally", "job-x")
		return errors.Is(err, client.ErrNoJob)
	})
	ack, err := b.client.Publish(ctx, "tally", "k2", add(2), client.WithJobID("job-x"))
	if err != nil || ack.Duplicate {
		t.Fatalf("after the window: %+v %v, want the id accepted", ack, err)
	}
	st := nextStatus(t, statuses, "of job-x applied to k2", settledOK("job-x"))
	if st.Key != "k2" || st.Version != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestIdempotencyKeyUnclaimedIsNeverApplied: while job ids cannot be claimed
// (the job bucket is gone), events wait, in hand, and the worker says so;
// once the bucket is back they are applied, in order, without a restart.
func TestIdempotencyKeyUnclaimedIsNeverApplied(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := worker.Config{Queue: worker.QueueConfig{Partitions: 2}}
	w := startWorker(t, b.url, cfg, nil)
	js := rawJS(t, b.url)
	ctx := context.Background()
	if err := js.DeleteKeyValue(ctx, "orderly_jobs_tally"); err != nil {
		t.Fatal(err)
	}
	statuses := subscribeKey(t, b.client, "k")
	for i, id := range []string{"job-1", "job-2"} {
		if _, err := b.client.Publish(ctx, "tally", "k", add(i+1), client.WithJobID(id)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the claim failure in Problems", func() bool {
		return strings.Contains(strings.Join(w.Problems(), "\n"), "claim job job-")
	})
	select {
	case st := <-statuses:
		t.Fatalf("applied without a claim: %+v", st)
	default:
	}
	if _, err := b.client.State(ctx, "tally", "k"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("state written without a claim: %v", err)
	}
	if _, err := b.conn.Provision(ctx, worker.QueueSpec(cfg, "tally")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of job-2 applied", settledOK("job-2"))
	if rec, d := readTally(t, b.client, "k"); rec.Version != 2 || !slices.Equal(d.Seen, []int{1, 2}) {
		t.Fatalf("version %d, applied %v", rec.Version, d.Seen)
	}
	for _, id := range []string{"job-1", "job-2"} {
		if _, err := b.client.Job(ctx, "tally", id); err != nil {
			t.Fatalf("claim of %s: %v", id, err)
		}
	}
	waitFor(t, 20*time.Second, "Problems to clear", func() bool { return len(w.Problems()) == 0 })
}

// TestMadeJobIDsAreNotClaimed: an id the client made for one publish
// (contract.HeaderJobMade), or that its caller made (WithMadeJobID), costs
// no claim, one given (WithJobID) is claimed, and a
// dead letter of a made id, replayed under its replay id (the same on every
// attempt), is claimed again.
func TestMadeJobIDsAreNotClaimed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	statuses := subscribeKey(t, b.client, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	made, err := b.client.Publish(ctx, "tally", "k", add(1))
	if err != nil {
		t.Fatal(err)
	}
	given, err := b.client.Publish(ctx, "tally", "k", add(2), client.WithJobID("given-1"))
	if err != nil {
		t.Fatal(err)
	}
	mine := client.NewJobID()
	if _, err := b.client.Publish(ctx, "tally", "k", add(4), client.WithMadeJobID(mine)); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of the made id applied", settledOK(made.ID))
	nextStatus(t, statuses, "of given-1 applied", settledOK("given-1"))
	nextStatus(t, statuses, "of the id made by the caller applied", settledOK(mine))
	for _, id := range []string{made.ID, mine} {
		if j, err := b.client.Job(ctx, "tally", id); !errors.Is(err, client.ErrNoJob) {
			t.Fatalf("claim of made id %s: %+v, %v; want none (ErrNoJob)", id, j, err)
		}
	}
	if j, err := b.client.Job(ctx, "tally", given.ID); err != nil || j.Key != "k" || j.Sequence != given.Sequence {
		t.Fatalf("claim of given-1: %+v, %v; want taken by k at sequence %d", j, err, given.Sequence)
	}

	// A dead letter keeps the event's headers, the mark among them; its
	// replay must not.
	dl := nats.NewMsg(contract.DeadLetterSubject("tally", "k"))
	dl.Data = []byte(`{"event":"add","data":{"n":3}}`)
	dl.Header.Set(contract.HeaderJobMade, "true")
	dl.Header.Set(contract.HeaderDLQJobID, "dl-1")
	dl.Header.Set(contract.HeaderDLQReason, "test: put here by the test")
	dl.Header.Set(contract.HeaderDLQSubject, contract.EventSubject("tally", "k"))
	dlAck, err := rawJS(t, b.url).PublishMsg(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := b.client.Replay(ctx, "tally", dlAck.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of the replay applied", settledOK(replayed.ID))
	if j, err := b.client.Job(ctx, "tally", replayed.ID); err != nil || j.Sequence != replayed.Sequence {
		t.Fatalf("claim of replay %s: %+v, %v; want taken at sequence %d", replayed.ID, j, err, replayed.Sequence)
	}
	rec, d := readTally(t, b.client, "k")
	if rec.Version != 4 || !slices.Equal(d.Seen, []int{1, 2, 4, 3}) {
		t.Fatalf("version %d, applied %v; want 1, 2, 4, 3 once each", rec.Version, d.Seen)
	}
}
