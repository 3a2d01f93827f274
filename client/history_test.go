package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// publish publishes statuses of key with versions from..to, as the worker
// does (a plain NATS publish the history stream captures).
func publish(t *testing.T, c *queue.Conn, key string, from, to uint64) {
	t.Helper()
	for v := from; v <= to; v++ {
		st := contract.Status{Workflow: "order", Key: key, JobID: fmt.Sprintf("%s-%d", key, v), Event: "e", From: "s", To: "s", Version: v, At: time.Now().UTC(), Settled: true}
		if err := c.PublishStatus(&st); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
}

// history waits until key's history holds n statuses, and returns them.
func history(t *testing.T, c *client.Client, key string, n int) []contract.Status {
	t.Helper()
	var got []contract.Status
	deadline := time.Now().Add(natstest.Timeout)
	for {
		var err error
		if got, err = c.History(context.Background(), "order", key); err != nil {
			t.Fatal(err)
		}
		if len(got) == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the stream stores what was published
	}
	if len(got) != n {
		t.Fatalf("history of %s: %d statuses, want %d: %+v", key, len(got), n, got)
	}
	return got
}

func versions(sts []contract.Status) []uint64 {
	var v []uint64
	for _, st := range sts {
		v = append(v, st.Version)
	}
	return v
}

// TestHistoryListsAKeysStatusesOldestFirst: History returns the statuses of
// the key asked for, oldest first, and none of another key; a key with
// none gives an empty history; a workflow without a history stream gives
// ErrNoHistory; a bad key is refused before anything is sent.
func TestHistoryListsAKeysStatusesOldestFirst(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	publish(t, b.conn, "k1", 1, 3)
	publish(t, b.conn, "k2", 1, 2)
	publish(t, b.conn, "k1", 4, 5)
	got := history(t, b.client, "k1", 5)
	for i, st := range got {
		if st.Key != "k1" || st.Version != uint64(i+1) || st.JobID != fmt.Sprintf("k1-%d", i+1) {
			t.Fatalf("history of k1: %d: %+v", i, st)
		}
	}
	if none, err := b.client.History(context.Background(), "order", "nobody"); err != nil || len(none) != 0 {
		t.Fatalf("history of an unknown key: %+v, %v", none, err)
	}
	if _, err := b.client.History(context.Background(), "order", "a.b"); !errors.Is(err, contract.ErrInvalidKey) {
		t.Fatalf("bad key: %v", err)
	}

	off := setup(t, queue.Spec{HistoryPerKey: -1})
	if _, err := off.client.History(context.Background(), "order", "k1"); !errors.Is(err, client.ErrNoHistory) {
		t.Fatalf("no history stream: %v, want ErrNoHistory", err)
	}
	if err := off.client.Watch(context.Background(), "order", "", func(contract.Status) {}, client.WatchAll()); !errors.Is(err, client.ErrNoHistory) {
		t.Fatalf("watch --all without a history stream: %v, want ErrNoHistory", err)
	}
}

// TestHistoryBoundedPerKeyAndByAge: the history keeps the newest
// HistoryPerKey statuses of each key, and drops them past HistoryMaxAge;
// provisioning again with other limits updates the stream in place.
func TestHistoryBoundedPerKeyAndByAge(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{HistoryPerKey: 3})
	publish(t, b.conn, "k1", 1, 10)
	publish(t, b.conn, "k2", 1, 2)
	if v := versions(history(t, b.client, "k1", 3)); fmt.Sprint(v) != "[8 9 10]" {
		t.Fatalf("history of k1 with 3 per key: versions %v, want [8 9 10]", v)
	}
	history(t, b.client, "k2", 2)

	// Same stream, now 2 per key and 1s: the update trims at once, and age
	// removes the rest.
	p, err := b.conn.Provision(context.Background(), queue.Spec{Workflow: "order", HistoryPerKey: 2, HistoryMaxAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.Updated) != "[stream ORDERLY_HISTORY_ORDER]" || len(p.Created) > 0 {
		t.Fatalf("provisioning new history limits: created %v, updated %v", p.Created, p.Updated)
	}
	history(t, b.client, "k1", 0) // past 1s, within the wait's bound
	publish(t, b.conn, "k1", 11, 13)
	if v := versions(history(t, b.client, "k1", 2)); fmt.Sprint(v) != "[12 13]" {
		t.Fatalf("history of k1 with 2 per key: versions %v, want [12 13]", v)
	}
	history(t, b.client, "k1", 0)

	// No history: the stream goes.
	p, err = b.conn.Provision(context.Background(), queue.Spec{Workflow: "order", HistoryPerKey: -1})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.Deleted) != "[stream ORDERLY_HISTORY_ORDER]" {
		t.Fatalf("provisioning with no history: deleted %v", p.Deleted)
	}
	if _, err := b.client.History(context.Background(), "order", "k1"); !errors.Is(err, client.ErrNoHistory) {
		t.Fatalf("after history is turned off: %v, want ErrNoHistory", err)
	}
}

