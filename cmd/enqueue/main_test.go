package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// setup starts a server, provisions workflow "order" (one partition unless
// spec says otherwise) and returns its URL and a connection to it.
func setup(t *testing.T, spec queue.Spec) (string, *queue.Conn) {
	t.Helper()
	srv := natstest.Server(t)
	conn := natstest.Conn(t, srv.ClientURL())
	spec.Workflow = "order"
	if spec.Partitions == 0 {
		spec.Partitions = 1
	}
	if _, err := conn.Provision(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), conn
}

// syncBuffer is an output that tests may read while the command runs.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		select {
		case s.wrote <- struct{}{}:
		default:
		}
	}()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the output contains want.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		select {
		case <-s.wrote:
		case <-timeout:
			t.Fatalf("output never contained %q; got %q", want, s.String())
		}
	}
}

func noEnv(string) string { return "" }

// runCLI runs the command with an empty environment and returns its output
// and exit code.
func runCLI(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runStdin(t, ctx, nil, args...)
}

func runStdin(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := command{stdin: stdin, stdout: &out, stderr: &errOut, getenv: noEnv}
	code := exitCode(cmd.run(ctx, args))
	return out.String(), errOut.String(), code
}

func pending(t *testing.T, conn *queue.Conn) uint64 {
	t.Helper()
	info, err := conn.Info(context.Background(), "order")
	if err != nil {
		t.Fatal(err)
	}
	return info.Pending
}

