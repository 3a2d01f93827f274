package queue_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestScheduleDeliversIntoTheKeysPartitionOnce(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 4})
	cl := newClient(t, c)
	ctx := context.Background()
	// The key's own events and its timer must share a partition.
	if _, err := cl.Publish(ctx, "order", "k1", contract.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Second)
	if err := c.Schedule(ctx, "order", "k1", "timeout", 1, at, contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	// Scheduling again replaces the first: only visit 2 fires.
	if err := c.Schedule(ctx, "order", "k1", "timeout", 2, at, contract.Envelope{Event: "payment_timeout"}); err != nil {
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
	first := natstest.Recv(t, got, natstest.Timeout, "the plain event")
	if _, _, ok := first.Timer(); ok {
		t.Fatal("the plain event looks like a timer")
	}
	fired := natstest.Recv(t, got, natstest.Timeout, "the timer")
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
	cl := newClient(t, c)
	ctx := context.Background()
	want := map[string]int{}
	for i := range 100 {
		key := fmt.Sprintf("key-%d_%c=", i, 'A'+i%26)
		want[key] = contract.PartitionOf(key, parts)
		if _, err := cl.Publish(ctx, "order", key, contract.Envelope{Event: "e"}); err != nil {
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
			ps, err := c.ScheduleAsync("order", key, "resume", visit, far, contract.Envelope{Event: "$resume"})
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
	if err := c.Schedule(ctx, "order", "other", "timeout", 1, far, contract.Envelope{Event: "x"}); err != nil {
		t.Fatal(err)
	}
	// One due now fires, and is pending no more.
	if err := c.Schedule(ctx, "order", "fires", "resume", 1, time.Now(), contract.Envelope{Event: "$resume"}); err != nil {
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
	pl, err := c.Pull(ctx, queue.PullConfig{Workflow: "order", Partition: contract.PartitionOf(key, 2), MaxWait: 200 * time.Millisecond}, func(_ context.Context, m *queue.Msg) {
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

// waitStored waits until stream holds n messages.
func waitStored(t *testing.T, js jetstream.JetStream, stream string, n uint64) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().State.Msgs
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s holds %d messages, want %d", stream, got, n)
		}
		time.Sleep(50 * time.Millisecond) // no event to wait on: the server sources on its own
	}
}

// TestForgedTimerHeadersAreNotTimers: a timer is known by where the events
// stream stores it, not by its headers. A producer may publish an event with
// the timer headers (Orderly-Timer-Kind, and Nats-Scheduler, which servers
// before 2.14 accept from any client and which this test therefore brings
// in the one way this server allows: from a stream source); it must not be
// taken for a timer. A real timer still is.
func TestForgedTimerHeadersAreNotTimers(t *testing.T) {
	t.Parallel()
	c, js := dlqSetup(t)
	ctx := context.Background()
	forged := func(subject string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = []byte(`{"event":"payment_timeout"}`)
		m.Header.Set(contract.HeaderTimerKind, "timeout")
		m.Header.Set(contract.HeaderTimerVisit, "3")
		return m
	}

	// 1. What a producer can publish itself: the timer headers of Orderly.
	if _, err := js.PublishMsg(ctx, forged(contract.EventSubject("order", "k1"))); err != nil {
		t.Fatal(err)
	}
	// No stream takes a publish to where fired timers are stored.
	if _, err := js.PublishMsg(ctx, forged("orderly.events.order.0.timer.k1")); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("a publish to a timer's stored subject: %v, want no stream to take it", err)
	}
	// This server refuses Nats-Scheduler from a client outright.
	m := forged(contract.EventSubject("order", "k1"))
	m.Header.Set("Nats-Scheduler", "orderly.timers.order.timeout.k1")
	if _, err := js.PublishMsg(ctx, m); err == nil {
		t.Log("this server stores a client's Nats-Scheduler header")
	}

	// 2. A message under a client subject that carries every header a fired
	// timer has, Nats-Scheduler and Nats-Schedule-Next included, as older
	// servers store them from any producer. The extra source stands in for
	// that producer.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "FORGE", Subjects: []string{"forge.*"}, AllowMsgSchedules: true,
	}); err != nil {
		t.Fatal(err)
	}
	m = forged("forge.k1")
	m.Header.Set("Nats-Scheduler", "forge.none")
	m.Header.Set("Nats-Schedule-Next", "purge")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "ORDERLY_EVENTS_ORDER")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{Name: "FORGE", SubjectTransforms: []jetstream.SubjectTransformConfig{{
		Source: "forge.*", Destination: "orderly.events.order.0.{{wildcard(1)}}",
	}}})
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, "ORDERLY_EVENTS_ORDER", 2)

	// 3. A real timer of the same key.
	if err := c.Schedule(ctx, "order", "k1", "timeout", 7, time.Now(), contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}

	msgs := pullN(t, c, 3)
	for i, m := range msgs[:2] {
		if kind, visit, ok := m.Timer(); ok {
			t.Errorf("forged message %d (%s, headers %v) taken for timer %q visit %d", i+1, m.Subject(), m.Headers(), kind, visit)
		}
	}
	if !strings.Contains(msgs[1].Headers()["Nats-Scheduler"][0], "forge.none") {
		t.Errorf("the second message is not the forged one with Nats-Scheduler: %v", msgs[1].Headers())
	}
	kind, visit, ok := msgs[2].Timer()
	if !ok || kind != "timeout" || visit != 7 || msgs[2].Key != "k1" {
		t.Errorf("the real timer: %q visit %d ok %v key %s (subject %s)", kind, visit, ok, msgs[2].Key, msgs[2].Subject())
	}
}

