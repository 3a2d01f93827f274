package orderlytest_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func TestHappyPathAndRecordedStatuses(t *testing.T) {
	t.Parallel()
	spy := orderlytest.NewSpy[Ticket](nil)
	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(spy.Func)})
	job := h.Send("t-1", "assign", Ticket{Assignee: "ada"}, client.WithJobID("job-1"))
	if job != "job-1" {
		t.Fatalf("job id %q", job)
	}
	h.RequireState("t-1", "assigned")
	calls := spy.RequireCalled(t, 1)
	if c := calls[0]; c.Key != "t-1" || c.JobID != "job-1" || c.Data.Assignee != "ada" || c.Attempt != 1 {
		t.Fatalf("call %+v", c)
	}
	if st := h.SendAndWait("t-1", "resolve", nil); st.To != "resolved" || st.Error != nil {
		t.Fatalf("status %+v", st)
	}
	var got []string
	for _, st := range h.Statuses("t-1") {
		got = append(got, st.Event+":"+st.To)
	}
	if want := "assign:assigned paged:assigned resolve:resolved"; strings.Join(got, " ") != want {
		t.Fatalf("statuses %v, want %s", got, want)
	}
	if rec := h.State("t-2"); rec.State != "" || rec.Version != 0 {
		t.Fatalf("a key with no events has state %+v", rec)
	}
}

func TestAdvanceFiresTimeoutWithoutWaiting(t *testing.T) {
	t.Parallel()
	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page)})
	h.SendAndWait("t-1", "assign", Ticket{Assignee: "ada"})
	before := h.Clock().Now()

	h.Advance(23 * time.Hour) // not due yet
	start := time.Now()
	h.Advance(2 * time.Hour)
	h.RequireState("t-1", "escalated")
	took := time.Since(start)
	t.Logf("a 24h timeout fired after %s of real time", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("took %s", took)
	}
	if d := h.Clock().Now().Sub(before); d < 25*time.Hour {
		t.Fatalf("clock moved %s", d)
	}
	for _, st := range h.Statuses("t-1") {
		if st.Event == "stale" && st.At.Before(before.Add(25*time.Hour)) {
			t.Fatalf("the timeout's status is stamped %s, before the advanced clock", st.At)
		}
	}
}

func TestRequireRejectedCodes(t *testing.T) {
	t.Parallel()
	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page)})
	st := h.RequireRejected(h.Send("t-1", "stale", nil), "internal_event")
	if st.From != "open" || st.To != "open" {
		t.Fatalf("status %+v", st)
	}
	h.RequireRejected(h.Send("t-1", "resolve", nil), "invalid_transition")
	h.RequireRejected(h.Send("t-1", "assign", "not an object"), "invalid_data")
}

func TestWorkflowSelectsAnother(t *testing.T) {
	t.Parallel()
	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page), namedTicketWorkflow("ticket2", page)}, orderlytest.WithConfig(func(c *worker.Config) {
		c.Queue.Partitions = 2
	}))
	h2 := h.Workflow("ticket2")
	h2.SendAndWait("t-1", "assign", Ticket{Assignee: "bob"})
	h2.RequireState("t-1", "assigned")
	if rec := h.State("t-1"); rec.State != "" {
		t.Fatalf("the first workflow's key has state %+v", rec)
	}
	if h2.Client() != h.Client() || h2.Clock() != h.Clock() || h2.Worker() != h.Worker() {
		t.Fatal("workflow harnesses do not share their environment")
	}
}

// The failure messages say what was seen instead.
func TestFailuresSayWhatWasSeen(t *testing.T) {
	t.Parallel()
	rt := &recordingT{TB: t}
	h := orderlytest.Start(rt, []worker.Workflow{ticketWorkflow(page)}, orderlytest.WithTimeout(3*time.Second))
	h.SendAndWait("t-1", "assign", Ticket{Assignee: "ada"})

	msg := rt.fatal(func() { h.RequireState("t-1", "resolved") })
	if !strings.Contains(msg, `did not reach state "resolved"`) || !strings.Contains(msg, "last seen: assigned") || !strings.Contains(msg, "paged") {
		t.Fatalf("message %q", msg)
	}
	job := h.Send("t-1", "resolve", nil)
	msg = rt.fatal(func() { h.RequireRejected(job, "invalid_transition") })
	if !strings.Contains(msg, "settled with no invalid_transition error") {
		t.Fatalf("message %q", msg)
	}
	spy := orderlytest.NewSpy[Ticket](nil)
	spy.RequireCalled(t, 0)
	_, _ = spy.Func(context.Background(), worker.ActionCall[Ticket]{})
	msg = rt.fatal(func() { spy.RequireCalled(rt, 0) })
	if !strings.Contains(msg, "called 1 times, want 0") {
		t.Fatalf("message %q", msg)
	}
}

// recordingT is the test's T, except that a fatal failure is recorded and
// ends only the goroutine of the check, so a test can check the message.
type recordingT struct {
	testing.TB
	msg chan string
}

func (r *recordingT) Fatalf(format string, args ...any) {
	if r.msg == nil {
		r.TB.Fatalf(format, args...)
	}
	r.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingT) Fatal(args ...any) {
	if r.msg == nil {
		r.TB.Fatal(args...)
	}
	r.msg <- fmt.Sprint(args...)
	runtime.Goexit()
}

// fatal runs check on its own goroutine and returns its fatal message.
func (r *recordingT) fatal(check func()) string {
	r.msg = make(chan string, 1)
	done := make(chan struct{})
	go func() { defer close(done); check() }()
	natstest.Recv(r.TB, done, natstest.Timeout, "the check to end")
	select {
	case m := <-r.msg:
		return m
	default:
		r.TB.Fatal("the check did not fail")
		return ""
	}
}

// exampleT stands in for a test's *testing.T in the examples, which have
// none. Only what the harness uses is implemented.
type exampleT struct {
	testing.TB // nil: any other method panics
	mu         sync.Mutex
	cleanups   []func()
}

func newExampleT() *exampleT { return &exampleT{} }

func (t *exampleT) Helper() {}

func (t *exampleT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *exampleT) TempDir() string {
	dir, err := os.MkdirTemp("", "orderlytest-example-")
	if err != nil {
		panic(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (t *exampleT) Errorf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (t *exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (t *exampleT) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }

// finish runs the cleanups, last registered first, as a test's end does.
func (t *exampleT) finish() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
