package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/queue"
)

// TestWorkCutOffStatusShowsPendingWork: `enqueue status KEY` shows the slow
// work a key has pending, as the worker records it: action, attempt, since
// when, and after a failed attempt when the next is due and why.
func TestWorkCutOffStatusShowsPendingWork(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	b, err := conn.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	// A record as the worker writes it, its first attempt failed.
	rec := `{"state":"processing","version":1,"data":{},"updated_at":"2025-01-02T03:04:06Z",` +
		`"pending":[{"id":"order-1/1/fetch_order","action":"fetch_order","job_id":"J1","attempt":2,` +
		`"since":"2025-01-02T03:04:05Z","next_attempt_at":"2025-01-02T03:04:09Z","last_error":"gateway: 503"}],"entered":1}`
	if _, err := b.Put(ctx, "order-1", []byte(rec), 0); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, ctx, "status", "order-1", "--json", "--nats-url", url)
	var got struct {
		Key     string `json:"key"`
		State   string `json:"state"`
		Pending []struct {
			Action        string    `json:"action"`
			JobID         string    `json:"job_id"`
			Attempt       int       `json:"attempt"`
			Since         time.Time `json:"since"`
			NextAttemptAt time.Time `json:"next_attempt_at"`
			LastError     string    `json:"last_error"`
		} `json:"pending"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	since := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if len(got.Pending) != 1 || got.Pending[0].Action != "fetch_order" || got.Pending[0].Attempt != 2 ||
		!got.Pending[0].Since.Equal(since) || got.Pending[0].JobID != "J1" ||
		!got.Pending[0].NextAttemptAt.Equal(since.Add(4*time.Second)) || got.Pending[0].LastError != "gateway: 503" {
		t.Fatalf("pending work in --json: %s", out)
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "status", "order-1")
	want := "order-1 processing version=1 updated_at=2025-01-02T03:04:06Z data={}\n" +
		"  pending action=fetch_order attempt=2 since=2025-01-02T03:04:05Z next_attempt_at=2025-01-02T03:04:09Z job=J1 last_error=\"gateway: 503\"\n"
	if code != 0 || out != want {
		t.Fatalf("code %d, stdout:\n%s\nwant:\n%s", code, out, want)
	}
	// Settled: no pending line, no pending field.
	rec = `{"state":"processing","version":2,"data":{},"updated_at":"2025-01-02T03:04:07Z","entered":1}`
	if _, err := b.Put(ctx, "order-2", []byte(rec), 0); err != nil {
		t.Fatal(err)
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "status", "order-2")
	if code != 0 || strings.Contains(out, "pending") {
		t.Fatalf("settled key: code %d, stdout %q", code, out)
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "status", "order-2", "--json")
	if code != 0 || strings.Contains(out, "pending") {
		t.Fatalf("settled key --json: code %d, stdout %q", code, out)
	}
	// The runtime's bookkeeping stays out of the contract's object.
	if strings.Contains(out, `"entered"`) || strings.Contains(out, `"applied"`) {
		t.Fatalf("--json shows the runtime's bookkeeping: %s", out)
	}
}
