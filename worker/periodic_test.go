package worker_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

type beats struct {
	Beats int `json:"beats"`
}

// beatWorkflow: a key starts in "running", where "beat" comes every second
// and counts; "pause" leaves for "idle", "start" comes back; "poke" is a
// client event that changes nothing, in either state.
func beatWorkflow(t *testing.T) worker.Workflow {
	t.Helper()
	type T = statemachine.Transition[beats]
	m, err := statemachine.New(statemachine.Definition[beats]{
		Name:    "beat",
		Initial: "running",
		States: []statemachine.StateDef{
			{Name: "running", Every: []statemachine.Periodic{statemachine.Every(time.Second, "beat")}},
			{Name: "idle"},
			{Name: "done", Terminal: true},
		},
		Events: []statemachine.EventDef{
			{Name: "poke", Client: true}, {Name: "pause", Client: true}, {Name: "start", Client: true},
			{Name: "finish", Client: true}, {Name: "beat"},
		},
		Transitions: []T{
			{From: "running", On: "beat", To: "running", Update: func(d beats, _ statemachine.Input) (beats, error) {
				d.Beats++
				return d, nil
			}},
			{From: "running", On: "poke", To: "running"},
			{From: "running", On: "pause", To: "idle"},
			{From: "idle", On: "poke", To: "idle"},
			{From: "idle", On: "start", To: "running"},
			{From: "idle", On: "finish", To: "done"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	wf, err := worker.NewWorkflow(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return wf
}

func startBeatWorker(t *testing.T, url string) *worker.Worker {
	t.Helper()
	w, err := worker.New(natstest.NATS(t, url), worker.Config{}, beatWorkflow(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWorker(t, w) })
	return w
}

func stopWorker(t *testing.T, w *worker.Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// beatLog records the statuses of one key of the beat workflow.
type beatLog struct {
	mu       sync.Mutex
	statuses []contract.Status
	changed  chan struct{}
}

func watchBeats(t *testing.T, b bundle, key string) *beatLog {
	t.Helper()
	l := &beatLog{changed: make(chan struct{})}
	sub, err := b.client.Subscribe("beat", key, func(s contract.Status) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.statuses = append(l.statuses, s)
		close(l.changed)
		l.changed = make(chan struct{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// beatsSince returns the times of the beats applied after since.
func (l *beatLog) beatsSince(since time.Time) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var at []time.Time
	for _, s := range l.statuses {
		if s.Event == "beat" && s.Error == nil && s.At.After(since) {
			at = append(at, s.At)
		}
	}
	return at
}

// waitBeats waits until n beats were applied after since, and returns them.
func (l *beatLog) waitBeats(t *testing.T, since time.Time, n int, within time.Duration) []time.Time {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if at := l.beatsSince(since); len(at) >= n {
			return at
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%d beats within %s, want %d: %v", len(l.beatsSince(since)), within, n, l.beatsSince(since))
		}
	}
}

// send publishes ev for key and waits for it to be applied.
func send(t *testing.T, b bundle, key, ev string) contract.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, st, err := b.client.PublishAndWait(ctx, "beat", key, contract.Envelope{Event: ev})
	if err != nil || st.Error != nil {
		t.Fatalf("%s to %s: %v %+v", ev, key, err, st.Error)
	}
	return st
}

// TestPeriodicWorkFiresInItsStateOnly: the periodic event comes every
// second from when the key entered the state, other events in between
// (pokes) do not reset it, it stops within an interval of leaving the state
// and starts again, from the new entry, on coming back.
func TestPeriodicWorkFiresInItsStateOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startBeatWorker(t, b.url)
	l := watchBeats(t, b, "k")

	// The key's first event makes it, in "running": that enters it.
	entered := send(t, b, "k", "poke").At
	stopPokes := make(chan struct{})
	poked := make(chan struct{})
	go func() {
		defer close(poked)
		for {
			select {
			case <-stopPokes:
				return
			case <-time.After(300 * time.Millisecond):
				_, _ = b.client.Publish(context.Background(), "beat", "k", contract.Envelope{Event: "poke"})
			}
		}
	}()
	at := l.waitBeats(t, entered, 3, 10*time.Second)
	close(stopPokes)
	<-poked
	// The broker fires at whole seconds: the first beat comes 0.5 to 1.5 s
	// after the entry, then a second apart, whatever the pokes.
	if first := at[0].Sub(entered); first < 400*time.Millisecond || first > 2500*time.Millisecond {
		t.Errorf("first beat %s after entering", first)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 500*time.Millisecond || gap > 2*time.Second {
			t.Errorf("beat %d came %s after the one before: %v", i, gap, at)
		}
	}

	left := send(t, b, "k", "pause").At
	time.Sleep(3 * time.Second) // a negative check: three intervals without a beat
	for _, b := range l.beatsSince(left) {
		t.Errorf("a beat applied %s after leaving the state", b.Sub(left))
	}
	stale := w.Stats().StaleTimers
	if stale > 1 {
		t.Errorf("%d stale ticks after leaving: the schedule was not removed", stale)
	}
	_, d := readBeats(t, b, "k")
	t.Logf("%d beats before leaving, %d stale ticks after", d.Beats, stale)

	// Back in the state: a new cadence, from the new entry.
	back := send(t, b, "k", "start").At
	at = l.waitBeats(t, back, 2, 10*time.Second)
	if first := at[0].Sub(back); first < 400*time.Millisecond || first > 2500*time.Millisecond {
		t.Errorf("first beat %s after coming back", first)
	}
	send(t, b, "k", "pause")
	send(t, b, "k", "finish")
}

func readBeats(t *testing.T, b bundle, key string) (contract.StateRecord, beats) {
	t.Helper()
	rec, err := b.client.State(context.Background(), "beat", key)
	if err != nil {
		t.Fatalf("state of %s: %v", key, err)
	}
	var d beats
	if err := json.Unmarshal(rec.Data, &d); err != nil {
		t.Fatal(err)
	}
	return rec, d
}

// TestPeriodicWorkMissedTicksCollapse: ticks fired while no worker runs
// collapse into one: the restarted worker applies one at once, then the
// cadence goes on a second apart.
func TestPeriodicWorkMissedTicksCollapse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	l := watchBeats(t, b, "k")
	first, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, beatWorkflow(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	entered := send(t, b, "k", "poke").At
	l.waitBeats(t, entered, 1, 10*time.Second)
	stopWorker(t, first)
	_, before := readBeats(t, b, "k")

	// Five intervals with nobody to take the ticks: each expires after an
	// interval, so the stream holds the newest, two for a moment.
	time.Sleep(5 * time.Second) // the broker's clock must run: nothing to await
	info, err := b.conn.Info(context.Background(), "beat")
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending > 2 {
		t.Errorf("%d ticks waiting after five missed intervals, want 1 (2 for a moment)", info.Pending)
	}
	restarted := time.Now()
	startBeatWorker(t, b.url)
	at := l.waitBeats(t, restarted, 4, 10*time.Second)
	if wait := at[0].Sub(restarted); wait > 2*time.Second {
		t.Errorf("the waiting tick was applied %s after the restart", wait)
	}
	// The waiting tick, then the cadence: the next may come at any moment
	// (it is anchored at the first entry), the ones after a second apart.
	// Missed ticks applied one by one would come together.
	if n := len(l.beatsSince(restarted)) - len(l.beatsSince(at[0].Add(900*time.Millisecond))); n > 2 {
		t.Errorf("%d beats within 0.9s of the restart's first: missed ticks applied one by one: %v", n, offsets(restarted, at))
	}
	for i := 2; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 500*time.Millisecond || gap > 2*time.Second {
			t.Errorf("beats %d and %d %s apart, want a second: %v", i-1, i, gap, offsets(restarted, at))
		}
	}
	rec, after := readBeats(t, b, "k")
	t.Logf("%d ticks waited; beats before the stop %d, after the restart %d, at %v (state version %d)",
		info.Pending, before.Beats, after.Beats-before.Beats, offsets(restarted, at), rec.Version)
}

func offsets(from time.Time, at []time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range at {
		out = append(out, t.Sub(from).Round(time.Millisecond))
	}
	return out
}

// TestPeriodicWorkLeftoverScheduleIsRemoved: a schedule the key's state does
// not run (its removal lost in a crash, or a definition changed since) has
// its first tick ignored and is removed then, so it stops firing.
func TestPeriodicWorkLeftoverScheduleIsRemoved(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startBeatWorker(t, b.url)
	send(t, b, "k", "poke")
	send(t, b, "k", "pause") // in "idle", which runs no periodic event
	stale := w.Stats().StaleTimers
	// As a worker that crashed before removing it would leave it.
	if err := b.conn.SchedulePeriodic(context.Background(), "beat", "k", contract.TimerEvery(0), 1, time.Second, time.Now(), contract.Envelope{Event: "beat"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the leftover's first tick", func() bool { return w.Stats().StaleTimers > stale })
	time.Sleep(3 * time.Second) // a negative check: three intervals
	if got := w.Stats().StaleTimers - stale; got > 2 {
		t.Errorf("%d ticks of the leftover schedule: it was not removed", got)
	}
	if rec, d := readBeats(t, b, "k"); rec.State != "idle" || d.Beats != 0 {
		t.Errorf("state %s beats %d", rec.State, d.Beats)
	}
}
