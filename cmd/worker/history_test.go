package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// restart stops the worker with SIGTERM, checks that it exits 0, and starts
// another on the same store with the same extra flags.
func restart(t *testing.T, w *proc, dataDir string, extra ...string) *proc {
	t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := w.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("worker exit %d after SIGTERM\n%s", code, w.out.String())
	}
	return startWorker(t, dataDir, extra...)
}

// TestHistoryListsTheWalkThroughAfterARestart: after the README's walk-through
// of order-1 (three enqueue --wait steps) and a restart of the worker (its
// embedded server too), `enqueue history order-1` prints the six
// transitions in order, one line each as watch prints them, and --json one
// object per line.
func TestHistoryListsTheWalkThroughAfterARestart(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	w := startWorker(t, dataDir, "--sim-latency", "5ms")
	for _, event := range []string{"start_processing", "request_payment", "confirm_payment"} {
		if out, code := enqueue(t, w.natsAddr, "order-1", event, "--wait"); code != 0 {
			t.Fatalf("%s: exit %d\n%s", event, code, out)
		}
	}
	w = restart(t, w, dataDir, "--sim-latency", "5ms")

	want := []string{
		"order-1 idle -> processing (version 1) event=start_processing",
		"order-1 processing -> processing (version 2) event=order_fetched",
		"order-1 processing -> processing (version 3) event=request_payment",
		"order-1 processing -> awaiting_payment (version 4) event=payment_authorized",
		"order-1 awaiting_payment -> awaiting_payment (version 5) event=confirm_payment",
		"order-1 awaiting_payment -> completed (version 6) event=payment_captured",
	}
	out, code := enqueue(t, w.natsAddr, "history", "order-1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != len(want) {
		t.Fatalf("history order-1: exit %d, %d lines, want %d:\n%s", code, len(lines), len(want), out)
	}
	for i, line := range lines {
		// "<at> <key> <from> -> <to> (version N) event=E job=J ...": the
		// same line as watch prints.
		_, rest, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(rest, want[i]+" job=") {
			t.Errorf("line %d: %q, want %q then the job id", i+1, line, want[i])
		}
	}
	out, code = enqueue(t, w.natsAddr, "history", "order-1", "--json")
	var got []contract.Status
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var st contract.Status
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			t.Fatalf("history --json: %q: %v\n%s", line, err, out)
		}
		got = append(got, st)
	}
	if code != 0 || len(got) != 6 || got[5].To != "completed" || got[5].Version != 6 || !got[5].Settled {
		t.Fatalf("history --json: exit %d\n%s", code, out)
	}
	// A key with none: empty, exit 0.
	if out, code := enqueue(t, w.natsAddr, "history", "order-404"); code != 0 || !strings.Contains(out, "no stored statuses for key order-404") {
		t.Fatalf("history of an unknown key: exit %d\n%s", code, out)
	}
}

// watchProc is `enqueue watch ... --json` running as a process, its
// statuses read as they come.
type watchProc struct {
	statuses chan contract.Status
	stderr   *natstest.Output
}

