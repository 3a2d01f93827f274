package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
)

// TestDelayedEventSurvivesKill9: delayed events stored before the worker
// binary, with its embedded server, is killed with SIGKILL are applied
// once after the restart: one due while nothing ran, one due after the
// restart.
func TestDelayedEventSurvivesKill9(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	w := startWorker(t, dataDir, "--sim-latency", "10ms")
	ids := map[string]string{}
	for key, in := range map[string]string{"down-1": "1s", "after-1": "6s"} {
		out, code := enqueue(t, w.natsAddr, key, "start_processing", "--in", in)
		var id string // the one line of stdout, among stderr's
		for line := range strings.Lines(out) {
			if !strings.Contains(line, " ") {
				id = strings.TrimSpace(line)
			}
		}
		if code != 0 || id == "" || !strings.Contains(out, "delayed: job "+id) {
			t.Fatalf("enqueue %s --in %s: exit %d\n%s", key, in, code, out)
		}
		ids[key] = id
	}
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	natstest.Recv(t, w.exited, natstest.Timeout, "the worker to die of SIGKILL")
	killed := time.Now()
	<-time.After(time.Until(killed.Add(2 * time.Second))) // down-1 falls due while nothing runs

	w = startWorker(t, dataDir, "--sim-latency", "10ms")
	conn := natstest.Client(t, "nats://"+w.natsAddr)
	if _, err := conn.State(context.Background(), "order", "after-1"); err == nil {
		t.Fatal("after-1 applied before its time")
	}
	keys := []string{"down-1", "after-1"}
	allProcessedOnce(t, conn, keys, 30*time.Second)
	for _, key := range keys {
		if j, err := conn.Job(context.Background(), "order", ids[key]); err != nil || j.Key != key {
			t.Fatalf("job %s: %+v %v; want taken by %s", ids[key], j, err, key)
		}
	}
	// Once: still version 2 a while later (allProcessedOnce fails above 2).
	<-time.After(time.Second)
	allProcessedOnce(t, conn, keys, time.Second)
}