// TestTimersFiredBeforeAnUpgradeStillFire: an events stream made by an
// earlier version stored fired timers under client subjects. Provisioning
// moves new timers to their own subjects; those already stored stay timers,
// and the mark that says so survives later updates of the stream.
func TestTimersFiredBeforeAnUpgradeStillFire(t *testing.T) {
	t.Parallel()
	c, js := dlqSetup(t)
	cl := newClient(t, c)
	ctx := context.Background()
	// Turn the stream and consumer back into what the earlier version made.
	s, err := js.Stream(ctx, "ORDERLY_EVENTS_ORDER")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Sources[0].SubjectTransforms[0].Destination = "orderly.events.order.{{partition(1,2)}}.{{wildcard(2)}}"
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, "ORDERLY_EVENTS_ORDER", "orderly_order_p0")
	if err != nil {
		t.Fatal(err)
	}
	ccfg := cons.CachedInfo().Config
	ccfg.FilterSubjects, ccfg.FilterSubject = nil, "orderly.events.order.0.*"
	if _, err := js.UpdateConsumer(ctx, "ORDERLY_EVENTS_ORDER", ccfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Schedule(ctx, "order", "k1", "timeout", 7, time.Now(), contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, "ORDERLY_EVENTS_ORDER", 1)

	p, err := c.Provision(ctx, queue.Spec{Workflow: "order"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(p.Updated, "stream ORDERLY_EVENTS_ORDER") || !slices.Contains(p.Updated, "consumer orderly_order_p0") {
		t.Fatalf("provision updated %v", p.Updated)
	}
	// A later update (another limit) keeps the mark.
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", QueueLimit: 500}); err != nil {
		t.Fatal(err)
	}
	if err := c.Schedule(ctx, "order", "k2", "timeout", 8, time.Now(), contract.Envelope{Event: "payment_timeout"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Publish(ctx, "order", "k3", contract.Envelope{Event: "start_processing"}); err != nil {
		t.Fatal(err)
	}
	waitStored(t, js, "ORDERLY_EVENTS_ORDER", 3)

	want := map[string]uint64{"k1": 7, "k2": 8}
	for _, m := range pullN(t, c, 3) {
		kind, visit, ok := m.Timer()
		if m.Key == "k3" {
			if ok {
				t.Errorf("the client event %s is taken for a timer", m.Subject())
			}
			continue
		}
		if !ok || kind != "timeout" || visit != want[m.Key] {
			t.Errorf("timer of %s under %s: %q visit %d ok %v", m.Key, m.Subject(), kind, visit, ok)
		}
	}
	s, err = js.Stream(ctx, "ORDERLY_EVENTS_ORDER")
	if err != nil {
		t.Fatal(err)
	}
	if info := s.CachedInfo(); info.Config.MaxMsgs != 500 || info.Config.Metadata["orderly.legacy_timers_until"] == "" {
		t.Errorf("after a later update: limit %d, metadata %v", info.Config.MaxMsgs, info.Config.Metadata)
	}
}
