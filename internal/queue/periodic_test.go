package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestPeriodicWorkScheduleFiresUntilUnscheduled: a periodic schedule fires
// its tick every second into the key's partition, with its kind, visit and
// anchor, until Unschedule removes it.
func TestPeriodicWorkScheduleFiresUntilUnscheduled(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 3})
	ctx := context.Background()
	armed := time.Now()
	kind := contract.TimerEvery(0)
	if err := c.SchedulePeriodic(ctx, "order", "k1", kind, 4, time.Second, armed, contract.Envelope{Event: "payment_reminder"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time, 64)
	want := contract.PartitionOf("k1", 3)
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: want, MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
		k, visit, ok := m.Timer()
		h := m.Headers()
		if !ok || k != kind || visit != 4 || m.Key != "k1" || len(h[contract.HeaderTimerArmed]) != 1 ||
			!strings.Contains(string(m.Data), "payment_reminder") {
			t.Errorf("tick %s kind %q visit %d ok %v headers %v data %s", m.Key, k, visit, ok, h, m.Data)
		}
		// The server's store time: when the schedule fired, whatever the
		// delivery's delay on a loaded machine.
		got <- m.Stored
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pl.Stop(ctx) }()
	var ticks []time.Time
	for len(ticks) < 3 {
		select {
		case at := <-got:
			ticks = append(ticks, at)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d ticks within 10s, want 3", len(ticks))
		}
	}
	// A whole second apart, give or take the server's scheduling round.
	for i := 1; i < len(ticks); i++ {
		if gap := ticks[i].Sub(ticks[i-1]); gap < 500*time.Millisecond || gap > 1500*time.Millisecond {
			t.Errorf("tick %d came %s after the one before", i, gap)
		}
	}
	if err := c.Unschedule(ctx, "order", "k1", kind); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	fired := ticks[len(ticks)-1]
	// A tick may be on its way; none may come after it.
	deadline := time.After(3 * time.Second) // a negative check: three intervals
	for {
		select {
		case at := <-got:
			// Stored after the removal, and not the next one already due.
			if at.After(removed) && at.Sub(fired) > 1500*time.Millisecond {
				t.Fatalf("a tick stored %s after Unschedule", at.Sub(removed))
			}
		case <-deadline:
			return
		}
	}
}

