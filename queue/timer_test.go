package queue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/queue"
)

func TestScheduleDeliversIntoTheKeysPartitionOnce(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 4})
	ctx := context.Background()
	// The key's own events and its timer must share a partition.
	if _, err := c.Publish(ctx, "order", "k1", queue.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Second)
	if err := c.Schedule(ctx, "order", "k1", "timeout", 1, at, queue.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	// Scheduling again replaces the first: only visit 2 fires.
	if err := c.Schedule(ctx, "order", "k1", "timeout", 2, at, queue.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *queue.Msg, 8)
	var pullers []*queue.Puller
	for p := range 4 {
		pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: p, MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
			got <- m
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		pullers = append(pullers, pl)
	}
	defer func() {
		for _, pl := range pullers {
			_ = pl.Stop(ctx)
		}
	}()
	first := <-got
	if _, _, ok := first.Timer(); ok {
		t.Fatal("the plain event looks like a timer")
	}
	fired := <-got
	kind, visit, ok := fired.Timer()
	if !ok || kind != "timeout" || visit != 2 || fired.Partition != first.Partition || fired.Key != "k1" {
		t.Fatalf("fired %q visit %d ok %v, partition %d (event in %d)", kind, visit, ok, fired.Partition, first.Partition)
	}
	if time.Now().Before(at) {
		t.Fatal("fired early")
	}
	select {
	case m := <-got:
		kind, visit, _ := m.Timer()
		t.Fatalf("a second delivery: %s %d", kind, visit)
	case <-time.After(1500 * time.Millisecond): // a negative check: the replaced schedule must not fire
	}
}

// TestPartitionOfMatchesTheServer checks PartitionOf against the partition
// the events stream's subject transform really gives each key.
func TestPartitionOfMatchesTheServer(t *testing.T) {
	t.Parallel()
	const parts = 7
	c, _ := setup(t, queue.Spec{Partitions: parts})
	ctx := context.Background()
	want := map[string]int{}
	for i := range 100 {
		key := fmt.Sprintf("key-%d_%c=", i, 'A'+i%26)
		want[key] = queue.PartitionOf(key, parts)
		if _, err := c.Publish(ctx, "order", key, queue.Envelope{Event: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	type got struct {
		key       string
		partition int
	}
	ch := make(chan got, len(want))
	for p := range parts {
		pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: p, MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
			ch <- got{m.Key, m.Partition}
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pl.Stop(ctx) })
	}
	used := map[int]bool{}
	for range want {
		select {
		case g := <-ch:
			if want[g.key] != g.partition {
				t.Errorf("%s: the server put it in partition %d, PartitionOf says %d", g.key, g.partition, want[g.key])
			}
			used[g.partition] = true
		case <-time.After(10 * time.Second):
			t.Fatal("not every event was delivered")
		}
	}
	if len(used) != parts {
		t.Errorf("100 keys used only partitions %v", used)
	}
}

func TestTimerKeysListsPendingSchedulesOfAKind(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list := func(kind string) map[string]int {
		t.Helper()
		seen := map[string]int{}
		if err := c.TimerKeys(ctx, "order", kind, func(key string) bool { seen[key]++; return true }); err != nil {
			t.Fatal(err)
		}
		return seen
	}
	if got := list("resume"); len(got) != 0 {
		t.Fatalf("no schedules yet, listed %v", got)
	}
	far := time.Now().Add(time.Hour)
	const n = 300 // more than one pull's worth
	var pending []*queue.PendingSchedule
	for i := range n {
		key := fmt.Sprintf("k%d", i)
		for _, visit := range []uint64{1, 2} { // replaced: still one per key
			ps, err := c.ScheduleAsync("order", key, "resume", visit, far, queue.Envelope{Event: "$resume"})
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, ps)
		}
	}
	for _, ps := range pending {
		if err := ps.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Schedule(ctx, "order", "other", "timeout", 1, far, queue.Envelope{Event: "x"}); err != nil {
		t.Fatal(err)
	}
	// One due now fires, and is pending no more.
	if err := c.Schedule(ctx, "order", "fires", "resume", 1, time.Now(), queue.Envelope{Event: "$resume"}); err != nil {
		t.Fatal(err)
	}
	waitFired(t, c, "fires")
	got := list("resume")
	if len(got) != n {
		t.Fatalf("listed %d keys, want %d", len(got), n)
	}
	for key, times := range got {
		if times != 1 || key == "other" || key == "fires" {
			t.Fatalf("%s listed %d times", key, times)
		}
	}
	if got := list("timeout"); len(got) != 1 || got["other"] != 1 {
		t.Fatalf("timeouts: %v", got)
	}
	// Stopping early is fine.
	calls := 0
	if err := c.TimerKeys(ctx, "order", "resume", func(string) bool { calls++; return false }); err != nil || calls != 1 {
		t.Fatalf("stopped after %d calls: %v", calls, err)
	}
	if err := c.TimerKeys(ctx, "nope", "resume", func(string) bool { return true }); !errors.Is(err, queue.ErrNotProvisioned) {
		t.Fatalf("unknown workflow: %v", err)
	}
}

// waitFired waits until key's due resume schedule has fired into the events
// stream.
func waitFired(t *testing.T, c *queue.Conn, key string) {
	t.Helper()
	ctx := context.Background()
	got := make(chan struct{}, 1)
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: queue.PartitionOf(key, 2), MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
		if _, _, ok := m.Timer(); ok && m.Key == key {
			select {
			case got <- struct{}{}:
			default:
			}
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pl.Stop(ctx) }()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatalf("the schedule of %s never fired", key)
	}
}
