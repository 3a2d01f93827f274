package worker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// Delayed events, cancel and recurring schedules through the runtime: the
// server fires them (JetStream message schedules), the worker applies what
// fires as client events of their key.

// at waits until the clock reads t: the tests look at what is applied at a
// given time, which is not an event to wait for.
func at(t time.Time) { <-time.After(time.Until(t)) }

func noState(t *testing.T, cl *client.Client, key string) {
	t.Helper()
	if rec, err := cl.State(context.Background(), "tally", key); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("%s: state %+v, %v; want none yet", key, rec, err)
	}
}

// TestDelayedEventsAppliedAtTheirTime: an event published with a delay of
// 2s, and one for a time 2s ahead, are stored at once (the job id known),
// not applied at 1s, and applied once, with their job ids, by 4s.
func TestDelayedEventsAppliedAtTheirTime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	in, err := b.client.Publish(ctx, "tally", "k-in", add(1), client.WithDelay(2*time.Second), client.WithJobID("in-1"))
	if err != nil {
		t.Fatal(err)
	}
	atAck, err := b.client.Publish(ctx, "tally", "k-at", add(2), client.WithAt(start.Add(2*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []client.PubAck{in, atAck} {
		if a.ID == "" || a.Duplicate || a.Sequence != 0 || a.Due.Sub(start) < 2*time.Second || a.Due.Sub(start) > 3*time.Second {
			t.Fatalf("ack %+v: want a job id and a due time 2s after %s", a, start)
		}
	}
	if in.ID != "in-1" {
		t.Fatalf("job id %q, want in-1", in.ID)
	}

	at(start.Add(time.Second))
	noState(t, b.client, "k-in")
	noState(t, b.client, "k-at")
	d, err := b.client.Scheduled(ctx, "tally", "in-1")
	if err != nil || d.Key != "k-in" || d.Event != "add" || !d.Due.Equal(in.Due) || d.Fired {
		t.Fatalf("Scheduled(in-1) = %+v, %v", d, err)
	}
	list, err := b.client.DelayedEvents(ctx, "tally", "k-at")
	if err != nil || len(list) != 1 || list[0].ID != atAck.ID || string(list[0].Data) != `{"n":2}` {
		t.Fatalf("DelayedEvents(k-at) = %+v, %v", list, err)
	}

	for key, want := range map[string]int{"k-in": 1, "k-at": 2} {
		waitFor(t, time.Until(start.Add(4*time.Second)), key+" applied by 4s", func() bool {
			_, err := b.client.State(ctx, "tally", key)
			return err == nil
		})
		rec, d := readTally(t, b.client, key)
		if rec.Version != 1 || !slices.Equal(d.Seen, []int{want}) {
			t.Fatalf("%s: version %d, applied %v; want [%d] once", key, rec.Version, d.Seen, want)
		}
	}
	t.Logf("both applied %s after publishing", time.Since(start).Round(time.Millisecond))
	for key, id := range map[string]string{"k-in": in.ID, "k-at": atAck.ID} {
		if j, err := b.client.Job(ctx, "tally", id); err != nil || j.Key != key || j.Event != "add" {
			t.Fatalf("claim of %s: %+v %v; want it taken by %s", id, j, err, key)
		}
	}
	if _, err := b.client.Scheduled(ctx, "tally", "in-1"); !errors.Is(err, client.ErrAlreadyFired) {
		t.Fatalf("Scheduled after firing: %v, want ErrAlreadyFired", err)
	}
}

// TestDelayedEventsKeepTheirJobID: the job id of a delayed event is applied
// at most once: published twice it is a duplicate, for another key a
// conflict, and one applied already (published now) is not delayed again.
func TestDelayedEventsKeepTheirJobID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	statuses := subscribeKey(t, b.client, "k")
	first, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithDelay(time.Second), client.WithJobID("d-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithDelay(time.Hour), client.WithJobID("d-1"))
	if err != nil || !again.Duplicate || again.Key != "k" || !again.Due.Equal(first.Due) {
		t.Fatalf("the same delayed event again: %+v %v; want a duplicate due at %s", again, err, first.Due)
	}
	var conflict *client.IDConflictError
	if _, err := b.client.Publish(ctx, "tally", "other", add(1), client.WithDelay(time.Second), client.WithJobID("d-1")); !errors.As(err, &conflict) || conflict.Held.Key != "k" {
		t.Fatalf("the id for another key: %v, want an IDConflictError naming k", err)
	}
	nextStatus(t, statuses, "of d-1 applied", settledOK("d-1"))
	if _, err := b.client.Publish(ctx, "tally", "k", add(2), client.WithJobID("now-1")); err != nil {
		t.Fatal(err)
	}
	nextStatus(t, statuses, "of now-1 applied", settledOK("now-1"))
	late, err := b.client.Publish(ctx, "tally", "k", add(2), client.WithDelay(time.Second), client.WithJobID("now-1"))
	if err != nil || !late.Duplicate || !late.Taken {
		t.Fatalf("an applied id delayed: %+v %v; want a duplicate", late, err)
	}
	rec, d := readTally(t, b.client, "k")
	if rec.Version != 2 || !slices.Equal(d.Seen, []int{1, 2}) {
		t.Fatalf("version %d, applied %v; want d-1 and now-1 once each", rec.Version, d.Seen)
	}
	if _, err := b.client.Scheduled(ctx, "tally", "other-id"); !errors.Is(err, client.ErrUnknownJob) {
		t.Fatalf("Scheduled of an unknown id: %v", err)
	}
}

// TestDelayedEventsRefused: bad delays and times are refused with
// ErrInvalidSchedule before anything is stored.
func TestDelayedEventsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.Provision(context.Background(), queue.Spec{Workflow: "tally"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	for name, opts := range map[string][]client.PublishOption{
		"zero delay":       {client.WithDelay(0)},
		"negative delay":   {client.WithDelay(-time.Second)},
		"a time past":      {client.WithAt(now.Add(-time.Minute))},
		"no time":          {client.WithAt(time.Time{})},
		"both":             {client.WithDelay(time.Second), client.WithAt(now.Add(time.Minute))},
		"past year 9999":   {client.WithAt(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))},
		"delay, then both": {client.WithAt(now.Add(time.Minute)), client.WithDelay(time.Minute)},
	} {
		if ack, err := b.client.Publish(ctx, "tally", "k", add(1), opts...); !errors.Is(err, client.ErrInvalidSchedule) {
			t.Errorf("%s: %+v %v, want ErrInvalidSchedule", name, ack, err)
		}
	}
	if _, err := b.client.PublishAsync("tally", "k", add(1), client.WithDelay(time.Second)); !errors.Is(err, client.ErrInvalidSchedule) {
		t.Errorf("PublishAsync with a delay: %v, want ErrInvalidSchedule", err)
	}
	// Too large for the schedules stream (a little less than an event may
	// be): refused by the server, nothing stored.
	big := contract.Envelope{Event: "add", Data: []byte(`"` + strings.Repeat("x", 64<<10-600) + `"`)}
	if _, err := b.client.Publish(ctx, "tally", "k", big, client.WithDelay(time.Second)); !errors.Is(err, client.ErrPayloadTooLarge) {
		t.Errorf("a delayed event too large: %v, want ErrPayloadTooLarge", err)
	}
	// Within a second of now is now: delivered at once.
	if _, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithAt(now.Add(-500*time.Millisecond))); err != nil {
		t.Errorf("a time half a second ago: %v", err)
	}
	if n := schedulesStored(t, b.url); n > 2 { // the last one, and its firing
		t.Fatalf("%d messages in the schedules stream, want at most the one accepted and its firing", n)
	}
}

// schedulesStored is how many messages the schedules stream of "tally"
// holds.
func schedulesStored(t *testing.T, url string) uint64 {
	t.Helper()
	s, err := rawJS(t, url).Stream(context.Background(), contract.SchedulesStream("tally"))
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// TestCancelDelayedEvent: cancelled before it fires, an event is never
// applied; cancelling again says so, as does cancelling an unknown id or
// one that fired.
func TestCancelDelayedEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := b.client.Publish(ctx, "tally", "gone", add(1), client.WithDelay(2*time.Second), client.WithJobID("c-1")); err != nil {
		t.Fatal(err)
	}
	fired, err := b.client.Publish(ctx, "tally", "kept", add(2), client.WithDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.client.Cancel(ctx, "tally", "c-1"); err != nil {
		t.Fatalf("cancel before firing: %v", err)
	}
	if err := b.client.Cancel(ctx, "tally", "c-1"); !errors.Is(err, client.ErrAlreadyCancelled) {
		t.Fatalf("cancel again: %v, want ErrAlreadyCancelled", err)
	}
	if err := b.client.Cancel(ctx, "tally", "no-such-job"); !errors.Is(err, client.ErrUnknownJob) {
		t.Fatalf("cancel an unknown id: %v, want ErrUnknownJob", err)
	}
	waitFor(t, 20*time.Second, "the kept event applied", func() bool {
		_, err := b.client.State(ctx, "tally", "kept")
		return err == nil
	})
	if err := b.client.Cancel(ctx, "tally", fired.ID); !errors.Is(err, client.ErrAlreadyFired) || !strings.Contains(err.Error(), "a worker took it") {
		t.Fatalf("cancel after firing: %v, want ErrAlreadyFired saying when", err)
	}
	at(start.Add(4 * time.Second))
	noState(t, b.client, "gone")
	if list, err := b.client.DelayedEvents(ctx, "tally", "gone"); err != nil || len(list) != 0 {
		t.Fatalf("delayed events of the cancelled key: %+v %v; want none", list, err)
	}
}

// TestCancelFiredButNotTaken: a delayed event that fired while no worker
// ran waits in the queue; cancelled there, the worker that comes later
// drops it instead of applying it.
func TestCancelFiredButNotTaken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.conn.Provision(context.Background(), queue.Spec{Workflow: "tally"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := b.client.Publish(ctx, "tally", "k", add(1), client.WithDelay(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the delayed event in the queue", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 1
	})
	if d, err := b.client.Scheduled(ctx, "tally", ack.ID); err != nil || !d.Fired {
		t.Fatalf("Scheduled of a fired event no worker took: %+v %v; want Fired", d, err)
	}
	if err := b.client.Cancel(ctx, "tally", ack.ID); err != nil {
		t.Fatalf("cancel a fired event no worker took: %v", err)
	}
	startWorker(t, b.url, worker.Config{}, nil)
	waitFor(t, 20*time.Second, "the cancelled event acknowledged", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
	noState(t, b.client, "k")
}

// TestCancelRacesFiring: cancels sent around the moment many delayed events
// fire and are taken; each event is either cancelled (Cancel returned nil)
// and never applied, or applied (Cancel said ErrAlreadyFired), never both.
func TestCancelRacesFiring(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{Partitions: 4}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 40
	// Far enough ahead that publishing all of them, on a loaded machine,
	// ends before it.
	due := time.Now().Add(5 * time.Second).Truncate(time.Second).Add(time.Second)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "race-" + itoa(i)
		if _, err := b.client.Publish(ctx, "tally", keys[i], add(i), client.WithAt(due), client.WithJobID(keys[i])); err != nil {
			t.Fatal(err)
		}
	}
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			// Spread over 400ms around the firing.
			at(due.Add(time.Duration(i-n/2) * 10 * time.Millisecond))
			results[i] = b.client.Cancel(ctx, "tally", keys[i])
		})
	}
	wg.Wait()
	waitFor(t, 90*time.Second, "every event taken or dropped", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
	var won, lost int
	for i, key := range keys {
		_, stateErr := b.client.State(ctx, "tally", key)
		switch {
		case results[i] == nil && errors.Is(stateErr, client.ErrNoState):
			won++
		case errors.Is(results[i], client.ErrAlreadyFired):
			lost++
			// Taken: applied, or about to be.
			waitFor(t, 20*time.Second, key+" applied", func() bool {
				_, err := b.client.State(ctx, "tally", key)
				return err == nil
			})
		default:
			t.Errorf("%s: cancel %v, state %v: cancelled and applied, or neither", key, results[i], stateErr)
		}
	}
	t.Logf("%d cancelled, %d fired first", won, lost)
}

// TestRecurringScheduleEachFiringAppliedOnce: a schedule every second fires
// at least three times in 4s, each firing applied once under a job id made
// of its name and fire time; removed, it fires no more.
func TestRecurringScheduleEachFiringAppliedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		fires []string // job ids of settled firings, in order
	)
	sub, err := b.client.Subscribe("tally", "tick", func(st contract.Status) {
		if st.Settled {
			mu.Lock()
			fires = append(fires, st.JobID)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	start := time.Now()
	if _, err := b.client.AddSchedule(ctx, "tally", client.Schedule{Name: "every1", Key: "tick", Event: "add", Data: []byte(`{"n":7}`), Every: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.AddSchedule(ctx, "tally", client.Schedule{Name: "every1", Key: "tick", Event: "add", Every: time.Minute}); !errors.Is(err, client.ErrScheduleExists) {
		t.Fatalf("the same name again: %v, want ErrScheduleExists", err)
	}
	count := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(fires)
	}
	at(start.Add(4 * time.Second))
	got := count()
	if len(got) < 3 {
		t.Fatalf("%d firings applied in 4s, want at least 3: %v", len(got), got)
	}
	if err := b.client.RemoveSchedule(ctx, "tally", "every1"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	if err := b.client.RemoveSchedule(ctx, "tally", "every1"); !errors.Is(err, client.ErrNoSchedule) {
		t.Fatalf("remove again: %v, want ErrNoSchedule", err)
	}
	at(removed.Add(2500 * time.Millisecond))
	got = count()
	seen := map[string]bool{}
	for _, id := range got {
		name, when, ok := strings.Cut(id, "@")
		fire, err := time.Parse(time.RFC3339, when)
		if !ok || name != "every1" || err != nil {
			t.Fatalf("job id %q: want every1@<RFC 3339 fire time>", id)
		}
		if seen[id] {
			t.Fatalf("firing %s applied twice: %v", id, got)
		}
		seen[id] = true
		if fire.After(removed) {
			t.Fatalf("firing %s after the schedule was removed at %s", id, removed.Format(time.RFC3339Nano))
		}
	}
	rec, d := readTally(t, b.client, "tick")
	if int(rec.Version) != len(got) || len(d.Seen) != len(got) {
		t.Fatalf("version %d, %d applied, for %d firings", rec.Version, len(d.Seen), len(got))
	}
	if list, err := b.client.Schedules(ctx, "tally"); err != nil || len(list) != 0 {
		t.Fatalf("schedules after rm: %+v %v", list, err)
	}
}

// TestSchedulesFireWithNoWorkerAndSurviveRestarts: a recurring schedule and
// a delayed event fire while no worker runs (their events wait in the
// queue), and go on after the server restarts on its store; the worker
// started then applies each firing once.
func TestSchedulesFireWithNoWorkerAndSurviveRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.ServerIn(t, dir)
	conn := natstest.Conn(t, srv.ClientURL())
	if _, err := conn.Provision(context.Background(), queue.Spec{Workflow: "tally"}); err != nil {
		t.Fatal(err)
	}
	cl := natstest.Client(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cl.AddSchedule(ctx, "tally", client.Schedule{Name: "beat", Key: "k", Event: "add", Data: []byte(`{"n":1}`), Every: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Publish(ctx, "tally", "d", add(2), client.WithDelay(3*time.Second), client.WithJobID("late")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "two firings in the queue", func() bool {
		info, err := conn.Info(ctx, "tally")
		return err == nil && info.Pending >= 2
	})
	conn.Close()
	_ = cl.Close()
	srv.Shutdown()

	srv = natstest.ServerIn(t, dir) // the delayed event's time passes meanwhile
	conn = natstest.Conn(t, srv.ClientURL())
	cl = natstest.Client(t, srv.ClientURL())
	info, err := conn.Info(ctx, "tally")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "firings after the restart, and the delayed event", func() bool {
		got, err := conn.Info(ctx, "tally")
		return err == nil && got.Pending >= info.Pending+2
	})
	list, err := cl.Schedules(ctx, "tally")
	if err != nil || len(list) != 1 || list[0].Name != "beat" || list[0].Every != time.Second || list[0].Key != "k" || list[0].Next.IsZero() {
		t.Fatalf("schedules after the restart: %+v %v", list, err)
	}

	ids := map[string]int{}
	var mu sync.Mutex
	sub, err := cl.Subscribe("tally", "", func(st contract.Status) {
		mu.Lock()
		ids[st.JobID]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	startWorker(t, srv.ClientURL(), worker.Config{}, nil)
	waitFor(t, 20*time.Second, "the delayed event applied", func() bool {
		_, err := cl.State(ctx, "tally", "d")
		return err == nil
	})
	if err := cl.RemoveSchedule(ctx, "tally", "beat"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the queue drained", func() bool {
		got, err := conn.Info(ctx, "tally")
		return err == nil && got.Pending == 0
	})
	rec, d := readTally(t, cl, "k")
	mu.Lock()
	defer mu.Unlock()
	for id, n := range ids {
		if n != 1 {
			t.Errorf("job %s: %d statuses, want 1", id, n)
		}
	}
	if int(rec.Version) != len(d.Seen) || len(d.Seen) < 3 {
		t.Fatalf("k: version %d, %d firings applied; want at least 3, each once", rec.Version, len(d.Seen))
	}
	if _, d := readTally(t, cl, "d"); !slices.Equal(d.Seen, []int{2}) {
		t.Fatalf("the delayed event applied %v, want once", d.Seen)
	}
}
