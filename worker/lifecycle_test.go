package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// noLeak runs body as a subtest, so that its servers and connections are
// gone when it returns, and then fails the test for any goroutine left that
// was not there before.
func noLeak(t *testing.T, name string, body func(t *testing.T)) {
	t.Helper()
	opts := append(natstest.LeakOptions(), goleak.IgnoreCurrent())
	if !t.Run(name, body) {
		return
	}
	if err := goleak.Find(opts...); err != nil {
		t.Errorf("%s left goroutines behind: %v", name, err)
	}
}

// secondWorkflow is a workflow named name: open --close--> closed.
func secondWorkflow(t *testing.T, name string) worker.Workflow {
	t.Helper()
	m, err := statemachine.New(statemachine.Definition[struct{}]{
		Name:        name,
		Initial:     "open",
		States:      []statemachine.StateDef{{Name: "open"}, {Name: "closed", Terminal: true}},
		Events:      []statemachine.EventDef{{Name: "close", Client: true}},
		Transitions: []statemachine.Transition[struct{}]{{From: "open", On: "close", To: "closed"}},
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

// startAsync runs w.Start on a goroutine of its own; its result comes on
// the channel.
func startAsync(ctx context.Context, w *worker.Worker) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	return done
}

func waitClosed(t *testing.T, what string, ch <-chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s not within %s", what, d)
	}
}

func startResult(t *testing.T, started <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-started:
		return err
	case <-time.After(d):
		t.Fatalf("Start did not return within %s", d)
		return nil
	}
}

// TestLifecycleStopCancelsSlowStart stops a worker whose Start waits for a
// server that does not answer (a proxy stalled on the first JetStream
// request, or on the heartbeat that follows provisioning): Stop returns at
// once, Start returns an error wrapping ErrStopped, and nothing of either
// is left running.
func TestLifecycleStopCancelsSlowStart(t *testing.T) {
	for _, c := range []struct{ name, stallOn string }{
		{"while provisioning", "$JS.API."},
		{"while joining the group", " $KV.orderly_members_tally."}, // PUB <subject>: the heartbeat
	} {
		noLeak(t, c.name, func(t *testing.T) {
			srv := natstest.Server(t)
			px := natstest.NewProxy(t, srv.ClientURL())
			nc := natstest.NATS(t, px.URL())
			w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 2}}, tallyWorkflow(t, nil))
			if err != nil {
				t.Fatal(err)
			}
			stalled := px.StallOn(c.stallOn)
			defer px.Resume() // before the connection closes
			started := startAsync(context.Background(), w)
			waitClosed(t, "the stall on "+c.stallOn, stalled, 15*time.Second)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			began := time.Now()
			if err := w.Stop(ctx); err != nil {
				t.Errorf("Stop: %v", err)
			}
			took := time.Since(began)
			t.Logf("Stop returned in %s", took.Round(time.Millisecond))
			// A request to the stalled server times out after 5s: Stop must
			// not wait for that.
			if took > 2*time.Second {
				t.Errorf("Stop took %s: it waited for the start-up instead of ending it", took.Round(time.Millisecond))
			}
			err = startResult(t, started, time.Second)
			if !errors.Is(err, worker.ErrStopped) {
				t.Errorf("Start: %v, want an error wrapping ErrStopped", err)
			}
			t.Logf("Start: %v", err)
			waitClosed(t, "Stopped", w.Stopped(), time.Second)
			if err := w.Start(context.Background()); !errors.Is(err, worker.ErrStopped) {
				t.Errorf("Start after Stop: %v, want ErrStopped", err)
			}
		})
	}
}

// TestLifecycleFailedStartLeavesNothing fails a Start half way, once with
// the server refusing the second workflow's stream (another stream holds its
// subjects) and once with the caller's context ending while the second
// workflow joins its group, the first already pulling: Start returns the
// error, nothing it began is left running, and the worker is stopped for
// good (Stopped closed, Start again ErrStopped, Stop nil).
func TestLifecycleFailedStartLeavesNothing(t *testing.T) {
	noLeak(t, "refused by the server", func(t *testing.T) {
		srv := natstest.Server(t)
		nc := natstest.NATS(t, srv.ClientURL())
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "SQUATTER", Subjects: []string{contract.EventSubject("second", "*")},
		}); err != nil {
			t.Fatal(err)
		}
		w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 2}},
			tallyWorkflow(t, nil), secondWorkflow(t, "second"))
		if err != nil {
			t.Fatal(err)
		}
		err = w.Start(ctx)
		if err == nil {
			t.Fatal("Start worked, with the second workflow's subjects taken")
		}
		t.Logf("Start: %v", err)
		checkStoppedForGood(t, w)
	})
	noLeak(t, "context ends half way", func(t *testing.T) {
		srv := natstest.Server(t)
		px := natstest.NewProxy(t, srv.ClientURL())
		nc := natstest.NATS(t, px.URL())
		w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 2}},
			tallyWorkflow(t, nil), secondWorkflow(t, "second"))
		if err != nil {
			t.Fatal(err)
		}
		stalled := px.StallOn(" $KV.orderly_members_second.") // PUB <subject>: the heartbeat
		defer px.Resume()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		started := startAsync(ctx, w)
		waitClosed(t, "the stall on the second workflow's heartbeat", stalled, 15*time.Second)
		if got := w.Partitions()["tally"]; len(got) != 2 {
			t.Errorf("tally pulls %v before the second workflow joins, want both partitions", got)
		}
		cancel()
		err = startResult(t, started, 5*time.Second)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start: %v, want an error wrapping context.Canceled", err)
		}
		t.Logf("Start: %v", err)
		checkStoppedForGood(t, w)
	})
}