// TestPeriodicWorkTicksDoNotPileUp: while nobody takes them, the ticks of a
// periodic schedule expire after an interval, so the events stream holds at
// most the newest, not one per interval missed.
func TestPeriodicWorkTicksDoNotPileUp(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	if err := c.SchedulePeriodic(ctx, "order", "k1", contract.TimerEvery(0), 1, time.Second, time.Now(), contract.Envelope{Event: "tick"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SchedulePeriodic(ctx, "order", "k2", contract.TimerEvery(1), 1, 2*time.Second, time.Now(), contract.Envelope{Event: "tock"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	maxSeen := uint64(0)
	var sawBoth bool
	for time.Since(start) < 6*time.Second { // six intervals of k1, three of k2
		info, err := c.Info(ctx, "order")
		if err != nil {
			t.Fatal(err)
		}
		maxSeen = max(maxSeen, info.Pending)
		sawBoth = sawBoth || info.Pending >= 2
		time.Sleep(50 * time.Millisecond) // sampling a count no event announces
	}
	// One tick of each key, and for a moment two of one (a tick expires
	// about when the next is stored; on a loaded machine the server's
	// expiry may lag a round, so two of each). Piled up, the six seconds
	// would leave nine.
	if !sawBoth || maxSeen > 4 {
		t.Fatalf("the events stream held up to %d ticks (both keys waiting at once: %v); want 2 to 4, not one per interval missed", maxSeen, sawBoth)
	}
}

func TestPeriodicWorkRefusesBadSchedules(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	ev := contract.Envelope{Event: "tick"}
	for _, tc := range []struct {
		kind     string
		key      string
		interval time.Duration
	}{
		{"timeout", "k", time.Second},
		{"every", "k", time.Second},
		{"every01", "k", time.Second},
		{contract.TimerEvery(0), "k", 0},
		{contract.TimerEvery(0), "k", 1500 * time.Millisecond},
		{contract.TimerEvery(0), "a.b", time.Second},
	} {
		if err := c.SchedulePeriodic(ctx, "order", tc.key, tc.kind, 1, tc.interval, time.Now(), ev); err == nil {
			t.Errorf("kind %q key %q interval %v accepted", tc.kind, tc.key, tc.interval)
		}
	}
	if err := c.Unschedule(ctx, "order", "k", "fired"); err == nil {
		t.Error("Unschedule of kind fired accepted")
	}
}

// TestControllableClockFiresDueTicks: FireDueTicks fires, at once, one tick
// of each periodic schedule that a jump of the test clock made due, and
// none of the others.
func TestControllableClockFiresDueTicks(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	now := time.Now()
	for _, s := range []struct {
		key      string
		interval time.Duration
	}{{"five", 5 * time.Minute}, {"hour", time.Hour}} {
		if err := c.SchedulePeriodic(ctx, "order", s.key, contract.TimerEvery(0), 2, s.interval, now, contract.Envelope{Event: "remind"}); err != nil {
			t.Fatal(err)
		}
	}
	// A timeout is not a periodic schedule: left alone.
	if err := c.Schedule(ctx, "order", "five", contract.TimerTimeout, 2, now.Add(time.Minute), contract.Envelope{Event: "t"}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.FireDueTicks(ctx, "order", now, now.Add(4*time.Minute)); err != nil || n != 0 {
		t.Fatalf("nothing due within 4m: fired %d, %v", n, err)
	}
	got := make(chan *queue.Msg, 8)
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
		got <- m
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pl.Stop(ctx) }()
	// From 4m to 16m: three ticks of "five" due, fired as one.
	start := time.Now()
	if n, err := c.FireDueTicks(ctx, "order", now.Add(4*time.Minute), now.Add(16*time.Minute)); err != nil || n != 1 {
		t.Fatalf("fired %d, %v; want 1", n, err)
	}
	select {
	case m := <-got:
		kind, visit, ok := m.Timer()
		if !ok || kind != contract.TimerEvery(0) || visit != 2 || m.Key != "five" {
			t.Fatalf("fired %s kind %q visit %d ok %v", m.Key, kind, visit, ok)
		}
		t.Logf("tick in %s of real time", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the due tick did not come")
	}
	select {
	case m := <-got:
		kind, _, _ := m.Timer()
		t.Fatalf("a second delivery: %s %s", m.Key, kind)
	case <-time.After(time.Second): // a negative check: one tick only
	}
	if n, err := c.FireDueTicks(ctx, "order", now.Add(16*time.Minute), now.Add(19*time.Minute)); err != nil || n != 0 {
		t.Fatalf("nothing due from 16m to 19m: fired %d, %v", n, err)
	}
	if _, err := c.FireDueTicks(ctx, "nosuch", now, now); !errors.Is(err, queue.ErrNotProvisioned) {
		t.Fatalf("unprovisioned workflow: %v", err)
	}
}

// TestPeriodicWorkAfterServerRestart: while the server is down nothing
// fires; once it is back the stored schedule fires one tick for the
// intervals missed and goes on from there, without a burst.
func TestPeriodicWorkAfterServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.ServerIn(t, dir)
	c := natstest.Conn(t, srv.ClientURL())
	ctx := context.Background()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.SchedulePeriodic(ctx, "order", "k1", contract.TimerEvery(0), 1, time.Second, time.Now(), contract.Envelope{Event: "tick"}); err != nil {
		t.Fatal(err)
	}
	pull := func(c *queue.Conn) (<-chan time.Time, func()) {
		got := make(chan time.Time, 64)
		pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
			got <- time.Now()
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, func() { _ = pl.Stop(ctx) }
	}
	got, stop := pull(c)
	natstest.Recv(t, got, natstest.Timeout, "a first tick")
	stop()
	srv.Shutdown()
	time.Sleep(4 * time.Second) // four intervals with the server down
	srv = natstest.ServerIn(t, dir)
	restarted := time.Now()
	got, stop = pull(natstest.Conn(t, srv.ClientURL()))
	defer stop()
	var at []time.Duration
	for len(at) < 4 {
		at = append(at, natstest.Recv(t, got, natstest.Timeout, "ticks after the restart").Sub(restarted).Round(time.Millisecond))
	}
	// The server fires one tick at once for the intervals it missed, then
	// goes on an interval apart from its restart.
	if at[2] < 1500*time.Millisecond {
		t.Errorf("ticks after the restart at %v: three within 1.5s, a burst for the intervals missed", at)
	}
	if at[0] > 5*time.Second {
		t.Errorf("ticks after the restart at %v: the first %s late", at, at[0])
	}
	t.Logf("ticks after the restart at %v", at)
}
