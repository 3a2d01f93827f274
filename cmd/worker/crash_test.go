package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// publishStarts sends start_processing for n keys named prefix-i and waits
// for JetStream to store them all.
func publishStarts(t *testing.T, conn *client.Client, prefix string, n int) []string {
	t.Helper()
	var keys []string
	var pending []*client.PendingPublish
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		p, err := conn.PublishAsync("order", key, contract.Envelope{Event: "start_processing"})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
		pending = append(pending, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	for _, p := range pending {
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// watchInFlight counts keys moved to processing with their fetch still
// running; subscribe before publishing, or fast statuses are missed.
func watchInFlight(t *testing.T, conn *client.Client) func(n int) {
	t.Helper()
	got := make(chan struct{}, 1000)
	sub, err := conn.Subscribe("order", "", func(s contract.Status) {
		if s.Event == "start_processing" && !s.Settled {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func(n int) {
		t.Helper()
		for range n {
			select {
			case <-got:
			case <-time.After(30 * time.Second):
				t.Fatalf("fewer than %d keys in flight", n)
			}
		}
	}
}

// allProcessedOnce waits until every key has applied start_processing and
// order_fetched, each exactly once: version 2, never more.
func allProcessedOnce(t *testing.T, conn *client.Client, keys []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, key := range keys {
		for {
			rec, err := conn.State(context.Background(), "order", key)
			if err == nil && rec.Version > 2 {
				t.Fatalf("%s: version %d: a transition was applied twice", key, rec.Version)
			}
			if err == nil && rec.State == "processing" && rec.Version == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s stuck: %+v %v", key, rec, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestKill9WithSlowWorkInFlight(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	flags := []string{"--sim-latency", "700ms", "--action-timeout", "1s"}
	w := startWorker(t, dataDir, flags...)
	conn := natstest.Client(t, "nats://"+w.natsAddr)
	inFlight := watchInFlight(t, conn)
	keys := publishStarts(t, conn, "crash", 500)
	inFlight(100)
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, w.exited, natstest.Timeout, "the worker to die of SIGKILL")
	conn.Close()

	w = startWorker(t, dataDir, flags...)
	allProcessedOnce(t, natstest.Client(t, "nats://"+w.natsAddr), keys, 90*time.Second)
}

func TestSigtermWithSlowWorkInFlight(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	flags := []string{"--sim-latency", "3s", "--action-timeout", "5s", "--shutdown-timeout", "1s"}
	w := startWorker(t, dataDir, flags...)
	conn := natstest.Client(t, "nats://"+w.natsAddr)
	inFlight := watchInFlight(t, conn)
	keys := publishStarts(t, conn, "term", 50)
	inFlight(50)
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if w.err != nil {
		t.Fatalf("exit: %v", w.err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("exit took %s with a 1s shutdown timeout", d)
	}
	conn.Close()

	w = startWorker(t, dataDir, "--sim-latency", "10ms")
	allProcessedOnce(t, natstest.Client(t, "nats://"+w.natsAddr), keys, 30*time.Second)
}

// TestWorkCutOffByCrashResumes: kill -9 with slow work running and more
// queued than slots, with the default action timeout (so the wake-ups armed
// at the start are 2m30s away). After a restart every key finishes within
// 10s, and no key whose work had finished has it resumed.
func TestWorkCutOffByCrashResumes(t *testing.T) {
	t.Parallel()
	const n = 40
	dataDir := t.TempDir()
	w := startWorker(t, dataDir, "--sim-latency", "1s", "--concurrency", "4")
	conn := natstest.Client(t, "nats://"+w.natsAddr)
	var mu sync.Mutex
	finished := map[string]bool{}
	sub, err := conn.Subscribe("order", "", func(s contract.Status) {
		if s.Event == "order_fetched" && s.Settled && s.Error == nil {
			mu.Lock()
			finished[s.Key] = true
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := publishStarts(t, conn, "cut", n)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(finished)
		mu.Unlock()
		if k >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d keys finished their work", k)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, w.exited, natstest.Timeout, "the worker to die of SIGKILL")
	_ = sub.Unsubscribe()
	conn.Close()
	mu.Lock()
	before := maps.Clone(finished)
	mu.Unlock()
	if len(before) >= n/2 {
		t.Fatalf("%d of %d keys finished before the kill: too few cut off", len(before), n)
	}

	restarted := time.Now()
	w2 := startWorker(t, dataDir, "--sim-latency", "10ms")
	allProcessedOnce(t, natstest.Client(t, "nats://"+w2.natsAddr), keys, time.Until(restarted.Add(10*time.Second)))
	t.Logf("%d keys finished before the kill; all %d within %s of the restart", len(before), n, time.Since(restarted).Round(time.Millisecond))
	resumed := 0
	for line := range strings.Lines(w2.out.String()) {
		var l struct{ Message, Key string }
		if json.Unmarshal([]byte(line), &l) != nil || l.Message != "resuming pending actions" {
			continue
		}
		resumed++
		if before[l.Key] {
			t.Errorf("%s: its work had finished before the kill, and was resumed", l.Key)
		}
	}
	if resumed == 0 {
		t.Errorf("no key was resumed; log:\n%s", w2.out.String())
	}
}
