package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// Events published under a subject no partition delivers (a literal * or >
// where the key goes) and events whose key validation refuses all end in the
// dead letters with their reason, so they hold no place under the queue
// limit for long: a queue of 50 takes 120 of them in rounds, and normal
// events between. Left with no worker they fill the queue; across a restart
// of the server and a new worker none is lost, and the queue takes normal
// events again.
func TestUndeliverableSubjects(t *testing.T) {
	t.Parallel()
	// The first start picks the port; the restart comes back on it, for the
	// clients to reconnect to the URL they know.
	dir, addr := t.TempDir(), "127.0.0.1:-1"
	startServer := func() *embedded.Server {
		s, err := embedded.Start(embedded.Config{Listen: addr, DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srv := startServer()
	defer func() { srv.Shutdown() }()
	url := srv.ClientURL()
	addr = strings.TrimPrefix(url, "nats://")
	conn := natstestConn(t, url)
	producer := natstest.Client(t, url)
	cfg := worker.Config{Queue: worker.QueueConfig{QueueLimit: 50, Partitions: 4}}
	w := startWorker(t, url, cfg, nil)
	ctx := context.Background()

	// The keys published under, and the key of each one's dead letter (a
	// wildcard spelled out) with the reason expected.
	long := strings.Repeat("x", 200)
	keys := []struct{ key, dlqKey, reason string }{
		{"*", "%2A", "undeliverable_subject: "}, {">", "%3E", "undeliverable_subject: "},
		{"order:3", "order:3", "invalid_key: "}, {long, long, "invalid_key: "},
	}
	published := map[string]int{} // by dead-letter key
	publishStrays := func(n int) {
		t.Helper()
		for i := range n {
			k := keys[i%len(keys)]
			if err := conn.PublishRaw(contract.EventSubject("tally", k.key), []byte(`{"event":"add","data":{"n":1}}`)); err != nil {
				t.Fatalf("stray %d of %d to key %q: %v", i, n, k.key, err)
			}
			published[k.dlqKey]++
		}
	}
	total := 0
	waitDeadLetters := func(n int) {
		t.Helper()
		var have int
		waitFor(t, 30*time.Second, "the dead letters", func() bool {
			dead, err := producer.DeadLetters(ctx, "tally", 0)
			have = len(dead)
			return err == nil && have >= n
		})
		if have != n {
			t.Fatalf("%d dead letters, want %d", have, n)
		}
	}
	version := uint64(0)
	applyNext := func() {
		t.Helper()
		if _, err := producer.Publish(ctx, "tally", "k", add(int(version))); err != nil {
			t.Fatalf("a normal event after %d strays: %v", total, err)
		}
		version++
		waitFor(t, 10*time.Second, "the normal event to be applied", func() bool {
			rec, err := producer.State(ctx, "tally", "k")
			return err == nil && rec.Version == version
		})
	}
	for range 3 {
		publishStrays(40)
		total += 40
		waitDeadLetters(total)
		applyNext()
	}

	// No worker: nothing takes them out, and they fill the queue.
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	publishStrays(50)
	total += 50
	if _, err := producer.Publish(ctx, "tally", "k", add(99)); !errors.Is(err, client.ErrQueueFull) {
		t.Fatalf("a normal event with 50 strays stored: %v, want ErrQueueFull", err)
	}
	srv.Shutdown()
	srv = startServer()
	startWorker(t, url, cfg, nil)
	waitDeadLetters(total)
	applyNext()

	dead, err := producer.DeadLetters(ctx, "tally", 0)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, k := range keys {
		reasons[k.dlqKey] = k.reason
	}
	for _, d := range dead {
		published[d.Key]--
		if want := reasons[d.Key]; want == "" || !strings.HasPrefix(d.Reason, want) {
			t.Errorf("dead letter of %s (key %q): reason %q, want %s...", d.Subject, d.Key, d.Reason, want)
		}
	}
	for key, n := range published {
		if n != 0 {
			t.Errorf("key %q: %d published and not dead-lettered", key, n)
		}
	}
	info, err := conn.Info(ctx, "tally")
	if err != nil || info.Pending != 0 {
		t.Fatalf("%d events left in the stream (%v)", info.Pending, err)
	}
}