func TestPublishPrintsJobID(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	out, errOut, code := runCLI(t, ctx, "order-1", "start_processing", `{"amount":12}`, "--nats-url", url)
	if code != 0 || strings.TrimSpace(out) == "" || strings.Contains(strings.TrimSpace(out), " ") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = runCLI(t, ctx, "--json", "--nats-url", url, "order-2", "start_processing")
	var ack struct {
		JobID     string `json:"job_id"`
		Key       string `json:"key"`
		Event     string `json:"event"`
		Sequence  uint64 `json:"sequence"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := json.Unmarshal([]byte(out), &ack); err != nil || code != 0 {
		t.Fatalf("code %d, stdout %q: %v", code, out, err)
	}
	if ack.JobID == "" || ack.Key != "order-2" || ack.Event != "start_processing" || ack.Sequence != 2 || ack.Duplicate {
		t.Fatalf("ack %+v", ack)
	}
	if n := pending(t, conn); n != 2 {
		t.Fatalf("%d messages stored, want 2", n)
	}
}

func TestPublishURLFromEnvironment(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	var out, errOut bytes.Buffer
	env := map[string]string{"NATS_URL": url}
	cmd := command{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	if err := cmd.run(context.Background(), []string{"k1", "e"}); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if n := pending(t, conn); n != 1 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestPublishDuplicateID(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	for i, wantNote := range []bool{false, true} {
		out, errOut, code := runCLI(t, ctx, "--nats-url", url, "--id", "job-1", "k1", "start_processing")
		if code != 0 || strings.TrimSpace(out) != "job-1" {
			t.Fatalf("run %d: code %d, stdout %q, stderr %q", i, code, out, errOut)
		}
		if got := strings.Contains(errOut, "duplicate: job job-1 was already stored"); got != wantNote {
			t.Fatalf("run %d: stderr %q", i, errOut)
		}
	}
	if n := pending(t, conn); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestQueueFull(t *testing.T) {
	t.Parallel()
	url, _ := setup(t, queue.Spec{QueueLimit: 10})
	ctx := context.Background()
	for i := range 10 {
		if _, errOut, code := runCLI(t, ctx, "--nats-url", url, "k", "e"); code != 0 {
			t.Fatalf("enqueue %d: code %d, %s", i, code, errOut)
		}
	}
	_, errOut, code := runCLI(t, ctx, "--nats-url", url, "k", "e")
	if code != 1 || !strings.Contains(errOut, "queue full") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("11th: code %d, stderr %q", code, errOut)
	}
}

func TestBadInputPublishesNothing(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	for _, key := range []string{"a b", "a.b", "a*", "a>", strings.Repeat("k", 200)} {
		_, errOut, code := runCLI(t, ctx, "--nats-url", url, key, "e")
		if code != 1 || !strings.Contains(errOut, "A-Z a-z 0-9 - _ =") {
			t.Errorf("key %q: code %d, stderr %q", key, code, errOut)
		}
	}
	for _, data := range []string{"{nope", "hello", `{"a":1}x`} {
		_, errOut, code := runCLI(t, ctx, "--nats-url", url, "k", "e", data)
		if code != 1 || !strings.Contains(errOut, "not JSON") {
			t.Errorf("data %q: code %d, stderr %q", data, code, errOut)
		}
	}
	if n := pending(t, conn); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestNotProvisioned(t *testing.T) {
	t.Parallel()
	url, _ := setup(t, queue.Spec{})
	_, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "--workflow", "nosuch", "k", "e")
	if code != 1 || !strings.Contains(errOut, "not provisioned") {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
}

func TestNoServer(t *testing.T) {
	t.Parallel()
	url := "nats://" + natstest.DeadAddr(t)
	start := time.Now()
	_, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "k", "e")
	if code != 1 || !strings.Contains(errOut, url) || !strings.Contains(errOut, "no NATS server reachable") {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"--bogus", "k", "e"},
		{"k"},
		{"k", "e", "{}", "extra"},
		{"status"},
		{"status", "a", "b"},
		{"watch", "a", "b"},
		{"status", "k", "--wait"},
		{"--file", "x", "k", "e"},
		{"--window", "0", "k", "e"},
		{"--log-level", "loud", "k", "e"},
	} {
		out, errOut, code := runCLI(t, context.Background(), args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || out != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "enqueue: ") || !strings.HasPrefix(lines[1], "usage: ") {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	out, _, code := runCLI(t, context.Background(), "--help")
	for _, want := range []string{"status [flags] KEY", "watch [flags] [KEY]", "dlq list", "dlq replay", "--limit", "--all", "--file", "--nats-url", "--wait"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("code %d, help lacks %q:\n%s", code, want, out)
		}
	}
}

// fakeWorker pulls the events and answers each with the statuses reply
// makes for it.
func fakeWorker(t *testing.T, conn *queue.Conn, reply func(m *queue.Msg) []contract.Status) {
	t.Helper()
	p, err := conn.Pull(context.Background(), queue.PullConfig{Workflow: "order", MaxWait: 100 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) {
			_ = m.Ack()
			for _, st := range reply(m) {
				if err := conn.PublishStatus(&st); err != nil {
					t.Error(err)
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
}

// retryThen answers with a retry progress status and then a settled one,
// failed when fail is set.
func retryThen(fail bool) func(m *queue.Msg) []contract.Status {
	return func(m *queue.Msg) []contract.Status {
		progress := contract.Status{Workflow: "order", Key: m.Key, JobID: m.ID, Event: "request_payment",
			From: "processing", To: "processing", Version: 1, Action: "authorize", Attempt: 1,
			Error: &contract.StatusError{Code: contract.CodeRetrying, Message: "gateway timeout"}}
		final := progress
		final.To, final.Version, final.Settled, final.Attempt, final.Error = "awaiting_payment", 2, true, 2, nil
		if fail {
			final.To, final.Error = "failed", &contract.StatusError{Code: contract.CodeActionFailed, Message: "card declined"}
		}
		return []contract.Status{progress, final}
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	fakeWorker(t, conn, retryThen(false))
	out, errOut, code := runCLI(t, context.Background(), "k1", "request_payment", "--wait", "--nats-url", url)
	if code != 0 || out != "k1 awaiting_payment (version 2)\n" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "attempt=1") || !strings.Contains(errOut, "retrying: gateway timeout") {
		t.Fatalf("progress not shown: %q", errOut)
	}
}

func TestWaitFailedJSON(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	fakeWorker(t, conn, retryThen(true))
	out, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "--wait", "--json", "--id", "job-9", "k1", "request_payment")
	var st contract.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 1 {
		t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	if st.JobID != "job-9" || st.To != "failed" || !st.Settled || st.Error == nil || st.Error.Code != contract.CodeActionFailed {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(errOut, "enqueue: job job-9 ended in failed: action_failed: card declined") {
		t.Fatalf("stderr %q", errOut)
	}
}

func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	url, _ := setup(t, queue.Spec{})
	_, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "--wait", "--timeout", "200ms", "--id", "job-1", "k1", "e")
	if code != 1 || !strings.Contains(errOut, "timed out after 200ms waiting for job job-1") {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	b, err := conn.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	rec := `{"state":"awaiting_payment","version":3,"data":{"amount":12},"updated_at":"2025-01-02T03:04:05Z","internal":1}`
	if _, err := b.Put(ctx, "order-1", []byte(rec), 0); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, ctx, "status", "order-1", "--json", "--nats-url", url)
	var got map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&got); err != nil || code != 0 || dec.More() {
		t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
	}
	want := map[string]string{"key": `"order-1"`, "state": `"awaiting_payment"`, "version": "3",
		"data": `{"amount":12}`, "updated_at": `"2025-01-02T03:04:05Z"`}
	for k, v := range want {
		if string(got[k]) != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	out, _, code = runCLI(t, ctx, "--nats-url", url, "status", "order-1")
	if code != 0 || out != "order-1 awaiting_payment version=3 updated_at=2025-01-02T03:04:05Z data={\"amount\":12}\n" {
		t.Fatalf("code %d, stdout %q", code, out)
	}
	_, errOut, code = runCLI(t, ctx, "--nats-url", url, "status", "order-2")
	if code != 1 || !strings.Contains(errOut, "no state for key order-2 (no event processed yet)") {
		t.Fatalf("missing key: code %d, stderr %q", code, errOut)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"one key, human", []string{"watch", "k1", "--nats-url", url}},
		{"workflow, json lines", []string{"--json", "watch", "--nats-url", url}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			out, errOut := newSyncBuffer(), newSyncBuffer()
			done := make(chan int, 1)
			go func() {
				done <- exitCode(command{stdout: out, stderr: errOut, getenv: noEnv}.run(ctx, tc.args))
			}()
			errOut.waitFor(t, "watching orderly.status.order.")
			for _, k := range []string{"k2", "k1"} {
				if err := conn.PublishStatus(&contract.Status{Workflow: "order", Key: k, JobID: "j-" + k, From: "idle", To: "processing", Version: 1}); err != nil {
					t.Fatal(err)
				}
			}
			out.waitFor(t, "j-k1")
			cancel()
			if code := natstest.Recv(t, done, natstest.Timeout, "watch to end after its cancellation"); code != 0 {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if !strings.Contains(tc.name, "json") {
				if len(lines) != 1 || lines[0] != "k1 idle -> processing (version 1) event= job=j-k1" {
					t.Fatalf("stdout %q", out)
				}
				return
			}
			if len(lines) != 2 {
				t.Fatalf("stdout %q", out)
			}
			for i, line := range lines {
				var st contract.Status
				if err := json.Unmarshal([]byte(line), &st); err != nil || st.JobID != []string{"j-k2", "j-k1"}[i] {
					t.Fatalf("line %q: %+v %v", line, st, err)
				}
			}
		})
	}
}

func TestFile(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	input := strings.Join([]string{
		`{"key":"k1","event":"start_processing"}`,
		`{"key":"k2","event":"start_processing","data":{"amount":3},"id":"job-2"}`,
		`{"key":"k3",`,
		`{"key":"bad key","event":"start_processing"}`,
		``,
		`{"key":"k2","event":"start_processing","id":"job-2"}`,
		`{"key":"k4","event":"start_processing"}`,
	}, "\n")
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(out, errOut string, code int, wantPending uint64) {
		t.Helper()
		var sum summary
		if err := json.Unmarshal([]byte(out), &sum); err != nil || code != 1 {
			t.Fatalf("code %d, stdout %q, stderr %q: %v", code, out, errOut, err)
		}
		if sum.Sent+sum.Duplicates != 4 || sum.Failed != 2 {
			t.Fatalf("summary %+v", sum)
		}
		for _, want := range []string{"line 3: not a JSON object", "line 4: invalid key", "failed 2", "2 of 6 events failed"} {
			if !strings.Contains(errOut, want) {
				t.Fatalf("stderr lacks %q: %q", want, errOut)
			}
		}
		if n := pending(t, conn); n != wantPending {
			t.Fatalf("%d messages stored, want %d", n, wantPending)
		}
	}
	out, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "--json", "--file", path, "--window", "2")
	check(out, errOut, code, 3)
	var sum summary
	_ = json.Unmarshal([]byte(out), &sum)
	if sum.Sent != 3 || sum.Duplicates != 1 {
		t.Fatalf("first run %+v", sum)
	}
	// From stdin, again: job-2 is a duplicate, the lines without ids are new.
	out, errOut, code = runStdin(t, context.Background(), strings.NewReader(input), "--nats-url", url, "--json", "--file", "-")
	check(out, errOut, code, 5)
}
