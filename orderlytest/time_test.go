package orderlytest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// A delayed event an hour out fires in about a second of real time once
// the test clock is advanced past it; not before.
func TestControllableClockFiresDelayedEvents(t *testing.T) {
	t.Parallel()
	wf, err := order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	h := orderlytest.Start(t, []worker.Workflow{wf})
	ctx, cancel := context.WithTimeout(context.Background(), orderlytest.DefaultTimeout)
	defer cancel()
	c := h.Client()

	if _, err := c.Publish(ctx, order.Workflow, "late", contract.Envelope{Event: "start_processing"},
		client.WithJobID("late-1"), client.WithDelay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The worker announces it as scheduled (not applied) as soon as it
	// is stored.
	for deadline := time.Now().Add(orderlytest.DefaultTimeout); ; {
		if st := h.Statuses("late"); len(st) > 0 {
			if st[0].ScheduledFor.IsZero() || st[0].Settled || st[0].Version != 0 {
				t.Fatalf("first status %+v, want the delayed event scheduled", st[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the delayed event was not announced as scheduled")
		}
		time.Sleep(10 * time.Millisecond) // a poll: the harness records statuses as they come
	}
	h.Advance(30 * time.Minute) // not due
	for _, st := range h.Statuses("late") {
		if st.ScheduledFor.IsZero() {
			t.Fatalf("fired before it was due: %+v", st)
		}
	}
	h.Advance(31 * time.Minute)
	start := time.Now()
	h.RequireState("late", order.Processing)
	t.Logf("an hour's delay fired %s after Advance", time.Since(start).Round(time.Millisecond))
	// Processing is entered at version 1, and its order fetched (slow
	// work) at 2: wait for that too.
	for deadline := time.Now().Add(orderlytest.DefaultTimeout); !slices.ContainsFunc(h.Statuses("late"), func(st contract.Status) bool {
		return st.Settled && st.Version == 2
	}); {
		if time.Now().After(deadline) {
			t.Fatalf("the order was not fetched; statuses %+v", h.Statuses("late"))
		}
		time.Sleep(10 * time.Millisecond) // a poll: the harness records statuses as they come
	}
	if rec := h.State("late"); rec.Version != 2 {
		t.Fatalf("delayed event applied more than once or not settled: %+v", rec)
	}
	// The delayed event kept its job id; its first status said when it
	// was due (by the producer's clock, which the test clock does not
	// move).
	var late []contract.Status
	for _, st := range h.Statuses("late") {
		if st.Event == "start_processing" {
			late = append(late, st)
		}
	}
	if len(late) != 2 || late[0].JobID != "late-1" || late[0].ScheduledFor.IsZero() || late[0].Settled ||
		late[1].JobID != "late-1" || !late[1].ScheduledFor.IsZero() {
		t.Fatalf("delayed event's statuses: %+v; want it scheduled, then applied", late)
	}
}