// checkStoppedForGood checks that a worker whose Start failed is stopped:
// nothing pulled, Stopped closed, Start refused, Stop a no-op.
func checkStoppedForGood(t *testing.T, w *worker.Worker) {
	t.Helper()
	waitClosed(t, "Stopped after the failed Start", w.Stopped(), time.Second)
	if got := w.Partitions(); len(got["tally"])+len(got["second"]) > 0 {
		t.Errorf("pulls %v after the failed Start", got)
	}
	if err := w.Start(context.Background()); !errors.Is(err, worker.ErrStopped) {
		t.Errorf("Start again: %v, want ErrStopped", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Errorf("Stop after the failed Start: %v", err)
	}
}

// offsetClock is real time plus an offset the test moves forward.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// answerWithin runs the probes at once and fails the test for each that
// has not returned within d.
func answerWithin(t *testing.T, d time.Duration, probes map[string]func() string) {
	t.Helper()
	type answer struct {
		what, got string
		took      time.Duration
	}
	began := time.Now()
	done := make(chan answer, len(probes))
	for what, probe := range probes {
		// Each ends when its probe does: at the latest when the stall ends.
		go func() { got := probe(); done <- answer{what, got, time.Since(began)} }()
	}
	deadline := time.After(d)
	for got := 0; got < len(probes); {
		select {
		case a := <-done:
			got++
			t.Logf("%s answered in %s: %.200s", a.what, a.took.Round(time.Millisecond), a.got)
			if a.took > d {
				t.Errorf("%s took %s, more than %s", a.what, a.took.Round(time.Millisecond), d)
			}
		case <-deadline:
			deadline = nil // wait for the rest: their goroutines must end
			t.Errorf("a probe did not answer within %s (blocked behind an ownership change?)", d)
		}
	}
}

// TestLifecycleProbesAnswerDuringSlowRebalance stalls the server (a proxy
// that stops forwarding) just as the worker asks it to unpin a partition it
// gives up, and checks that /readyz, /metrics and Stats still answer at once:
// nothing they need may wait for the network. The readiness probe's
// timeout is 2s.
func TestLifecycleProbesAnswerDuringSlowRebalance(t *testing.T) {
	srv := natstest.Server(t)
	px := natstest.NewProxy(t, srv.ClientURL())
	clock := &offsetClock{}
	nc := natstest.NATS(t, px.URL())
	w, err := worker.New(nc, worker.Config{
		ID:    "w1",
		Now:   clock.Now,
		Queue: worker.QueueConfig{Partitions: 2, MemberTTL: 2 * time.Second},
	}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		px.Resume()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "both partitions owned", func() bool {
		return slices.Equal(w.Partitions()["tally"], []int{0, 1})
	})
	hs := httptest.NewServer(w.Handler())
	defer hs.Close()

	// A member that sorts first joins: the worker gives partition 0 up,
	// and the server stalls on the unpin that follows.
	stalled := px.StallOn("$JS.API.CONSUMER.UNPIN.")
	other := natstest.Conn(t, srv.ClientURL())
	if err := other.Heartbeat(context.Background(), "tally", "w0"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-time.After(15 * time.Second):
		t.Fatalf("the worker sent no unpin within 15s; it owns %v", w.Partitions())
	}
	// No pull has completed for longer than the stall allowance: /readyz
	// must look at the partitions owned.
	clock.offset.Store(int64(20 * time.Second))

	answerWithin(t, time.Second, map[string]func() string{
		"Stats": func() string { return fmt.Sprintf("%+v", w.Stats()) },
		"/readyz": func() string {
			code, body := natstest.HTTPGet(hs.URL + "/readyz")
			return fmt.Sprint(code, " ", body)
		},
		"/metrics": func() string {
			code, body := natstest.HTTPGet(hs.URL + "/metrics")
			return fmt.Sprint(code, " ", len(body), " bytes")
		},
		"/partitions": func() string {
			_, body := natstest.HTTPGet(hs.URL + "/partitions")
			return body
		},
	})
}