func startWatch(t *testing.T, natsAddr string, args ...string) *watchProc {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "enqueue"), append([]string{"watch", "--json", "--nats-url", "nats://" + natsAddr}, args...)...)
	cmd.Env = []string{}
	w := &watchProc{statuses: make(chan contract.Status, 10_000), stderr: &natstest.Output{}}
	cmd.Stderr = w.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reading sync.WaitGroup
	reading.Go(func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			var st contract.Status
			if err := json.Unmarshal(s.Bytes(), &st); err != nil {
				t.Errorf("watch %v: %q: %v", args, s.Text(), err)
				continue
			}
			w.statuses <- st
		}
	})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		reading.Wait() // the pipe ends with the process
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("watch %v stderr:\n%s", args, w.stderr.String())
		}
	})
	deadline := time.Now().Add(natstest.Timeout)
	for !strings.Contains(w.stderr.String(), "watching orderly.status.order.*") {
		if time.Now().After(deadline) {
			t.Fatalf("watch %v not ready within %s:\n%s", args, natstest.Timeout, w.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// collect takes n statuses, then checks that no more come for a moment.
func (w *watchProc) collect(t *testing.T, n int, what string) []contract.Status {
	t.Helper()
	got := make([]contract.Status, 0, n)
	for len(got) < n {
		select {
		case st := <-w.statuses:
			got = append(got, st)
		case <-time.After(natstest.Timeout):
			t.Fatalf("%s: %d statuses, want %d", what, len(got), n)
		}
	}
	select {
	case st := <-w.statuses:
		t.Fatalf("%s: a status past the %d expected: %+v", what, n, st)
	case <-time.After(500 * time.Millisecond):
	}
	return got
}

// TestWatchAcrossAWorkerRestartMissesNothing: 400 orders make 800 statuses
// (processing, then order_fetched); the worker is restarted (its embedded
// server too) after the first 200, and the other 200 are processed while the
// watchers, kept away by a stalled TCP proxy, cannot reconnect yet.
// `enqueue watch --all` and plain `enqueue watch`, both started before, each
// print every one of the 800 exactly once, each key's in version order:
// they follow the history stream and resume after the last status they
// printed once they are back. (Plain watch on the status subject alone
// missed the 400 published while it was away.)
func TestWatchAcrossAWorkerRestartMissesNothing(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	addr, release := natstest.ReserveAddr(t)
	release()
	flags := []string{"--listen", addr, "--sim-latency", "20ms"}
	w := startWorker(t, dataDir, flags...)
	px := natstest.NewProxy(t, "nats://"+addr)
	proxied := strings.TrimPrefix(px.URL(), "nats://")
	all := startWatch(t, proxied, "--all")
	plain := startWatch(t, proxied)

	first := natstest.Client(t, "nats://"+addr)
	keys := publishStarts(t, first, "a", 200)
	var early []contract.Status
	for len(early) < 100 {
		select {
		case st := <-all.statuses:
			early = append(early, st)
		case <-time.After(natstest.Timeout):
			t.Fatalf("%d statuses before the restart, want 100", len(early))
		}
	}

	px.Stall() // the watchers cannot get back until Resume
	w = restart(t, w, dataDir, flags...)
	second := natstest.Client(t, "nats://"+addr)
	keys = append(keys, publishStarts(t, second, "b", 200)...)
	deadline := time.Now().Add(natstest.Timeout)
	for _, key := range keys {
		for {
			sts, err := second.History(t.Context(), "order", key)
			if err != nil {
				t.Fatal(err)
			}
			if len(sts) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stored statuses %+v", key, sts)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	px.Resume()

	check := func(name string, got []contract.Status) {
		t.Helper()
		byKey := map[string][]uint64{}
		for _, st := range got {
			byKey[st.Key] = append(byKey[st.Key], st.Version)
		}
		for _, key := range keys {
			if v := fmt.Sprint(byKey[key]); v != "[1 2]" {
				t.Errorf("%s: key %s: versions %s, want [1 2]", name, key, v)
			}
		}
	}
	check("watch --all", append(early, all.collect(t, 800-len(early), "watch --all")...))
	check("watch", plain.collect(t, 800, "watch"))
}

// TestWaitFindsAJobWhoseStatusCameBeforeIt: `enqueue --wait` with the id of
// a job that has already settled reports that job's outcome, from the key's
// history: a rejected job exits 1 again with its rejection (before, the
// key's current state, exit 0); and with the id of a job still doing its
// slow work, it waits for the job to settle (before, the state as it was,
// at once).
func TestWaitFindsAJobWhoseStatusCameBeforeIt(t *testing.T) {
	t.Parallel()
	w := startWorker(t, t.TempDir(), "--sim-latency", "1s")
	for range 2 {
		out, code := enqueue(t, w.natsAddr, "order-2", "confirm_payment", "--id", "job-r", "--wait")
		if code != 1 || !strings.Contains(out, "error invalid_transition") {
			t.Fatalf("rejected job, waited for: exit %d\n%s", code, out)
		}
	}

	if out, code := enqueue(t, w.natsAddr, "order-5", "start_processing", "--id", "job-s"); code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	conn := natstest.Client(t, "nats://"+w.natsAddr)
	deadline := time.Now().Add(natstest.Timeout)
	for {
		// Taken, its fetch under way: status version 1 out, not settled.
		sts, err := conn.History(t.Context(), "order", "order-5")
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) == 1 && !sts[0].Settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order-5: statuses %+v", sts)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, code := enqueue(t, w.natsAddr, "order-5", "start_processing", "--id", "job-s", "--wait")
	if code != 0 || !strings.Contains(out, "order-5 processing (version 2)") {
		t.Fatalf("job still at work, waited for: exit %d\n%s", code, out)
	}
}