// watcher runs Watch in the background and hands over what it saw.
type watcher struct {
	mu   sync.Mutex
	got  []contract.Status
	more chan struct{} // a token per status
	done chan error
}

func watch(t *testing.T, c *client.Client, key string, opts ...client.WatchOption) (*watcher, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{more: make(chan struct{}, 100_000), done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		w.done <- c.Watch(ctx, "order", key, func(st contract.Status) {
			w.mu.Lock()
			w.got = append(w.got, st)
			w.mu.Unlock()
			w.more <- struct{}{}
		}, append(opts, client.WatchReady(func() { close(ready) }))...)
	}()
	select {
	case <-ready:
	case err := <-w.done:
		cancel()
		t.Fatalf("watch ended before it was ready: %v", err)
	case <-time.After(natstest.Timeout):
		cancel()
		t.Fatalf("watch not ready within %s", natstest.Timeout)
	}
	t.Cleanup(func() {
		cancel()
		if err := natstest.Recv(t, w.done, natstest.Timeout, "the watch to end"); err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	return w, cancel
}

// wait waits for n statuses and returns all seen.
func (w *watcher) wait(t *testing.T, n int) []contract.Status {
	t.Helper()
	timeout := time.After(natstest.Timeout)
	for {
		w.mu.Lock()
		got := append([]contract.Status(nil), w.got...)
		w.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-w.more:
		case <-timeout:
			t.Fatalf("watched %d statuses within %s, want %d: %v", len(got), natstest.Timeout, n, versions(got))
		}
	}
}

// exactlyOnce checks that sts are versions 1..n of key, in order.
func exactlyOnce(t *testing.T, sts []contract.Status, key string, n int) {
	t.Helper()
	if len(sts) != n {
		t.Fatalf("%d statuses of %s, want %d: %v", len(sts), key, n, versions(sts))
	}
	for i, st := range sts {
		if st.Key != key || st.Version != uint64(i+1) {
			t.Fatalf("status %d of %s: key %s version %d, want version %d (all: %v)", i, key, st.Key, st.Version, i+1, versions(sts))
		}
	}
}

// TestWatchAllReplaysThenFollowsWithNoGapOrRepeat: a watch with WatchAll
// started while statuses are being published gets every status of the
// key, stored before it started and published after, each once, in order.
func TestWatchAllReplaysThenFollowsWithNoGapOrRepeat(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{HistoryPerKey: 1000})
	const n = 600
	publish(t, b.conn, "k1", 1, 100)
	var sent sync.WaitGroup
	sent.Go(func() { publish(t, b.conn, "k1", 101, n) })
	w, _ := watch(t, b.client, "k1", client.WatchAll())
	natstest.Wait(t, &sent, natstest.Timeout, "the publisher")
	exactlyOnce(t, w.wait(t, n), "k1", n)
	// Nothing more comes.
	time.Sleep(200 * time.Millisecond)
	exactlyOnce(t, w.wait(t, n), "k1", n)
}

