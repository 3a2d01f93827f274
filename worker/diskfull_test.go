package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// smallStore is a real server whose JetStream store holds only maxStore
// bytes, a plain JetStream client on it, and a stream to fill it with.
type smallStore struct {
	url string
	js  jetstream.JetStream
}

func startSmallStore(t *testing.T, maxStore int64) smallStore {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), JetStreamMaxStore: maxStore,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return smallStore{url: s.ClientURL(), js: js}
}

// fill stores chunks in a stream of its own until the store refuses more.
func (s smallStore) fill(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FILLER", Subjects: []string{"filler"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	for i := 0; ; i++ {
		_, err := s.js.Publish(ctx, "filler", chunk)
		if err == nil {
			continue
		}
		if !strings.Contains(err.Error(), "insufficient resources") {
			t.Fatalf("filling the store, chunk %d: %v", i, err)
		}
		return
	}
}

// free purges what fill stored.
func (s smallStore) free(t *testing.T) {
	t.Helper()
	st, err := s.js.Stream(context.Background(), "FILLER")
	if err == nil {
		err = st.Purge(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// pause stops the workflow's partition consumers from delivering (the
// worker's pulls get nothing) until resume: events published meanwhile wait
// in the stream, as if the worker were slow to get to them.
func (s smallStore) pause(t *testing.T, workflow string, partitions int) {
	t.Helper()
	for p := range partitions {
		if _, err := s.js.PauseConsumer(context.Background(), "ORDERLY_EVENTS_"+strings.ToUpper(workflow),
			fmt.Sprintf("orderly_%s_p%d", workflow, p), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
}

func (s smallStore) resume(t *testing.T, workflow string, partitions int) {
	t.Helper()
	for p := range partitions {
		if _, err := s.js.ResumeConsumer(context.Background(), "ORDERLY_EVENTS_"+strings.ToUpper(workflow),
			fmt.Sprintf("orderly_%s_p%d", workflow, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// stranded returns how many of the events stream's messages no partition
// consumer will deliver again: neither waiting nor delivered and pending.
func (s smallStore) stranded(t *testing.T, workflow string, partitions int) (stored, deliverable uint64) {
	t.Helper()
	ctx := context.Background()
	st, err := s.js.Stream(ctx, "ORDERLY_EVENTS_"+strings.ToUpper(workflow))
	if err != nil {
		t.Fatal(err)
	}
	for p := range partitions {
		c, err := st.Consumer(ctx, fmt.Sprintf("orderly_%s_p%d", workflow, p))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deliverable += info.NumPending + uint64(info.NumAckPending)
	}
	return st.CachedInfo().State.Msgs, deliverable
}

// While the store is full, events that must be dead-lettered cannot be: they
// stay deliverable (past MaxDeliver, nothing is parked), the worker says so
// in a metric and in /readyz, and once space returns every one is
// dead-lettered without a restart.
func TestDiskFullWhileDeadLettering(t *testing.T) {
	t.Parallel()
	s := startSmallStore(t, 8<<20)
	spec := worker.QueueConfig{Partitions: 2, MaxDeliver: 2, DeadLetterMaxBytes: 1 << 20}
	conn := natstestConn(t, s.url)
	producer := natstest.Client(t, s.url)
	ctx := context.Background()
	w := startWorker(t, s.url, worker.Config{Queue: spec}, nil)
	web := httptest.NewServer(w.Handler())
	defer web.Close()
	s.pause(t, "tally", spec.Partitions)
	const poison = 12
	for i := range poison {
		if err := rawPublish(conn, "tally", fmt.Sprintf("k%d", i), []byte("{not json")); err != nil {
			t.Fatal(err)
		}
	}
	// And one whose key is refused.
	if err := rawPublish(conn, "tally", "a:b", []byte(`{"event":"add"}`)); err != nil {
		t.Fatal(err)
	}
	const total = poison + 1
	s.fill(t)
	s.resume(t, "tally", spec.Partitions)

	waitFor(t, 60*time.Second, "every event to fail to dead-letter past MaxDeliver", func() bool {
		return metric(t, scrape(t, web.URL), `orderly_dead_letter_failures_total\{workflow="tally"\}`) >= 3*total
	})
	stored, deliverable := s.stranded(t, "tally", spec.Partitions)
	if stored != total || deliverable != total {
		t.Fatalf("%d events stored, %d of them deliverable; want %d", stored, deliverable, total)
	}
	code, body := natstest.HTTPGet(web.URL + "/readyz")
	if code != http.StatusOK || !strings.Contains(body, "dead-lettering of workflow tally failing since") {
		t.Fatalf("/readyz: %d %q, want 200 and what fails", code, body)
	}
	if dead, err := producer.DeadLetters(ctx, "tally", 0); err != nil || len(dead) != 0 {
		t.Fatalf("%d dead letters (%v) while the store is full", len(dead), err)
	}

	s.free(t)
	waitFor(t, 90*time.Second, "every event to be dead-lettered once space returns", func() bool {
		dead, err := producer.DeadLetters(ctx, "tally", 0)
		return err == nil && len(dead) == total
	})
	dead, err := producer.DeadLetters(ctx, "tally", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead {
		code, _, _ := strings.Cut(d.Reason, ":")
		if code != contract.CodeMalformed && code != contract.CodeInvalidKey {
			t.Errorf("dead letter of %s: reason %q", d.Key, d.Reason)
		}
	}
	waitFor(t, 10*time.Second, "the events stream to empty", func() bool {
		info, err := conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
	if p := w.Problems(); len(p) != 0 {
		t.Fatalf("problems still reported: %q", p)
	}
}

// While the store is full, a key's state cannot be committed (nor its timer
// scheduled): its events stay deliverable, the worker says so, and once space
// returns they are applied, in order, without a restart.
func TestCommitFailureKeepsEventDeliverable(t *testing.T) {
	t.Parallel()
	s := startSmallStore(t, 8<<20)
	spec := worker.QueueConfig{Partitions: 2, MaxDeliver: 2, AckWait: 2 * time.Second, DeadLetterMaxBytes: 1 << 20}
	producer := natstest.Client(t, s.url)
	ctx := context.Background()
	w := startWorker(t, s.url, worker.Config{Queue: spec}, nil)
	web := httptest.NewServer(w.Handler())
	defer web.Close()
	s.pause(t, "tally", spec.Partitions)
	const keys = 5
	for i := range keys {
		// "wait" needs a timer scheduled with its commit, "add" only the commit.
		if _, err := producer.Publish(ctx, "tally", fmt.Sprintf("w%d", i), contract.Envelope{Event: "wait"}); err != nil {
			t.Fatal(err)
		}
		for n := range 2 {
			if _, err := producer.Publish(ctx, "tally", fmt.Sprintf("a%d", i), add(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	const total = 3 * keys
	s.fill(t)
	s.resume(t, "tally", spec.Partitions)
	// Held past three ack waits: delivered again each time, past MaxDeliver.
	waitFor(t, 60*time.Second, "commits to fail for three ack waits", func() bool {
		p := w.Problems()
		return len(p) > 0 && strings.Contains(p[0], "state commits of workflow tally failing since") &&
			metric(t, scrape(t, web.URL), `orderly_commit_failures_total\{workflow="tally"\}`) >= 2*keys
	})
	time.Sleep(3 * spec.AckWait) // the scenario is the passing of ack waits
	stored, deliverable := s.stranded(t, "tally", spec.Partitions)
	if stored != total || deliverable != total {
		t.Fatalf("%d events stored, %d of them deliverable; want %d", stored, deliverable, total)
	}
	if code, body := natstest.HTTPGet(web.URL + "/readyz"); code != http.StatusOK || !strings.Contains(body, "state commits of workflow tally failing") {
		t.Fatalf("/readyz: %d %q, want 200 and what fails", code, body)
	}

	s.free(t)
	waitFor(t, 60*time.Second, "every event to be applied once space returns", func() bool {
		for i := range keys {
			a, err := producer.State(ctx, "tally", fmt.Sprintf("a%d", i))
			if err != nil || a.Version != 2 {
				return false
			}
			// Applied, and then perhaps its timeout fired too.
			if w, err := producer.State(ctx, "tally", fmt.Sprintf("w%d", i)); err != nil || w.Version < 1 {
				return false
			}
		}
		return true
	})
	for i := range keys {
		if _, d := readTally(t, producer, fmt.Sprintf("a%d", i)); fmt.Sprint(d.Seen) != "[0 1]" {
			t.Errorf("a%d applied %v, want [0 1]", i, d.Seen)
		}
	}
	if dead, err := producer.DeadLetters(ctx, "tally", 0); err != nil || len(dead) != 0 {
		t.Fatalf("%d dead letters (%v): the events were the store's victims, not faulty", len(dead), err)
	}
	if p := w.Problems(); len(p) != 0 {
		t.Fatalf("problems still reported: %q", p)
	}
}

// A key whose stored state cannot be decoded is a fault of the data, not of
// the store: its events come again with a growing delay and, on their
// MaxDeliver-th delivery, go to the dead letters (max_deliveries) with the
// cause; other keys go on meanwhile.
func TestUndecodableStateDeadLettersAfterMaxDeliver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{MaxDeliver: 3}}, nil)
	ctx := context.Background()
	bucket, err := b.conn.Bucket(ctx, "tally")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Put(ctx, "bad", []byte("{not a record"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "bad", add(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Publish(ctx, "tally", "good", add(2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the good key's event", func() bool {
		rec, err := b.client.State(ctx, "tally", "good")
		return err == nil && rec.Version == 1
	})
	// Deliveries 1, 2 and 3, a second and then two seconds apart.
	waitFor(t, 30*time.Second, "the bad key's event in the dead letters", func() bool { return w.Stats().DeadLettered == 1 })
	dead, err := b.client.DeadLetters(ctx, "tally", 0)
	if err != nil || len(dead) != 1 {
		t.Fatalf("%d dead letters (%v)", len(dead), err)
	}
	if d := dead[0]; d.Key != "bad" || d.Delivered != 3 || !strings.HasPrefix(d.Reason, "max_deliveries: delivered 3 times; the key's state could not be loaded") {
		t.Fatalf("dead letter of %s delivered %d: %q", d.Key, d.Delivered, d.Reason)
	}
}
