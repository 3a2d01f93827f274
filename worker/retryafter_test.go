package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

var errBusy = errors.New("gateway busy")

// TestRetryAfterError: the error RetryAfter returns says the delay and its
// cause, unwraps to the cause (errors.Is and errors.As see through it), and
// keeps Permanent visible; Permanent's unwraps too.
func TestRetryAfterError(t *testing.T) {
	t.Parallel()
	err := worker.RetryAfter(1500*time.Millisecond, errBusy)
	if !errors.Is(err, errBusy) || errors.Unwrap(err) != errBusy {
		t.Errorf("RetryAfter(1.5s, errBusy) does not unwrap to errBusy: %v", err)
	}
	if got := err.Error(); !strings.Contains(got, "1.5s") || !strings.Contains(got, "gateway busy") {
		t.Errorf("Error() = %q, want the delay and the cause", got)
	}
	var typed *contract.StatusError
	if !errors.As(worker.RetryAfter(time.Second, &contract.StatusError{Code: "x"}), &typed) || typed.Code != "x" {
		t.Errorf("errors.As does not find the cause's type through RetryAfter")
	}
	if worker.IsPermanent(err) {
		t.Error("RetryAfter alone is permanent")
	}
	if p := worker.Permanent(errBusy); !errors.Is(p, errBusy) || p.Error() != errBusy.Error() {
		t.Errorf("Permanent(errBusy) = %v: want errBusy's message, unwrapping to it", p)
	}
	if !worker.IsPermanent(worker.RetryAfter(time.Second, worker.Permanent(errBusy))) ||
		!worker.IsPermanent(worker.Permanent(worker.RetryAfter(time.Second, errBusy))) {
		t.Error("Permanent is not seen through RetryAfter, or RetryAfter through Permanent")
	}
	// A nil cause is still an error: the attempt failed.
	if nilCause := worker.RetryAfter(time.Second, nil); nilCause == nil || errors.Unwrap(nilCause) != nil {
		t.Errorf("RetryAfter(1s, nil) = %v", nilCause)
	}
}

// TestRetryAfterHonouredByTheWorker, on a real server, with a default
// backoff of an hour so that only RetryAfter can bring an attempt sooner:
// the next attempt comes no sooner than the delay asked for; d <= 0 retries
// at once; each RetryAfter counts as an attempt, so the retry budget still
// ends the action; Permanent inside it fails the action at once.
func TestRetryAfterHonouredByTheWorker(t *testing.T) {
	t.Parallel()
	const delay = 1500 * time.Millisecond
	b := setup(t)
	cs := newCalls()
	startWorker(t, b.url, worker.Config{ActionRetries: 2, RetryBackoff: time.Hour}, func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		cs.note(c)
		switch {
		case c.Key == "delay" && c.Attempt == 1:
			return nil, worker.RetryAfter(delay, errBusy)
		case c.Key == "now" && c.Attempt == 1:
			return nil, worker.RetryAfter(-time.Hour, errBusy)
		case c.Key == "now" && c.Attempt == 2:
			return nil, worker.RetryAfter(0, errBusy)
		case c.Key == "budget":
			return nil, worker.RetryAfter(10*time.Millisecond, errBusy)
		case c.Key == "permanent":
			return nil, worker.RetryAfter(time.Hour, worker.Permanent(errBusy))
		}
		return nil, nil
	})
	keys := []string{"delay", "now", "budget", "permanent"}
	statuses := map[string]<-chan contract.Status{}
	for _, k := range keys {
		statuses[k] = subscribeKey(t, b.client, k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	for _, k := range keys {
		if _, err := b.client.Publish(ctx, "tally", k, contract.Envelope{Event: "work"}, client.WithJobID("job-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	// outcome is the status of key's action's outcome fed back: "worked" on
	// success, "work_failed" when it failed for good.
	outcome := func(t *testing.T, key string) contract.Status {
		t.Helper()
		return natstest.RecvUntil(t, statuses[key], natstest.Timeout, "the outcome of "+key+"'s action", func(s contract.Status) bool {
			return s.Settled && (s.Event == "worked" || s.Event == "work_failed")
		})
	}

	t.Run("delay", func(t *testing.T) {
		retry := natstest.RecvUntil(t, statuses["delay"], natstest.Timeout, "delay's retrying status", func(s contract.Status) bool {
			return s.Error != nil && s.Error.Code == contract.CodeRetrying
		})
		if retry.Attempt != 1 || !strings.Contains(retry.Error.Message, "gateway busy") || retry.Settled {
			t.Errorf("retrying status %+v %+v", retry, retry.Error)
		}
		if s := outcome(t, "delay"); s.Event != "worked" || s.Error != nil {
			t.Fatalf("outcome %+v", s)
		}
		calls, at := cs.of("delay")
		if len(calls) != 2 || calls[1].Attempt != 2 {
			t.Fatalf("%d calls, want 2", len(calls))
		}
		if d := at[1].Sub(at[0]); d < delay {
			t.Errorf("the second attempt came %s after the first; RetryAfter asked for %s", d, delay)
		}
	})
	t.Run("d <= 0 retries at once", func(t *testing.T) {
		if s := outcome(t, "now"); s.Event != "worked" || s.Error != nil {
			t.Fatalf("outcome %+v", s)
		}
		if calls, _ := cs.of("now"); len(calls) != 3 {
			t.Fatalf("%d calls, want 3", len(calls))
		}
	})
	t.Run("counts as an attempt", func(t *testing.T) {
		s := outcome(t, "budget")
		if s.Event != "work_failed" || s.Error == nil || s.Error.Code != contract.CodeActionFailed || s.To != "closed" {
			t.Fatalf("outcome %+v, want work_failed with %s", s, contract.CodeActionFailed)
		}
		if calls, _ := cs.of("budget"); len(calls) != 3 {
			t.Errorf("%d calls with 2 retries, want 3", len(calls))
		}
	})
	t.Run("Permanent inside fails at once", func(t *testing.T) {
		s := outcome(t, "permanent")
		if s.Event != "work_failed" || s.Error == nil || s.Error.Code != contract.CodeActionFailed {
			t.Fatalf("outcome %+v, want work_failed with %s", s, contract.CodeActionFailed)
		}
		if calls, _ := cs.of("permanent"); len(calls) != 1 {
			t.Errorf("%d calls, want 1", len(calls))
		}
	})
}
