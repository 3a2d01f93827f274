package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// TestResumeWakeUpStandsUntilReArmed was found by the soak (CI, seed 21: a
// key's slow work stayed pending for good after worker kills, a node kill
// and proxy faults). While a key has work pending, a wake-up for it must
// stand: a schedule in the timers stream, or a fired one not acknowledged.
// A worker that took a wake-up for a key it had not loaded resumed the work,
// re-armed the next wake-up, and acknowledged this one even when re-arming
// failed; when that worker died before the work was done, nothing was left
// to wake the key. Now the wake-up is acknowledged only once the next one
// is armed.
func TestResumeWakeUpStandsUntilReArmed(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	px := natstest.NewProxy(t, srv.ClientURL())
	b := bundle{url: srv.ClientURL(), conn: natstest.Conn(t, srv.ClientURL()), client: natstest.Client(t, srv.ClientURL())}
	spec := worker.QueueConfig{Partitions: 1, MemberTTL: 2 * time.Second, PinnedTTL: 2 * time.Second}
	done := watchWorked(t, b.client)
	hang := func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	js, err := jetstream.New(natstest.NATS(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	consumer := func() *jetstream.ConsumerInfo {
		c, err := js.Consumer(context.Background(), "ORDERLY_EVENTS_TALLY", "orderly_tally_p0")
		if err != nil {
			return nil
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return nil
		}
		return info
	}

	// a starts k1's work, armed to wake the key a second later, and dies.
	a := startReplica(t, b.url, worker.Config{ID: "a", Queue: spec, ResumeAfter: time.Second}, hang)
	publishWork(t, b.client, []string{"k1"})
	waitFor(t, 10*time.Second, "k1's work to start on a", func() bool { return a.w.Stats().ActionsRunning == 1 })
	a.crash()
	waitFor(t, 15*time.Second, "k1's wake-up to fire", func() bool {
		info := consumer()
		return info != nil && info.NumPending == 1
	})

	// b takes the wake-up and resumes the work; its re-arm of the next
	// wake-up is lost with its connection.
	rearm := px.StallOn(" orderly.timers.tally.resume.k1 ")
	bw := startReplica(t, px.URL(), worker.Config{ID: "b", Queue: spec, ResumeAfter: 5 * time.Second}, hang)
	waitClosed(t, "b's re-arm of k1's wake-up", rearm, 20*time.Second)
	px.Cut()
	px.Resume()
	waitFor(t, 20*time.Second, "b to be done with the wake-up", func() bool {
		info := consumer()
		return info != nil && info.NumAckPending == 0 && info.NumPending == 0 && bw.w.Stats().ActionsRunning == 1
	})

	// b dies with the work running: the next wake-up must come.
	bw.crash()
	startReplica(t, b.url, worker.Config{ID: "c", Queue: spec},
		func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil })
	done.waitAll(t, []string{"k1"}, time.Now().Add(20*time.Second))
	if rec, _ := readTally(t, b.client, "k1"); rec.Version != 2 || len(rec.Pending) != 0 {
		t.Errorf("k1: version %d, pending %v; want 2 and none", rec.Version, rec.Pending)
	}
}

// TestResumeWakeUpRemovedWhenWorkEnds: once a key's slow work has ended, its
// resume wake-up is removed from the timers stream. Left standing, it fired
// ResumeAfter after the work began, one more event to store, deliver and
// check for every action done (e2ebench wakeups: 616-697 µs of CPU per
// order event with them, 451-490 without).
func TestResumeWakeUpRemovedWhenWorkEnds(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	b := bundle{url: srv.ClientURL(), conn: natstest.Conn(t, srv.ClientURL()), client: natstest.Client(t, srv.ClientURL())}
	js, err := jetstream.New(natstest.NATS(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	done := watchWorked(t, b.client)
	var release = make(chan struct{})
	startReplica(t, b.url, worker.Config{ID: "a", Queue: worker.QueueConfig{Partitions: 1}, ResumeAfter: time.Minute},
		func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
			select {
			case <-release:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	const subject = "orderly.timers.tally.resume.k1"
	wakeUps := func() uint64 {
		s, err := js.Stream(context.Background(), "ORDERLY_TIMERS_TALLY")
		if err != nil {
			return 0
		}
		info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0
		}
		return info.State.Subjects[subject]
	}
	publishWork(t, b.client, []string{"k1"})
	// While the work runs its wake-up stands.
	waitFor(t, 10*time.Second, "k1's wake-up to be armed", func() bool { return wakeUps() == 1 })
	close(release)
	done.waitAll(t, []string{"k1"}, time.Now().Add(10*time.Second))
	// The removal takes the schedule's place and expires a second later.
	waitFor(t, 10*time.Second, "k1's wake-up to be gone", func() bool { return wakeUps() == 0 })
}
