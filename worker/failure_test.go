package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

func TestRedeliveryAfterLostAckIsNotAppliedTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := worker.Config{Queue: worker.QueueConfig{AckWait: 500 * time.Millisecond}}
	w := startWorker(t, b.url, cfg, nil)
	worker.SetDropAck(w, func(m *queue.Msg) bool { return m.Delivered == 1 })
	settled := countSettled(t, b.client, "tally", 2)
	ctx := context.Background()
	for i := range 2 {
		if _, err := b.client.Publish(ctx, "tally", "k", add(i)); err != nil {
			t.Fatal(err)
		}
	}
	settled.wait(t, 10*time.Second)
	// Both acks were lost: JetStream delivers both again after the ack wait.
	waitFor(t, 10*time.Second, "redeliveries acknowledged", func() bool {
		info, err := b.conn.Info(ctx, "tally")
		return err == nil && info.Pending == 0
	})
	if d := w.Stats().Duplicates; d != 2 {
		t.Fatalf("%d duplicates skipped, want 2", d)
	}
	rec, d := readTally(t, b.client, "k")
	if rec.Version != 2 || !slices.Equal(d.Seen, []int{0, 1}) {
		t.Fatalf("version %d applied %v", rec.Version, d.Seen)
	}
}

func TestNATSServerRestartDuringTraffic(t *testing.T) {
	t.Parallel()
	const keys, perKey = 50, 20
	dir := t.TempDir()
	// The first start picks the port; the restart must come back on it, for
	// the clients to reconnect to the URL they know.
	addr := "127.0.0.1:-1"
	start := func() *embedded.Server {
		s, err := embedded.Start(embedded.Config{Listen: addr, DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srv := start()
	url := srv.ClientURL()
	addr = strings.TrimPrefix(url, "nats://")
	w := startWorker(t, url, worker.Config{Queue: worker.QueueConfig{AckWait: 5 * time.Second}}, nil)
	producer := natstest.Client(t, url)

	// Producers retry with the same job id until JetStream acknowledges:
	// the duplicate window makes the retries harmless.
	var wg sync.WaitGroup
	ended, end := context.WithCancel(context.Background())
	t.Cleanup(func() { end(); wg.Wait() })
	half := make(chan struct{})
	var once sync.Once
	for k := range keys {
		wg.Go(func() {
			for i := range perKey {
				if k == 0 && i == perKey/2 {
					once.Do(func() { close(half) })
				}
				id := fmt.Sprintf("k%d-%d", k, i)
				for {
					ctx, cancel := context.WithTimeout(ended, time.Second)
					_, err := producer.Publish(ctx, "tally", fmt.Sprintf("k%d", k), add(i), client.WithJobID(id))
					cancel()
					if err == nil {
						break
					}
					if errors.Is(err, contract.ErrInvalidKey) {
						t.Error(err)
						return
					}
					if ended.Err() != nil {
						return
					}
					time.Sleep(50 * time.Millisecond) // producer back-off while the server is away
				}
			}
		})
	}
	natstest.Recv(t, half, natstest.Timeout, "half the traffic published")
	srv.Shutdown()
	waitFor(t, 5*time.Second, "readiness to report the outage", func() bool { return !w.Ready() })
	time.Sleep(5 * time.Second) // the outage itself
	srv = start()
	defer srv.Shutdown()
	natstest.Wait(t, &wg, 2*natstest.Timeout, "the producers to get every event stored after the restart")
	waitFor(t, 30*time.Second, "readiness to recover", w.Ready)

	want := make([]int, perKey)
	for i := range want {
		want[i] = i
	}
	check := natstest.Client(t, url)
	waitFor(t, 60*time.Second, "every key to apply its events", func() bool {
		for k := range keys {
			rec, err := check.State(context.Background(), "tally", fmt.Sprintf("k%d", k))
			if err != nil || rec.Version < perKey {
				return false
			}
		}
		return true
	})
	for k := range keys {
		rec, d := readTally(t, check, fmt.Sprintf("k%d", k))
		if rec.Version != perKey || !slices.Equal(d.Seen, want) {
			t.Fatalf("k%d: version %d applied %v", k, rec.Version, d.Seen)
		}
	}
}
