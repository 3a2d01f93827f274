package review_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/examples/review"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// A nats-server shut down while a stream source is still being set up
// leaves one goroutine that ends on its own timeout.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

var submission = review.Submission{Title: "Q3 report", Author: "carol", Reviewers: []string{"ann", "bob"}}

type bundle struct {
	h   *orderlytest.Harness
	spy *orderlytest.Spy[review.Document]
}

// setup runs the review workflow with n as its notifier (nil: one that
// succeeds), its action wrapped in a spy.
func setup(t *testing.T, n review.Notifier) bundle {
	t.Helper()
	if n == nil {
		n = review.NotifierFunc(func(context.Context, review.Notification) error { return nil })
	}
	m, err := review.New(review.Config{})
	if err != nil {
		t.Fatal(err)
	}
	spy := orderlytest.NewSpy(review.NotifyReviewers(n))
	wf, err := worker.NewWorkflow(m, map[string]worker.ActionFunc[review.Document]{review.ActionNotifyReviewers: spy.Func})
	if err != nil {
		t.Fatal(err)
	}
	return bundle{h: orderlytest.Start(t, []worker.Workflow{wf}), spy: spy}
}

func TestApproval(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	job := b.h.Send("doc-1", string(review.Submit), submission)
	b.h.RequireState("doc-1", review.InReview)

	c := b.spy.RequireCalled(t, 1)[0]
	if c.Key != "doc-1" || c.JobID != job || c.Data.Title != "Q3 report" || c.Data.Author != "carol" ||
		!slices.Equal(c.Data.Reviewers, []string{"ann", "bob"}) {
		t.Fatalf("notify_reviewers ran with %+v", c)
	}
	st := b.h.SendAndWait("doc-1", string(review.Approve), review.Decision{By: "bob", Comment: "ship it"})
	if st.Error != nil || st.To != string(review.Approved) {
		t.Fatalf("approve: %+v", st)
	}
	rec := b.h.RequireState("doc-1", review.Approved)
	if want := `{"title":"Q3 report","author":"carol","reviewers":["ann","bob"],"notified":2,"decided_by":"bob","comment":"ship it"}`; string(rec.Data) != want {
		t.Fatalf("data %s, want %s", rec.Data, want)
	}
}

func TestInvalidEventsAreRejectedAndChangeNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	h := b.h
	h.RequireRejected(h.Send("doc-1", string(review.Approve), review.Decision{By: "ann"}), "invalid_transition")
	h.RequireRejected(h.Send("doc-1", string(review.Submit), review.Submission{Title: "no reviewers"}), "invalid_data")
	h.RequireRejected(h.Send("doc-1", string(review.ReviewTimeout), nil), "internal_event")
	if rec := h.State("doc-1"); rec.Version != 0 {
		t.Fatalf("rejections changed the state: %+v", rec)
	}

	h.SendAndWait("doc-1", string(review.Submit), submission)
	st := h.RequireRejected(h.Send("doc-1", string(review.Approve), review.Decision{By: "carol"}), "guard_refused")
	if st.From != string(review.InReview) || st.To != string(review.InReview) {
		t.Fatalf("status %+v", st)
	}
	h.RequireRejected(h.Send("doc-1", string(review.Submit), submission), "invalid_transition")
	if rec := h.RequireState("doc-1", review.InReview); rec.Version != 2 {
		t.Fatalf("version %d, want 2 (submit, notified)", rec.Version)
	}
	b.spy.RequireCalled(t, 1)
}

func TestReviewTimeoutEscalates(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	h := b.h
	h.SendAndWait("doc-1", string(review.Submit), submission)

	start := time.Now()
	h.Advance(49 * time.Hour)
	h.RequireState("doc-1", review.Escalated)
	took := time.Since(start)
	t.Logf("the 48h review timeout fired after %s of real time", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("the timeout took %s of real time", took)
	}
	// An escalated document still takes a decision.
	if st := h.SendAndWait("doc-1", string(review.Reject), review.Decision{By: "ann"}); st.To != string(review.Rejected) {
		t.Fatalf("reject: %+v", st)
	}
}

func TestFailedNotificationReturnsToDraft(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	fail.Store(true)
	down := errors.New("mail server down")
	b := setup(t, review.NotifierFunc(func(context.Context, review.Notification) error {
		if fail.Load() {
			return down
		}
		return nil
	}))
	h := b.h
	st := h.SendAndWait("doc-1", string(review.Submit), submission)
	if st.Event != string(review.NotifyFailed) || st.To != string(review.Draft) || st.Error == nil || st.Error.Code != "action_failed" {
		t.Fatalf("status %+v", st)
	}
	calls := b.spy.RequireCalled(t, 4) // the first attempt and ActionRetries (3) more
	for i, c := range calls {
		if c.Attempt != i+1 || c.IdempotencyKey != calls[0].IdempotencyKey {
			t.Fatalf("call %d: %+v", i, c)
		}
	}
	rec := h.RequireState("doc-1", review.Draft)
	if want := `"comment":"notifying reviewers failed: mail server down"`; !strings.Contains(string(rec.Data), want) {
		t.Fatalf("data %s", rec.Data)
	}
	fail.Store(false)
	h.SendAndWait("doc-1", string(review.Submit), submission)
	h.RequireState("doc-1", review.InReview)
}
