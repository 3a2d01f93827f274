package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

// deadLetterRaw stores each body on its key's events subject, pulls them all
// and dead-letters each with reason.
func deadLetterRaw(t *testing.T, conn *queue.Conn, reason string, keysAndBodies ...string) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(keysAndBodies); i += 2 {
		if err := conn.PublishRaw(contract.EventSubject("order", keysAndBodies[i]), []byte(keysAndBodies[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	n := len(keysAndBodies) / 2
	ch := make(chan *queue.Msg, n)
	p, err := conn.Pull(ctx, queue.PullConfig{Workflow: "order", MaxWait: 100 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) { ch <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(ctx) }()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case m := <-ch:
			if err := conn.DeadLetter(ctx, "order", m, reason); err != nil {
				t.Fatal(err)
			}
			if err := m.Term(reason); err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("events never arrived")
		}
	}
}

func TestDLQListAndReplay(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()

	out, errOut, code := runCLI(t, ctx, "dlq", "list", "--nats-url", url)
	if code != 0 || out != "no dead letters\n" {
		t.Fatalf("empty: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	deadLetterRaw(t, conn, "malformed: invalid character 'x'", "k1", `{"event":"start_processing","data":{"n":1}}`, "k2", "x{")

	out, errOut, code = runCLI(t, ctx, "--nats-url", url, "dlq", "list", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	var first, second map[string]json.RawMessage
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"seq": "1", "workflow": `"order"`, "key": `"k1"`, "job_id": `""`,
		"reason": `"malformed: invalid character 'x'"`, "subject": `"orderly.events.order.0.k1"`,
		"data": `{"event":"start_processing","data":{"n":1}}`, "headers": "{}", "delivered": "1"}
	for k, v := range want {
		if string(first[k]) != v {
			t.Errorf("%s = %s, want %s", k, first[k], v)
		}
	}
	var at time.Time
	if err := json.Unmarshal(first["at"], &at); err != nil || time.Since(at) > time.Minute {
		t.Errorf("at %s: %v", first["at"], err)
	}
	if string(second["data"]) != `"x{"` || string(second["key"]) != `"k2"` {
		t.Errorf("second %s", lines[1])
	}

	out, _, code = runCLI(t, ctx, "--nats-url", url, "dlq", "list", "--limit", "1")
	if lines := strings.Split(out, "\n"); code != 0 || len(lines) != 3 ||
		!strings.HasPrefix(lines[0], `1 k1 "malformed: invalid character 'x'" - `) || lines[1] != "1 dead letter" {
		t.Fatalf("human: code %d, stdout %q", code, out)
	}

	out, errOut, code = runCLI(t, ctx, "--nats-url", url, "dlq", "replay", "--all")
	ids := strings.Fields(out)
	if code != 0 || len(ids) != 2 || ids[0] != "replay.1" || ids[1] != "replay.2" || !strings.Contains(errOut, "replayed 2 of 2") {
		t.Fatalf("replay --all: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	// The Terms of deadLetterRaw go without waiting for the server.
	deadline := time.After(10 * time.Second)
	for n := pending(t, conn); n != 2; n = pending(t, conn) {
		select {
		case <-deadline:
			t.Fatalf("%d events pending, want 2", n)
		case <-time.After(10 * time.Millisecond): // polling a condition
		}
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "dlq", "list")
	if code != 0 || out != "no dead letters\n" {
		t.Fatalf("after replay: code %d, stdout %q", code, out)
	}
}

func TestDLQReplayFailures(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	deadLetterRaw(t, conn, "unknown_event: nope", "bad:key", `{"event":"nope"}`, "k1", `{"event":"nope"}`)

	_, errOut, code := runCLI(t, ctx, "--nats-url", url, "dlq", "replay", "42")
	if code != 1 || !strings.Contains(errOut, "no such dead letter") {
		t.Fatalf("unknown: code %d, stderr %q", code, errOut)
	}
	out, errOut, code := runCLI(t, ctx, "--nats-url", url, "dlq", "replay", "--all", "--json")
	var ack struct {
		Seq   uint64 `json:"seq"`
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(out), &ack); err != nil || code != 1 || ack.Seq != 2 || ack.JobID != "replay.2" ||
		!strings.Contains(errOut, "dead letter 1: ") || !strings.Contains(errOut, "invalid key") ||
		!strings.Contains(errOut, "1 of 2 dead letters not replayed") {
		t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "dlq", "replay", "2")
	if code != 1 {
		t.Fatalf("replayed twice: code %d, stdout %q", code, out)
	}
}

func TestDLQUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"dlq"},
		{"dlq", "purge"},
		{"dlq", "list", "extra"},
		{"dlq", "list", "--limit", "-1"},
		{"dlq", "list", "--all"},
		{"dlq", "replay"},
		{"dlq", "replay", "1", "--all"},
		{"dlq", "replay", "one"},
		{"dlq", "replay", "0"},
		{"dlq", "replay", "1", "2"},
		{"dlq", "replay", "--limit", "3", "1"},
		{"status", "k", "--all"},
		{"k", "e", "--limit", "1"},
		{"dlq", "list", "--wait"},
	} {
		out, errOut, code := runCLI(t, context.Background(), args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || out != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "enqueue: ") || !strings.HasPrefix(lines[1], "usage: ") {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}