// TestWatchSinceReplaysTheRecentStatusesOnly: WatchSince replays what was
// stored within the duration, not what is older, and then follows.
func TestWatchSinceReplaysTheRecentStatusesOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	publish(t, b.conn, "k1", 1, 2)
	history(t, b.client, "k1", 2)
	time.Sleep(2 * time.Second) // the only way for stored statuses to grow old
	publish(t, b.conn, "k1", 3, 4)
	w, _ := watch(t, b.client, "", client.WatchSince(time.Second))
	publish(t, b.conn, "k1", 5, 5)
	if v := versions(w.wait(t, 3)); fmt.Sprint(v) != "[3 4 5]" {
		t.Fatalf("watch since 1s: versions %v, want [3 4 5]", v)
	}
	if err := b.client.Watch(context.Background(), "order", "", func(contract.Status) {}, client.WatchSince(-time.Second)); !errors.Is(err, client.ErrInvalidWatch) {
		t.Fatalf("negative since: %v, want ErrInvalidWatch", err)
	}
}

// TestWatchResumesAfterItsConnectionIsCut: a watcher whose connection is
// cut (through a TCP proxy) while statuses go on being published gets, once
// it has reconnected, every one of them, each once, in order: plain Watch,
// which replays nothing, as well as WatchAll.
func TestWatchResumesAfterItsConnectionIsCut(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{HistoryPerKey: 1000})
	px := natstest.NewProxy(t, b.url)
	reconnected := make(chan struct{}, 10)
	watcherClient, err := client.Connect(px.URL(), client.Config{}, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watcherClient.Close() })

	plain, _ := watch(t, watcherClient, "k1")
	publish(t, b.conn, "k1", 1, 50)
	plain.wait(t, 50)
	all, _ := watch(t, watcherClient, "k1", client.WatchAll())
	all.wait(t, 50)

	px.Cut()
	publish(t, b.conn, "k1", 51, 150) // while the watcher is away
	natstest.Recv(t, reconnected, natstest.Timeout, "the watcher's connection to come back")
	publish(t, b.conn, "k1", 151, 200)
	exactlyOnce(t, plain.wait(t, 200), "k1", 200)
	exactlyOnce(t, all.wait(t, 200), "k1", 200)
}

// TestPublishAndWaitFindsAJobSettledBeforeItSubscribed: publishing again
// with the id of a job that has already settled (rejected, here) returns
// that job's own settled status from the key's history, error and all,
// not the key's current state.
func TestPublishAndWaitFindsAJobSettledBeforeItSubscribed(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	ev := contract.Envelope{Event: "confirm_payment"}
	ack, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil {
		t.Fatal(err)
	}
	// What a worker does with it: claim, commit, publish.
	jobs, err := b.conn.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if r := jobs.Claim(ctx, []contract.Job{{ID: "job-1", Key: "k1", Event: ev.Event, Sequence: ack.Sequence, At: time.Now()}}); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	bucket, err := b.conn.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Put(ctx, "k1", fmt.Appendf(nil, `{"state":"idle","version":3,"applied":[%d]}`, ack.Sequence), 0); err != nil {
		t.Fatal(err)
	}
	rejected := contract.Status{Workflow: "order", Key: "k1", JobID: "job-1", Event: ev.Event, From: "idle", To: "idle", Version: 3,
		At: time.Now().UTC(), Settled: true, Error: &contract.StatusError{Code: contract.CodeInvalidTransition, Message: "idle does not take confirm_payment"}}
	if err := b.conn.PublishStatus(&rejected); err != nil {
		t.Fatal(err)
	}
	history(t, b.client, "k1", 1)

	ack, st, err := b.client.PublishAndWait(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || !ack.Taken {
		t.Errorf("ack %+v, want a duplicate of a taken job", ack)
	}
	if st.JobID != "job-1" || !st.Settled || st.Error == nil || st.Error.Code != contract.CodeInvalidTransition {
		t.Fatalf("status %+v, want the job's own rejection", st)
	}
	// Its consumers of the history are gone with it.
	js, err := jetstream.New(b.conn.NATS())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, contract.HistoryStream("order"))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Consumers; n != 0 {
		t.Fatalf("%d consumers of the history stream left behind", n)
	}
}
