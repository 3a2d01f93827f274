package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// TestCommitWhoseAnswerIsLostIsAnnounced was found by the soak (make soak,
// seed 5, a proxy stall between a worker and its node): a state write that
// reached the store but whose answer never reached the worker (it timed
// out) was retried, met its own write as a conflict, and the worker took
// that for another writer's: it reloaded, found the events applied, and
// acknowledged them as duplicates without ever publishing their statuses.
// A conflict after a write whose outcome is unknown now reads the key: if
// it holds exactly what was written, the write was this one, and its
// statuses go out.
func TestCommitWhoseAnswerIsLostIsAnnounced(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	px := natstest.NewProxy(t, srv.ClientURL())
	cl := natstest.Client(t, srv.ClientURL())
	w := startWorker(t, px.URL(), worker.Config{Queue: worker.QueueConfig{Partitions: 1}}, nil)
	statuses := subscribeKey(t, cl, "k1")

	// The worker's state write of k1 is held, with everything after it on
	// the connection, until its request has timed out.
	stalled := px.StallOn(" $KV.orderly_state_tally.k1 ")
	defer px.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := cl.Publish(ctx, "tally", "k1", add(5))
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "the state write of k1", stalled, 15*time.Second)
	waitFor(t, 30*time.Second, "the state write to time out", func() bool {
		return strings.Contains(strings.Join(w.Problems(), "\n"), "state commits")
	})
	px.Resume() // the held write reaches the store, then the retry

	deadline := time.After(20 * time.Second)
	for {
		select {
		case st := <-statuses:
			if st.JobID != ack.ID {
				continue
			}
			if st.Error != nil || st.Version != 1 {
				t.Fatalf("status of the event: %+v, want it applied at version 1", st)
			}
			if rec, data := readTally(t, cl, "k1"); rec.Version != 1 || !slices.Equal(data.Seen, []int{5}) {
				t.Errorf("state: version %d, seen %v; want 1 and [5]", rec.Version, data.Seen)
			}
			if d := w.Stats().Duplicates; d != 0 {
				t.Errorf("%d duplicates: the worker took its own write for another's", d)
			}
			return
		case <-deadline:
			rec, _ := readTally(t, cl, "k1")
			t.Fatalf("no status of job %s within 20s of the stall's end; the state is at version %d (the write was applied, never announced)", ack.ID, rec.Version)
		}
	}
}
