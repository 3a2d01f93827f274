package worker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// calls counts the runs of the slow action per key, with when each began.
type calls struct {
	mu    sync.Mutex
	byKey map[string][]worker.ActionCall[tally]
	at    map[string][]time.Time
}

func newCalls() *calls {
	return &calls{byKey: map[string][]worker.ActionCall[tally]{}, at: map[string][]time.Time{}}
}

func (c *calls) note(call worker.ActionCall[tally]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKey[call.Key] = append(c.byKey[call.Key], call)
	c.at[call.Key] = append(c.at[call.Key], time.Now())
}

func (c *calls) of(key string) ([]worker.ActionCall[tally], []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.byKey[key]), slices.Clone(c.at[key])
}

func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cs := range c.byKey {
		n += len(cs)
	}
	return n
}

// worked follows the "worked" statuses of workflow tally: the keys whose
// slow work has been fed back and committed.
type worked struct {
	mu   sync.Mutex
	keys map[string]time.Time
	more chan struct{}
}

func watchWorked(t *testing.T, producer *client.Client) *worked {
	t.Helper()
	w := &worked{keys: map[string]time.Time{}, more: make(chan struct{}, 1)}
	sub, err := producer.Subscribe("tally", "", func(s contract.Status) {
		if s.Event != "worked" || s.Error != nil {
			return
		}
		w.mu.Lock()
		if _, ok := w.keys[s.Key]; !ok {
			w.keys[s.Key] = time.Now()
		}
		w.mu.Unlock()
		select {
		case w.more <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *worked) snapshot() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[string]time.Time, len(w.keys))
	for k, v := range w.keys {
		m[k] = v
	}
	return m
}

// waitAll waits until every key has worked, or fails at deadline saying
// which have not.
func (w *worked) waitAll(t *testing.T, keys []string, deadline time.Time) {
	t.Helper()
	for {
		done := w.snapshot()
		var missing []string
		for _, k := range keys {
			if _, ok := done[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if len(missing) > 10 {
				missing = append(missing[:10], "...")
			}
			t.Fatalf("%d of %d keys have not worked by the deadline: %v", len(missing), len(keys), missing)
		}
		select {
		case <-w.more:
		case <-time.After(wait):
		}
	}
}

func publishWork(t *testing.T, producer *client.Client, keys []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ps []*client.PendingPublish
	for _, k := range keys {
		p, err := producer.PublishAsync("tally", k, contract.Envelope{Event: "work"})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return keys
}

// TestRetryBackoffHoldsNoSlot: with one slot, a key waiting out a 4s
// RetryAfter does not hold up another key's action.
func TestRetryBackoffHoldsNoSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan time.Time, 1)
	cs := newCalls()
	startWorker(t, b.url, worker.Config{Concurrency: 1}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		cs.note(c)
		if c.Key == "busy" {
			if c.Attempt == 1 {
				return nil, worker.RetryAfter(4*time.Second, errors.New("gateway busy"))
			}
			return nil, nil
		}
		started <- time.Now()
		return nil, nil
	})
	busy := subscribeKey(t, b.client, "busy")
	ctx := context.Background()
	if _, err := b.client.Publish(ctx, "tally", "busy", contract.Envelope{Event: "work"}); err != nil {
		t.Fatal(err)
	}
	var retrying time.Time
	for retrying.IsZero() {
		select {
		case s := <-busy:
			if s.Error != nil && s.Error.Code == contract.CodeRetrying {
				retrying = time.Now()
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no retrying status for busy")
		}
	}

	// Now busy backs off for 4s; another key's work must start at once.
	statusAt := make(chan time.Time, 1)
	sub, err := b.client.Subscribe("tally", "other", func(s contract.Status) {
		if s.Event == "work" {
			statusAt <- time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if _, err := b.client.Publish(ctx, "tally", "other", contract.Envelope{Event: "work"}); err != nil {
		t.Fatal(err)
	}
	var seen, began time.Time
	for seen.IsZero() || began.IsZero() {
		select {
		case seen = <-statusAt:
		case began = <-started:
		case <-time.After(10 * time.Second):
			t.Fatalf("other: status at %v, action began at %v", seen, began)
		}
	}
	if d := began.Sub(seen); d > 100*time.Millisecond {
		t.Fatalf("other's action began %s after its status, behind a key in backoff", d)
	}
	t.Logf("other's action began %s after its status was received", began.Sub(seen))

	// The backoff itself is kept: busy's second attempt comes after 4s.
	waitFor(t, 15*time.Second, "busy's second attempt", func() bool {
		c, _ := cs.of("busy")
		return len(c) == 2
	})
	_, at := cs.of("busy")
	if d := at[1].Sub(at[0]); d < 3500*time.Millisecond {
		t.Fatalf("second attempt %s after the first, asked for 4s", d)
	}
}

// TestRetryAttemptIsKeptAcrossRestart: a failed attempt is noted in the
// key's state (attempt, when the next is due, the error), and a worker that
// resumes the action goes on with the next attempt, at its time, rather
// than starting the retry budget again.
func TestRetryAttemptIsKeptAcrossRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w1 := startWorker(t, b.url, worker.Config{}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		return nil, worker.RetryAfter(3*time.Second, errors.New("gateway busy"))
	})
	ctx := context.Background()
	before := time.Now()
	if _, err := b.client.Publish(ctx, "tally", "k", contract.Envelope{Event: "work"}); err != nil {
		t.Fatal(err)
	}
	var rec contract.StateRecord
	waitFor(t, 10*time.Second, "the failed attempt noted in the state", func() bool {
		var err error
		rec, err = b.client.State(ctx, "tally", "k")
		return err == nil && len(rec.Pending) == 1 && rec.Pending[0].Attempt == 2
	})
	p := rec.Pending[0]
	if p.Action != "slow" || p.Since.Before(before.Add(-time.Second)) || !strings.Contains(p.LastError, "gateway busy") ||
		p.NextAttemptAt.Before(p.Since.Add(2*time.Second)) {
		t.Fatalf("pending %+v", p)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w1.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}

	cs := newCalls()
	startWorker(t, b.url, worker.Config{}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		cs.note(c)
		return nil, nil
	})
	waitFor(t, 15*time.Second, "the action resumed", func() bool { c, _ := cs.of("k"); return len(c) > 0 })
	c, at := cs.of("k")
	if c[0].Attempt != 2 {
		t.Fatalf("resumed as attempt %d, want 2", c[0].Attempt)
	}
	if at[0].Before(p.NextAttemptAt.Add(-50 * time.Millisecond)) {
		t.Fatalf("resumed at %s, before the next attempt was due (%s)", at[0].Format(time.RFC3339Nano), p.NextAttemptAt.Format(time.RFC3339Nano))
	}
}

// TestWorkCutOffByGracefulStopResumes: a graceful stop with more queued
// actions than slots, and slow work still running when the shutdown timeout
// ends, leaves every one of them to resume at once: the next worker
// finishes them all within 5s of its start, and runs none that had finished
// again.
func TestWorkCutOffByGracefulStopResumes(t *testing.T) {
	t.Parallel()
	const n, slots, quick = 200, 16, 20
	b := setup(t)
	keys := keyNames("g", n)
	done := watchWorked(t, b.client)
	first := newCalls()
	w1 := startWorker(t, b.url, worker.Config{Concurrency: slots, ShutdownTimeout: time.Second}, func(ctx context.Context, c worker.ActionCall[tally]) (any, error) {
		first.note(c)
		d := 3 * time.Second // longer than the shutdown timeout
		if first.total() <= quick {
			d = 50 * time.Millisecond
		}
		select {
		case <-time.After(d):
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	publishWork(t, b.client, keys)
	waitFor(t, 15*time.Second, "quick work done and every slot busy", func() bool {
		return len(done.snapshot()) >= quick && w1.Stats().ActionsRunning == slots
	})
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	began := time.Now()
	if err := w1.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("stop took %s with a 1s shutdown timeout", d)
	}
	finished := done.snapshot()
	if len(finished) >= n/2 {
		t.Fatalf("%d of %d keys finished before the stop: too few left to test", len(finished), n)
	}

	second := newCalls()
	start := time.Now()
	startWorker(t, b.url, worker.Config{}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		second.note(c)
		return nil, nil
	})
	done.waitAll(t, keys, start.Add(5*time.Second))
	t.Logf("%d keys finished before the stop (%d actions begun); the rest within %s of the next start",
		len(finished), first.total(), time.Since(start).Round(time.Millisecond))
	for k := range finished {
		if c, _ := second.of(k); len(c) > 0 {
			t.Errorf("%s: its work had finished before the stop, and ran again", k)
		}
	}
	for _, k := range keys {
		if rec, _ := readTally(t, b.client, k); rec.Version != 2 || len(rec.Pending) != 0 {
			t.Errorf("%s: version %d, pending %v", k, rec.Version, rec.Pending)
		}
	}
}

// replica is a worker of the takeover test with its own connection, so
// that the test can cut it off as a crash would.
type replica struct {
	w       *worker.Worker
	nc      *nats.Conn
	crashed bool
}

func startReplica(t *testing.T, url string, cfg worker.Config, slow worker.ActionFunc[tally]) *replica {
	t.Helper()
	nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("ORDERLY_TEST_LOG") != "" {
		l := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(zerolog.DebugLevel).
			With().Timestamp().Str("worker", cfg.ID).Logger()
		cfg.Logger = &l
	}
	w, err := worker.New(nc, cfg, tallyWorkflow(t, slow))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := &replica{w: w, nc: nc}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil && !r.crashed {
			t.Errorf("stop: %v", err)
		}
		nc.Close()
	})
	return r
}

