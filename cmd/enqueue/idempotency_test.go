package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
)

// TestIdempotencyKeyConflictExitsOne: a job id reused for another key is
// refused with exit 1 and the key that holds it, and nothing is stored;
// whether the original still waits in the queue or a worker took it.
func TestIdempotencyKeyConflictExitsOne(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	// Queued: only the stream knows job-1.
	if _, errOut, code := runCLI(t, ctx, "--nats-url", url, "--id", "job-1", "k1", "start_processing"); code != 0 {
		t.Fatalf("first: code %d, stderr %q", code, errOut)
	}
	// Taken: a worker claimed job-2 (done here as the worker does).
	claimJob(t, conn, contract.Job{ID: "job-2", Key: "k1", Event: "start_processing", Sequence: 99, At: time.Now()})
	for _, id := range []string{"job-1", "job-2"} {
		for _, args := range [][]string{{"k2", "start_processing"}, {"k1", "confirm_payment"}} {
			out, errOut, code := runCLI(t, ctx, append([]string{"--nats-url", url, "--id", id}, args...)...)
			if code != 1 || out != "" || strings.Count(errOut, "\n") != 1 ||
				!strings.Contains(errOut, `job id "`+id+`" is held by key k1 (event start_processing)`) {
				t.Fatalf("%s %v: code %d, stdout %q, stderr %q", id, args, code, out, errOut)
			}
		}
	}
	if n := pending(t, conn); n != 1 {
		t.Fatalf("%d events stored, want only the first", n)
	}
	_, errOut, code := runCLI(t, ctx, "--nats-url", url, "--id", "bad\tid", "k1", "start_processing")
	if code != 1 || !strings.Contains(errOut, "invalid job id") {
		t.Fatalf("bad id: code %d, stderr %q", code, errOut)
	}
}

// TestIdempotencyKeyDuplicateNamesOriginal: the same id for the same key and
// event is a duplicate, exit 0, naming the original job.
func TestIdempotencyKeyDuplicateNamesOriginal(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	if _, errOut, code := runCLI(t, ctx, "--nats-url", url, "--id", "job-1", "k1", "start_processing"); code != 0 {
		t.Fatalf("first: code %d, stderr %q", code, errOut)
	}
	out, errOut, code := runCLI(t, ctx, "--nats-url", url, "--id", "job-1", "k1", "start_processing", "--json")
	var ack struct {
		JobID     string `json:"job_id"`
		Duplicate bool   `json:"duplicate"`
		Sequence  uint64 `json:"sequence"`
		Original  struct {
			Key      string    `json:"key"`
			Sequence uint64    `json:"sequence"`
			At       time.Time `json:"at"`
			Taken    bool      `json:"taken"`
		} `json:"original"`
	}
	if err := json.Unmarshal([]byte(out), &ack); err != nil || code != 0 {
		t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	if !ack.Duplicate || ack.JobID != "job-1" || ack.Original.Key != "k1" || ack.Original.Sequence != 1 || ack.Original.Taken || ack.Original.At.IsZero() {
		t.Fatalf("ack %+v", ack)
	}
	if !strings.Contains(errOut, "duplicate: job job-1 was already stored for key k1 (sequence 1, queued since ") {
		t.Fatalf("stderr %q", errOut)
	}

	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	claimJob(t, conn, contract.Job{ID: "job-2", Key: "k2", Event: "start_processing", Sequence: 42, At: at})
	out, errOut, code = runCLI(t, ctx, "--nats-url", url, "--id", "job-2", "k2", "start_processing")
	if code != 0 || strings.TrimSpace(out) != "job-2" ||
		!strings.Contains(errOut, "duplicate: job job-2 was already stored for key k2 (sequence 42, taken by a worker at 2026-03-04T05:06:07Z)") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	// --wait follows the original: taken, so the key's state (none here,
	// as if it was rejected), at once rather than at the timeout.
	start := time.Now()
	out, errOut, code = runCLI(t, ctx, "--nats-url", url, "--id", "job-2", "k2", "start_processing", "--wait", "--timeout", "20s")
	if code != 0 || out != "k2 (no state) (version 0)\n" || time.Since(start) > 10*time.Second {
		t.Fatalf("--wait: code %d, stdout %q, stderr %q after %s", code, out, errOut, time.Since(start))
	}
	if n := pending(t, conn); n != 1 {
		t.Fatalf("%d events stored, want only the first", n)
	}
}

// claimJob claims a job id as a worker does before applying its event.
func claimJob(t *testing.T, conn *queue.Conn, j contract.Job) {
	t.Helper()
	jobs, err := conn.Jobs(context.Background(), "order")
	if err != nil {
		t.Fatal(err)
	}
	if r := jobs.Claim(context.Background(), []contract.Job{j}); r[0].Err != nil || r[0].Outcome != contract.Claimed {
		t.Fatalf("claim %+v: %+v", j, r[0])
	}
}

// TestIdempotencyKeyUnderRoles: with only the producer role's permissions,
// enqueue still tells a duplicate from a conflict (it reads the claims and
// the stream), and the worker role claims; a producer cannot forge a claim.
func TestIdempotencyKeyUnderRoles(t *testing.T) {
	t.Parallel()
	e := startRoles(t, time.Minute)
	ctx := context.Background()
	prod := e.creds(roles.Producer)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runCLI(t, ctx, append(args, prod...)...)
	}
	if out, errOut, code := run("o1", "start_processing", "--id", "job-r", "--wait"); code != 0 || !strings.Contains(out, "o1 processing") {
		t.Fatalf("first: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, errOut, code := run("o1", "start_processing", "--id", "job-r"); code != 0 || strings.TrimSpace(out) != "job-r" ||
		!strings.Contains(errOut, "duplicate: job job-r was already stored for key o1 (sequence 1, taken by a worker at ") {
		t.Fatalf("duplicate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := run("o2", "start_processing", "--id", "job-r"); code != 1 || !strings.Contains(errOut, "held by key o1") {
		t.Fatalf("conflict: exit %d, stderr %q", code, errOut)
	}
	// Two publishes of one id back to back: the second is a duplicate in
	// the stream's window, judged by the original's stored copy (read with
	// the producer's permissions) or, once the worker has taken it, by its
	// claim.
	conn := e.conn(t, roles.Producer)
	p1, err := conn.PublishAsync("order", "q1", contract.Envelope{Event: "start_processing"}, client.WithJobID("job-q"))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := conn.PublishAsync("order", "q2", contract.Envelope{Event: "start_processing"}, client.WithJobID("job-q"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var conflict *client.IDConflictError
	if _, err := p2.Wait(ctx); !errors.As(err, &conflict) || conflict.Held.Key != "q1" {
		t.Fatalf("the second: %v, want a conflict with q1", err)
	}

	v := &violations{ch: make(chan struct{}, 1)}
	nc, err := nats.Connect(e.url, nats.UserInfo(string(roles.Producer), password(roles.Producer)), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m := nats.NewMsg("$KV.orderly_jobs_order.job-forged")
	m.Data = []byte(`{"key":"o9","event":"start_processing","seq":1,"at":"2026-01-01T00:00:00Z"}`)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := nc.RequestMsgWithContext(pctx, m); err == nil {
		t.Error("a producer wrote a job claim")
	}
	v.waitFor(t, m.Subject)
}