// crash cuts the replica off: its connection goes first, so nothing it
// does while stopping reaches the server, as after kill -9.
func (r *replica) crash() {
	r.crashed = true
	r.nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = r.w.Stop(ctx)
}

// TestWorkCutOffByTakeoverResumes: a replica dies with actions running and
// more queued than its slots; the replica that takes its partitions over
// finishes them all within 10s of the takeover, and runs none that had
// finished again.
func TestWorkCutOffByTakeoverResumes(t *testing.T) {
	t.Parallel()
	const n = 60
	b := setup(t)
	spec := worker.QueueConfig{Partitions: 8, MemberTTL: 2 * time.Second, PinnedTTL: 2 * time.Second}
	keys := keyNames("t", n)
	done := watchWorked(t, b.client)
	// a finishes the work of even keys and hangs on that of odd ones.
	a := startReplica(t, b.url, worker.Config{ID: "a", Queue: spec, Concurrency: 4}, func(ctx context.Context, c worker.ActionCall[tally]) (any, error) {
		var i int
		_, _ = fmt.Sscanf(c.Key, "t-%d", &i)
		if i%2 == 0 {
			return nil, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	calls := newCalls()
	bw := startReplica(t, b.url, worker.Config{ID: "b", Queue: spec}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		calls.note(c)
		return nil, nil
	})
	waitFor(t, 20*time.Second, "the partitions split", func() bool {
		return len(a.w.Partitions()["tally"]) == 4 && len(bw.w.Partitions()["tally"]) == 4
	})
	ofA := map[int]bool{}
	for _, p := range a.w.Partitions()["tally"] {
		ofA[p] = true
	}
	var cutOff, finishedByA []string
	for i, k := range keys {
		if ofA[contract.PartitionOf(k, 8)] {
			if i%2 == 1 {
				cutOff = append(cutOff, k)
			} else {
				finishedByA = append(finishedByA, k)
			}
		}
	}
	if len(cutOff) <= 4 || len(finishedByA) == 0 {
		t.Fatalf("a holds %d keys to cut off and %d to finish: too few", len(cutOff), len(finishedByA))
	}
	// First the work that finishes, on both; then what a cannot finish.
	var others []string
	for _, k := range keys {
		if !slices.Contains(cutOff, k) {
			others = append(others, k)
		}
	}
	publishWork(t, b.client, others)
	done.waitAll(t, others, time.Now().Add(20*time.Second))
	publishWork(t, b.client, cutOff)
	waitFor(t, 10*time.Second, "a's slots full", func() bool { return a.w.Stats().ActionsRunning == 4 })

	a.crash()
	waitFor(t, 20*time.Second, "b to take every partition", func() bool { return len(bw.w.Partitions()["tally"]) == 8 })
	takeover := time.Now()
	done.waitAll(t, cutOff, takeover.Add(10*time.Second))
	t.Logf("%d keys cut off on a finished within %s of the takeover", len(cutOff), time.Since(takeover).Round(time.Millisecond))
	for _, k := range finishedByA {
		if c, _ := calls.of(k); len(c) > 0 {
			t.Errorf("%s: a had finished its work, and b ran it again", k)
		}
	}
	for _, k := range keys {
		if rec, _ := readTally(t, b.client, k); rec.Version != 2 || len(rec.Pending) != 0 {
			t.Errorf("%s: version %d, pending %v", k, rec.Version, rec.Pending)
		}
	}
}
